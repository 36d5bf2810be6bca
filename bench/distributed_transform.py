"""A batched Arrow training set with its transform in process vs on a Dask LocalCluster, alternating.

    .venv/bin/python -m bench.distributed_transform --users 100000 --repeats 3
    .venv/bin/python -m bench.distributed_transform --users 100000 --repeats 3 --workers 2

One service (`create_app`, in this process) on a copy of bench/datagen.py's warehouse (cached by users
and seed), its sources declared with a one-minute hot window (start hydrates almost nothing), the
four-table join saved and the example ETL declaring ``batchable = True`` registered. Then
``POST /v1.0/extract/train?format=arrow`` (through Flask's test client: no socket, the same request
path otherwise) alternates between two variants of the same service:

- ``in_process``: no training engine, each batch's transform in this process (TRAINING_ENGINE_URL=local);
- ``dask_local``: the service's engine from ``TRAINING_ENGINE_URL=dask+local://?workers=N`` (N worker
  processes of one thread, loopback), each batch's transform on a worker.

Reported per variant (medians of the repeats): rows, wall seconds to the last byte, rows/s, and the
ratio. The service's start with its cluster is reported apart, and one warm-up request per variant
(each worker loads the ETL once) is left out. Writes bench/results/distributed-transform-*.json.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import pyarrow as pa

from bench import live
from bench.datagen import cached_warehouse
from bench.run import ARROW_TYPE, QUERY, fresh_server_dir, median, rotated
from demo.sources import demo_source_declarations

ROOT = Path(__file__).resolve().parent.parent
HOT_WINDOW_SECONDS = 60
VARIANTS = ("in_process", "dask_local")


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def build(data_dir: Path, repo: Path, workers: int) -> tuple[Any, Any, dict[str, Any]]:
    """The app (engine: a LocalCluster of `workers`), its service, and the ids of the saved join and ETL."""
    from app import create_app

    started = time.perf_counter()
    app = create_app({"DATA_DIR": str(data_dir), "AUTH": "off", "DEMO_SOURCES": False,
                      "MAX_RESPONSE_ROWS": 1_000_000_000, "QUERY_TIMEOUT_SECONDS": 600.0,
                      "STATS_FLUSH_SECONDS": 0.0, "TRAINING_ENGINE_URL": f"dask+local://?workers={workers}"})
    ready = time.perf_counter() - started
    for declaration in demo_source_declarations():
        _json(app, "/v1.0/sources", {**declaration, "hot_window_seconds": HOT_WINDOW_SECONDS})
    query = _json(app, "/v1.0/query/train?save=true&include_data=false", {"query": QUERY, "query_name": "quote_join"})
    etl = repo / "etls" / "quote_features.py"
    etl.write_text(etl.read_text() + "\nEtl.batchable = True\n")
    _commit(repo)
    body = {"query_id": query["query_id"], "etl_path": str(etl)}
    registered = _json(app, "/v1.0/extract/train?save=true&include_data=false", body)
    return app, app.extensions["feature_service"], {"body": body, "etl_id": registered["etl_id"],
                                                   "app_ready_s": round(ready, 2)}


def _json(app: Any, path: str, body: dict[str, Any]) -> dict[str, Any]:
    """POST `body` through the test client; its JSON answer, or RuntimeError unless 200/201."""
    response = app.test_client().post(path, json=body)
    if response.status_code not in (200, 201):
        raise RuntimeError(f"{path} → {response.status_code}: {response.get_data(as_text=True)[:300]}")
    return response.get_json()


def _commit(repo: Path) -> None:
    import subprocess

    git = ["git", "-C", str(repo), "-c", "user.name=bench", "-c", "user.email=bench@localhost",
           "-c", "commit.gpgsign=false"]
    subprocess.run(git + ["commit", "-qam", "Batchable"], check=True)


def train_once(app: Any, body: dict[str, Any]) -> dict[str, Any]:
    """One Arrow training set, read whole: wall seconds, rows, rows/s, bytes."""
    client = app.test_client()
    started = time.perf_counter()
    response = client.post("/v1.0/extract/train?format=arrow", json=body, headers={"Accept": ARROW_TYPE})
    data = response.get_data()
    wall = time.perf_counter() - started
    if response.status_code != 200:
        raise RuntimeError(f"extract/train → {response.status_code}: {data[:300]!r}")
    from client import transport

    rows = transport.read_arrow_stream(data).num_rows  # raises if the stream ended with an error
    return {"rows": rows, "wall_s": round(wall, 3), "rows_per_second": round(rows / wall), "bytes": len(data),
            "batches": sum(1 for _ in pa.ipc.open_stream(data)) - 1}


def measure(app: Any, service: Any, body: dict[str, Any], repeats: int) -> dict[str, Any]:
    engine = service.training_engine
    runs: dict[str, list[dict[str, Any]]] = {variant: [] for variant in VARIANTS}
    warm = {}
    for variant in VARIANTS:  # warm-up: each worker imports the modules and loads the ETL once
        service.training_engine = engine if variant == "dask_local" else None
        warm[variant] = train_once(app, body)
    for repeat in range(repeats):
        for variant in rotated(list(VARIANTS), repeat):
            service.training_engine = engine if variant == "dask_local" else None
            run = train_once(app, body)
            run["load_average"] = live.load_average()[0]
            log(f"    [{repeat + 1}/{repeats}] {variant:10} {run['rows']:>9,} rows in {run['batches']} batches "
                f"{run['wall_s']:6.2f} s {run['rows_per_second']:>10,} rows/s  load {run['load_average']:.2f}")
            runs[variant].append(run)
    service.training_engine = engine
    summary = {variant: {key: median([run[key] for run in items]) for key in ("rows", "wall_s", "rows_per_second")}
               for variant, items in runs.items()}
    return {"warm_up": warm, "runs": runs, "summary": summary}


def render(result: dict[str, Any]) -> str:
    summary = result["summary"]
    ratio = summary["dask_local"]["rows_per_second"] / summary["in_process"]["rows_per_second"]
    lines = [f"{result['users']:,} users, {result['workers']} Dask workers, median of {result['repeats']} "
             f"(alternating), load average before {result['load_before'][0]:.2f}; service with its cluster ready in "
             f"{result['setup']['app_ready_s']:.1f} s", "",
             "| variant | rows | wall s | rows/s |", "|---|---|---|---|"]
    for variant, s in summary.items():
        lines.append(f"| {variant} | {s['rows']:,.0f} | {s['wall_s']:.2f} | {s['rows_per_second']:,.0f} |")
    lines += ["", f"dask_local ÷ in_process rows/s: {ratio:.2f}"]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--results-dir", type=Path, default=ROOT / "bench" / "results")
    args = parser.parse_args(argv)
    data_dir = args.results_dir / "data" / f"users-{args.users}-seed-{args.seed}"
    manifest, reused = cached_warehouse(data_dir, args.users, args.seed, log=log)
    log(f"data: {manifest['rows']} ({'reused' if reused else 'generated'})")
    server_root = args.results_dir / "data" / "servers"
    repo = server_root / "etl_repo_distributed"
    live.make_etl_repo(repo)
    server_dir = fresh_server_dir(server_root / f"distributed-{args.users}", data_dir / "warehouse.duckdb")
    from app import close_app

    app, service, setup = build(server_dir, repo, args.workers)
    try:
        result: dict[str, Any] = {"users": args.users, "workers": args.workers, "repeats": args.repeats,
                                  "data": manifest, "setup": {k: v for k, v in setup.items() if k != "body"},
                                  "load_before": live.load_average()}
        result.update(measure(app, service, setup["body"], args.repeats))
    finally:
        close_app(app)
    out = args.results_dir / f"distributed-transform-{args.users}-{time.strftime('%Y%m%dT%H%M%S')}.json"
    out.write_text(json.dumps(result, indent=2, default=str))
    print(render(result))
    log(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
