"""Statement time limits: a slow SELECT on any store stops with 400 query_timeout, and the store stays healthy.

Each slow statement would run for many seconds (more than ten without a limit on this machine), so a broken
limit fails the time assertion instead of hanging the suite.
"""
from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

from catalog import open_catalog
from common.errors import InvalidQuery
from demo.flows import generate_flows
from sql.prepared import prepare_query
from warehouse import Warehouse, open_warehouse
from warehouse.duckdb import DuckDBWarehouse
from warehouse.sql import SqlAlchemyWarehouse
from realtime import open_realtime_store
from realtime.base import RealtimeStore
from realtime.duckdb_store import DuckDBRealtimeStore
from realtime.sqlite_store import SqliteRealtimeStore
from demo.sources import with_demo_tables

LIMIT = 0.5
WITHIN = 2.0  # seconds from the call to the error, limit included
NOW = 1_700_000_000
# About 17 s of DuckDB work without a limit (a parallel cross join that the filter cannot shortcut).
DUCKDB_SLOW = ("SELECT count(*) AS n, 1 AS k FROM range(3000) a, range(3000) b, range(200) c "
               "WHERE a.range + b.range + c.range = -1")
# About 10 s of SQLite work without a limit (a recursive CTE counting to 20 million).
SQLITE_SLOW = ("WITH RECURSIVE r(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM r WHERE i < 20000000) "
               "SELECT count(*) AS n, 1 AS k FROM r")
PG_SLOW = "SELECT pg_sleep(5) AS slept"


def assert_times_out(call: Callable[[], Any]) -> None:
    """`call` raises the query_timeout InvalidQuery (400), soon after the limit."""
    started = time.monotonic()
    with pytest.raises(InvalidQuery) as caught:
        call()
    elapsed = time.monotonic() - started
    assert caught.value.code == "query_timeout", caught.value.to_dict()
    assert caught.value.status == 400
    assert caught.value.details == {"timeout_seconds": LIMIT}
    assert LIMIT * 0.9 <= elapsed < WITHIN, elapsed


# -- warehouses ---------------------------------------------------------------------------------------

@pytest.fixture
def duckdb_warehouse(tmp_path: Path) -> Iterator[Warehouse]:
    opened = open_warehouse(f"duckdb:///{tmp_path}/warehouse.db", statement_timeout=LIMIT)
    with_demo_tables(opened)
    opened.append(generate_flows(50, seed=1, now=NOW))
    yield opened
    opened.close()


@pytest.fixture
def pg_warehouse(pg_database_url: str) -> Iterator[Warehouse]:
    opened = open_warehouse(pg_database_url, statement_timeout=LIMIT)
    with_demo_tables(opened)  # DDL goes through the writer's sessions, which have no limit
    opened.append(generate_flows(50, seed=1, now=NOW))
    yield opened
    opened.close()


def test_duckdb_warehouse_stops_a_slow_query_and_answers_the_next(duckdb_warehouse: Warehouse) -> None:
    assert isinstance(duckdb_warehouse, DuckDBWarehouse)
    for _ in range(2):  # twice: the replaced cursor works, and so does its own limit
        assert_times_out(lambda: duckdb_warehouse.query(DUCKDB_SLOW))
        assert int(duckdb_warehouse.query("SELECT count(*) AS n FROM quotes")["n"].iloc[0]) == 50
    duckdb_warehouse.append(generate_flows(5, seed=2, now=NOW))  # writes have no limit and still work
    assert int(duckdb_warehouse.query("SELECT count(*) AS n FROM quotes")["n"].iloc[0]) == 55


def test_duckdb_limit_stops_only_the_slow_statement(duckdb_warehouse: Warehouse) -> None:
    """Cursors are per thread: the watchdog interrupts the slow one while another thread keeps querying."""
    errors: list[BaseException] = []

    def slow() -> None:
        try:
            duckdb_warehouse.query(DUCKDB_SLOW)
        except BaseException as error:  # noqa: BLE001 - checked below
            errors.append(error)

    thread = threading.Thread(target=slow)
    thread.start()
    fast = 0
    while thread.is_alive():
        assert int(duckdb_warehouse.query("SELECT count(*) AS n FROM users")["n"].iloc[0]) > 0
        fast += 1
    thread.join()
    assert fast > 0 and len(errors) == 1
    assert isinstance(errors[0], InvalidQuery) and errors[0].code == "query_timeout"


