"""Both realtime stores through one suite: typed lookups equal to the warehouse, atomic batches, read-only SQL."""
from __future__ import annotations

import threading

import pandas as pd
import pytest

from common.errors import BackendUnavailable, InvalidInput, InvalidQuery
from demo.flows import generate_flows
from extraction.sql import prepare_query
from warehouse import open_warehouse
from realtime import open_realtime_store
from tests.walkthrough import FOUR_TABLE_QUERY

NOW = 1_800_000_000
TYPED_QUERY = """
SELECT q.user_id, q.quote_id, q.creation_date, q.binding_date, q.is_paid, q.is_binded AND q.is_paid AS bound_and_paid,
       q.creation_date / 3600 AS hours, count(t.transaction_id) AS n_transactions,
       sum(t.transaction_time) AS summed, avg(t.transaction_time) AS mean_time, bool_or(t.successful) AS any_ok,
       max(t.card_type) AS card
FROM quotes q LEFT JOIN transactions t ON t.ref_id = q.quote_id
GROUP BY q.user_id, q.quote_id, q.creation_date, q.binding_date, q.is_paid, q.is_binded
"""


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
    opened.append(flows)
    yield opened
    opened.close()


def warehouse_lookup(warehouse, prepared, key, value):
    """What DuckDB itself returns for one entity: the reference for values and dtypes."""
    return warehouse.engine.query(prepared.point_lookup_sql(key, "duckdb"), [value])


@pytest.mark.parametrize("sql, key", [(FOUR_TABLE_QUERY, "user_id"), (TYPED_QUERY, "quote_id")])
def test_lookups_equal_the_warehouse_in_values_and_dtypes(store, warehouse, sql, key):
    store.hydrate(warehouse, None)
    prepared = prepare_query(sql)
    entities = warehouse.query(prepared.sql_for("duckdb"))[key].dropna().iloc[:40]
    for value in entities:
        online = store.lookup(prepared, key, value, 100)
        pd.testing.assert_frame_equal(online, warehouse_lookup(warehouse, prepared, key, value))


def test_unknown_entity_gives_an_empty_frame_with_the_columns(store, warehouse):
    store.hydrate(warehouse, None)
    online = store.lookup(prepare_query(FOUR_TABLE_QUERY), "user_id", "nobody", 10)
    assert online.empty and "policy_type" in online.columns


def test_hydrate_keeps_only_the_window(store, warehouse, flows):
    written = store.hydrate(warehouse, 2 * 86400, now=NOW)
    recent = flows["quotes"]["creation_date"] >= NOW - 2 * 86400
    assert written["quotes"] == int(recent.sum()) < len(flows["quotes"])
    old_quote = flows["quotes"].loc[~recent, "quote_id"].iloc[0]
    assert store.lookup(prepare_query("SELECT * FROM quotes"), "quote_id", old_quote, 10).empty


def test_a_failed_batch_writes_nothing(store, flows):
    broken = {"quotes": flows["quotes"], "users": flows["users"], "no_such_table": flows["policies"]}
    with pytest.raises(Exception):
        store.append(broken)
    count = store.lookup(prepare_query("SELECT count(*) AS n, 1 AS k FROM quotes"), "k", 1, 10)
    assert int(count["n"].iloc[0]) == 0


def test_queries_the_store_cannot_run_are_refused_by_check(store):
    with pytest.raises(InvalidQuery):
        store.check(prepare_query("SELECT * FROM no_such_table"))
    assert store.check(prepare_query(FOUR_TABLE_QUERY))[0] == ("user_id", "string")


def test_sqlite_authorizer_refuses_writes_that_bypass_the_parser():
    store = open_realtime_store("sqlite:///:memory:")
    store.append(generate_flows(5, seed=1))
    for sql in ("DELETE FROM quotes", "DROP TABLE quotes", "ATTACH DATABASE '/tmp/x.db' AS x",
                "PRAGMA writable_schema = 1", "CREATE TABLE t (a)"):
        with pytest.raises(InvalidQuery, match="not authorized"):
            store.query(sql)
    assert len(store.query("SELECT * FROM quotes")) == 5
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
