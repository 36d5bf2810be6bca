"""The request path in process: extract/realtime and /health through the WSGI app, and the same calls on
the service without HTTP, for this tree and a base commit, alternating in one run.

    .venv/bin/python -m bench.request_path [--base REV] [--flows N] [--calls C] [--rounds R] [--side-by-side]

`--base` (default: main) is exported with `git archive` into a temporary directory (nothing in this
checkout changes). Each round runs one child process per tree (alternating which goes first): it
publishes N demo flows, saves the walkthrough's four-table join and registers the example ETL, then
times C calls of each kind, one at a time, the kinds taking turns by 100, after a warm-up:
`POST /v1.0/extract/realtime` and `GET /v1.0/health` through Flask's test client (the whole WSGI app,
no network), and `FeatureService.realtime_etl` / `.health` called directly (what the HTTP layer adds
is the difference). With --side-by-side both trees' children run at once, sharing whatever else
the machine does. Prints requests/s, p50 and p99 per tree, kind and round, then the medians over
rounds.
"""
from __future__ import annotations

import argparse
import statistics
import subprocess
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from bench.realtime_vs_main import DEMO_SETUP, percentile, run_script

ROOT = Path(__file__).resolve().parent.parent
KINDS = ("extract/realtime (HTTP)", "health (HTTP)", "realtime_etl (service)", "health (service)")
CHILD = DEMO_SETUP + r'''
client, service = app.test_client(), app.extensions["feature_service"]

def body(i):
    return {"query_id": query, "etl_id": extract["etl_id"], "index_key": "user_id",
            "index_value": users[i % len(users)]}

def extract_http(i):
    assert client.post("/v1.0/extract/realtime", json=body(i)).status_code == 200

def health_http(i):
    assert client.get("/v1.0/health").status_code == 200

def extract_service(i):
    service.realtime_etl(query, extract["etl_id"], "user_id", users[i % len(users)])

def health_service(i):
    service.health()

kinds = dict(zip(KINDS, (extract_http, health_http, extract_service, health_service)))
results = {name: [] for name in kinds}
for i in range(min(calls, 300)):  # warm-up: caches, plans, the ETL class
    for call in kinds.values():
        call(i)
for block in range(0, calls, 100):  # the kinds take turns, 100 calls each, so each sees the same machine
    for name, call in kinds.items():
        for i in range(block, min(block + 100, calls)):
            started = time.perf_counter()
            call(i)
            results[name].append((time.perf_counter() - started) * 1000)
close_app(app)
print(json.dumps(results))
'''


def run_child(tree: Path, flows: int, calls: int) -> dict[str, list[float]]:
    return run_script(tree, f"KINDS = {KINDS!r}\n" + CHILD, flows, calls)


def summary(times: list[float]) -> tuple[float, float, float]:
    """Requests/s (one at a time), p50 and p99 in ms."""
    return len(times) / (sum(times) / 1000), percentile(times, 0.5), percentile(times, 0.99)


def export(rev: str, into: Path) -> None:
    """The tree of `rev` in `into`, without touching this checkout."""
    archive = subprocess.run(["git", "archive", rev], cwd=ROOT, capture_output=True, check=True).stdout
    into.mkdir()
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", default="main")
    parser.add_argument("--flows", type=int, default=2_000)
    parser.add_argument("--calls", type=int, default=2_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--side-by-side", action="store_true",
                        help="run both trees' children at the same time (one core each), not one after the other")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        base = Path(scratch) / "base"
        export(args.base, base)
        trees = {f"base ({args.base})": base, "this tree": ROOT}
        results: dict[tuple[str, str], list[tuple[float, float, float]]] = {}
        for round_ in range(args.rounds):
            order = list(trees) if round_ % 2 == 0 else list(reversed(trees))
            with ThreadPoolExecutor(len(trees) if args.side_by_side else 1) as pool:
                runs = {name: pool.submit(run_child, trees[name], args.flows, args.calls) for name in order}
                for name, run in runs.items():
                    for kind, times in run.result().items():
                        rps, p50, p99 = summary(times)
                        results.setdefault((name, kind), []).append((rps, p50, p99))
                        print(f"round {round_ + 1} {name} {kind}: {rps:.0f} req/s, p50 {p50:.3f} ms, "
                              f"p99 {p99:.3f} ms", flush=True)
    print("\n| code | call | req/s | p50 (ms) | p99 (ms) |\n|---|---|---|---|---|")
    for (name, kind), rows in results.items():
        print(f"| {name} | {kind} | {statistics.median(r[0] for r in rows):.0f} | "
              f"{statistics.median(r[1] for r in rows):.3f} | {statistics.median(r[2] for r in rows):.3f} |")


if __name__ == "__main__":
    main()
