"""The fast bulk-write paths: PostgreSQL COPY (of Arrow-written CSV), the SQLite store's column conversion and
index rebuild, and the Arrow-built demo generator. Each writes exactly what the slower path wrote, atomically."""
from __future__ import annotations

import hashlib
import json
from typing import Any, Iterator

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from common.errors import InvalidInput, InvalidQuery
from demo.flows import INDEX_COLUMNS, TABLES, generate_flows
from sql.duckdb_engine import python_columns
from sql.prepared import prepare_query
from warehouse import open_warehouse
from warehouse.sql import SqlAlchemyWarehouse
from realtime.base import index_name
from realtime.sqlite_store import REBUILD_INDEX_MIN_ROWS, SqliteRealtimeStore
from sources.rows import rows_from_arrow
from demo.sources import demo_sources, with_demo_tables

NOW = 1_700_000_000
# Text that a COPY or CSV encoding could get wrong, and the empty string (which is not NULL).
AWKWARD = ["", "tab\there", "new\nline", "back\\slash", "\\N", 'quote"s', "semi;colon,comma", "ünïcødé ✓", "NULL"]


def awkward_quotes() -> pd.DataFrame:
    """Quotes with NULLs in every nullable kind of column, both booleans and awkward text."""
    n = len(AWKWARD)
    return pd.DataFrame({
        "quote_id": [f"q{i}" for i in range(n)],
        "user_id": pd.array([None if i % 3 == 0 else text for i, text in enumerate(AWKWARD)], dtype="str"),
        "creation_date": np.arange(n, dtype=np.int64) + NOW,
        "binding_date": pd.array([None if i % 2 else NOW + 10 * i for i in range(n)], dtype="Int64"),
        "quote_type": AWKWARD,
        "quote_device": pd.array([None] * n, dtype=object),
        "is_binded": np.array([i % 2 == 0 for i in range(n)]),
        "is_paid": pd.array([None if i % 4 == 0 else i % 2 == 1 for i in range(n)], dtype="boolean"),
    })


def _plain_rows(frame: pd.DataFrame, key: str) -> list[tuple]:
    """Rows sorted by `key` as plain Python values, None for missing, booleans as bool."""
    rows = []
    for record in frame.astype(object).where(frame.notna(), None).itertuples(index=False, name=None):
        rows.append(tuple(bool(v) if isinstance(v, (bool, np.bool_)) else
                          int(v) if isinstance(v, (int, np.integer)) else v for v in record))
    position = list(frame.columns).index(key)
    return sorted(rows, key=lambda row: row[position])


# -- PostgreSQL COPY ----------------------------------------------------------------------------------

@pytest.fixture
def pg_warehouse(pg_database_url: str) -> Iterator[SqlAlchemyWarehouse]:
    opened = open_warehouse(pg_database_url)
    assert isinstance(opened, SqlAlchemyWarehouse) and opened._copy
    with_demo_tables(opened)
    yield opened
    opened.close()


@pytest.mark.postgres
def test_copy_writes_exactly_the_rows(pg_warehouse: SqlAlchemyWarehouse) -> None:
    flows = generate_flows(300, seed=4, now=NOW)
    extra = awkward_quotes()
    assert pg_warehouse.append({**flows, "quotes": pd.concat([flows["quotes"], extra], ignore_index=True)}) is None
    for table, frame in flows.items():
        key = [c for c, _ in TABLES[table]][0]
        expected = pd.concat([frame, extra], ignore_index=True) if table == "quotes" else frame
        got = pg_warehouse.query(f"SELECT * FROM {table}")
        assert _plain_rows(got, key) == _plain_rows(expected, key), table
    empty = pg_warehouse.query("SELECT quote_id FROM quotes WHERE quote_type = ''")
    assert list(empty["quote_id"]) == ["q0"]  # the empty string stayed a string, not NULL