@pytest.mark.postgres
def test_postgresql_warehouse_stops_a_slow_query_and_answers_the_next(pg_warehouse: Warehouse) -> None:
    assert isinstance(pg_warehouse, SqlAlchemyWarehouse)
    for _ in range(2):
        assert_times_out(lambda: pg_warehouse.query(PG_SLOW))
        assert int(pg_warehouse.query("SELECT count(*) AS n FROM quotes")["n"].iloc[0]) == 50
    pg_warehouse.append(generate_flows(5, seed=2, now=NOW))  # the writer's sessions have no limit
    assert int(pg_warehouse.query("SELECT count(*) AS n FROM quotes")["n"].iloc[0]) == 55


@pytest.mark.postgres
def test_postgresql_limit_cannot_be_lifted_by_a_query(pg_warehouse: Warehouse) -> None:
    """set_config in one query is rolled back with its transaction: the pooled session keeps the limit."""
    for _ in range(6):  # more than the pool's sessions, so every one of them has tried
        pg_warehouse.query("SELECT set_config('statement_timeout', '0', false) AS lifted")
    assert_times_out(lambda: pg_warehouse.query(PG_SLOW))


@pytest.mark.postgres
def test_postgresql_without_a_limit_runs_long_statements(pg_database_url: str) -> None:
    warehouse = open_warehouse(pg_database_url)
    try:
        assert len(warehouse.query("SELECT pg_sleep(0.7) AS slept")) == 1
    finally:
        warehouse.close()


# -- Arrow streams: one deadline for the whole stream --------------------------------------------------

# DuckDB computes these rows as they are read (no pipeline breaker): 10^10 rows, endless batch by batch,
# each batch quick, so a limit on starting the statement alone never stops it.
DUCKDB_ENDLESS = "SELECT a.range * b.range AS x FROM range(100000) a, range(100000) b"
# One row per 0.2 s from a server-side cursor: each fetch is within the statement limit, the whole is 20 s.
PG_ENDLESS = "SELECT pg_sleep(0.2) AS slept, g FROM generate_series(1, 100) AS g"
READ_AT_MOST = 4 * WITHIN  # seconds a test reads a stream before it gives up on the limit


def read_for_a_while(batches: Iterator[Any], pause: float = 0.0) -> int:
    """Read batches until they end or READ_AT_MOST seconds passed (a broken limit returns, never hangs)."""
    started, rows = time.monotonic(), 0
    try:
        for batch in batches:
            rows += batch.num_rows
            if time.monotonic() - started > READ_AT_MOST:
                break
            time.sleep(pause)
    finally:
        batches.close()
    return rows


def test_duckdb_stream_stops_at_the_limit_across_batches(duckdb_warehouse: Warehouse) -> None:
    for _ in range(2):  # and the warehouse answers afterwards, stream after stream
        assert_times_out(lambda: read_for_a_while(duckdb_warehouse.query_batches(DUCKDB_ENDLESS, rows=2048)[1]))
        assert int(duckdb_warehouse.query("SELECT count(*) AS n FROM quotes")["n"].iloc[0]) == 50


def test_duckdb_stream_limit_counts_a_slow_reader(duckdb_warehouse: Warehouse) -> None:
    """The deadline is wall time from the start: a client reading slowly cannot keep the query open."""
    slow_reader = "SELECT range AS x FROM range(1000000)"
    assert_times_out(lambda: read_for_a_while(duckdb_warehouse.query_batches(slow_reader, rows=1000)[1], pause=0.1))


def test_a_stream_closed_early_leaves_the_warehouse_answering(duckdb_warehouse: Warehouse) -> None:
    _schema, batches = duckdb_warehouse.query_batches(DUCKDB_ENDLESS, rows=2048)
    next(batches)
    batches.close()  # the client went away
    assert int(duckdb_warehouse.query("SELECT count(*) AS n FROM quotes")["n"].iloc[0]) == 50
    assert read_for_a_while(duckdb_warehouse.query_batches("SELECT 1 AS one")[1]) == 1


