"""The entity key pushed into every source of a point lookup (sql/key_pushdown.py): which shapes are pushed,
which are refused and why, and that a pushed lookup returns exactly the rows of the unpushed one, on both
realtime stores, for the walkthrough's query, the shop example and random rows (hypothesis)."""
from __future__ import annotations

import json
import sys
from dataclasses import replace
from pathlib import Path

import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from demo.flows import TABLES, generate_flows
from demo.sources import with_demo_tables
from realtime import open_realtime_store
from sources.definition import parse_source
from sql.key_pushdown import point_lookup
from sql.prepared import prepare_query
from tests.conftest import JsonClient
from tests.walkthrough import FOUR_TABLE_QUERY

ROOT = Path(__file__).resolve().parent.parent
SHOP = ROOT / "examples" / "shop"
sys.path.insert(0, str(SHOP))
from generate import generate  # noqa: E402 - the shop example's own generator

STORES = ["sqlite:///:memory:", "duckdb:///:memory:"]
DEMO = {name: list(columns) for name, columns in TABLES.items()}
USER_HISTORY = (ROOT / "examples" / "user_history.sql").read_text()
AGGREGATE_SUBQUERY = """
SELECT u.user_id, u.creation_date AS user_created, a.n_quotes, a.paid
FROM users u
JOIN (SELECT q.user_id, count(DISTINCT q.quote_id) AS n_quotes, sum(CASE WHEN t.successful THEN 1 ELSE 0 END) AS paid
      FROM quotes q LEFT JOIN transactions t ON t.ref_id = q.quote_id GROUP BY q.user_id) a ON a.user_id = u.user_id
"""

# query -> the (source, column) pairs the lookup by user_id filters
PUSHED = {
    "base table": ("SELECT user_id, quote_id FROM quotes", {("quotes", "user_id")}),
    "walkthrough join": (FOUR_TABLE_QUERY, {("users", "user_id"), ("quotes", "user_id")}),
    "aggregate subquery": (AGGREGATE_SUBQUERY, {("users", "user_id"), ("quotes", "user_id")}),
    "CTEs": (USER_HISTORY, {(t, "user_id") for t in ("users", "quotes", "transactions", "policies")}),
    "USING": ("SELECT user_id, q.quote_id, t.transaction_id FROM quotes q FULL JOIN transactions t USING (user_id)",
              {("quotes", "user_id"), ("transactions", "user_id")}),
    "WHERE equality": ("SELECT u.user_id, q.quote_id FROM users u, quotes q WHERE q.user_id = u.user_id",
                       {("users", "user_id"), ("quotes", "user_id")}),
    "key from the outer side": ("SELECT t.user_id, u.name FROM users u RIGHT JOIN transactions t "
                                "ON t.user_id = u.user_id", {("users", "user_id"), ("transactions", "user_id")}),
    "window by the key": ("SELECT user_id, transaction_id, row_number() OVER (PARTITION BY user_id ORDER BY "
                          "transaction_time, transaction_id) AS n FROM transactions", {("transactions", "user_id")}),
    "union branches": ("SELECT user_id, quote_id AS id FROM quotes UNION SELECT ref_id, transaction_id FROM "
                       "transactions", {("quotes", "user_id"), ("transactions", "ref_id")}),
    "group with having": ("SELECT user_id, card_type, count(*) AS n FROM transactions GROUP BY user_id, card_type "
                          "HAVING count(*) < 3", {("transactions", "user_id")}),
}
# query -> (the pairs still filtered, {refused source: a phrase of the reason})
REFUSED = {
    "window not by the key": ("SELECT user_id, row_number() OVER (ORDER BY transaction_time, transaction_id) AS n "
                              "FROM transactions", set(), {"transactions": "window not partitioned by the key"}),
    "LIMIT in a source": ("SELECT u.user_id, r.transaction_id FROM users u JOIN (SELECT user_id, transaction_id "
                          "FROM transactions ORDER BY transaction_time DESC, transaction_id LIMIT 5) r "
                          "ON r.user_id = u.user_id", {("users", "user_id")}, {"transactions": "LIMIT"}),
    "DISTINCT ON": ("SELECT DISTINCT ON (card_type) user_id, card_type FROM transactions ORDER BY card_type, "
                    "user_id", set(), {"transactions": "DISTINCT ON"}),
    "aggregate not by the key": (
        "SELECT t.user_id, c.n FROM transactions t JOIN (SELECT card_type, count(*) AS n FROM transactions "
        "GROUP BY card_type) c ON c.card_type = t.card_type", {("transactions", "user_id")},
        {"transactions": "reaches no column of subquery 'c'"}),
    "computed key": ("SELECT min(user_id) AS user_id, card_type FROM transactions GROUP BY card_type", set(),
                     {"transactions": "computed"}),
    "IN subquery": ("SELECT user_id, name FROM users WHERE user_id IN (SELECT user_id FROM transactions WHERE "
                    "successful)", {("users", "user_id")}, {"transactions": "subquery inside an expression"}),
}


