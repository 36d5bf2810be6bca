"""Both realtime stores through one suite: typed lookups equal to the warehouse, atomic batches, read-only SQL,
and each source's hot window (served through its view, deleted by evict, widened by a compatible version)."""
from __future__ import annotations

import datetime as dt
import threading
from dataclasses import replace

import pandas as pd
import pyarrow as pa
import pytest

from catalog.base import SourceRecord
from common.errors import BackendUnavailable, InvalidInput, InvalidQuery
from demo.flows import generate_flows
from sql.prepared import prepare_query
from realtime import open_realtime_store
from realtime.base import RealtimeStore, index_name, rows_table
from sources.definition import parse_source, source_diff
from demo.sources import demo_sources, with_demo_tables
from tests.walkthrough import FOUR_TABLE_QUERY
from warehouse import open_warehouse

NOW = 1_800_000_000
HOUR = 3600
TYPED_QUERY = """
SELECT q.user_id, q.quote_id, q.creation_date, q.binding_date, q.is_paid, q.is_binded AND q.is_paid AS bound_and_paid,
       q.creation_date / 3600 AS hours, count(t.transaction_id) AS n_transactions,
       sum(t.transaction_time) AS summed, avg(t.transaction_time) AS mean_time, bool_or(t.successful) AS any_ok,
       max(t.card_type) AS card
FROM quotes q LEFT JOIN transactions t ON t.ref_id = q.quote_id
GROUP BY q.user_id, q.quote_id, q.creation_date, q.binding_date, q.is_paid, q.is_binded
"""
ALL_QUOTES = prepare_query("SELECT * FROM quotes")


@pytest.fixture(params=["sqlite:///:memory:", "duckdb:///:memory:"])
def store(request):
    opened = open_realtime_store(request.param)
    yield opened
    opened.close()


@pytest.fixture(scope="module")
def flows():
    return generate_flows(300, seed=11, now=NOW)


@pytest.fixture
def warehouse(flows):
    opened = open_warehouse("duckdb:///:memory:")
    with_demo_tables(opened)
    opened.append(flows)
    yield opened
    opened.close()


def warehouse_lookup(warehouse, prepared, key, value):
    """What DuckDB itself returns for one entity: the reference for values and dtypes."""
    return warehouse.engine.query(prepared.point_lookup_sql(key, "duckdb"), [value])


def demo_source(name: str, **changes) -> SourceRecord:
    """One of the demo's sources, with `changes` (a hot window, say)."""
    return replace(next(s for s in demo_sources() if s.name == name), **changes)


def quote_rows(times: dict[str, int], **extra) -> pd.DataFrame:
    """Quotes with the given ids and creation dates (epoch seconds), other columns filled."""
    n = len(times)
    return pd.DataFrame({"quote_id": list(times), "user_id": [f"u_{q}" for q in times],
                         "creation_date": list(times.values()), "binding_date": [None] * n,
                         "quote_type": ["car"] * n, "quote_device": ["web"] * n, "is_binded": [False] * n,
                         "is_paid": [False] * n, **extra})


def stored_ids(store: RealtimeStore, source: str, key: str) -> list:
    """Every id held in the source's table, in or out of its window (what evict has not deleted yet)."""
    return sorted(store.query(f"SELECT {key} FROM {rows_table(source)}")[key])


def served_ids(store: RealtimeStore, ids) -> list[str]:
    """The quotes of `ids` a lookup returns."""
    return [q for q in ids if len(store.lookup(ALL_QUOTES, "quote_id", q, 10))]


@pytest.mark.parametrize("sql, key", [(FOUR_TABLE_QUERY, "user_id"), (TYPED_QUERY, "quote_id")])
def test_lookups_equal_the_warehouse_in_values_and_dtypes(store, warehouse, sql, key):
    store.hydrate(warehouse, demo_sources())
    prepared = prepare_query(sql)
    entities = warehouse.query(prepared.sql_for("duckdb"))[key].dropna().iloc[:40]
    assert len(entities) == 40
    for value in entities:
        online = store.lookup(prepared, key, value, 100)
        pd.testing.assert_frame_equal(online, warehouse_lookup(warehouse, prepared, key, value))


def test_unknown_entity_gives_an_empty_frame_with_the_columns(store, warehouse):
    store.hydrate(warehouse, demo_sources())
    online = store.lookup(prepare_query(FOUR_TABLE_QUERY), "user_id", "nobody", 10)
    assert online.empty and "policy_type" in online.columns