@pytest.mark.postgres
def test_postgresql_stream_stops_at_the_limit_across_batches(pg_warehouse: Warehouse) -> None:
    for _ in range(2):
        assert_times_out(lambda: read_for_a_while(pg_warehouse.query_batches(PG_ENDLESS, rows=1)[1]))
        assert int(pg_warehouse.query("SELECT count(*) AS n FROM quotes")["n"].iloc[0]) == 50


@pytest.mark.postgres
def test_postgresql_stream_reads_from_a_server_side_cursor(pg_warehouse: Warehouse) -> None:
    """Batches come as they are fetched, so the first arrives before the whole result exists."""
    started = time.monotonic()
    _schema, batches = pg_warehouse.query_batches(PG_ENDLESS, rows=1)
    try:
        assert next(batches).num_rows == 1
        assert time.monotonic() - started < LIMIT  # the whole statement takes 20 s, past the limit
    finally:
        batches.close()


# -- realtime stores ----------------------------------------------------------------------------------

@pytest.fixture(params=["sqlite:///:memory:", "duckdb:///:memory:"])
def store(request: pytest.FixtureRequest) -> Iterator[RealtimeStore]:
    opened = open_realtime_store(request.param, statement_timeout=LIMIT)
    with_demo_tables(realtime=opened)
    opened.append(generate_flows(50, seed=1, now=NOW))
    yield opened
    opened.close()


def _slow_query(store: RealtimeStore) -> str:
    return SQLITE_SLOW if isinstance(store, SqliteRealtimeStore) else DUCKDB_SLOW


def test_realtime_store_stops_a_slow_lookup_and_answers_the_next(store: RealtimeStore) -> None:
    slow = prepare_query(_slow_query(store))
    quotes = prepare_query("SELECT * FROM quotes")
    some_quote = store.query("SELECT quote_id FROM quotes LIMIT 1")["quote_id"].iloc[0]
    for _ in range(2):
        assert_times_out(lambda: store.lookup(slow, "k", 1, 10))
        assert len(store.lookup(quotes, "quote_id", some_quote, 10)) == 1
    store.ping()


def test_realtime_store_stops_a_slow_query(store: RealtimeStore) -> None:
    assert_times_out(lambda: store.query(_slow_query(store)))
    assert int(store.query("SELECT count(*) AS n FROM quotes")["n"].iloc[0]) == 50


def test_appends_after_a_timeout_have_no_limit(store: RealtimeStore) -> None:
    """The deadline of the stopped statement must not reach the store's own writes (hydration, publish)."""
    assert_times_out(lambda: store.query(_slow_query(store)))
    time.sleep(LIMIT)  # well past the old deadline
    written = store.append(generate_flows(20_000, seed=3, now=NOW))
    assert written["quotes"] == 20_000
    assert int(store.query("SELECT count(*) AS n FROM quotes")["n"].iloc[0]) == 20_050


# -- options --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("seconds", [0, -1, float("nan"), float("inf"), "30", True])
def test_a_limit_must_be_a_positive_number(seconds: Any) -> None:
    with pytest.raises(ValueError, match="statement_timeout"):
        SqliteRealtimeStore(statement_timeout=seconds)
    with pytest.raises(ValueError, match="statement_timeout"):
        DuckDBRealtimeStore(statement_timeout=seconds)


def test_no_limit_by_default(tmp_path: Path) -> None:
    warehouse = open_warehouse(f"duckdb:///{tmp_path}/warehouse.db")
    sqlite_store, duckdb_store = open_realtime_store("sqlite:///:memory:"), open_realtime_store("duckdb:///:memory:")
    try:
        assert warehouse.engine.statement_timeout is None and duckdb_store.engine.statement_timeout is None
        assert sqlite_store.statement_timeout is None
    finally:
        for opened in (warehouse, sqlite_store, duckdb_store):
            opened.close()


def test_catalogs_open_as_before(tmp_path: Path) -> None:
    """The registry passes keyword options through; a plain URL still opens every kind of backend."""
    catalog = open_catalog(f"sqlite:///{tmp_path}/catalog.db")
    catalog.close()
