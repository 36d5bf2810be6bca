"""What ETL isolation costs: the example ETL on one served row, in process and in worker processes.

`python -m bench.etl_isolation`. The row comes the way `extract/realtime` gets it: the
walkthrough's four-table join looked up in the SQLite realtime store for one user;
the ETL is examples/etl_repo/etls/quote_features.py. Three runners, alternating in
rounds so machine noise falls on all alike: in process without a time limit (the ETL
runs on the caller's thread), in process with the 30 s limit (one hop to an ETL
thread), and isolated (two warm workers, 2048 MiB, the same limit). Then the one-off
costs: starting a pool, replacing a dead worker, and fit + run on the whole join as
`extract/train` does.

Heavy imports live inside functions: a worker re-imports this module (multiprocessing
prepares ``__main__``), and a worker of `python -m app` imports nothing of the kind.
"""
from __future__ import annotations

import argparse
import hashlib
import statistics
import time
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parent.parent
ETL = ROOT / "examples" / "etl_repo" / "etls" / "quote_features.py"
FITTED_ETL = ROOT / "examples" / "etl_repo" / "etls" / "fitted_features.py"
DIE = ("import os\nfrom extraction.etl_contract import BaseEtl\n\n"
       "class Etl(BaseEtl):\n    def transform(self, df):\n        os.kill(os.getpid(), 9)\n")


def percentiles(samples: list[float]) -> dict[int, float]:
    ordered = sorted(samples)
    return {p: ordered[max(0, int(len(ordered) * p / 100) - 1)] * 1e6 for p in (50, 95, 99)}


def timed(call: Callable[[], Any]) -> float:
    start = time.perf_counter()
    call()
    return time.perf_counter() - start


def data(users: int, rows: int) -> tuple[Any, list[Any]]:
    """The join of every flow (the training set) and `rows` one-row lookups of it (serving)."""
    import numpy as np

    from demo.flows import generate_flows
    from demo.sources import with_demo_tables
    from sql.prepared import prepare_query
    from warehouse import open_warehouse
    from realtime import open_realtime_store

    query = (ROOT / "examples" / "four_table_join.sql").read_text()
    frames = generate_flows(int(users / 0.8), seed=1)
    warehouse = open_warehouse("duckdb:///:memory:")
    store = open_realtime_store("sqlite:///:memory:")
    with_demo_tables(warehouse, store)
    warehouse.append(frames)
    training = warehouse.query(prepare_query(query, warehouse.dialect).sql_for(warehouse.dialect))
    store.append(frames)
    prepared = prepare_query(query)
    for table, column in prepared.join_columns(store.tables()):
        store.index(table, column)
    picks = np.random.default_rng(2).choice(training["user_id"].to_numpy(), size=rows, replace=False)
    lookups = [store.lookup(prepared, "user_id", user, 100) for user in picks]
    warehouse.close()
    store.close()
    return training, lookups


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=100_000, help="rows of the training join")
    parser.add_argument("--calls", type=int, default=2000, help="per runner")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()

    import pickle

    from etl.isolation import IsolatedEtlPool
    from etl.runner import EtlRunner

    training, rows = data(args.users, 200)
    code = ETL.read_text()
    sha = hashlib.sha256(code.encode()).hexdigest()

    start = time.perf_counter()
    pool = IsolatedEtlPool(workers=args.workers, memory_mb=2048)
    pool_start = time.perf_counter() - start
    runners = {
        "inprocess, no time limit": EtlRunner(),
        "inprocess, 30 s limit": EtlRunner(timeout=30.0),
        f"process ({args.workers} workers), 30 s limit": EtlRunner(timeout=30.0, isolation=pool),
    }
    results: dict[str, list[float]] = {name: [] for name in runners}
    per_round = args.calls // args.rounds
    for round_number in range(args.rounds):
        for name, runner in runners.items():
            for row in rows[:20]:
                runner.run("quote_features", code, sha, row)
            for i in range(per_round):
                row = rows[(i + round_number) % len(rows)]
                results[name].append(timed(lambda: runner.run("quote_features", code, sha, row)))

    print(f"examples/etl_repo/etls/quote_features.py on one served row, {per_round * args.rounds} calls "
          f"per runner in {args.rounds} alternating rounds, one thread")
    print("| runner | p50 µs | p95 µs | p99 µs | calls/s (one thread) |")
    print("|---|---|---|---|---|")
    summary = {}
    for name, samples in results.items():
        p = summary[name] = percentiles(samples)
        print(f"| {name} | {p[50]:.0f} | {p[95]:.0f} | {p[99]:.0f} | {1 / statistics.mean(samples):,.0f} |")
    base, limited, isolated = summary.values()
    print(f"added by the time limit (thread hop): p50 {limited[50] - base[50]:+.0f} µs, "
          f"p99 {limited[99] - base[99]:+.0f} µs")
    print(f"added by isolation: p50 {isolated[50] - base[50]:+.0f} µs, p99 {isolated[99] - base[99]:+.0f} µs")

    row = rows[0]
    transfer = [timed(lambda: pickle.loads(pickle.dumps(row, protocol=5))) for _ in range(2000)]
    print(f"one row through pickle (dumps + loads, each way): {statistics.median(transfer) * 1e6:.0f} µs")

    runner = runners[f"process ({args.workers} workers), 30 s limit"]
    replaced = []
    for _ in range(3):
        try:
            runner.run("die", DIE, hashlib.sha256(DIE.encode()).hexdigest(), row)
        except Exception:  # noqa: BLE001 - the worker died, as meant
            pass
        for _ in range(args.workers):  # whichever worker is the new one has to answer once
            replaced.append(timed(lambda: runner.run("quote_features", code, sha, row)))
    print(f"pool of {args.workers} started in {pool_start * 1000:.0f} ms (includes the fork server's first "
          f"start); first call on a replacement worker: {max(replaced) * 1000:.1f} ms")

    fitted = FITTED_ETL.read_text()
    fitted_sha = hashlib.sha256(fitted.encode()).hexdigest()
    print(f"extract/train, fitted_features.py fit + run on the whole join ({len(training):,} rows), median of 3:")
    for name in ("inprocess, no time limit", f"process ({args.workers} workers), 30 s limit"):
        runner = runners[name]

        def train() -> None:
            state = runner.fit("fitted", fitted, fitted_sha, training)
            runner.run("fitted", fitted, fitted_sha, training, state)

        train()
        print(f"  {name}: {statistics.median(timed(train) for _ in range(3)) * 1000:.0f} ms")
    for runner in runners.values():
        runner.close()


if __name__ == "__main__":
    main()