def test_hydrate_keeps_only_each_sources_window(store, warehouse, flows):
    """The window is per source: quotes keep 2 days, users 1 day, the others all their history.
    A row is hot when its event time is strictly after now - window."""
    windows = {"quotes": 2 * 86400, "users": 86400}
    sources = [replace(s, hot_window_seconds=windows.get(s.name)) for s in demo_sources()]
    store.clock = lambda: NOW
    written = store.hydrate(warehouse, sources, now=NOW)
    assert set(written) == {s.name for s in sources}
    for source in sources:
        frame, window = flows[source.name], windows.get(source.name)
        recent = frame[source.event_time] > NOW - window if window else pd.Series(True, index=frame.index)
        assert written[source.name] == int(recent.sum()), source.name
        if window:
            assert 0 < written[source.name] < len(frame), source.name
        key = source.entity_keys[-1]
        assert stored_ids(store, source.name, key) == sorted(frame.loc[recent, key]), source.name  # not even held
        assert store.stats(source.name)["rows"] == store.row_count(source.name) == written[source.name]
    recent = flows["quotes"]["creation_date"] > NOW - 2 * 86400
    old_quote = flows["quotes"].loc[~recent, "quote_id"].iloc[0]
    new_quote = flows["quotes"].loc[recent, "quote_id"].iloc[0]
    assert served_ids(store, [old_quote, new_quote]) == [new_quote]


@pytest.mark.parametrize("broken", ["unknown source", "value refused"])
def test_a_failed_batch_writes_nothing(store, flows, broken):
    with_demo_tables(realtime=store)
    if broken == "unknown source":
        batch = {"quotes": flows["quotes"], "users": flows["users"], "no_such_table": flows["policies"]}
    else:  # the last table's last value is one this engine refuses while inserting, after the others went in
        policies = flows["policies"].copy()
        if store.dialect == "sqlite":
            policies["policy_device"] = [*policies["policy_device"].iloc[:-1], {"not": "bindable"}]
        else:
            policies["purchase_time"] = [*policies["purchase_time"].astype(str).iloc[:-1], "not a number"]
        batch = {"quotes": flows["quotes"], "users": flows["users"], "policies": policies}
    with pytest.raises((InvalidInput, BackendUnavailable)):
        store.append(batch)
    assert {name: store.stats(name)["rows"] for name in ("quotes", "users", "policies")} == \
        {"quotes": 0, "users": 0, "policies": 0}
    assert store.append({"quotes": flows["quotes"]}) == {"quotes": len(flows["quotes"])}  # still writable
    assert store.stats("quotes")["rows"] == len(flows["quotes"])


def test_queries_the_store_cannot_run_are_refused_by_check(store):
    with pytest.raises(InvalidQuery):  # a new store holds no tables: the demo's are registered, not implicit
        store.check(prepare_query(FOUR_TABLE_QUERY))
    with_demo_tables(realtime=store)
    with pytest.raises(InvalidQuery):
        store.check(prepare_query("SELECT * FROM no_such_table"))
    assert store.check(prepare_query(FOUR_TABLE_QUERY))[0] == ("user_id", "string")


def test_sqlite_authorizer_refuses_writes_that_bypass_the_parser():
    store = open_realtime_store("sqlite:///:memory:")
    with_demo_tables(realtime=store)
    store.append(generate_flows(5, seed=1))
    for sql in ("DELETE FROM _fs_rows_quotes", "UPDATE _fs_rows_quotes SET is_paid = 0", "DROP TABLE _fs_rows_quotes",
                "DROP VIEW quotes", "INSERT INTO _fs_rows_quotes (quote_id) VALUES ('x')",
                "ATTACH DATABASE '/tmp/x.db' AS x", "PRAGMA writable_schema = 1", "CREATE TABLE t (a)"):
        with pytest.raises(InvalidQuery, match="not authorized"):
            store.query(sql)
    with pytest.raises(InvalidQuery):  # the source's own name is a view: SQLite refuses to write through it
        store.query("DELETE FROM quotes")
    assert len(store.query("SELECT * FROM quotes")) == len(store.query("SELECT * FROM _fs_rows_quotes")) == 5
    store.append(generate_flows(5, seed=2))  # our own writes still work
    assert len(store.query("SELECT * FROM quotes")) == 10


def test_closed_store_is_unavailable(store):
    store.close()
    with pytest.raises(BackendUnavailable):
        store.ping()


@pytest.mark.parametrize("url", ["sqlite:///some/file.db", "duckdb:///some/file.duckdb", "redis://x"])
def test_only_in_memory_urls(url):
    with pytest.raises(InvalidInput):
        open_realtime_store(url)


