"""The realtime engine answers a saved query as the warehouse engine does, on every pair that ships.

Pairs: DuckDB warehouse -> SQLite realtime (the default) and -> DuckDB realtime; PostgreSQL warehouse ->
SQLite and -> DuckDB. Every query is prepared by the service's own code (`prepare_query` in the warehouse's
dialect; the warehouse runs `sql_with_tables`, the realtime store its `check` and its point lookup over the
same rows, hydrated from that warehouse), and the answers must be equal — unless the store's save-time
check refuses the query, naming a construct that `unequal_constructs` lists."""
from __future__ import annotations

import collections
import datetime as dt
import decimal
import math
import re
from typing import Any, Iterator

import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st
from psycopg import sql as pgsql

from catalog.base import SourceRecord
from common.errors import FeatureStoreError, InvalidQuery
from realtime import RealtimeStore, open_realtime_store
from sql.prepared import prepare_query
from tests.conftest import JsonClient
from tests.fixtures_pg import admin_connection, throwaway_database
from warehouse import Warehouse, open_warehouse

PAIRS = [("duckdb", "sqlite"), ("duckdb", "duckdb"), ("postgres", "sqlite"), ("postgres", "duckdb")]
COLUMNS = [("k", "integer"), ("i", "integer"), ("f", "float"), ("s", "string"), ("b", "boolean"), ("ts", "timestamp")]
SOURCE = SourceRecord(name="t", version=1, table="t", columns=[{"name": n, "type": t, "nullable": True}
                                                              for n, t in COLUMNS], entity_keys=["k"], event_time="ts")
UTC = dt.timezone.utc
ROWS = pd.DataFrame.from_records([
    (1, 7, 2.5, "Apple", True, dt.datetime(2024, 3, 1, 12, 0, tzinfo=UTC)),
    (2, -7, -2.5, "apple", False, dt.datetime(2024, 3, 1, 23, 30, 15, 250000, tzinfo=UTC)),
    (3, 2, 0.49, "APPLE pie", None, dt.datetime(2023, 12, 31, 23, 59, 59, tzinfo=UTC)),
    (4, None, None, None, None, None),
    (5, 3, 3.5, "b_c", True, dt.datetime(2024, 7, 4, 6, 5, 4, tzinfo=UTC)),
    (6, 0, -0.5, "Élan ÉCOLE", False, dt.datetime(2024, 2, 29, 0, 0, tzinfo=UTC)),
    (7, 10, 7.25, "Ärger öl Σοφία жук", True, dt.datetime(2024, 10, 27, 1, 30, tzinfo=UTC)),
], columns=[name for name, _ in COLUMNS]).astype({"k": "Int64", "i": "Int64", "b": "boolean"})
SELECT = "SELECT k, {} AS v, 1 AS one FROM t"


@pytest.fixture(scope="module")
def pg_url(pg_server_url: str) -> Iterator[str]:
    """A database of this module's own, dropped afterwards, whose sessions default to another time zone
    than UTC (the warehouse's sessions must run in UTC whatever the server's setting)."""
    with throwaway_database(pg_server_url) as url:
        with admin_connection(pg_server_url) as conn:
            conn.execute(pgsql.SQL("ALTER DATABASE {} SET TimeZone = 'America/New_York'").format(
                pgsql.Identifier(url.rsplit("/", 1)[1])))
        yield url


@pytest.fixture(scope="module")
def engines(pg_url: str) -> Iterator[dict[tuple[str, str], tuple[Warehouse, RealtimeStore]]]:
    """Each shipped pair: the warehouse holding ROWS, and a realtime store hydrated from it."""
    warehouses = {"duckdb": open_warehouse("duckdb:///:memory:"), "postgres": open_warehouse(pg_url)}
    pairs = {}
    for warehouse in warehouses.values():
        warehouse.create_table(SOURCE)
        warehouse.append({"t": ROWS})
    for warehouse_dialect, realtime_dialect in PAIRS:
        store = open_realtime_store(f"{realtime_dialect}:///:memory:")
        store.hydrate(warehouses[warehouse_dialect], [SOURCE])
        pairs[warehouse_dialect, realtime_dialect] = (warehouses[warehouse_dialect], store)
    yield pairs
    for _, store in pairs.values():
        store.close()
    for warehouse in warehouses.values():
        warehouse.close()


