"""Hydration streams a source's hot window from the warehouse into a realtime store in batches: every row of
the window arrives exactly once, with its types, nulls, booleans and microseconds, whatever the batch
boundaries; a value that does not fit in a later batch leaves none of the earlier ones behind.

Real parts: a DuckDB warehouse file and a PostgreSQL database, the SQLite and DuckDB realtime stores; the
window holds more rows than one copy batch (`warehouse.base.COPY_BATCH_ROWS`), so it arrives in several.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Iterator

import pandas as pd
import psycopg
import pytest

from checks.schema import frame_schema
from common.errors import InvalidInput
from realtime import open_realtime_store
from realtime.base import RealtimeStore, window_batches
from realtime.sqlite_store import SqliteRealtimeStore
from sources.definition import parse_source
from sql.prepared import prepare_query
from tests.conftest import JsonClient
from warehouse import Warehouse, open_warehouse
from warehouse.base import COPY_BATCH_ROWS

NOW = 1_700_000_000
ROWS = 160_000
STEP_SECONDS = 0.75  # row i happened i * STEP_SECONDS (and 123 µs) before NOW
WINDOW_SECONDS = 105_000  # rows 0 … 139,999 are inside it: a batch and a part
IN_WINDOW = math.ceil((WINDOW_SECONDS - 0.000123) / STEP_SECONDS)
COLUMNS = [("id", "integer"), ("f", "float"), ("b", "boolean"), ("s", "string"), ("ts", "timestamp"),
           ("n", "integer")]
# the same rows in either warehouse: nulls in every column but the key and the event time
VALUES = ("i AS id, CASE WHEN i % 7 = 0 THEN NULL ELSE i * 0.1 + 1e-9 END AS f, "
          "CASE WHEN i % 5 = 0 THEN NULL ELSE i % 2 = 0 END AS b, "
          "CASE WHEN i % 11 = 0 THEN NULL ELSE 's' || i || 'é' END AS s, "
          f"to_timestamp({NOW} - i * {STEP_SECONDS} - 0.000123) AS ts, "
          "CASE WHEN i % 13 = 0 THEN NULL ELSE ((i * 1000003) % 4611686018427387904) * "
          "(CASE WHEN i % 2 = 0 THEN 1 ELSE -1 END) END AS n")
FILL = {"duckdb": f"CREATE TABLE wide AS SELECT {VALUES} FROM range({ROWS}) AS r(i)",
        "postgresql": f"CREATE TABLE wide AS SELECT {VALUES} FROM generate_series(0::bigint, {ROWS - 1}) AS i"}
WAREHOUSES = ["duckdb", pytest.param("postgresql", marks=pytest.mark.postgres)]
STORES = ["sqlite:///:memory:", "duckdb:///:memory:"]


def _source(**changes: Any) -> Any:
    columns = [{"name": name, "type": kind} for name, kind in COLUMNS] + changes.pop("extra", [])
    return parse_source({"name": "wide", "columns": columns, "entity_keys": ["id"], "event_time": "ts",
                         "hot_window_seconds": WINDOW_SECONDS, **changes}, created_by="test",
                        created_at="2024-01-01T00:00:00.000+00:00")


@pytest.fixture(params=WAREHOUSES)
def wide(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Warehouse]:
    """A warehouse holding the table `wide` (ROWS rows, nulls in every nullable column)."""
    if request.param == "duckdb":
        warehouse = open_warehouse(f"duckdb:///{tmp_path}/warehouse.duckdb")
        warehouse.engine.execute_ddl([FILL["duckdb"]])
    else:
        url = request.getfixturevalue("pg_database_url")
        with psycopg.connect(url, autocommit=True) as connection:
            connection.execute(FILL["postgresql"])
        warehouse = open_warehouse(url)
    yield warehouse
    warehouse.close()


@pytest.fixture(params=STORES)
def store(request: pytest.FixtureRequest) -> Iterator[RealtimeStore]:
    opened = open_realtime_store(request.param)
    opened.clock = lambda: NOW  # the views cut where the hydration did
    yield opened
    opened.close()


def _records(frame: pd.DataFrame) -> dict[int, dict[str, Any]]:
    """Rows by id, missing values (None, NaN, NA, NaT) all as None."""
    rows = frame.astype(object).where(frame.notna(), None).to_dict("records")
    return {int(row["id"]): row for row in rows}


def test_every_row_of_the_window_arrives_once_with_its_types(wide: Warehouse, store: RealtimeStore) -> None:
    source = _source()
    batches = [batch.num_rows for batch in window_batches(wide, source, NOW - WINDOW_SECONDS)]
    assert len(batches) >= 2 and max(batches) <= COPY_BATCH_ROWS and sum(batches) == IN_WINDOW

    assert store.hydrate(wide, [source], now=NOW) == {"wide": IN_WINDOW}
    if isinstance(store, SqliteRealtimeStore):  # loaded in a journal in memory, then back in WAL for the readers
        with store._writes():
            assert store._connection.execute("PRAGMA journal_mode").fetchone()[0] == "wal"

    served = store.lookup(prepare_query("SELECT id, f, b, s, ts, n, 1 AS k FROM wide", wide.dialect), "k", 1,
                          ROWS)
    assert [(c["name"], c["type"]) for c in frame_schema(served)][:-1] == COLUMNS  # the dtypes of the declared types
    assert len(served) == served["id"].nunique() == IN_WINDOW == store.stats("wide")["rows"]
    expected = wide.query("SELECT id, f, b, s, ts, n FROM wide WHERE ts > "
                          f"to_timestamp({NOW - WINDOW_SECONDS})")
    got, want = _records(served.drop(columns="k")), _records(expected)
    assert got.keys() == want.keys() == set(range(IN_WINDOW))
    for key in (0, 1, 5, 7, 11, 13, COPY_BATCH_ROWS - 1, COPY_BATCH_ROWS, IN_WINDOW - 1):  # nulls, batch edges
        assert got[key] == want[key], key
    assert all(got[key] == want[key] for key in want)
    assert {type(row["b"]) for row in got.values()} == {bool, type(None)}
    assert got[3]["ts"].microsecond not in (0, 750_000)  # the 123 µs arrived


@pytest.mark.parametrize("reader_open", [False, True], ids=["at-start", "while-serving"])
def test_a_value_that_does_not_fit_in_a_later_batch_leaves_no_row(tmp_path: Path, store: RealtimeStore,
                                                                  reader_open: bool) -> None:
    """The window arrives all or nothing: the batches before the refused one are rolled back, at start (the
    SQLite store's bulk load in a journal in memory) as while readers are open (in the WAL)."""
    warehouse = open_warehouse(f"duckdb:///{tmp_path}/warehouse.duckdb")
    refused_at = COPY_BATCH_ROWS + 10  # in the second batch
    warehouse.engine.execute_ddl([f"CREATE TABLE wide AS SELECT {VALUES}, CASE WHEN i = {refused_at} THEN "
                                  "18446744073709551615 ELSE i END::UBIGINT AS u "
                                  f"FROM range({ROWS}) AS r(i)"])
    source = _source(extra=[{"name": "u", "type": "integer"}])
    if reader_open:
        store.ping()
    try:
        with pytest.raises(InvalidInput, match="column 'u'"):
            store.hydrate(warehouse, [source], now=NOW)
        assert store.stats("wide")["rows"] == 0
        store.append({"wide": warehouse.query("SELECT * FROM wide WHERE id = 1")})  # the store still takes rows
        served = store.lookup(prepare_query("SELECT id, u FROM wide", "duckdb"), "id", 1, 10)
        assert served.to_dict("records") == [{"id": 1, "u": 1}]
    finally:
        warehouse.close()


def test_adopting_a_table_streams_its_window_to_the_feed_and_the_store(make_app: Any) -> None:
    """The first start's path (a declaration adopting a filled table): the store gets every row once, and the
    change feed gets the version, then the rows in entries of at most one copy batch each."""
    app = make_app(DEMO_SOURCES=False)  # declared without a hot window: every row is hot
    service = app.extensions["feature_service"]
    service.warehouse.engine.execute_ddl([FILL["duckdb"]])
    before = service.sources.feed.last_position()
    api = JsonClient(app.test_client())
    api.post("/v1.0/sources", {"name": "wide", "entity_keys": ["id"], "event_time": "ts"}, 201)
    described = api.get("/v1.0/sources/wide")
    assert described["warehouse"]["rows"] == described["realtime"]["rows"] == ROWS
    entries = service.sources.feed.read_after(before)
    sizes = [entry.rows.num_rows for entry in entries]
    assert {entry.source for entry in entries} == {"wide"} and sizes[0] == 0  # the version first, no rows
    assert len(sizes) >= 3 and max(sizes) <= COPY_BATCH_ROWS and sum(sizes) == ROWS
    ids = [i for entry in entries for i in entry.rows.column("id").to_pylist()]
    assert sorted(ids) == list(range(ROWS))
