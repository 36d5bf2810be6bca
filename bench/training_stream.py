"""Arrow training sets, whole frame vs batch by batch, over HTTP in one run (variants alternating).

    .venv/bin/python -m bench.training_stream --users 100000 --repeats 3
    .venv/bin/python -m bench.training_stream --users 1000000 --repeats 3
    .venv/bin/python -m bench.training_stream --users 1000000 --repeats 3 --set WAREHOUSE_MEMORY_LIMIT=300MB

The warehouse is bench/datagen.py's (cached by users and seed, as bench/run.py has it). The server
(`python -m app`, production settings) declares the demo's four sources with a one-minute hot window,
so its start hydrates almost nothing: training reads the whole warehouse all the same, and the
server's memory before a request is not the realtime store's. Then the four-table join is saved and
three ETLs with the example's code are compared, each `POST /v1.0/extract/train?format=arrow`:

- ``whole``: the example ETL as shipped (not batchable: one frame, as before), registered;
- ``batched``: the same code declaring ``batchable = True``, registered (its recorded input dtypes);
- ``batched_unregistered``: the same again, not registered (one more pass over the result for dtypes).

Reported per variant (medians): rows, wall time to the last byte, rows/s, time to the first byte and
the response's bytes, from one server answering the variants in turn. Memory is measured apart, in a
fresh server per request (on the same data dir, ETLs registered): a process that ran another variant
keeps the memory it freed (allocator pools), so its RSS would hide what the next request needs. There:
the RSS once ready, the peak (VmHWM) after one request, and the growth as a multiple of the response's
size. Writes bench/results/training-stream-*.json.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench import live
from bench.datagen import cached_warehouse
from bench.run import ARROW_TYPE, QUERY, fresh_server_dir, median, rotated, train_once
from demo.sources import demo_source_declarations

ROOT = Path(__file__).resolve().parent.parent
HOT_WINDOW_SECONDS = 60
# Sources declared by the benchmark; a stream's deadline (the statement limit spans the whole stream) raised
# so that a loaded machine slows a run instead of cutting it with query_timeout.
SETTINGS = {"DEMO_SOURCES": "off", "MAX_RESPONSE_ROWS": "1000000000", "QUERY_TIMEOUT_SECONDS": "600"}
VARIANTS = ("whole", "batched", "batched_unregistered")
QUERY_ONLY = "query_only"  # memory phase: the raw rows of the join streamed, no ETL


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def etl_files(repo: Path) -> dict[str, Path]:
    """The example ETL, and two batchable copies (different code, so different ETL ids), committed."""
    shipped = live.make_etl_repo(repo)
    code = shipped.read_text()
    files = {"whole": shipped, "batched": repo / "etls" / "quote_batched.py",
             "batched_unregistered": repo / "etls" / "quote_batched_unregistered.py"}
    files["batched"].write_text(code + "\nEtl.batchable = True\n")
    files["batched_unregistered"].write_text(code + "\nEtl.batchable = True  # never registered\n")
    git = ["git", "-C", str(repo), "-c", "user.name=bench", "-c", "user.email=bench@localhost",
           "-c", "commit.gpgsign=false"]
    subprocess.run(git + ["add", "."], check=True)
    subprocess.run(git + ["commit", "-qm", "Batchable copies"], check=True)
    return files


def set_up(server: live.Server, files: dict[str, Path]) -> dict[str, Any]:
    """Declare the sources (small hot window), save the join, register the whole and batched ETLs."""
    for declaration in demo_source_declarations():
        server.json("POST", "/v1.0/sources", {**declaration, "hot_window_seconds": HOT_WINDOW_SECONDS})
    query = server.json("POST", "/v1.0/query/train?save=true&include_data=false",
                        {"query": QUERY, "query_name": "quote_join"}, timeout=3600)
    registered = {}
    for variant in ("whole", "batched"):
        started = time.perf_counter()
        etl = server.json("POST", "/v1.0/extract/train?save=true&include_data=false",
                          {"query_id": query["query_id"], "etl_path": str(files[variant])}, timeout=3600)
        registered[variant] = {"etl_id": etl["etl_id"], "seconds": round(time.perf_counter() - started, 2)}
    return {"query_id": query["query_id"], "registered": registered}


def measure(server: live.Server, ids: dict[str, Any], files: dict[str, Path], repeats: int) -> dict[str, Any]:
    runs: dict[str, list[dict[str, Any]]] = {variant: [] for variant in VARIANTS}
    for variant in VARIANTS:  # warm-up: loads each ETL once
        server.etl_path = str(files[variant])
        rows = train_once(server, ids, "arrow")["rows"]
        if variant == "whole":
            ids["rows"] = rows  # every variant must return these
    for repeat in range(repeats):
        for variant in rotated(list(VARIANTS), repeat):
            server.etl_path = str(files[variant])
            run = train_once(server, ids, "arrow")
            run["peak_growth_x_result"] = round((run["server_peak_rss"] - run["server_rss_before"]) / run["bytes"], 2)
            complete(run, ids["rows"])
            log(f"    [{repeat + 1}/{repeats}] {variant:22} {run['rows']:>9,} rows {run['wall_s']:6.2f} s "
                f"{run['rows_per_second']:>10,} rows/s  first byte {run['first_byte_s']:.2f} s  "
                f"peak +{(run['server_peak_rss'] - run['server_rss_before']) / 2**20:,.0f} MiB "
                f"({run['peak_growth_x_result']}× the {run['bytes'] / 2**20:,.0f} MiB result)")
            runs[variant].append(run)
    keys = ("rows", "wall_s", "rows_per_second", "first_byte_s", "bytes", "server_rss_before", "server_peak_rss",
            "peak_growth_x_result", "server_cpu_s", "machine_busy_cores", "load_average")
    return {"runs": runs, "summary": summary(runs, keys)}


def complete(run: dict[str, Any], rows: int) -> None:
    """Mark `run` complete when it has every row (a stream can end early with an error marker, such as
    query_timeout on a loaded machine); incomplete runs are reported but left out of the medians."""
    run["complete"] = run.get("rows", rows) == rows
    if not run["complete"]:
        log(f"    incomplete: {run.get('rows')} of {rows} rows (the stream ended with an error); left out")


def summary(runs: dict[str, list[dict[str, Any]]], keys: tuple[str, ...]) -> dict[str, dict[str, Any]]:
    """Medians of the complete runs of each variant."""
    return {v: {k: median([r[k] for r in rs if r["complete"]]) for k in keys} for v, rs in runs.items()}


def query_once(server: live.Server) -> dict[str, Any]:
    """The join's raw rows as Arrow (POST /v1.0/query/train?format=arrow): what the warehouse alone costs."""
    status, _, body = server.request("POST", "/v1.0/query/train?format=arrow", {"query": QUERY},
                                     headers={"Accept": ARROW_TYPE}, timeout=3600)
    if status != 200:
        raise RuntimeError(f"query/train → {status}: {body[:300]!r}")
    import pyarrow as pa

    return {"bytes": len(body), "wall_s": None, "rows": pa.ipc.open_stream(body).read_all().num_rows}


