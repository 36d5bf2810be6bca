"""extract/realtime over declared sources against the code before sources, alternating in one run.

    .venv/bin/python bench/realtime_vs_main.py [--base REV] [--flows N] [--calls C] [--rounds R]

`--base` (default: the commit before sources, ce761ea) is checked out into a temporary git worktree.
Each round runs one child process per tree (base, then this tree, alternating which goes first):
it publishes N demo flows, saves the walkthrough's four-table join, registers the example ETL and
times C in-process `POST /v1.0/extract/realtime` calls through Flask's test client (same users,
same order), then the shop example's query over its declared sources (this tree only). Prints
p50/p99 per tree and round and the medians over rounds.
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
# The demo set up in a child process: `app`, its JSON client `api`, the saved join's `query` id, the
# registered ETL's answer `extract` and its `users` shuffled (argv: flows, calls).
DEMO_SETUP = r'''
import json, random, sys, tempfile, time
from pathlib import Path
from app import close_app, create_app
from tests.conftest import JsonClient, app_config
from tests.walkthrough import FOUR_TABLE_QUERY, example_repo

flows, calls = int(sys.argv[1]), int(sys.argv[2])
work = Path(tempfile.mkdtemp())
app = create_app(app_config(work / "data", MAX_PUBLISH_FLOWS=flows, MAX_RESPONSE_ROWS=10 * flows))
api = JsonClient(app.test_client())
api.put(f"/v1.0/publish?n_flows={flows}&seed=7")
query = api.post("/v1.0/query/train?save=true&include_data=false", {"query": FOUR_TABLE_QUERY})["query_id"]
repo = example_repo(work / "repo")
extract = api.post("/v1.0/extract/train?save=true", {"query_id": query, "etl_path": str(repo.file("etls/quote_features.py"))})
users = sorted({row["user_id"] for row in extract["data"]})
random.Random(1).shuffle(users)
'''
CHILD = DEMO_SETUP + r'''
def timed(body):
    started = time.perf_counter()
    api.post("/v1.0/extract/realtime", body)
    return (time.perf_counter() - started) * 1000

for user in users[:200]:  # warm-up
    api.post("/v1.0/extract/realtime", {"query_id": query, "etl_id": extract["etl_id"], "index_key": "user_id", "index_value": user})
times = [timed({"query_id": query, "etl_id": extract["etl_id"], "index_key": "user_id", "index_value": users[i % len(users)]})
         for i in range(calls)]
close_app(app)
print(json.dumps({"ms": times}))
'''


def run_script(tree: Path, code: str, *args: Any) -> Any:
    """Run `code` with `tree`'s modules in a child process; its last line of output, parsed as JSON."""
    out = subprocess.run([sys.executable, "-c", code, *map(str, args)], cwd=tree, capture_output=True,
                         text=True, env={"PYTHONPATH": str(tree), "PATH": "/usr/bin:/bin"}, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def run_child(tree: Path, flows: int, calls: int) -> list[float]:
    return run_script(tree, CHILD, flows, calls)["ms"]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", default="ce761ea")
    parser.add_argument("--flows", type=int, default=20_000)
    parser.add_argument("--calls", type=int, default=2_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        base = Path(scratch) / "base"
        subprocess.run(["git", "worktree", "add", "--detach", str(base), args.base], cwd=ROOT, check=True,
                       capture_output=True)
        try:
            trees = {"before sources (" + args.base + ")": base, "declared sources (this tree)": ROOT}
            results: dict[str, list[tuple[float, float]]] = {name: [] for name in trees}
            for round_ in range(args.rounds):
                order = list(trees) if round_ % 2 == 0 else list(reversed(trees))
                for name in order:
                    times = run_child(trees[name], args.flows, args.calls)
                    p50, p99 = percentile(times, 0.5), percentile(times, 0.99)
                    results[name].append((p50, p99))
                    print(f"round {round_ + 1} {name}: p50 {p50:.3f} ms, p99 {p99:.3f} ms, "
                          f"{len(times) / (sum(times) / 1000):.0f} calls/s", flush=True)
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(base)], cwd=ROOT, capture_output=True)
    print("\n| code | median p50 (ms) | median p99 (ms) |\n|---|---|---|")
    for name, rows in results.items():
        print(f"| {name} | {statistics.median(r[0] for r in rows):.3f} | {statistics.median(r[1] for r in rows):.3f} |")


if __name__ == "__main__":
    main()
