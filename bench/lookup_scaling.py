"""Lookup latency as the hot data grows: does a point lookup cost the same at 10k and 1M users?

`python -m bench.lookup_scaling --users 10000 100000 1000000` prints p50/p99 of `RealtimeStore.lookup`
on both realtime stores for the walkthrough's four-table join, an aggregate-subquery query (a
`GROUP BY user_id` over every quote and transaction, as the original notebook's query has) and the
per-user history of examples/user_history.sql (three aggregate CTEs), with the key pushed into every
source (`sql.key_pushdown`) and, for comparison, without (`--pushdown off`, or `both`, the default).
Without pushdown an aggregate the engine does not filter itself is computed over all rows per lookup.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from bench.realtime_engines import percentiles
from demo.flows import generate_flows
from demo.sources import with_demo_tables
from realtime import open_realtime_store
from sql.prepared import prepare_query
from tests.walkthrough import FOUR_TABLE_QUERY

AGGREGATE_QUERY = """
SELECT u.user_id, u.creation_date AS user_created, a.n_quotes, a.n_payments, a.paid
FROM users u
JOIN (SELECT q.user_id, count(DISTINCT q.quote_id) AS n_quotes, count(t.transaction_id) AS n_payments,
             sum(CASE WHEN t.successful THEN 1 ELSE 0 END) AS paid
      FROM quotes q LEFT JOIN transactions t ON t.ref_id = q.quote_id
      GROUP BY q.user_id) a ON a.user_id = u.user_id
"""
USER_HISTORY = (Path(__file__).resolve().parent.parent / "examples" / "user_history.sql").read_text()
QUERIES = {"walkthrough": FOUR_TABLE_QUERY, "aggregate subquery": AGGREGATE_QUERY, "aggregate CTEs": USER_HISTORY}
PUSHDOWN = {"on": (True,), "off": (False,), "both": (True, False)}
STORES = ("sqlite:///:memory:", "duckdb:///:memory:")


def measure(users: int, lookups: int, pushdown: tuple[bool, ...],
            budget: float) -> list[tuple[str, str, bool, int, dict[int, float]]]:
    """(store, query, pushed, lookups made, percentiles in ms) for up to `lookups` random users' lookups at
    `users` users, each variant stopped after `budget` seconds (a lookup that reads every row is slow)."""
    frames = generate_flows(int(users / 0.8), seed=1)
    ids = frames["users"]["user_id"].to_numpy()
    rows = []
    for url in STORES:
        store = open_realtime_store(url)
        with_demo_tables(realtime=store)
        prepared = {name: prepare_query(sql) for name, sql in QUERIES.items()}
        for query in prepared.values():  # what saving the query indexes
            for table, column in query.join_columns(store.tables()) | store.lookup_columns(query):
                store.index(table, column)
        store.append(frames)
        picks = np.random.default_rng(2).choice(ids, size=lookups)
        for name, query in prepared.items():
            for pushed in pushdown:
                store.key_pushdown = pushed
                samples = _lookup_samples(store, query, picks, budget)
                rows.append((url, name, pushed, len(samples), percentiles(samples)))
        store.close()
    return rows


def _lookup_samples(store, query, users, budget: float) -> list[float]:
    store.lookup(query, "user_id", users[0], 100)
    samples, stop = [], time.perf_counter() + budget
    for user in users:
        start = time.perf_counter()
        store.lookup(query, "user_id", user, 100)
        samples.append(time.perf_counter() - start)
        if start > stop:
            break
    return samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--lookups", type=int, default=200, help="per store, query and size")
    parser.add_argument("--pushdown", choices=PUSHDOWN, default="both",
                        help="push the key into every source (on), only filter the query's result (off), or both")
    parser.add_argument("--budget", type=float, default=20.0, help="seconds of lookups per store, query and size")
    args = parser.parse_args()
    print("| users | REALTIME_URL | query | key pushdown | lookups | p50 ms | p99 ms |")
    print("|---|---|---|---|---|---|---|")
    for users in args.users:
        for url, name, pushed, n, p in measure(users, args.lookups, PUSHDOWN[args.pushdown], args.budget):
            print(f"| {users} | `{url}` | {name} | {'on' if pushed else 'off'} | {n} | {p[50]:.3f} | {p[99]:.3f} |",
                  flush=True)


if __name__ == "__main__":
    main()