@pytest.mark.postgres
def test_copy_and_executemany_store_the_same(pg_warehouse: SqlAlchemyWarehouse, pg_server_url: str) -> None:
    batch = {"quotes": awkward_quotes(), "users": generate_flows(50, seed=5, now=NOW)["users"]}
    pg_warehouse.append(batch)
    by_copy = {table: pg_warehouse.query(f"SELECT * FROM {table}") for table in batch}
    pg_warehouse._copy = False
    with pg_warehouse.sa_engine.begin() as connection:
        for table in batch:
            connection.exec_driver_sql(f"DELETE FROM {table}")
    pg_warehouse.append(batch)
    for table, frame in by_copy.items():
        key = [c for c, _ in TABLES[table]][0]
        assert _plain_rows(pg_warehouse.query(f"SELECT * FROM {table}"), key) == _plain_rows(frame, key)


@pytest.mark.postgres
def test_copy_is_atomic_when_a_late_row_fails(pg_warehouse: SqlAlchemyWarehouse) -> None:
    """The last row of the last table is one PostgreSQL refuses while copying: everything streamed before it
    is rolled back. (The times go as text, which Arrow writes as it is, so the refusal is the server's.)"""
    pg_warehouse.append(generate_flows(20, seed=6, now=NOW))
    flows = generate_flows(2_000, seed=7, now=NOW)
    times = flows["policies"]["purchase_time"].astype(str).tolist()
    policies = flows["policies"].assign(purchase_time=pd.array([*times[:-1], "not a number"], dtype="str"))
    with pytest.raises(InvalidQuery, match="not a number") as caught:
        pg_warehouse.append({**flows, "policies": policies})
    assert f"COPY policies, line {len(policies)}," in str(caught.value)  # the very last row
    counts = pg_warehouse.query("SELECT (SELECT count(*) FROM quotes) AS q, (SELECT count(*) FROM policies) AS p")
    assert (int(counts["q"].iloc[0]), int(counts["p"].iloc[0])) == (20, len(generate_flows(20, seed=6)["policies"]))
    pg_warehouse.append(generate_flows(5, seed=8, now=NOW))  # the writer is usable afterwards
    assert int(pg_warehouse.query("SELECT count(*) AS n FROM quotes")["n"].iloc[0]) == 25


@pytest.mark.postgres
@pytest.mark.parametrize("value", ["maybe", 2, "true"])
def test_copy_refuses_non_booleans(pg_warehouse: SqlAlchemyWarehouse, value: Any) -> None:
    """A boolean column holding another value: converting the batch to Arrow refuses it, before any COPY."""
    quotes = awkward_quotes().astype({"is_paid": object})
    quotes.loc[3, "is_paid"] = value
    with pytest.raises(InvalidInput, match=f"the warehouse refused the values: .*Could not convert {value!r}"):
        pg_warehouse.append({"users": generate_flows(10, seed=9, now=NOW)["users"], "quotes": quotes})
    assert int(pg_warehouse.query("SELECT count(*) AS n FROM users")["n"].iloc[0]) == 0


@pytest.mark.postgres
def test_copy_refuses_text_that_is_not_a_boolean(pg_warehouse: SqlAlchemyWarehouse) -> None:
    """A whole text column where the table has BOOLEAN reaches the server, which refuses the COPY."""
    quotes = awkward_quotes().assign(is_paid=pd.array(["true"] * (len(AWKWARD) - 1) + ["maybe"], dtype="str"))
    with pytest.raises(InvalidQuery, match='invalid input syntax for type boolean: "maybe"'):
        pg_warehouse.append({"users": generate_flows(10, seed=9, now=NOW)["users"], "quotes": quotes})
    assert int(pg_warehouse.query("SELECT count(*) AS n FROM users")["n"].iloc[0]) == 0


def test_ingestion_refuses_non_booleans_before_any_store() -> None:
    """What reaches a warehouse in the service has passed sources.rows: a non-boolean never gets that far."""
    quotes = next(s for s in demo_sources() if s.name == "quotes")
    batch = pa.Table.from_pandas(awkward_quotes().assign(is_paid=["maybe"] * len(AWKWARD)), preserve_index=False)
    with pytest.raises(InvalidInput, match="is_paid"):
        rows_from_arrow(quotes, batch.to_batches())


