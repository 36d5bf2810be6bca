"""The parse cost of a query is capped before it is parsed: tokens, set operations, nesting depth.

A 99 KB chain of 5,200 ``UNION ALL`` branches took 53 s of CPU to parse and type; such a query must be
refused from its tokens alone (counted in linear time), before sqlglot's parser ever sees it.
"""
from __future__ import annotations

from typing import Iterator

import pytest

from common.errors import InvalidQuery
from sql import prepared
from sql.prepared import QueryLimits, prepare_query, set_query_limits
from tests.conftest import JsonClient

ATTACK = "SELECT 1 AS a " + "UNION ALL SELECT 1 " * 5199  # about 99 KB


@pytest.fixture
def limits() -> Iterator[None]:
    """Restore the defaults after a test that sets its own."""
    yield
    set_query_limits(QueryLimits())


@pytest.fixture
def no_parsing(monkeypatch: pytest.MonkeyPatch) -> None:
    def parse(*args: object, **kwargs: object) -> None:
        raise AssertionError("the query reached the parser")

    monkeypatch.setattr(prepared.sqlglot, "parse", parse)


def refusal(sql: str) -> dict:
    with pytest.raises(InvalidQuery) as caught:
        prepare_query(sql)
    assert caught.value.status == 400 and caught.value.code == "invalid_query"
    return caught.value.details


def test_a_long_union_chain_is_refused_before_parsing(no_parsing: None) -> None:
    assert 95_000 < len(ATTACK) < 100_000  # fits in the request model's 100,000 characters
    details = refusal(ATTACK)
    assert details["limit"] in ("MAX_QUERY_TOKENS", "MAX_QUERY_SET_OPERATIONS") and details["found"] > details["max"]


@pytest.mark.parametrize("sql, setting, found", [
    ("SELECT 1 AS a UNION SELECT 2 EXCEPT SELECT 3 INTERSECT SELECT 4", "MAX_QUERY_SET_OPERATIONS", 3),
    ("SELECT ((((1)))) AS a", "MAX_QUERY_DEPTH", 4),
    ("SELECT 1 AS a, 2 AS b, 3 AS c", "MAX_QUERY_TOKENS", 12),
])
def test_each_limit_refuses_past_it_and_accepts_at_it(limits: None, sql: str, setting: str, found: int) -> None:
    at_most = {"MAX_QUERY_SET_OPERATIONS": QueryLimits(max_set_operations=found),
               "MAX_QUERY_DEPTH": QueryLimits(max_depth=found), "MAX_QUERY_TOKENS": QueryLimits(max_tokens=found)}
    set_query_limits(at_most[setting])
    prepare_query(sql)
    one_less = {"MAX_QUERY_SET_OPERATIONS": QueryLimits(max_set_operations=found - 1),
                "MAX_QUERY_DEPTH": QueryLimits(max_depth=found - 1), "MAX_QUERY_TOKENS": QueryLimits(max_tokens=found - 1)}
    set_query_limits(one_less[setting])
    assert refusal(sql) == {"limit": setting, "max": found - 1, "found": found}


def test_the_defaults_accept_ordinary_queries() -> None:
    prepare_query("WITH x AS (SELECT a FROM t UNION ALL SELECT a FROM u) SELECT count(*) AS n FROM x "
                  "WHERE a IN (SELECT a FROM v WHERE (a > 1 AND (a < 5 OR a = 7)))")


def test_the_settings_set_the_limits_over_http(make_app, limits: None) -> None:
    api = JsonClient(make_app(MAX_QUERY_SET_OPERATIONS=1).test_client())
    assert api.post("/v1.0/query/train", {"query": "SELECT 1 AS a UNION ALL SELECT 2"})["data"] == [{"a": 1}, {"a": 2}]
    error = api.post("/v1.0/query/train", {"query": "SELECT 1 AS a UNION ALL SELECT 2 UNION ALL SELECT 3"}, 400)
    assert error["code"] == "invalid_query" and error["details"]["limit"] == "MAX_QUERY_SET_OPERATIONS"


def test_the_attack_is_a_400_over_http(make_app) -> None:
    api = JsonClient(make_app(MAX_BODY_BYTES=200_000).test_client())
    error = api.post("/v1.0/query/train", {"query": ATTACK}, 400)
    assert error["code"] == "invalid_query" and "too complex" in error["message"]