def fresh_peaks(data_dir: Path, log_dir: Path, ids: dict[str, Any], files: dict[str, Path], repeats: int
                ) -> dict[str, Any]:
    """Per variant, `repeats` fresh servers answering one request each: RSS ready, peak, growth ÷ result."""
    variants = [*VARIANTS, QUERY_ONLY]
    runs: dict[str, list[dict[str, Any]]] = {variant: [] for variant in variants}
    for repeat in range(repeats):
        for variant in rotated(variants, repeat):
            with live.running_server(data_dir, log_dir, **SETTINGS) as server:
                ready = live.process_status(server.pid)["VmRSS"]
                if variant == QUERY_ONLY:
                    run = query_once(server)
                else:
                    server.etl_path = str(files[variant])
                    run = train_once(server, ids, "arrow")
                peak = live.process_status(server.pid)["VmHWM"]
            run = {"rss_ready": ready, "peak": peak, "growth": peak - ready, "bytes": run["bytes"], "rows": run["rows"],
                   "growth_x_result": round((peak - ready) / run["bytes"], 2), "wall_s": run["wall_s"]}
            complete(run, ids["rows"])
            log(f"    fresh [{repeat + 1}/{repeats}] {variant:22} ready {ready / 2**20:,.0f} MiB, peak "
                f"{peak / 2**20:,.0f} MiB: +{run['growth'] / 2**20:,.0f} MiB = {run['growth_x_result']}× the "
                f"{run['bytes'] / 2**20:,.0f} MiB result")
            runs[variant].append(run)
    return {"runs": runs, "summary": summary(runs, ("rss_ready", "peak", "growth", "growth_x_result", "bytes"))}


