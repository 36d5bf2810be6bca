"""The service benchmark: realtime latency and throughput, training sets, publish, at scale, over HTTP.

    bench/run_all.sh                         # 100,000 users (about 5 minutes on 2 cores)
    bench/run_all.sh --users 100000 1000000  # and 1,000,000 users (opt-in: about 5 more, ~14 GiB peak)

For each number of users: bulk-generate the data (bench/datagen.py, cached by users and seed)
into a DuckDB warehouse; start `python -m app` (waitress, production settings, AUTH=off,
DEMO_SOURCES=on: the demo's sources have no hot window, so the whole warehouse is hydrated) and time its
start; save the walkthrough's four-table join and register the example ETL; then, alternating
variants inside every repeat so machine noise falls on all alike:

- realtime: POST /v1.0/extract/realtime for random known users, one keep-alive client
  (warm-up, then --requests timed requests) and --clients concurrent clients for --seconds
  (wrk); the same for GET /v1.0/health, and for extract/realtime with AUTH=on and a serving
  key (a second server on a copy of the warehouse, first scale only);
- training: POST /v1.0/extract/train over the whole warehouse, JSON and Arrow IPC (when the
  server supports it), wall time, rows/s, peak resident memory of the server process;
- publish: PUT /v1.0/publish, flows per second, into the warehouse and the realtime store.

Writes bench/results/bench-<time>.json and .md (and latest.json / latest.md) and prints the table.
"""
from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import http.client
import json
import random
import shutil
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from bench import live, loadgen
from bench.datagen import cached_warehouse

ROOT = Path(__file__).resolve().parent.parent
QUERY = (ROOT / "examples" / "four_table_join.sql").read_text()
ARROW_TYPE = "application/vnd.apache.arrow.stream"
# Raised for the benchmark only: the default (100,000) refuses a training set of 100k users as JSON.
BENCH_SETTINGS = {"DEMO_SOURCES": "on", "MAX_RESPONSE_ROWS": "1000000000"}


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def median(values: list[float]) -> float:
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else float("nan")


def rotated(items: list[Any], by: int) -> list[Any]:
    """`items` starting at position `by`: each repeat runs the variants in another order."""
    by %= len(items)
    return items[by:] + items[:by]


# -- setup on a running server -------------------------------------------------------------------

def register(server: live.Server, etl_file: Path) -> dict[str, Any]:
    """Save the four-table join and register the example ETL (fit and run over the whole warehouse)."""
    started = time.perf_counter()
    query = server.json("POST", "/v1.0/query/train?save=true&include_data=false",
                        {"query": QUERY, "query_name": "quote_join"})
    saved = time.perf_counter()
    etl = server.json("POST", "/v1.0/extract/train?save=true&include_data=false",
                      {"query_id": query["query_id"], "etl_path": str(etl_file)}, timeout=3600)
    return {"query_id": query["query_id"], "etl_id": etl["etl_id"], "save_query_s": round(saved - started, 3),
            "register_etl_s": round(time.perf_counter() - saved, 3)}


def serving_key(server: live.Server) -> str:
    """A new key of the serving role (the server's headers carry an admin key)."""
    created = server.json("POST", "/v1.0/keys", {"name": "bench serving", "role": "serving"})
    return created["key"]


def write_bodies(path: Path, users_file: Path, ids: dict[str, Any], count: int, seed: int) -> list[bytes]:
    """`count` extract/realtime bodies for random known users, one JSON body per line (for wrk)."""
    users = users_file.read_text().split()
    picks = random.Random(seed).sample(users, min(count, len(users)))
    bodies = [json.dumps({"query_id": ids["query_id"], "etl_id": ids["etl_id"], "index_key": "user_id",
                          "index_value": user}, separators=(",", ":")) for user in picks]
    path.write_text("\n".join(bodies) + "\n")
    return [body.encode() for body in bodies]


# -- measurements --------------------------------------------------------------------------------