def test_concurrent_publish_never_shows_a_torn_flow(store):
    """Readers join paid quotes to their policies while batches land: never a paid quote without its policy.

    Batches write quotes before policies, so a store that let readers in mid-batch would show one.
    """
    with_demo_tables(realtime=store)
    prepared = prepare_query("SELECT q.quote_id, p.policy_id AS quote_id_of_policy, 1 AS k FROM quotes q "
                             "LEFT JOIN policies p ON p.quote_id = q.quote_id WHERE q.is_paid")
    stop = threading.Event()
    torn: list[int] = []

    def read() -> None:
        while not stop.is_set():
            rows = store.lookup(prepared, "k", 1, 10**6)
            torn.append(int(rows["quote_id_of_policy"].isna().sum()))

    readers = [threading.Thread(target=read) for _ in range(3)]
    for reader in readers:
        reader.start()
    for seed in range(20):
        store.append(generate_flows(200, seed=seed))
    stop.set()
    for reader in readers:
        reader.join()
    assert len(torn) > 20 and sum(torn) == 0


# -- hot windows: the view, evict, and compatible new versions --------------------------------------------

WINDOWED = ["integer", "timestamp"]  # an event time in epoch seconds (the demo's quotes) or a timestamptz


def windowed_source(kind: str, window: int) -> SourceRecord:
    if kind == "integer":
        return demo_source("quotes", hot_window_seconds=window)
    declared = parse_source({"name": "clicks", "columns": [
        {"name": "click_id", "type": "string"}, {"name": "clicked_at", "type": "timestamp"},
        {"name": "page", "type": "string"}], "entity_keys": ["click_id"], "event_time": "clicked_at",
        "hot_window_seconds": window}, created_by="test", created_at="2024-01-01T00:00:00.000+00:00")
    return replace(declared, version=1)


def windowed_rows(kind: str, times: dict[str, int]):
    """Rows of `windowed_source(kind)` with these ids and event times (epoch seconds)."""
    if kind == "integer":
        return quote_rows(times)
    return pa.table({"click_id": pa.array(list(times), pa.large_string()),
                     "clicked_at": pa.array([utc(t) for t in times.values()], pa.timestamp("us", tz="UTC")),
                     "page": pa.array(["/"] * len(times), pa.large_string())})