# -- SQLite store -------------------------------------------------------------------------------------

def _index_names(store: SqliteRealtimeStore) -> set[str]:
    return set(store.query("SELECT name FROM sqlite_master WHERE type = 'index'")["name"])


def demo_store() -> SqliteRealtimeStore:
    """A SQLite store with the demo's sources registered and their join columns indexed, as the service
    does when it saves a query joining on them."""
    store = SqliteRealtimeStore()
    with_demo_tables(realtime=store)
    for table, columns in INDEX_COLUMNS.items():
        for column in columns:
            store.index(table, column)
    return store


# register: each source's entity keys (no event-time index); index(): the join columns (only quotes.user_id is new)
REGISTERED_INDEXES = {index_name(source, column) for source, column in [
    ("users", "user_id"), ("quotes", "quote_id"), ("transactions", "user_id"), ("transactions", "ref_id"),
    ("policies", "user_id"), ("policies", "quote_id")]}
EXPECTED_INDEXES = REGISTERED_INDEXES | {index_name("quotes", "user_id")}


def test_register_and_index_create_the_expected_indexes() -> None:
    store = SqliteRealtimeStore()
    assert _index_names(store) == set()  # nothing on open
    with_demo_tables(realtime=store)
    assert _index_names(store) == REGISTERED_INDEXES
    store.index("quotes", "user_id")
    store.index("quotes", "user_id")  # idempotent
    store.index("quotes", "quote_id")  # already there as an entity key
    assert _index_names(store) == EXPECTED_INDEXES


def test_sqlite_store_writes_pandas_and_arrow_alike() -> None:
    quotes = awkward_quotes()
    from_pandas, from_arrow = demo_store(), demo_store()
    from_pandas.append({"quotes": quotes})
    from_arrow.append({"quotes": pa.Table.from_pandas(quotes, preserve_index=False)})
    sql = "SELECT *, typeof(binding_date) AS t1, typeof(is_paid) AS t2, typeof(quote_device) AS t3 FROM quotes"
    stored = from_pandas.query(sql)
    pd.testing.assert_frame_equal(stored, from_arrow.query(sql))
    assert set(stored["t3"]) == {"null"} and set(stored["t1"]) == {"integer", "null"}
    assert set(stored["t2"]) == {"integer", "null"}  # booleans as 0/1, as before
    expected = _plain_rows(quotes, "quote_id")
    assert _plain_rows(stored.drop(columns=["t1", "t2", "t3"]), "quote_id") == [
        tuple(int(v) if isinstance(v, bool) else v for v in row) for row in expected]


def test_a_large_first_batch_rebuilds_the_indexes_and_lookups_use_them() -> None:
    store = demo_store()
    flows = generate_flows(REBUILD_INDEX_MIN_ROWS + 500, seed=10, now=NOW)
    store.append(flows)
    assert _index_names(store) == EXPECTED_INDEXES
    for column in ("quote_id", "user_id"):  # through the source's view, on its rows table
        plan = store.query(f"EXPLAIN QUERY PLAN SELECT * FROM quotes WHERE {column} = 'x'")
        assert plan["detail"].str.contains(index_name("quotes", column)).any(), plan
    user = flows["users"]["user_id"].iloc[-1]
    assert len(store.lookup(prepare_query("SELECT * FROM users"), "user_id", user, 10)) == 1