def realtime_phase(variants: dict[str, dict[str, Any]], args: argparse.Namespace) -> dict[str, Any]:
    """Sequential and concurrent runs of every variant, alternating, `args.repeats` times."""
    sequential: dict[str, list[dict[str, Any]]] = {name: [] for name in variants}
    concurrent: dict[str, list[dict[str, Any]]] = {name: [] for name in variants}
    names = list(variants)
    for repeat in range(args.repeats):
        for name in rotated(names, repeat):
            v = variants[name]
            log(f"    [{repeat + 1}/{args.repeats}] {name}: 1 client, {args.requests} requests")
            run = loadgen.sequential(v["server"].port, v["method"], v["path"], v["bodies"], args.requests,
                                     args.warmup, v["headers"], seed=repeat)
            run["load_average"] = live.load_average()[0]
            sequential[name].append(run)
        for name in rotated(names, repeat):
            v = variants[name]
            log(f"    [{repeat + 1}/{args.repeats}] {name}: {args.clients} clients, {args.seconds:g} s")
            with live.CpuWatch(v["server"].pid) as cpu:
                run = loadgen.concurrent(v["server"].port, v["method"], v["path"], v["body_file"], args.clients,
                                         args.seconds, v["headers"])
            run.update(server_cores=round(cpu.server_cores, 2), machine_busy_cores=round(cpu.machine_busy_cores, 2),
                       load_average=live.load_average()[0])
            concurrent[name].append(run)
    summary = {}
    for name in names:
        seq, con = sequential[name], concurrent[name]
        summary[name] = {
            "label": variants[name]["label"],
            "seq_p50_ms": median([r["p50_ms"] for r in seq]), "seq_p95_ms": median([r["p95_ms"] for r in seq]),
            "seq_p99_ms": median([r["p99_ms"] for r in seq]),
            "seq_rps": median([r["requests_per_second"] for r in seq]),
            "seq_errors": sum(r["errors"] for r in seq),
            "rps": median([r["requests_per_second"] for r in con]), "p50_ms": median([r.get("p50_ms") for r in con]),
            "p99_ms": median([r.get("p99_ms") for r in con]), "errors": sum(r["errors"] for r in con),
            "requests": sum(r["requests"] for r in con),
            "server_cores": median([r["server_cores"] for r in con]),
            "machine_busy_cores": median([r["machine_busy_cores"] for r in con]),
            "tool": con[0]["tool"] if con else None,
        }
    ratios = {}
    if "realtime" in concurrent and "health" in concurrent:
        per_run = [r["requests_per_second"] / h["requests_per_second"]
                   for r, h in zip(concurrent["realtime"], concurrent["health"])]
        ratios["realtime_to_health_rps"] = {"median": round(median(per_run), 3),
                                            "per_repeat": [round(x, 3) for x in per_run]}
    for runs in concurrent.values():
        for run in runs:
            run.pop("raw", None)
    return {"sequential": sequential, "concurrent": concurrent, "summary": summary, "ratios": ratios}


def arrow_support(server: live.Server) -> tuple[bool, str]:
    """Whether extract/train answers in Arrow IPC: the OpenAPI document and a 5-row probe."""
    documented = False
    status, _, body = server.request("GET", "/v1.0/swagger.json")
    if status == 200:
        documented = "arrow" in json.dumps(json.loads(body).get("paths", {}).get("/extract/train", {})).lower()
    probe = server.json("POST", "/v1.0/query/train?save=true&include_data=false",
                        {"query": f"SELECT * FROM ({QUERY}) AS probe LIMIT 5", "query_name": "bench arrow probe"})
    status, headers, body = server.request(
        "POST", "/v1.0/extract/train?format=arrow", {"query_id": probe["query_id"], "etl_path": server.etl_path},
        headers={"Accept": ARROW_TYPE})
    content_type = headers.get("content-type", "")
    if status == 200 and ARROW_TYPE in content_type:
        return True, "Arrow IPC stream (?format=arrow, Accept: " + ARROW_TYPE + ")"
    return False, (f"the server does not answer extract/train in Arrow IPC yet: a request with ?format=arrow "
                   f"and Accept: {ARROW_TYPE} got {status} {content_type or 'no content type'}"
                   + (" (the OpenAPI document mentions arrow)" if documented else "") + "; Arrow rows skipped")