def utc(epoch_seconds: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(epoch_seconds, dt.timezone.utc)


def served(store: RealtimeStore, source: SourceRecord, ids) -> list[str]:
    """The ids of `ids` a point lookup of the whole source returns."""
    prepared, key = prepare_query(f"SELECT * FROM {source.name}"), source.entity_keys[0]
    return [i for i in ids if len(store.lookup(prepared, key, i, 10))]


EDGE_TIMES = {"older": NOW - HOUR - 1, "edge": NOW - HOUR, "inside": NOW - HOUR + 1, "new": NOW}


@pytest.mark.parametrize("kind", WINDOWED)
def test_a_row_past_its_window_is_not_served_even_before_evict(store, kind):
    source = windowed_source(kind, HOUR)
    store.register(source)
    store.clock = lambda: NOW
    store.append({source.name: windowed_rows(kind, EDGE_TIMES)})
    as_stored = (lambda t: t) if kind == "integer" else utc
    assert served(store, source, EDGE_TIMES) == ["inside", "new"]  # exactly at now - window is out
    assert store.stats(source.name) == {"rows": 2, "min_event_time": as_stored(NOW - HOUR + 1),
                                        "max_event_time": as_stored(NOW)}
    assert stored_ids(store, source.name, source.entity_keys[0]) == sorted(EDGE_TIMES)  # hidden, not deleted
    store.clock = lambda: NOW + 1  # a second later "inside" is at the cutoff: out, with no evict in between
    assert served(store, source, EDGE_TIMES) == ["new"]
    counted = store.lookup(prepare_query(f"SELECT count(*) AS n, 1 AS k FROM {source.name}"), "k", 1, 10)
    assert int(counted["n"].iloc[0]) == 1
    store.clock = lambda: NOW - 2 * HOUR  # and a clock set back shows them all again
    assert served(store, source, EDGE_TIMES) == list(EDGE_TIMES)


@pytest.mark.parametrize("kind", WINDOWED)
def test_evict_deletes_exactly_the_rows_at_or_before_the_cutoff(store, kind):
    source = windowed_source(kind, HOUR)
    store.register(source)
    store.register(demo_source("users"))  # no window: evict never touches it
    users = generate_flows(5, seed=3, now=NOW - 30 * 86400)["users"]
    store.append({source.name: windowed_rows(kind, EDGE_TIMES), "users": users})
    assert store.cutoff(source, NOW) == NOW - HOUR and store.cutoff(demo_source("users"), NOW) is None
    assert store.evict(now=NOW) == {source.name: 2}
    assert stored_ids(store, source.name, source.entity_keys[0]) == ["inside", "new"]
    assert store.stats("users")["rows"] == len(users) > 0
    assert store.evict(now=NOW) == {source.name: 0}
    store.clock = lambda: NOW + 1  # without `now`, evict cuts at the store's clock
    assert store.evict() == {source.name: 1}
    assert stored_ids(store, source.name, source.entity_keys[0]) == ["new"]


def test_register_of_a_compatible_version_keeps_the_rows_and_serves_the_new_column_as_null(store):
    v1 = demo_source("quotes", hot_window_seconds=HOUR)
    v2 = replace(v1, version=2, hot_window_seconds=3 * HOUR,
                 columns=[*v1.columns, {"name": "discount", "type": "float", "nullable": True},
                          {"name": "campaign", "type": "string", "nullable": True}])
    assert source_diff(v1, v2)["compatible"]
    store.clock = lambda: NOW
    store.register(v1)
    store.index("quotes", "user_id")
    store.append({"quotes": quote_rows({"a": NOW - 10, "b": NOW - 2 * HOUR})})
    assert served(store, v1, ["a", "b"]) == ["a"]

    store.register(v2)
    assert stored_ids(store, "quotes", "quote_id") == ["a", "b"]
    assert served(store, v2, ["a", "b"]) == ["a", "b"]  # v2's longer window: the view was replaced
    row = store.lookup(ALL_QUOTES, "quote_id", "a", 10)
    assert list(row.columns) == [c["name"] for c in v2.columns]
    assert row["discount"].isna().all() and row["campaign"].isna().all() and row["user_id"].tolist() == ["u_a"]
    assert store.check(prepare_query("SELECT quote_id, discount, campaign FROM quotes")) == [
        ("quote_id", "string"), ("discount", "float"), ("campaign", "string")]

    store.append({"quotes": quote_rows({"c": NOW}, discount=[0.25], campaign=["spring"])})
    new = store.lookup(ALL_QUOTES, "quote_id", "c", 10)
    assert new["discount"].tolist() == [0.25] and new["campaign"].tolist() == ["spring"]
    store.register(v2)  # the same version again changes nothing
    assert stored_ids(store, "quotes", "quote_id") == ["a", "b", "c"]
    assert store.lookup(ALL_QUOTES, "quote_id", "c", 10)["discount"].tolist() == [0.25]


def test_index_names_of_different_sources_never_collide(store):
    """Source "a" indexing "b_c" and source "a_b" indexing "c" are two indexes, each on its own table."""
    def declared(name: str, column: str) -> SourceRecord:
        return replace(parse_source({"name": name, "columns": [{"name": "id", "type": "string"},
                                                               {"name": "at", "type": "integer"},
                                                               {"name": column, "type": "string"}],
                                     "entity_keys": ["id"], "event_time": "at"},
                                    created_by="test", created_at="2024-01-01T00:00:00.000+00:00"), version=1)

    store.register(declared("a", "b_c"))
    store.register(declared("a_b", "c"))
    store.index("a", "b_c")
    store.index("a_b", "c")
    assert index_name("a", "b_c") != index_name("a_b", "c")
    if store.dialect == "sqlite":
        indexes = store.query("SELECT name, tbl_name FROM sqlite_master WHERE type = 'index'")
    else:
        indexes = store.engine.arrow("SELECT index_name AS name, table_name AS tbl_name FROM duckdb_indexes()"
                                     ).to_pandas()  # user SQL may not read duckdb_*(): the engine's own reads may
    on = dict(zip(indexes["name"], indexes["tbl_name"]))
    assert on[index_name("a", "b_c")] == rows_table("a") and on[index_name("a_b", "c")] == rows_table("a_b")
    assert sorted(on) == sorted(index_name(s, c) for s, c in [("a", "id"), ("a", "b_c"), ("a_b", "id"), ("a_b", "c")])


def test_sqlite_eviction_walks_rowid_chunks_and_deletes_exactly_the_old_rows(monkeypatch):
    """Eviction without an event-time index: rowid ranges of EVICT_CHUNK_ROWS, one transaction each."""
    import realtime.sqlite_store as sqlite_store

    monkeypatch.setattr(sqlite_store, "EVICT_CHUNK_ROWS", 7)
    store = sqlite_store.SqliteRealtimeStore()
    source = replace(parse_source({"name": "ticks", "columns": [{"name": "k", "type": "integer"},
                                                                {"name": "at", "type": "integer"}],
                                   "entity_keys": ["k"], "event_time": "at", "hot_window_seconds": 100},
                                  created_by="test", created_at=""), version=1)
    store.register(source)
    ages = [500, 10, 101, 100, 99, 3, 1000] * 5  # 35 rows over 5 chunks; ages >= 100 are out of the window
    store.append({"ticks": pa.table({"k": list(range(len(ages))), "at": [10_000 - a for a in ages]})})
    transactions = []
    real_writes = store._writes
    monkeypatch.setattr(store, "_writes", lambda: (transactions.append(1), real_writes())[1])
    assert store.evict(now=10_000) == {"ticks": 4 * 5}
    assert len(transactions) == 5
    left = store.query("SELECT at FROM _fs_rows_ticks ORDER BY rowid")["at"].tolist()
    assert left == [10_000 - a for a in ages if a < 100]
    store.close()
