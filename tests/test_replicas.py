"""REPLICA_OF: a writer and read replicas as separate real processes sharing a PostgreSQL catalog and
warehouse and a Redis feed (each run on its own databases and key prefix, dropped at the end).

The crux is hydration against a moving feed: every row once, no gap, no duplicate (app/replicas.py).
The first tests pin it down in-process at the exact moment that matters (an ingest committed to the
warehouse but not yet on the feed while a replica hydrates); the last one runs the processes, kills a
replica with SIGKILL in the middle of a stream of ingests, restarts it, and compares its realtime
store with the warehouse row by row."""
from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from pathlib import Path
from typing import Any, Iterator

import pyarrow as pa
import pytest

from app.replicas import HydrationFilter, check_replica_shape, replica_sources, writer_address
from app.sources import SourceService
from catalog import open_catalog
from common.errors import InvalidInput
from feed import open_feed
from realtime import open_realtime_store
from sql.prepared import prepare_query
from tests.fixtures_pg import throwaway_database
from tests.fixtures_redis import throwaway_prefix
from tests.server_process import LiveProcess, live_process
from tests.test_workers import _call, _wait_gone
from warehouse import WarehouseSnapshot, open_warehouse

SOURCE = {"name": "events", "columns": [{"name": "entity", "type": "string"}, {"name": "seq", "type": "integer"},
                                        {"name": "at", "type": "integer"}],
          "entity_keys": ["entity"], "event_time": "at"}
ENTITIES = ["a", "b", "c"]
ROWS_QUERY = "SELECT entity, seq FROM events"


@pytest.fixture
def shared(pg_server_url: str, redis_server_url: str) -> Iterator[dict[str, str]]:
    """A fresh catalog database, warehouse database and Redis key prefix: the settings writer and
    replicas share (all dropped at the end)."""
    with throwaway_database(pg_server_url) as catalog, throwaway_database(pg_server_url) as warehouse, \
            throwaway_prefix(redis_server_url) as prefix:
        yield {"CATALOG_URL": catalog, "WAREHOUSE_URL": warehouse, "FEED_URL": f"{redis_server_url}?prefix={prefix}"}


def _rows(start: int, count: int) -> pa.Table:
    """`count` rows with sequence numbers from `start`, spread over ENTITIES."""
    seqs = list(range(start, start + count))
    return pa.table({"entity": [ENTITIES[s % len(ENTITIES)] for s in seqs], "seq": seqs,
                     "at": [1_700_000_000 + s for s in seqs]})


class PausedFeed:
    """A real feed whose next append waits (after the warehouse committed) until `release` is set."""

    def __init__(self, feed: Any):
        self.feed, self.waiting, self.release = feed, threading.Event(), threading.Event()

    def append(self, frames: dict[str, pa.Table]) -> int:
        self.waiting.set()
        assert self.release.wait(30)
        return self.feed.append(frames)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.feed, name)


@contextlib.contextmanager
def _stores(settings: dict[str, str]) -> Iterator[tuple[Any, Any, Any]]:
    catalog, warehouse, feed = (open_catalog(settings["CATALOG_URL"]), open_warehouse(settings["WAREHOUSE_URL"]),
                                open_feed(settings["FEED_URL"]))
    try:
        yield catalog, warehouse, feed
    finally:
        for store in (feed, warehouse, catalog):
            store.close()


def _replica_seqs(sources: SourceService) -> list[int]:
    """Every seq the replica's realtime store holds, sorted (repeats kept)."""
    prepared = prepare_query(ROWS_QUERY, "duckdb")
    found = []
    for entity in ENTITIES:
        found += sources.realtime.lookup(prepared, "entity", entity, 100_000)["seq"].tolist()
    return sorted(found)


def test_an_ingest_committed_before_the_snapshot_and_fed_after_it_is_applied_once(shared, tmp_path):
    with _stores(shared) as (catalog, warehouse, feed):
        paused = PausedFeed(feed)
        writer = SourceService(catalog, warehouse, open_realtime_store("sqlite:///:memory:"), load_dir=tmp_path,
                               feed=paused)
        writer.load()
        paused.release.set()
        writer.declare(SOURCE)
        writer.ingest("events", _rows(0, 30))
        paused.release.clear()
        paused.waiting.clear()
        late = threading.Thread(target=writer.ingest, args=("events", _rows(30, 9)))
        late.start()  # committed to the warehouse, then held before the feed
        assert paused.waiting.wait(30)
        replica = replica_sources(catalog, warehouse, open_realtime_store("sqlite:///:memory:"), feed,
                                  {"LOAD_DIR": str(tmp_path)})
        try:
            assert _replica_seqs(replica) == list(range(39))  # the held ingest is in the snapshot
            paused.release.set()
            late.join()
            writer.ingest("events", _rows(39, 6))  # after the snapshot: from the feed
            position = feed.last_position()
            assert replica.tailer.wait_for(position, 10)
            assert _replica_seqs(replica) == list(range(45))  # the held one not twice, the new one once
        finally:
            replica.stop()