def train_once(server: live.Server, ids: dict[str, Any], fmt: str) -> dict[str, Any]:
    """One extract/train over the whole warehouse: wall time, bytes, rows, peak RSS of the server."""
    import orjson
    import pyarrow as pa

    path = "/v1.0/extract/train" + ("?format=arrow" if fmt == "arrow" else "")
    accept = ARROW_TYPE if fmt == "arrow" else "application/json"
    body = json.dumps({"query_id": ids["query_id"], "etl_path": server.etl_path}).encode()
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=3600)
    try:
        with live.MemoryWatch(server.pid) as memory, live.CpuWatch(server.pid) as cpu:
            started = time.perf_counter()
            connection.request("POST", path, body=body, headers={**server.headers, "Accept": accept,
                                                                 "Content-Type": "application/json"})
            response = connection.getresponse()
            first_byte = time.perf_counter() - started
            data = response.read()
            wall = time.perf_counter() - started
    finally:
        connection.close()
    if response.status != 200:
        raise RuntimeError(f"extract/train ({fmt}) → {response.status}: {data[:500].decode(errors='replace')}")
    parse_started = time.perf_counter()
    if fmt == "arrow":
        rows = pa.ipc.open_stream(data).read_all().num_rows
    else:
        rows = len(orjson.loads(data)["data"])
    parse = time.perf_counter() - parse_started
    return {"format": fmt, "rows": rows, "wall_s": round(wall, 3), "first_byte_s": round(first_byte, 3),
            "rows_per_second": round(rows / wall), "bytes": len(data), "client_parse_s": round(parse, 3),
            "server_rss_before": memory.baseline, "server_peak_rss": memory.peak,
            "peak_from": "VmHWM (reset before the request)" if memory.hwm_reset else "VmRSS polled every 20 ms",
            "server_cpu_s": round(cpu.server_cores * wall, 2), "machine_busy_cores": round(cpu.machine_busy_cores, 2),
            "load_average": live.load_average()[0]}


def training_phase(server: live.Server, ids: dict[str, Any], repeats: int) -> dict[str, Any]:
    supported, note = arrow_support(server)
    formats = ["json", "arrow"] if supported else ["json"]
    runs: dict[str, list[dict[str, Any]]] = {fmt: [] for fmt in formats}
    train_once(server, ids, formats[0])  # warm-up: the first run loads the ETL and fills caches
    for repeat in range(repeats):
        for fmt in rotated(formats, repeat):
            log(f"    [{repeat + 1}/{repeats}] extract/train, {fmt}")
            runs[fmt].append(train_once(server, ids, fmt))
    summary = {fmt: {key: median([r[key] for r in rs]) for key in
                     ("rows", "wall_s", "first_byte_s", "rows_per_second", "bytes", "client_parse_s",
                      "server_rss_before", "server_peak_rss", "server_cpu_s", "machine_busy_cores")} for fmt, rs in runs.items()}
    return {"arrow_supported": supported, "arrow_note": note, "runs": runs, "summary": summary}


