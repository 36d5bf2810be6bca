"""Bulk write speed and the cost of the SQLite store's time limit, medians over alternating rounds.

Flows per second of each part of a publish (generating the flows, appending them to a DuckDB warehouse
file, appending them to the in-memory SQLite store, empty or already holding as many flows), of a
PostgreSQL warehouse append (COPY against executemany, in a temporary database on the local server),
and the per-lookup cost of the SQLite store's progress handler (no limit against a 30 s limit):

    .venv/bin/python -m bench.bulk_writes --flows 100000 --rounds 3
    .venv/bin/python -m bench.bulk_writes --only lookups --lookups 5000

Variants of one measurement run one after the other inside each round, so load from other processes
falls on all of them alike. Parts the code under test lacks (an older checkout) are skipped.
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time
import uuid
from collections import defaultdict
from typing import Any, Callable

from demo.flows import generate_flows
from demo.sources import with_demo_tables
from warehouse.duckdb import DuckDBWarehouse
from warehouse.sql import SqlAlchemyWarehouse
from realtime.duckdb_store import DuckDBRealtimeStore
from realtime.sqlite_store import SqliteRealtimeStore
from tests.walkthrough import FOUR_TABLE_QUERY

PG_SERVER_URL = "postgresql://postgres@127.0.0.1:5432"


def timed(call: Callable[[], Any]) -> float:
    started = time.perf_counter()
    call()
    return time.perf_counter() - started


def report(title: str, n_flows: int, seconds: dict[str, list[float]]) -> None:
    print(f"\n{title} ({n_flows:,} flows, median of {len(next(iter(seconds.values())))})")
    for name, values in seconds.items():
        median = statistics.median(values)
        print(f"  {name:<58} {median * 1000:8.0f} ms  {n_flows / median:>11,.0f} flows/s")


def bulk(n_flows: int, rounds: int) -> None:
    """Each part of a publish; the SQLite store with and without rebuilding indexes after a large batch."""
    import realtime.sqlite_store as sqlite_module

    rebuild_default = getattr(sqlite_module, "REBUILD_INDEX_MIN_ROWS", None)
    seconds: dict[str, list[float]] = defaultdict(list)
    for round_ in range(rounds):
        frames: dict[str, Any] = {}
        seconds["generate_flows"].append(timed(lambda: frames.update(generate_flows(n_flows, seed=round_))))
        with tempfile.TemporaryDirectory() as folder:
            warehouse = DuckDBWarehouse(f"duckdb:///{folder}/warehouse.duckdb")
            with_demo_tables(warehouse=warehouse)
            seconds["DuckDBWarehouse.append (file)"].append(timed(lambda: warehouse.append(frames)))
            warehouse.close()
        earlier = generate_flows(n_flows, seed=10_000 + round_)  # what a full store already holds
        variants = [("", rebuild_default)] if rebuild_default is None else [
            ("", rebuild_default), (", indexes kept", 10**18)]
        for label, threshold in variants:
            if threshold is not None:
                sqlite_module.REBUILD_INDEX_MIN_ROWS = threshold
            store = SqliteRealtimeStore()
            with_demo_tables(realtime=store)
            seconds[f"SqliteRealtimeStore.append (empty{label})"].append(timed(lambda: store.append(frames)))
            store.close()
            store = SqliteRealtimeStore()
            with_demo_tables(realtime=store)
            store.append(earlier)
            seconds[f"SqliteRealtimeStore.append (holding as many{label})"].append(
                timed(lambda: store.append(frames)))
            store.close()
        if rebuild_default is not None:
            sqlite_module.REBUILD_INDEX_MIN_ROWS = rebuild_default
        store = DuckDBRealtimeStore()
        with_demo_tables(realtime=store)
        seconds["DuckDBRealtimeStore.append (empty)"].append(timed(lambda: store.append(frames)))
        store.close()
    seconds["publish = generate + warehouse + SQLite (empty)"] = [
        sum(parts) for parts in zip(seconds["generate_flows"], seconds["DuckDBWarehouse.append (file)"],
                                    seconds["SqliteRealtimeStore.append (empty)"])]
    report("Bulk writes", n_flows, seconds)


def postgres(n_flows: int, rounds: int) -> None:
    """SqlAlchemyWarehouse.append by COPY and by executemany, each into a fresh temporary database."""
    import psycopg
    from psycopg import sql

    try:
        admin = psycopg.connect(f"{PG_SERVER_URL}/test", autocommit=True, connect_timeout=3)
    except psycopg.Error as error:
        print(f"\nPostgreSQL skipped: {error}")
        return
    seconds: dict[str, list[float]] = defaultdict(list)
    with admin:
        for round_ in range(rounds):
            frames = generate_flows(n_flows, seed=round_)
            for label, copy in (("COPY", True), ("executemany", False)):
                name = f"fs_bench_{uuid.uuid4().hex}"
                admin.execute(sql.SQL("CREATE DATABASE {} TEMPLATE template0").format(sql.Identifier(name)))
                try:
                    warehouse = SqlAlchemyWarehouse(f"{PG_SERVER_URL}/{name}")
                    with_demo_tables(warehouse=warehouse)
                    if not hasattr(warehouse, "_copy"):
                        label = "append"  # an older checkout: executemany only
                    else:
                        warehouse._copy = copy
                    seconds[f"SqlAlchemyWarehouse.append ({label})"].append(timed(lambda: warehouse.append(frames)))
                    warehouse.close()
                finally:
                    admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
    report("PostgreSQL warehouse", n_flows, seconds)


def lookups(n_flows: int, n_lookups: int, rounds: int) -> None:
    """Per-lookup time of the SQLite store without a limit and with one (the progress handler), alternating."""
    from sql.prepared import prepare_query

    frames = generate_flows(n_flows, seed=1)
    users = frames["users"]["user_id"].tolist()[:n_lookups]
    prepared = prepare_query(FOUR_TABLE_QUERY)
    stores = {"no limit": SqliteRealtimeStore(), "statement_timeout=30": SqliteRealtimeStore(statement_timeout=30.0)}
    for store in stores.values():
        with_demo_tables(realtime=store)
        for table, column in prepared.join_columns(store.tables()):
            store.index(table, column)
    sql = prepared.point_lookup_sql("user_id", "sqlite", stores["no limit"].tables())
    for store in stores.values():
        store.append(frames)
    lookup_us: dict[str, list[float]] = defaultdict(list)
    run_us: dict[str, list[float]] = defaultdict(list)
    for _ in range(rounds):
        for name, store in stores.items():
            started = time.perf_counter()
            for user in users:
                store.lookup(prepared, "user_id", user, 100)
            lookup_us[name].append((time.perf_counter() - started) / len(users) * 1e6)
            started = time.perf_counter()
            for user in users:
                store._run(sql, (user,), 100)
            run_us[name].append((time.perf_counter() - started) / len(users) * 1e6)
    print(f"\nSQLite point lookups of the four-table join ({n_flows:,} flows hydrated, {len(users):,} lookups "
          f"a round, median of {rounds} alternating rounds)")
    for name in stores:
        print(f"  {name:<22} lookup() {statistics.median(lookup_us[name]):7.2f} µs   "
              f"SQL only (_run) {statistics.median(run_us[name]):6.2f} µs")
    for store in stores.values():
        store.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--flows", type=int, default=100_000, help="flows per bulk write")
    parser.add_argument("--pg-flows", type=int, default=20_000, help="flows per PostgreSQL append (0: skip)")
    parser.add_argument("--lookup-flows", type=int, default=20_000, help="flows in the store for lookups")
    parser.add_argument("--lookups", type=int, default=2_000, help="lookups per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--lookup-rounds", type=int, default=7)
    parser.add_argument("--only", choices=["bulk", "postgres", "lookups"])
    args = parser.parse_args()
    if args.only in (None, "bulk"):
        bulk(args.flows, args.rounds)
    if args.only in (None, "postgres") and args.pg_flows:
        postgres(args.pg_flows, args.rounds)
    if args.only in (None, "lookups"):
        lookups(args.lookup_flows, args.lookups, args.lookup_rounds)


if __name__ == "__main__":
    main()