def test_filter_skips_what_the_snapshot_sees_and_declarations_it_hydrated():
    snapshot = WarehouseSnapshot.parse("100:105:101,103")
    assert [t for t in range(98, 108) if snapshot.sees(t)] == [98, 99, 100, 102, 104]

    def entry(metadata: dict[str, str]) -> Any:
        from feed import FeedEntry
        return FeedEntry(1, "events", pa.table({"x": [1]}).replace_schema_metadata(metadata))

    skip = HydrationFilter(snapshot, {"events": 2})
    assert skip(entry({"fs_version": "2", "fs_xid": "102"})) and not skip(entry({"fs_version": "2", "fs_xid": "103"}))
    assert skip(entry({"fs_version": "2"})) and not skip(entry({"fs_version": "3"}))


@pytest.mark.parametrize("settings, wrong", [
    ({"REPLICA_OF": "writer:8000"}, "http://host:port"),
    ({"REPLICA_OF": "https://writer:8000"}, "http://host:port"),
    ({"REPLICA_OF": "http://writer:8000/v1.0"}, "http://host:port"),
    ({"WAREHOUSE_URL": "duckdb:///w.duckdb"}, "WAREHOUSE_URL"),
    ({"CATALOG_URL": "sqlite:///c.db"}, "CATALOG_URL"),
    ({"FEED_URL": "sqlite:///feed.db"}, "FEED_URL=redis"),
])
def test_a_replica_refuses_what_it_cannot_share(settings, wrong):
    good = {"REPLICA_OF": "http://writer:8000", "CATALOG_URL": "postgresql://c/db", "WAREHOUSE_URL": "postgresql://w/db",
            "FEED_URL": "redis://r:6379/0"}
    check_replica_shape(good)
    assert writer_address(good["REPLICA_OF"]) == ("writer", 8000)
    with pytest.raises(InvalidInput, match=wrong):
        check_replica_shape({**good, **settings})


# -- real processes ------------------------------------------------------------------------------------