def refusal_phrases(sql: str) -> dict[str, str]:
    return {r.source: r.reason for r in point_lookup(prepare_query(sql), "user_id", "duckdb", DEMO).refusals}


@pytest.mark.parametrize("name", PUSHED)
def test_each_source_the_key_reaches_is_filtered(name):
    sql, filtered = PUSHED[name]
    lookup = point_lookup(prepare_query(sql), "user_id", "duckdb", DEMO)
    assert lookup.filtered == filtered and lookup.refusals == ()
    assert lookup.parameters == len(filtered) + 1  # each filtered source, and the outer filter


@pytest.mark.parametrize("name", REFUSED)
def test_a_shape_that_would_change_the_rows_is_left_unfiltered_with_its_reason(name):
    sql, filtered, refused = REFUSED[name]
    lookup = point_lookup(prepare_query(sql), "user_id", "duckdb", DEMO)
    assert lookup.filtered == filtered
    reasons = {r.source: r.reason for r in lookup.refusals}
    assert set(reasons) == set(refused)
    for source, phrase in refused.items():
        assert phrase in reasons[source], reasons


def test_without_pushdown_only_the_outside_is_filtered():
    lookup = point_lookup(prepare_query(USER_HISTORY), "user_id", "duckdb", DEMO, pushdown=False)
    assert (lookup.parameters, lookup.filtered, lookup.refusals) == (1, frozenset(), ())
    assert lookup.sql == prepare_query(USER_HISTORY).point_lookup_sql("user_id", "duckdb")


@pytest.fixture(scope="module")
def flows():
    return generate_flows(150, seed=4)


@pytest.fixture(params=STORES, scope="module")
def demo_store(request, flows):
    store = open_realtime_store(request.param)
    with_demo_tables(realtime=store)
    store.append(flows)
    yield store
    store.close()


def unpushed(store, prepared, key: str, value) -> pd.DataFrame:
    """The lookup as it ran before key pushdown: the whole query, filtered on the outside."""
    saved, store.key_pushdown = store.key_pushdown, False
    try:
        return store.lookup(prepared, key, value, 10_000)
    finally:
        store.key_pushdown = saved


def same_rows(left: pd.DataFrame, right: pd.DataFrame) -> bool:
    order = list(left.columns)
    return list(right.columns) == order and left.sort_values(order).reset_index(drop=True).equals(
        right.sort_values(order).reset_index(drop=True))


@pytest.mark.parametrize("sql", [q[0] for q in {**PUSHED, **REFUSED}.values()], ids=[*PUSHED, *REFUSED])
def test_pushed_lookups_equal_unpushed_ones_for_every_user(demo_store, flows, sql):
    prepared = prepare_query(sql)
    users = [*flows["users"]["user_id"], "nobody"]
    found = 0
    for user in users:
        pushed = demo_store.lookup(prepared, "user_id", user, 10_000)
        assert same_rows(pushed, unpushed(demo_store, prepared, "user_id", user)), user
        found += len(pushed)
    assert found > 0


def test_the_walkthrough_lookup_reads_no_table_in_full(flows):
    """SQLite's plan: with the pushed columns indexed, every source is a SEARCH, none a SCAN; unpushed, the
    CTEs' aggregates scan their tables."""
    store = open_realtime_store("sqlite:///:memory:")
    try:
        with_demo_tables(realtime=store)
        for query in (FOUR_TABLE_QUERY, AGGREGATE_SUBQUERY, USER_HISTORY):
            prepared = prepare_query(query)
            for table, column in prepared.join_columns(store.tables()) | store.lookup_columns(prepared):
                store.index(table, column)
            assert store.lookup_scans(prepared) == {}, query
            if query == USER_HISTORY:  # SQLite pushes the outer filter into joins and derived tables, not CTEs
                store.key_pushdown = False
                assert store.lookup_scans(prepared) != {}, query  # what the pushdown removed
                store.key_pushdown = True
    finally:
        store.close()


def shop_sources() -> list:
    return [replace(parse_source(body, created_by="test", created_at="2024-01-01T00:00:00.000+00:00"), version=1)
            for body in json.loads((SHOP / "sources.json").read_text())]


@pytest.mark.parametrize("url", STORES)
def test_the_shop_queries_are_pushed_and_equal(url):
    store = open_realtime_store(url)
    try:
        for source in shop_sources():
            store.register(source)
        data = generate(customers=40, days=20, seed=5)
        store.append(data)
        for name in ("customer_activity.sql", "latest_page.sql"):
            prepared = prepare_query((SHOP / name).read_text())
            lookup = store.point_lookup(prepared, "customer_id")
            assert lookup.refusals == () and lookup.filtered, name
            for customer in sorted(set(data["page_views"]["customer_id"].to_pylist())):
                pushed = store.lookup(prepared, "customer_id", customer, 10_000)
                assert len(pushed) == 1 and same_rows(pushed, unpushed(store, prepared, "customer_id", customer))
    finally:
        store.close()