def _plain(value: Any) -> Any:
    """A value as both engines' answers compare: None for every missing value, Decimal as float."""
    if value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value)) or value is pd.NaT:
        return None
    if isinstance(value, decimal.Decimal):
        return float(value)
    return value.item() if hasattr(value, "item") and not isinstance(value, pd.Timestamp) else value


def _values(frame: pd.DataFrame) -> list[tuple[Any, Any]]:
    return sorted(((_plain(k), _plain(v)) for k, v in zip(frame["k"], frame["v"])), key=lambda row: row[0])


def _warehouse_answer(warehouse: Warehouse, expression: str) -> list[tuple[Any, Any]] | None:
    """The training answer, or None when the warehouse cannot run it (then it is never trained nor saved)."""
    prepared = prepare_query(SELECT.format(expression), warehouse.dialect)
    try:
        return _values(warehouse.query(prepared.sql_with_tables(warehouse.dialect, {"t": "t"})))
    except FeatureStoreError:
        return None


def _served_answer(store: RealtimeStore, dialect: str, expression: str) -> list[tuple[Any, Any]]:
    """The serving answer: the save-time check (InvalidQuery if refused), then the store's point lookup."""
    prepared = prepare_query(SELECT.format(expression), dialect)
    store.check(prepared)
    return _values(store.lookup(prepared, "one", 1, 100))


def _equal(trained: list, served: list) -> bool:
    if len(trained) != len(served):
        return False
    for (k1, a), (k2, b) in zip(trained, served):
        if k1 != k2:
            return False
        if isinstance(a, float) or isinstance(b, float):
            if a is None or b is None or isinstance(a, (str, bool)) or isinstance(b, (str, bool)):
                return a is b is None
            if not math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12):
                return False
        elif a != b or type(a) is bool and type(b) is not bool and b is not None:
            return False
    return True


def _agree_or_refused(engines: dict, pair: tuple[str, str], expression: str) -> str:
    """"equal", or "refused" (the store's check names a construct), or "untrainable"; fails otherwise."""
    warehouse, store = engines[pair]
    trained = _warehouse_answer(warehouse, expression)
    if trained is None:
        return "untrainable"
    try:
        served = _served_answer(store, warehouse.dialect, expression)
    except InvalidQuery:
        return "refused"
    assert _equal(trained, served), (pair, expression, trained, served)
    return "equal"


# Each construct no rewrite makes equal on SQLite, and an expression whose values show it.
REFUSED = {"CAST to text of a float": "CAST(f * 0.1 AS VARCHAR)", "CAST to text of a timestamp": "CAST(ts AS VARCHAR)",
           "|| (concatenation) of a float": "s || (f * 0.1)", "|| (concatenation) of a timestamp": "s || ts"}