def publish_phase(server: live.Server, sizes: list[int], repeats: int) -> dict[str, Any]:
    """PUT /v1.0/publish of each size, alternating sizes, `repeats` times; flows and rows per second."""
    runs: dict[int, list[dict[str, Any]]] = {size: [] for size in sizes}
    seed = 10_000
    for repeat in range(repeats):
        for size in rotated(sizes, repeat):
            seed += 1
            started = time.perf_counter()
            result = server.json("PUT", f"/v1.0/publish?n_flows={size}&seed={seed}", timeout=3600)
            seconds = time.perf_counter() - started
            rows = sum(result["written"].values())
            runs[size].append({"seconds": round(seconds, 4), "flows_per_second": round(size / seconds),
                               "rows_per_second": round(rows / seconds), "rows": rows})
    return {"runs": {str(k): v for k, v in runs.items()},
            "summary": {str(size): {"seconds": median([r["seconds"] for r in rs]),
                                    "flows_per_second": median([r["flows_per_second"] for r in rs]),
                                    "rows_per_second": median([r["rows_per_second"] for r in rs])}
                        for size, rs in runs.items()}}


# -- one scale -----------------------------------------------------------------------------------

def fresh_server_dir(folder: Path, warehouse: Path) -> Path:
    """A data dir holding a copy of the generated warehouse (publishes and the catalog land in the copy)."""
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    shutil.copyfile(warehouse, folder / "warehouse.duckdb")
    return folder


def server_info(server: live.Server) -> dict[str, Any]:
    return {"ready_s": round(server.ready_seconds, 2),
            "hydrated_s": round(server.hydrated_seconds, 2) if server.hydrated_seconds is not None else None,
            "hydrated_rows": server.hydrated_rows, "rss_after_start": server.rss_at_ready,
            "peak_rss_during_start": server.peak_rss_at_ready, "log": str(server.log_path)}


def run_scale(users: int, args: argparse.Namespace, with_auth: bool) -> dict[str, Any]:
    result: dict[str, Any] = {"users": users}
    data_dir = args.data_dir / f"users-{users}-seed-{args.seed}"
    log(f"\n== {users:,} users: data ({data_dir})")
    started = time.perf_counter()
    manifest, reused = cached_warehouse(data_dir, users, args.seed, log=log)
    result["data"] = {**manifest, "reused": reused, "seconds": round(time.perf_counter() - started, 2)}
    log(f"  {'reused' if reused else 'generated'}: {manifest['rows']} ({manifest['transactions_per_user']:.1f} "
        f"transactions per user)")

    settings = {**BENCH_SETTINGS, **({"THREADS": str(args.threads)} if args.threads else {})}
    server_root = args.data_dir / "servers"
    etl_file = live.make_etl_repo(server_root / "etl_repo")
    log("  starting the server (AUTH=off): hydrating the realtime store from the whole warehouse")
    result["load_before_start"] = live.load_average()
    with live.running_server(fresh_server_dir(server_root / f"off-{users}", data_dir / "warehouse.duckdb"),
                             args.results_dir / "logs", **settings) as server:
        server.etl_path = str(etl_file)
        result["server"] = server_info(server)
        log(f"  ready in {server.ready_seconds:.1f} s (hydrated at {server.hydrated_seconds or float('nan'):.1f} s), "
            f"RSS {server.rss_at_ready / 2**30:.2f} GiB, peak {server.peak_rss_at_ready / 2**30:.2f} GiB")
        ids = register(server, etl_file)
        result["setup"] = ids
        log(f"  query saved in {ids['save_query_s']} s, ETL registered in {ids['register_etl_s']} s")
        body_file = args.results_dir / f"bodies-{users}.jsonl"
        bodies = write_bodies(body_file, data_dir / "users.txt", ids, 10_000, args.seed)
        variants = {
            "realtime": {"label": "POST /v1.0/extract/realtime", "server": server, "method": "POST",
                         "path": "/v1.0/extract/realtime", "bodies": bodies, "body_file": body_file, "headers": {}},
            "health": {"label": "GET /v1.0/health", "server": server, "method": "GET", "path": "/v1.0/health",
                       "bodies": None, "body_file": None, "headers": {}},
        }
        auth_context = _auth_server(users, data_dir, server_root, etl_file, args, settings) if with_auth else None
        with auth_context or contextlib.nullcontext():
            if auth_context is not None:
                auth_server = auth_context.server
                result["server_auth"] = server_info(auth_server)
                variants["realtime_auth"] = {
                    "label": "POST /v1.0/extract/realtime, AUTH=on (serving key)", "server": auth_server,
                    "method": "POST", "path": "/v1.0/extract/realtime", "bodies": bodies, "body_file": body_file,
                    "headers": {"Authorization": auth_context.headers["Authorization"]}}
            log(f"  realtime ({args.repeats} repeats, variants alternating)")
            result["load_before_realtime"] = live.load_average()
            result["realtime"] = realtime_phase(variants, args)
        log("  training (extract/train over the whole warehouse)")
        result["load_before_training"] = live.load_average()
        result["training"] = training_phase(server, ids, args.repeats)
        if not result["training"]["arrow_supported"]:
            log(f"  {result['training']['arrow_note']}")
        log("  publish")
        result["publish"] = publish_phase(server, args.publish_sizes, args.repeats)
        result["server_peak_rss_overall"] = live.process_status(server.pid)["VmHWM"]
    shutil.rmtree(server_root, ignore_errors=True)  # the copies; the generated warehouse stays cached
    return result