class Ingests:
    """Batches of rows through `base` on a thread until stopped; every answered position kept."""

    def __init__(self, base: str, start: int, batch: int = 7):
        self.base, self.next, self.batch = base, start, batch
        self.positions: list[int] = []
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            rows = _rows(self.next, self.batch)
            answer = _call("POST", f"{self.base}/v1.0/sources/events/rows",
                           json={"batch_id": f"b{self.next}", "rows": rows.to_pylist()})
            if answer.status_code != 200:
                self.errors.append(answer.text)
                return
            self.positions.append(answer.json()["position"])
            self.next += self.batch
            time.sleep(0.01)

    def __enter__(self) -> "Ingests":
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop after the batch in flight (answered or not)."""
        self._stop.set()
        self._thread.join(60)

    def __exit__(self, *exc: Any) -> None:
        self.stop()


def _replica(tmp_path: Path, name: str, shared: dict[str, str], writer: LiveProcess) -> Any:
    return live_process(tmp_path / name, startup_seconds=90, **shared, WORKERS="1", DEMO_SOURCES="off",
                        REPLICA_OF=writer.base)


def _served_seqs(base: str, query_id: str, position: int) -> list[int]:
    """Every seq the realtime store at `base` serves once it holds `position`, sorted (repeats kept)."""
    found = []
    for entity in ENTITIES:
        answer = _call("POST", f"{base}/v1.0/query/realtime?min_position={position}",
                       json={"query_id": query_id, "index_key": "entity", "index_value": entity})
        assert answer.status_code == 200, answer.text
        found += [row["seq"] for row in answer.json()["data"]]
    return sorted(found)


def test_replicas_serve_the_writers_ingests_and_a_killed_one_restarts_whole(shared, tmp_path):
    with live_process(tmp_path / "writer", startup_seconds=90, **shared, WORKERS="1", DEMO_SOURCES="off") as writer:
        declared = _call("POST", f"{writer.base}/v1.0/sources", json=SOURCE)
        assert declared.status_code in (200, 201), declared.text
        first = _call("POST", f"{writer.base}/v1.0/sources/events/rows", json={"rows": _rows(0, 50).to_pylist()})
        assert first.status_code == 200, first.text
        saved = _call("POST", f"{writer.base}/v1.0/query/train?save=true", json={"query": ROWS_QUERY})
        assert saved.status_code == 200, saved.text
        query_id = saved.json()["query_id"]
        with Ingests(writer.base, 1000) as ingests, _replica(tmp_path, "r1", shared, writer) as one, \
                _replica(tmp_path, "r2", shared, writer) as two:
            # a write sent to a replica goes to the writer (the warehouse count below has it); its answer's
            # position is read on the other replica
            through = _call("POST", f"{one.base}/v1.0/sources/events/rows", json={"rows": _rows(100, 3).to_pylist()})
            assert through.status_code == 200 and through.json()["position"] > first.json()["position"], through.text
            read = _call("POST", f"{two.base}/v1.0/query/realtime?min_position={through.json()['position']}",
                         json={"query_id": query_id, "index_key": "entity", "index_value": "b"})
            assert read.headers["X-Served-By"] == str(two.process.pid)
            assert {100, 101, 102} & {row["seq"] for row in read.json()["data"]} == {100}  # 100 % 3 == 1: "b"

            while len(ingests.positions) < 5:
                time.sleep(0.05)
            os.kill(one.process.pid, signal.SIGKILL)  # mid-ingest
            _wait_gone([one.process.pid])
            with _replica(tmp_path, "r1", shared, writer) as restarted:
                while len(ingests.positions) < 15:
                    assert not ingests.errors, ingests.errors
                    time.sleep(0.05)
                ingests.stop()
                assert not ingests.errors, ingests.errors
                last = ingests.positions[-1]
                trained = _call("POST", f"{writer.base}/v1.0/query/train", json={"query": ROWS_QUERY})
                warehouse = sorted(row["seq"] for row in trained.json()["data"])
                assert len(warehouse) == 53 + 7 * len(ingests.positions)
                for replica in (restarted, two):
                    assert _served_seqs(replica.base, query_id, last) == warehouse
                    assert _call("GET", f"{replica.base}/v1.0/health").headers["X-Served-By"] == \
                        str(replica.process.pid)


def test_the_replicas_compose_file_names_only_settings_and_files_that_exist():
    """No Docker engine here (`docker compose config` cannot run): the file is read, not run."""
    import yaml

    from app.settings import SECRET_SETTINGS, SETTINGS

    root = Path(__file__).resolve().parent.parent
    compose = yaml.safe_load((root / "docker-compose.replicas.yml").read_text())
    services = compose["services"]
    assert {"writer", "replica", "lb", "redis", "postgres"} <= set(services)
    readable = {setting.name for setting in SETTINGS} | {f"{name}_FILE" for name in SECRET_SETTINGS}
    for name in ("writer", "replica"):
        env = services[name]["environment"]
        assert set(env) <= readable and not {"ADMIN_KEY", "CATALOG_URL", "WAREHOUSE_URL"} & set(env)
        check_replica_shape({"REPLICA_OF": "http://writer:8080", "FEED_URL": env["FEED_URL"],
                             **{url: (root / compose["secrets"][secret]["file"]).read_text().strip()
                                for url, secret in (("CATALOG_URL", "catalog_url"), ("WAREHOUSE_URL", "warehouse_url"))}})
    assert "REPLICA_OF" not in services["writer"]["environment"]
    assert writer_address(services["replica"]["environment"]["REPLICA_OF"]) == ("writer", 8080)
    assert services["replica"]["deploy"]["replicas"] >= 2
    for volume in services["postgres"]["volumes"] + services["lb"]["volumes"]:
        if volume.startswith("./"):
            assert (root / volume.split(":")[0]).is_file(), volume
    assert "server replica:8080" in (root / "deploy" / "nginx-replicas.conf").read_text()


def test_a_replica_whose_writer_is_gone_serves_reads_and_refuses_writes_in_the_error_shape(shared, tmp_path):
    with live_process(tmp_path / "writer", startup_seconds=90, **shared, WORKERS="1", DEMO_SOURCES="off") as writer:
        assert _call("POST", f"{writer.base}/v1.0/sources", json=SOURCE).status_code in (200, 201)
        assert _call("POST", f"{writer.base}/v1.0/sources/events/rows",
                     json={"rows": _rows(0, 6).to_pylist()}).status_code == 200
        query_id = _call("POST", f"{writer.base}/v1.0/query/train?save=true", json={"query": ROWS_QUERY}).json()["query_id"]
        with _replica(tmp_path, "r1", shared, writer) as replica:
            writer.process.kill()
            writer.process.wait()
            refused = _call("POST", f"{replica.base}/v1.0/sources/events/rows", json={"rows": _rows(6, 1).to_pylist()})
            assert refused.status_code == 503 and set(refused.json()) == {"code", "message", "details"}
            assert "writer" in refused.json()["message"]
            assert _served_seqs(replica.base, query_id, 0) == list(range(6))  # hydrated before, still served
