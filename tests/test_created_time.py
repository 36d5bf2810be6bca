"""A source's created_time: of rows with the same entity keys and event time, only the newest created counts —
in serving (both realtime stores), in training from the warehouse and in point-in-time training alike."""
from __future__ import annotations

import pytest

from tests.conftest import JsonClient

PRICES = {"name": "prices", "entity_keys": ["item_id"], "event_time": "valid_from", "created_time": "recorded_at",
          "columns": [{"name": "item_id", "type": "string"}, {"name": "valid_from", "type": "timestamp"},
                      {"name": "recorded_at", "type": "timestamp"}, {"name": "price", "type": "float"}]}
ROWS = [  # item a: a price for 1 May corrected twice (the correction of 12:00 wins); item b: one price
    {"item_id": "a", "valid_from": "2026-05-01T00:00:00Z", "recorded_at": "2026-05-01T09:00:00Z", "price": 10.0},
    {"item_id": "a", "valid_from": "2026-05-01T00:00:00Z", "recorded_at": "2026-05-01T12:00:00Z", "price": 12.0},
    {"item_id": "a", "valid_from": "2026-05-01T00:00:00Z", "recorded_at": "2026-05-01T10:00:00Z", "price": 11.0},
    {"item_id": "a", "valid_from": "2026-06-01T00:00:00Z", "recorded_at": "2026-06-01T01:00:00Z", "price": 20.0},
    {"item_id": "b", "valid_from": "2026-05-01T00:00:00Z", "recorded_at": "2026-05-01T09:00:00Z", "price": 5.0},
]
SQL = "SELECT item_id, count(*) AS versions, sum(price) AS total, max(price) AS top FROM prices GROUP BY item_id"


@pytest.fixture(params=["sqlite:///:memory:", "duckdb:///:memory:"])
def api(request, make_app):
    client = JsonClient(make_app(DEMO_SOURCES=False, REALTIME_URL=request.param).test_client())
    client.post("/v1.0/sources", PRICES, 201)
    client.post("/v1.0/sources/prices/rows", {"rows": ROWS})
    return client


def test_serving_and_training_count_only_the_newest_version_of_a_row(api):
    saved = api.post("/v1.0/query/train?save=true", {"query": SQL})
    trained = {row["item_id"]: row for row in saved["data"]}
    assert trained["a"] == {"item_id": "a", "versions": 2, "total": 32.0, "top": 20.0}  # 12.0 (newest) + 20.0
    served = api.post("/v1.0/query/realtime", {"query_id": saved["query_id"], "index_key": "item_id",
                                               "index_value": "a"})["data"]
    assert served == [trained["a"]]


def test_point_in_time_counts_only_the_newest_version_too(api):
    spine = {"index_key": "item_id", "time": "as_of", "rows": [
        {"item_id": "a", "as_of": "2026-05-15T00:00:00Z"}, {"item_id": "a", "as_of": "2026-06-15T00:00:00Z"},
        {"item_id": "b", "as_of": "2026-04-01T00:00:00Z"}]}
    answer = api.post("/v1.0/query/train", {"query": SQL, "spine": spine})["data"]
    assert [(row["versions"], row["top"]) for row in answer] == [(1, 12.0), (2, 20.0), (None, None)]
    joined = api.post("/v1.0/query/train", {"query": "SELECT p.item_id, q.price AS other FROM prices p "
                                                     "JOIN prices q ON q.item_id = p.item_id", "spine": spine})["data"]
    assert [row["other"] for row in joined[:1]] == [12.0], "a joined source reads the newest versions as well"