class _AuthServer:
    """A second server with AUTH=on on its own copy of the warehouse, with the query and ETL registered."""

    def __init__(self, context: Any, server: live.Server, headers: dict[str, str]):
        self.context, self.server, self.headers = context, server, headers

    def __enter__(self) -> "_AuthServer":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.context.__exit__(*exc)


def _auth_server(users: int, data_dir: Path, server_root: Path, etl_file: Path, args: argparse.Namespace,
                 settings: dict[str, str]) -> _AuthServer:
    import secrets

    admin_key = "bench-admin-" + secrets.token_hex(16)
    log("  starting a second server (AUTH=on, ADMIN_KEY) for the authenticated row")
    context = live.running_server(fresh_server_dir(server_root / f"auth-{users}", data_dir / "warehouse.duckdb"),
                                  args.results_dir / "logs", AUTH="on", ADMIN_KEY=admin_key, **settings)
    server = context.__enter__()
    try:
        server.etl_path = str(etl_file)
        server.headers = {"Authorization": f"Bearer {admin_key}"}
        register(server, etl_file)
        key = serving_key(server)
        server.headers = {}
    except BaseException:
        context.__exit__(*sys.exc_info())
        raise
    return _AuthServer(context, server, {"Authorization": f"Bearer {key}"})


# -- output --------------------------------------------------------------------------------------

def _gib(n: float) -> str:
    return f"{n / 2**30:.2f}"


def _f(value: Any, digits: int = 2) -> str:
    if value is None or (isinstance(value, float) and value != value):
        return "–"
    if isinstance(value, float) and abs(value) >= 1000:
        return f"{value:,.0f}"
    return f"{value:,.{digits}f}" if isinstance(value, float) else f"{value:,}"