EXPRESSIONS = [
    # LIKE is case-sensitive, ILIKE is not, `_` and `%` are one and any characters, also beyond ASCII
    "s LIKE 'A%'", "s LIKE 'a%'", "s ILIKE 'a%'", "s NOT LIKE '%p%'", "s LIKE 'b\\_c' ESCAPE '\\'",
    "s LIKE '_lan%'", "s ILIKE 'élan%'", "s LIKE '%ö_'",
    # upper/lower of non-ASCII letters
    "upper(s)", "lower(s)", "upper(s) = 'ÉLAN ÉCOLE'", "lower(s) LIKE '%σοφία%'",
    # float -> integer casts round half to even (a double) or half away from zero (an exact number)
    "CAST(f AS INTEGER)", "CAST(f AS BIGINT)", "CAST(f * 3 AS INTEGER)", "CAST(f - 0.5e0 AS INTEGER)",
    "CAST(i + 2.5 AS INTEGER)", "CAST(i * 0.5 AS INTEGER)", "CAST(2.5 AS INTEGER)", "CAST(i / 2.0 AS INTEGER)",
    # division and remainders, negatives included
    "i / 2", "i / 0.5", "COALESCE(i, 0) / 4", "i % 3", "i % -3", "f % 2", "i % 2.5",
    # ROUND of halves
    "ROUND(f)", "ROUND(f * 2)", "ROUND(2.5)", "ROUND(-2.5)", "ROUND(f, 1)",
    # booleans, NULLs, concatenation
    "b = TRUE", "b IS NULL", "NOT b", "b AND i > 0", "b OR i > 0", "b = NULL", "i > NULL",
    "s || NULL", "s || 'x'", "COALESCE(s, 'none')", "s || i",
    "CASE WHEN f > 1 THEN 'big' WHEN f IS NULL THEN 'null' ELSE 'small' END",
    # timestamps: literals in any offset, comparisons, parts
    "ts > '2024-03-01 12:00:00'", "ts >= TIMESTAMPTZ '2024-03-01 13:00:00+01:00'",
    "ts < CAST('2024-03-01 23:30:15.25' AS TIMESTAMPTZ)", "ts", "EXTRACT(HOUR FROM ts)",
    "EXTRACT(YEAR FROM ts)", "EXTRACT(DOW FROM ts)", "EXTRACT(MONTH FROM ts) * 100 + EXTRACT(DAY FROM ts)",
    "EXTRACT(DOY FROM ts)", "EXTRACT(MINUTE FROM ts)", "ts = '2024-03-01 07:00:00-05:00'", "ts = '2024-03-01 12:00'",
    # text of numbers, booleans and timestamps
    "CAST(i AS VARCHAR)", "CAST(b AS VARCHAR)", "CAST(2.5 AS VARCHAR)", "s || i", "s || 2.5", "s || b",
    *REFUSED.values(),
]


@pytest.mark.parametrize("pair", PAIRS, ids="->".join)
@pytest.mark.parametrize("expression", EXPRESSIONS)
def test_each_construct_agrees_or_is_refused_at_save(engines, pair, expression):
    _agree_or_refused(engines, pair, expression)


_numeric = st.sampled_from(["i", "f", "COALESCE(i, 1)", "COALESCE(f, 0.25)", "1", "2.5", "-3", "-i", "(i - 5)"])
_double = st.sampled_from(["f", "COALESCE(f, 0.25e0)", "2.5e0", "-3.5e0", "i * 0.5e0", "i * 0.5", "i + 2.5", "f * 2"])
_operator = st.sampled_from(["+", "-", "*", "/", "%"])
_cast = st.sampled_from(["INTEGER", "BIGINT", "DOUBLE PRECISION"])
_pattern = st.text(alphabet="aApPéÉöΣσ_%e ", min_size=1, max_size=5)
_text_of = st.sampled_from(["i", "f", "b", "ts", "i * 2", "f / 4", "b AND i > 0", "2.5", "s"])
_stamp = st.sampled_from(["'2024-03-01 12:00:00'", "'2024-03-01 13:00:00+01:00'", "'2024-02-29'",
                          "'2024-07-04 08:05:04+02:00'", "'2023-12-31T23:59:59Z'"])
_field = st.sampled_from(["YEAR", "MONTH", "DAY", "HOUR", "MINUTE", "DOW", "DOY"])


