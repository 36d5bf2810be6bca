"""Freshness across replicas (REPLICA_OF): from an ingest on the writer to the row served by a replica.

    .venv/bin/python -m bench.replicas --replicas 2 --ingests 200

Starts a writer and --replicas replicas (`python -m app`, WORKERS=1 each) on this machine, sharing a
fresh PostgreSQL catalog and warehouse database on --postgres and a fresh key prefix on --redis (all
dropped at the end). Then, --ingests times, ingests one new row on the writer and polls one replica
(each in turn, a fresh connection per lookup, no min_position) until it serves the row. Shown: the
delay from the ingest's answer to the first lookup that served the row (it includes that lookup's round
trip, shown too: the same lookup once more), and the ingest call itself. Processes share this machine's cores, so this is the
replica's tailing (5 ms poll, FeedTailer) plus the Redis hop, not a network's latency.
"""
from __future__ import annotations

import argparse
import contextlib
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any, Iterator

import psycopg
from psycopg import sql

from bench import loadgen
from bench.live import Server, delete_redis_keys, running_server

SOURCE = {"name": "events", "columns": [{"name": "entity", "type": "string"}, {"name": "at", "type": "integer"}],
          "entity_keys": ["entity"], "event_time": "at"}


@contextlib.contextmanager
def databases(server: str, names: list[str]) -> Iterator[list[str]]:
    """Fresh databases on the PostgreSQL `server` (no database in the URL), dropped at the end."""
    made = [f"bench_replicas_{name}_{uuid.uuid4().hex[:12]}" for name in names]
    with psycopg.connect(f"{server}/postgres", autocommit=True) as admin:
        for name in made:
            admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield [f"{server}/{name}" for name in made]
    finally:
        with psycopg.connect(f"{server}/postgres", autocommit=True) as admin:
            for name in made:
                admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def freshness(writer: Server, replicas: list[Server], ingests: int) -> dict[str, Any]:
    """Ingest one row at a time on the writer; poll a replica until it serves it."""
    query_id = writer.json("POST", "/v1.0/query/train?save=true",
                           {"query": "SELECT entity, at FROM events"})["query_id"]
    delays, calls, round_trips, polls = [], [], [], 0
    for n in range(ingests):
        entity, replica = f"e{n}", replicas[n % len(replicas)]
        sent = time.perf_counter()
        writer.json("POST", "/v1.0/sources/events/rows", {"rows": [{"entity": entity, "at": 1_700_000_000 + n}]})
        answered = time.perf_counter()
        calls.append(answered - sent)
        while True:
            polls += 1
            status, _, _ = replica.request("POST", "/v1.0/query/realtime",
                                           {"query_id": query_id, "index_key": "entity", "index_value": entity})
            if status not in (200, 404):  # 404: no row for the entity yet
                raise RuntimeError(f"the replica answered {status}")
            if status == 200:
                delays.append(time.perf_counter() - answered)
                break
        again = time.perf_counter()  # the same lookup once more, the row there: one lookup's round trip
        replica.request("POST", "/v1.0/query/realtime", {"query_id": query_id, "index_key": "entity",
                                                         "index_value": entity})
        round_trips.append(time.perf_counter() - again)
    return {"visible": loadgen.percentiles_ms(delays, (50, 99)), "max_ms": round(max(delays) * 1000, 3),
            "ingest": loadgen.percentiles_ms(calls, (50, 99)), "lookups_per_row": round(polls / ingests, 1),
            "lookup": loadgen.percentiles_ms(round_trips, (50, 99))}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--replicas", type=int, default=2)
    parser.add_argument("--ingests", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=1, help="times the measurement is repeated")
    parser.add_argument("--postgres", default="postgresql://postgres@127.0.0.1:5432")
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/0")
    args = parser.parse_args(argv)
    prefix = f"bench_replicas_{uuid.uuid4().hex}"
    with tempfile.TemporaryDirectory(prefix="bench-replicas-") as folder, \
            databases(args.postgres, ["catalog", "warehouse"]) as (catalog, warehouse):
        shared = {"CATALOG_URL": catalog, "WAREHOUSE_URL": warehouse, "FEED_URL": f"{args.redis}?prefix={prefix}",
                  "DEMO_SOURCES": "off"}
        root = Path(folder)
        try:
            with contextlib.ExitStack() as running:
                writer = running.enter_context(running_server(root / "writer", root / "logs", 120, **shared))
                writer.json("POST", "/v1.0/sources", SOURCE)
                replicas = [running.enter_context(running_server(root / f"replica-{n}", root / "logs", 120, **shared,
                                                                 REPLICA_OF=writer.base))
                            for n in range(args.replicas)]
                for _ in range(args.rounds):
                    result = freshness(writer, replicas, args.ingests)
                    seen, call = result["visible"], result["ingest"]
                    print(f"{args.replicas} replicas, {args.ingests} ingests: writer's answer → served by a replica "
                          f"p50 {seen['p50_ms']} ms, p99 {seen['p99_ms']} ms, max {result['max_ms']} ms "
                          f"({result['lookups_per_row']} lookups per row; one lookup p50 "
                          f"{result['lookup']['p50_ms']} ms, p99 {result['lookup']['p99_ms']} ms); ingest call "
                          f"p50 {call['p50_ms']} ms, p99 {call['p99_ms']} ms", flush=True)
        finally:
            delete_redis_keys(args.redis, f"{prefix}:*")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