def render_markdown(results: dict[str, Any]) -> str:
    m = results["machine"]
    p = m["packages"]
    lines = [
        f"Machine: {m['cores']} cores ({m['cpu_model']}), {m['memory_gib']} GiB, Linux {m['kernel']}, "
        f"Python {m['python']}, SQLite {m['sqlite']}; waitress {p['waitress']}, flask {p['flask']}, "
        f"duckdb {p['duckdb']}, pandas {p['pandas']}, pyarrow {p['pyarrow']}, orjson {p['orjson']}; "
        f"load generator: {m['wrk'] or 'python fallback (wrk not installed)'}.",
        f"Load average (1 min) before measuring: {results['quiet']['load_average'][0]:.2f}"
        f"{'' if results['quiet']['quiet'] else ' (above the threshold: the machine was busy)'}; "
        f"after: {results['load_after'][0]:.2f}. Command: `{results['command']}` ({results['elapsed_s'] / 60:.1f} min).",
    ]
    for scale in results["scales"]:
        users = scale["users"]
        d = scale["data"]
        s = scale["server"]
        rows = d["rows"]
        lines += [
            "", f"### {users:,} users",
            "",
            f"Data: {rows['users']:,} users, {rows['quotes']:,} quotes, {rows['transactions']:,} transactions "
            f"({d['transactions_per_user']:.1f} per user), {rows['policies']:,} policies; bulk generator "
            f"{d['generate_rows_per_second']:,} rows/s, DuckDB warehouse append {d['append_rows_per_second']:,} rows/s"
            f"{' (cached from an earlier run)' if d['reused'] else ''}. Server start (DEMO_SOURCES=on, every row hydrated): "
            f"ready in {s['ready_s']:.1f} s (hydration logged at {_f(s['hydrated_s'], 1)} s after spawn), "
            f"RSS {_gib(s['rss_after_start'])} GiB after start, peak {_gib(s['peak_rss_during_start'])} GiB. "
            f"Query saved in {scale['setup']['save_query_s']:.2f} s, ETL registered (fit + run over the "
            f"warehouse) in {scale['setup']['register_etl_s']:.2f} s.",
        ]
        lines += ["", "Load average (1 min) before: server start {:.2f}, realtime {:.2f}, training {:.2f} (the later "
                      "ones include this benchmark's own earlier phases; 'machine busy' below is measured during "
                      "each run).".format(
            scale["load_before_start"][0], scale["load_before_realtime"][0], scale["load_before_training"][0])]
        rt = scale["realtime"]
        any_summary = next(iter(rt["summary"].values()))
        lines += [
            "",
            f"Realtime over HTTP (waitress, THREADS={results['threads']}), median of {results['repeats']} "
            f"alternating repeats; 1 client: {results['requests']:,} requests after {results['warmup']} warm-up; "
            f"{results['clients']} clients: {any_summary['tool']}.",
            "",
            f"| endpoint | 1 client req/s | p50 ms | p95 ms | p99 ms | {results['clients']} clients req/s | p50 ms "
            "| p99 ms | errors | server CPU (cores) | machine busy (cores) |",
            "|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for row in rt["summary"].values():
            lines.append(
                f"| {row['label']} | {_f(row['seq_rps'], 0)} | {_f(row['seq_p50_ms'])} | {_f(row['seq_p95_ms'])} | {_f(row['seq_p99_ms'])} "
                f"| {_f(row['rps'], 0)} | {_f(row['p50_ms'])} | {_f(row['p99_ms'])} "
                f"| {row['errors'] + row['seq_errors']} | {_f(row['server_cores'])} | {_f(row['machine_busy_cores'])} |")
        ratio = rt["ratios"].get("realtime_to_health_rps")
        if ratio:
            lines += ["", f"Realtime req/s ÷ health req/s: **{ratio['median']:.2f}** (per repeat: "
                          f"{', '.join(f'{x:.2f}' for x in ratio['per_repeat'])})."]
        tr = scale["training"]
        lines += [
            "",
            f"Training: POST /v1.0/extract/train over the whole warehouse, median of {results['repeats']}"
            f"{', formats alternating' if tr['arrow_supported'] else ''}. Wall time is request to last byte; "
            "peak RSS is the server process's during the request.",
            "",
            "| format | rows | wall s | rows/s | first byte s | response MB | client parse s | server CPU s "
            "| server RSS before GiB | server peak RSS GiB | machine busy (cores) |",
            "|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for fmt, row in tr["summary"].items():
            lines.append(
                f"| {'JSON' if fmt == 'json' else 'Arrow IPC'} | {row['rows']:,.0f} | {row['wall_s']:.2f} "
                f"| {row['rows_per_second']:,.0f} | {row['first_byte_s']:.2f} | {row['bytes'] / 1e6:,.1f} "
                f"| {row['client_parse_s']:.2f} | {row['server_cpu_s']:.1f} | {_gib(row['server_rss_before'])} "
                f"| {_gib(row['server_peak_rss'])} | {_f(row['machine_busy_cores'])} |")
        if not tr["arrow_supported"]:
            lines.append(f"| Arrow IPC | skipped: {tr['arrow_note']} | | | | | | | | | |")
        pub = scale["publish"]["summary"]
        lines += ["", "Publish: PUT /v1.0/publish (generate, warehouse, realtime store), median of "
                      f"{results['repeats']}, into the store above.", "",
                  "| flows per call | seconds | flows/s | rows/s |", "|---|---|---|---|"]
        for size, row in pub.items():
            lines.append(f"| {int(size):,} | {row['seconds']:.3f} | {row['flows_per_second']:,.0f} "
                         f"| {row['rows_per_second']:,.0f} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, nargs="+", default=[100_000],
                        help="scales to run, e.g. --users 100000 1000000 (default: 100000)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3, help="repeats of every measurement (medians reported)")
    parser.add_argument("--requests", type=int, default=2000, help="timed requests of the one-client runs")
    parser.add_argument("--warmup", type=int, default=200, help="untimed requests before them")
    parser.add_argument("--clients", type=int, default=8, help="concurrent clients (wrk connections)")
    parser.add_argument("--seconds", type=float, default=20.0, help="duration of each concurrent run")
    parser.add_argument("--threads", type=int, help="THREADS of the server (default: the service's default)")
    parser.add_argument("--publish-sizes", type=int, nargs="+", default=[1_000, 50_000])
    parser.add_argument("--no-auth", action="store_true", help="skip the AUTH=on row")
    parser.add_argument("--max-load", type=float, default=1.5, help="wait until the 1-min load average is below")
    parser.add_argument("--max-wait", type=float, default=1200.0, help="…for at most this many seconds")
    parser.add_argument("--results-dir", type=Path, default=ROOT / "bench" / "results")
    parser.add_argument("--data-dir", type=Path, help="generated warehouses (default: <results-dir>/data)")
    args = parser.parse_args(argv)
    args.data_dir = args.data_dir or args.results_dir / "data"
    args.results_dir.mkdir(parents=True, exist_ok=True)

    started = time.monotonic()
    from app.settings import load_settings

    results: dict[str, Any] = {
        "command": "bench/run_all.sh " + " ".join(sys.argv[1:] if argv is None else argv),
        "started_at": dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        "machine": live.machine(), "repeats": args.repeats, "requests": args.requests, "warmup": args.warmup,
        "clients": args.clients, "seconds": args.seconds,
        "threads": args.threads or load_settings(environ={})["THREADS"], "bench_settings": BENCH_SETTINGS,
        "load_generator": "wrk" if loadgen.wrk_available() else "python fallback (wrk not installed)",
    }
    m = results["machine"]
    log(f"machine: {m['cores']} cores, {m['memory_gib']} GiB, {m['cpu_model']}, Python {m['python']}, "
        f"packages {m['packages']}, wrk: {m['wrk']}")
    if not loadgen.wrk_available():
        log("wrk is not installed (bench/install_wrk.sh): concurrent load comes from the Python fallback")
    results["quiet"] = live.wait_for_quiet(args.max_load, args.max_wait, log)
    log(f"load average {results['quiet']['load_average']}")
    results["scales"] = []
    for index, users in enumerate(args.users):
        results["scales"].append(run_scale(users, args, with_auth=index == 0 and not args.no_auth))
    results["load_after"] = live.load_average()
    results["elapsed_s"] = round(time.monotonic() - started, 1)

    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    markdown = render_markdown(results)
    for name in (f"bench-{stamp}", "latest"):
        (args.results_dir / f"{name}.json").write_text(json.dumps(results, indent=2, default=str))
        (args.results_dir / f"{name}.md").write_text(markdown)
    print(markdown)
    log(f"wrote {args.results_dir / f'bench-{stamp}.json'} and .md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
