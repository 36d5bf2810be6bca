"""Point lookups of the walkthrough's four-table join: the SQLite and DuckDB realtime stores.

Why the default realtime store is SQLite: `python -m bench.realtime_engines --users 100000`.
Both stores hold the same generated rows with the same indexes and answer the
saved query the way the service asks it (`RealtimeStore.lookup`, typed DataFrame
out). The variants alternate in rounds so machine noise falls on both alike.
"""
from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

from demo.flows import generate_flows
from demo.sources import with_demo_tables
from sql.prepared import prepare_query
from realtime import open_realtime_store
from tests.walkthrough import FOUR_TABLE_QUERY


def percentiles(samples: list[float]) -> dict[int, float]:
    ordered = sorted(samples)
    return {p: ordered[max(0, int(len(ordered) * p / 100) - 1)] * 1000 for p in (50, 95, 99)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--lookups", type=int, default=2000, help="per variant")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    frames = generate_flows(int(args.users / 0.8), seed=1)
    stores = {url: open_realtime_store(url) for url in ("sqlite:///:memory:", "duckdb:///:memory:")}
    prepared = prepare_query(FOUR_TABLE_QUERY)
    for store in stores.values():
        with_demo_tables(realtime=store)
        for table, column in prepared.join_columns(store.tables()):
            store.index(table, column)
        store.append(frames)
    users = frames["users"]["user_id"].to_numpy()
    rng = np.random.default_rng(2)
    results: dict[str, list[float]] = {url: [] for url in stores}
    for _ in range(args.rounds):
        for url, store in stores.items():
            picks = rng.choice(users, size=args.lookups // args.rounds)
            for user in picks[:20]:
                store.lookup(prepared, "user_id", user, 100)
            for user in picks:
                start = time.perf_counter()
                store.lookup(prepared, "user_id", user, 100)
                results[url].append(time.perf_counter() - start)
    print(f"{len(users)} users, {args.lookups} lookups per store in {args.rounds} alternating rounds")
    print("| REALTIME_URL | p50 ms | p95 ms | p99 ms | lookups/s (one thread) |")
    print("|---|---|---|---|---|")
    for url, samples in results.items():
        p = percentiles(samples)
        print(f"| `{url}` | {p[50]:.3f} | {p[95]:.3f} | {p[99]:.3f} | {1 / statistics.mean(samples):.0f} |")


if __name__ == "__main__":
    main()