def test_a_failed_large_first_batch_keeps_the_indexes_and_writes_nothing() -> None:
    store = demo_store()
    flows = generate_flows(REBUILD_INDEX_MIN_ROWS + 500, seed=11, now=NOW)
    assert len(flows["quotes"]) >= REBUILD_INDEX_MIN_ROWS  # so the quotes' indexes are dropped and rebuilt
    with pytest.raises(InvalidInput, match="no source 'no_such_table'"):  # found while converting, before any write
        store.append({**flows, "no_such_table": flows["users"]})
    # A value SQLite cannot bind, in the last row of the last table: refused after the big tables went in.
    policies = flows["policies"].assign(policy_device=[*flows["policies"]["policy_device"].iloc[:-1], {"a": 1}])
    with pytest.raises(InvalidInput, match="refused the values.*binding parameter"):  # a bad value is 400, not 503
        store.append({**flows, "policies": policies})
    for table in TABLES:
        assert int(store.query(f"SELECT count(*) AS n FROM _fs_rows_{table}")["n"].iloc[0]) == 0, table
    assert _index_names(store) == EXPECTED_INDEXES


def test_sqlite_batch_failing_inside_the_transaction_rolls_back_the_rebuild(monkeypatch: pytest.MonkeyPatch) -> None:
    """A failure after the indexes were dropped and the rows inserted: the rollback restores both."""
    store = demo_store()
    flows = generate_flows(REBUILD_INDEX_MIN_ROWS + 500, seed=12, now=NOW)
    real_rebuild = store._rebuild_indexes
    rebuilt: list[str] = []

    def rebuild_then_fail(source: str, create: bool) -> None:
        real_rebuild(source, create)
        if create:
            rebuilt.append(source)
            if source == "quotes":  # the one table of this batch large enough to be rebuilt
                raise RuntimeError("disk on fire")

    monkeypatch.setattr(store, "_rebuild_indexes", rebuild_then_fail)
    with pytest.raises(RuntimeError, match="disk on fire"):
        store.append(flows)
    monkeypatch.undo()
    assert rebuilt == ["quotes"]
    assert int(store.query("SELECT count(*) AS n FROM users")["n"].iloc[0]) == 0
    assert _index_names(store) == EXPECTED_INDEXES
    store.append(flows)  # and the store still takes the batch
    assert int(store.query("SELECT count(*) AS n FROM quotes")["n"].iloc[0]) == len(flows["quotes"])


def test_python_columns_gives_plain_values_and_none_for_missing() -> None:
    frame = pd.DataFrame({
        "i": np.array([1, 2, 3]), "b": np.array([True, False, True]), "f": [1.5, np.nan, 2.0],
        "n": pd.array([1, None, 3], dtype="Int64"), "nb": pd.array([True, None, False], dtype="boolean"),
        "s": pd.array(["a", None, ""], dtype="str"), "o": np.array(["x", None, float("nan")], dtype=object),
        "mixed": np.array([1, "two", None], dtype=object),
    })
    columns = python_columns(frame, list(frame.columns))
    assert columns == [[1, 2, 3], [True, False, True], [1.5, None, 2.0], [1, None, 3], [True, None, False],
                       ["a", None, ""], ["x", None, None], [1, "two", None]]
    assert all(type(v) is int for v in columns[0]) and all(type(v) is bool for v in columns[1])
    arrow = python_columns(pa.Table.from_pandas(frame.drop(columns=["mixed"])), ["n", "s"])
    assert arrow == [[1, None, 3], ["a", None, ""]]


# -- the generator --------------------------------------------------------------------------------------

def test_generator_values_are_those_of_the_numpy_generator() -> None:
    """The digest of generate_flows(200, seed=42) as the earlier numpy/object generator produced it:
    the Arrow-built generator draws the same numbers in the same order."""
    flows = generate_flows(200, seed=42, now=NOW)
    digest = hashlib.sha256()
    for table, frame in flows.items():
        digest.update(table.encode())
        digest.update(json.dumps(frame.astype(object).where(frame.notna(), None).values.tolist()).encode())
    assert digest.hexdigest() == "917eaeb5007b487178076097f00ee46048b2f6024b68109fbb0f6cfdc5bcda56"


@pytest.mark.parametrize("seed", range(3))
def test_generator_text_columns_are_str_even_when_empty(seed: int) -> None:
    for table, frame in generate_flows(1, seed=seed, now=NOW).items():
        for name, kind in TABLES[table]:
            if kind == "string":
                assert frame[name].dtype == "str", (table, name, frame[name].dtype)