@st.composite
def _expressions(draw) -> str:
    kind = draw(st.sampled_from(["arith", "cast", "like", "compare", "case", "round", "case_fold", "text",
                                 "timestamp"]))
    left, right = draw(_numeric), draw(_numeric)
    if kind == "arith":
        return f"({left} {draw(_operator)} {right})"
    if kind == "cast":
        return f"CAST({draw(_double)} {draw(_operator)} {draw(_double)} AS {draw(_cast)})"
    if kind == "like":
        return f"s {draw(st.sampled_from(['LIKE', 'ILIKE', 'NOT LIKE']))} '{draw(_pattern)}'"
    if kind == "compare":
        return f"{left} {draw(st.sampled_from(['=', '<', '>=', '<>']))} {right}"
    if kind == "round":
        return f"ROUND({draw(_double)} {draw(_operator)} {draw(_numeric)})"
    if kind == "case_fold":
        return f"{draw(st.sampled_from(['upper', 'lower']))}(s) {draw(st.sampled_from(['=', 'LIKE']))} " \
               f"{draw(st.sampled_from(['upper', 'lower']))}('{draw(_pattern)}')"
    if kind == "text":
        value = draw(_text_of)
        return draw(st.sampled_from([f"CAST({value} AS VARCHAR)", f"s || ({value})", f"({value}) || 'x'"]))
    if kind == "timestamp":
        return draw(st.sampled_from([f"ts {draw(st.sampled_from(['<', '>=', '=']))} {draw(_stamp)}",
                                     f"ts > CAST({draw(_stamp)} AS TIMESTAMPTZ)", f"EXTRACT({draw(_field)} FROM ts)"]))
    return f"CASE WHEN {left} > {right} THEN {left} ELSE COALESCE({right}, 0) END"


@pytest.mark.parametrize("pair", PAIRS, ids="->".join)
def test_generated_expressions_agree_or_are_refused(engines, pair):
    outcomes: collections.Counter = collections.Counter()

    @settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    @given(_expressions())
    def agree(expression: str) -> None:
        outcomes[_agree_or_refused(engines, pair, expression)] += 1
    agree()
    assert outcomes["equal"] >= sum(outcomes.values()) / 2, outcomes  # most queries are run and compared


@pytest.mark.parametrize("pair", PAIRS, ids="->".join)
@pytest.mark.parametrize("expression", EXPRESSIONS)
def test_refused_are_exactly_the_constructs_the_suite_shows_unequal(pair, expression):
    """Only the REFUSED witnesses are refused (everything else in the suite is served, and agrees), each on
    SQLite only; `test_refused_constructs_differ_without_the_refusal` shows that each one does differ."""
    warehouse, realtime = pair
    expected = [name for name, witness in REFUSED.items() if witness == expression and realtime == "sqlite"]
    prepared = prepare_query(SELECT.format(expression), warehouse)
    assert prepared.unequal_constructs(realtime, {"t": COLUMNS}) == expected


@pytest.mark.parametrize("warehouse", ["duckdb", "postgres"])
@pytest.mark.parametrize("construct", list(REFUSED))
def test_refused_constructs_differ_without_the_refusal(engines, warehouse, construct):
    """Past the save-time refusal, the SQLite store would serve other values than the warehouse trained on."""
    trained = _warehouse_answer(engines[warehouse, "sqlite"][0], REFUSED[construct])
    store = engines[warehouse, "sqlite"][1]
    with pytest.raises(InvalidQuery, match=re.escape(construct)):
        store.check(prepare_query(SELECT.format(REFUSED[construct]), warehouse))
    served = _values(store.lookup(prepare_query(SELECT.format(REFUSED[construct]), warehouse), "one", 1, 100))
    assert trained is not None and not _equal(trained, served), (trained, served)


SOURCE_DECLARATION = {"name": "t", "columns": [{"name": n, "type": t} for n, t in COLUMNS], "entity_keys": ["k"],
                      "event_time": "ts"}


@pytest.mark.parametrize("construct", list(REFUSED))
def test_saving_a_query_with_a_refused_construct_is_400_naming_it(make_app, construct):
    api = JsonClient(make_app(DEMO_SOURCES=False).test_client())
    api.post("/v1.0/sources", SOURCE_DECLARATION, 201)
    error = api.post("/v1.0/query/train?save=true", {"query": SELECT.format(REFUSED[construct])}, 400)
    assert error["code"] == "invalid_query" and construct in error["message"], error
    assert error["details"]["constructs"] == [construct]
    assert api.get("/v1.0/queries")["total"] == 0
    api.post("/v1.0/query/train?save=true", {"query": SELECT.format("CAST(b AS VARCHAR) || EXTRACT(HOUR FROM ts)")},
             200)  # what is made equal is saved