def test_saving_a_query_warns_of_each_source_the_key_cannot_reach(make_app):
    api = JsonClient(make_app().test_client())
    api.put("/v1.0/publish?n_flows=30&seed=2")
    for bounded in (FOUR_TABLE_QUERY, AGGREGATE_SUBQUERY, USER_HISTORY):
        saved = api.post("/v1.0/query/train?save=true&include_data=false", {"query": bounded})
        assert not [w for w in saved.get("warnings", []) if w["code"] == "lookup_not_key_bounded"], saved
    sql = REFUSED["LIMIT in a source"][0]
    saved = api.post("/v1.0/query/train?save=true&include_data=false", {"query": sql})
    flagged = [w for w in saved["warnings"] if w["code"] == "lookup_not_key_bounded"]
    assert [(w["index_key"], w["source"]) for w in flagged] == [("user_id", "transactions")]
    assert "LIMIT" in flagged[0]["reason"] and "LIMIT" in flagged[0]["message"]


# -- random rows: pushed == unpushed for every key -------------------------------------------------

RANDOM_COLUMNS = {"a": [("k", "integer"), ("x", "integer"), ("t", "integer")],
                  "b": [("k", "integer"), ("y", "integer"), ("t", "integer")]}
RANDOM_QUERIES = [
    "SELECT a.k, a.x, b.y FROM a JOIN b ON b.k = a.k",
    "SELECT a.k, a.x, b.y FROM a LEFT JOIN b ON b.k = a.k AND b.y > a.x",
    "SELECT b.k, a.x, b.y FROM a RIGHT JOIN b ON b.k = a.k",
    "SELECT k, a.x, b.y FROM a FULL JOIN b USING (k)",
    "SELECT a.k, s.n, s.total FROM a LEFT JOIN (SELECT k, count(*) AS n, sum(y) AS total FROM b GROUP BY k) s "
    "ON s.k = a.k",
    "WITH s AS (SELECT k, max(y) AS top FROM b GROUP BY k HAVING count(*) > 1) "
    "SELECT s.k, s.top, a.x FROM s JOIN a ON a.k = s.k",
    "SELECT k, x, sum(x) OVER (PARTITION BY k ORDER BY t, x ROWS UNBOUNDED PRECEDING) AS running FROM a",
    "SELECT k, x, rank() OVER (ORDER BY x) AS r FROM a",
    "SELECT k, x FROM a UNION SELECT k, y FROM b",
    "SELECT k, x FROM a EXCEPT SELECT k, y FROM b",
    "SELECT a.k, a.x FROM a WHERE a.x > (SELECT avg(y) FROM b)",
    "SELECT DISTINCT a.k, b.y FROM a, b WHERE a.k = b.k",
    "SELECT b.k, a.x, b.y FROM a LEFT JOIN b ON b.k = a.k",  # the key from the side that may be null
    "SELECT a.k, s.n FROM a FULL JOIN (SELECT k, count(*) AS n FROM b GROUP BY k) s ON s.k = a.k",
    "WITH s AS (SELECT k, sum(x) AS total FROM a GROUP BY k) SELECT s.k, s.total, o.total AS again "
    "FROM s LEFT JOIN s AS o ON o.k = s.k AND o.total > 0",
    "SELECT a.k, l.y FROM a JOIN (SELECT k, y FROM b ORDER BY y, k LIMIT 3) l ON l.k = a.k",
]
ROWS = st.lists(st.tuples(st.one_of(st.none(), st.integers(0, 4)), st.integers(-3, 3), st.integers(0, 9)),
                max_size=12)


def random_store(url: str, a: list, b: list):
    store = open_realtime_store(url)
    for name, columns in RANDOM_COLUMNS.items():
        store.register(replace(parse_source(
            {"name": name, "columns": [{"name": c, "type": kind} for c, kind in columns], "entity_keys": ["k"],
             "event_time": "t"}, created_by="test", created_at="2024-01-01T00:00:00.000+00:00"), version=1))
    frames = {name: pd.DataFrame(rows, columns=[c for c, _ in RANDOM_COLUMNS[name]], dtype="Int64")
              for name, rows in (("a", a), ("b", b))}
    store.append({name: frame for name, frame in frames.items() if len(frame)})
    return store


@pytest.mark.parametrize("url", STORES)
@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(a=ROWS, b=ROWS)
def test_random_rows_give_the_same_lookup_pushed_or_not(url, a, b):
    store = random_store(url, a, b)
    try:
        for sql in RANDOM_QUERIES:
            prepared = prepare_query(sql)
            for key in range(-1, 6):
                assert same_rows(store.lookup(prepared, "k", key, 10_000), unpushed(store, prepared, "k", key)), \
                    (sql, key)
    finally:
        store.close()