def render(result: dict[str, Any]) -> str:
    lines = [f"{result['users']:,} users, median of {result['repeats']} (variants alternating), load average "
             f"before {result['load_before'][0]:.2f}", "",
             "| variant | rows | wall s | rows/s | first byte s | response MiB | fresh server: RSS ready MiB "
             "| peak MiB | growth ÷ result | machine busy (cores) |", "|---|---|---|---|---|---|---|---|---|---|"]
    for variant, s in result["summary"].items():
        m = result["memory"]["summary"][variant]
        lines.append(f"| {variant} | {s['rows']:,.0f} | {s['wall_s']:.2f} | {s['rows_per_second']:,.0f} | "
                     f"{s['first_byte_s']:.2f} | {s['bytes'] / 2**20:,.1f} | {m['rss_ready'] / 2**20:,.0f} | "
                     f"{m['peak'] / 2**20:,.0f} | {m['growth_x_result']:.2f} | {s['machine_busy_cores']:.2f} |")
    m = result["memory"]["summary"][QUERY_ONLY]
    lines += ["", f"The join's raw rows alone (POST /v1.0/query/train?format=arrow, {m['bytes'] / 2**20:,.1f} MiB), "
              f"fresh server: ready {m['rss_ready'] / 2**20:,.0f} MiB, peak {m['peak'] / 2**20:,.0f} MiB "
              f"(+{m['growth'] / 2**20:,.0f} MiB)."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--results-dir", type=Path, default=ROOT / "bench" / "results")
    parser.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                        help="a setting of every server started (e.g. WAREHOUSE_MEMORY_LIMIT=300MB); repeatable")
    args = parser.parse_args(argv)
    if any("=" not in item for item in args.set):
        parser.error("--set takes NAME=VALUE")
    SETTINGS.update(item.split("=", 1) for item in args.set)
    data_dir = args.results_dir / "data" / f"users-{args.users}-seed-{args.seed}"
    manifest, reused = cached_warehouse(data_dir, args.users, args.seed, log=log)
    log(f"data: {manifest['rows']} ({'reused' if reused else 'generated'})")
    server_root = args.results_dir / "data" / "servers"
    files = etl_files(server_root / "etl_repo_stream")
    result: dict[str, Any] = {"users": args.users, "repeats": args.repeats, "data": manifest, "settings": SETTINGS}
    server_dir = fresh_server_dir(server_root / f"stream-{args.users}", data_dir / "warehouse.duckdb")
    with live.running_server(server_dir, args.results_dir / "logs", **SETTINGS) as server:
        result["setup"] = ids = set_up(server, files)
        log(f"registered: {ids['registered']}")
        result["load_before"] = live.load_average()
        result.update(measure(server, ids, files, args.repeats))
    result["memory"] = fresh_peaks(server_dir, args.results_dir / "logs", ids, files, args.repeats)
    out = args.results_dir / f"training-stream-{args.users}-{time.strftime('%Y%m%dT%H%M%S')}.json"
    out.write_text(json.dumps(result, indent=2, default=str))
    print(render(result))
    log(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
