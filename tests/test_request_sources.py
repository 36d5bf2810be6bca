"""Request sources: in serving the caller supplies the rows, the same SQL and ETL run over them.

Training reads the source's rows from the warehouse; serving runs the saved query with the request's
rows standing in for them (alone or joined with stored history), on both realtime stores; nothing of
the request is kept unless `log` asks for it, and no other reader ever sees it.
"""
from __future__ import annotations

import threading

import pytest

from tests.conftest import JsonClient

STORES = ["sqlite:///:memory:", "duckdb:///:memory:"]
QUOTE_FORM = {"name": "quote_form", "kind": "request", "entity_keys": ["customer_id"], "event_time": "at",
              "columns": [{"name": "customer_id", "type": "string"}, {"name": "at", "type": "timestamp"},
                          {"name": "amount", "type": "float"}]}
ORDERS = {"name": "orders", "entity_keys": ["customer_id"], "event_time": "at",
          "columns": [{"name": "customer_id", "type": "string"}, {"name": "at", "type": "timestamp"},
                      {"name": "amount", "type": "float"}]}
VERSUS_HISTORY = ("SELECT f.customer_id, f.amount, f.amount / (SELECT avg(o.amount) FROM orders o "
                  "WHERE o.customer_id = f.customer_id) AS vs_mean FROM quote_form f")


@pytest.fixture(params=STORES)
def api(request, make_app) -> JsonClient:
    client = JsonClient(make_app(DEMO_SOURCES=False, REALTIME_URL=request.param).test_client())
    client.post("/v1.0/sources", QUOTE_FORM, 201)
    client.post("/v1.0/sources", ORDERS, 201)
    client.post("/v1.0/sources/orders/rows", {"rows": [
        {"customer_id": "c1", "at": "2026-12-01T00:00:00Z", "amount": 10.0},
        {"customer_id": "c1", "at": "2026-12-01T01:00:00Z", "amount": 30.0}]})
    client.post("/v1.0/sources/quote_form/rows", {"rows": [
        {"customer_id": "c1", "at": "2026-11-01T00:00:00Z", "amount": 100.0}]})
    return client


def serve(api: JsonClient, query_id: str, rows: list[dict] | None, status: int = 200, **extra) -> dict:
    body = {"query_id": query_id, "index_key": "customer_id", "index_value": "c1", **extra}
    if rows is not None:
        body["request_rows"] = {"quote_form": rows}
    return api.post("/v1.0/query/realtime", body, status)


def test_request_rows_join_stored_history_and_are_not_kept(api):
    saved = api.post("/v1.0/query/train?save=true", {"query": VERSUS_HISTORY})
    assert saved["data"] == [{"customer_id": "c1", "amount": 100.0, "vs_mean": 5.0}]  # training: the warehouse
    served = serve(api, saved["query_id"], [{"customer_id": "c1", "at": "2026-12-02T00:00:00Z", "amount": 40.0}])
    assert served["data"] == [{"customer_id": "c1", "amount": 40.0, "vs_mean": 2.0}]
    assert api.get("/v1.0/sources/quote_form")["warehouse"]["rows"] == 1  # not logged
    again = serve(api, saved["query_id"], [{"customer_id": "c1", "at": "2026-12-02T00:00:00Z", "amount": 20.0}])
    assert again["data"] == [{"customer_id": "c1", "amount": 20.0, "vs_mean": 1.0}]  # the first request is gone


def test_logged_request_rows_reach_training(api):
    saved = api.post("/v1.0/query/train?save=true", {"query": VERSUS_HISTORY})
    serve(api, saved["query_id"], [{"customer_id": "c1", "at": "2026-12-02T00:00:00Z", "amount": 20.0}], log=True)
    trained = api.post("/v1.0/query/train", {"query": VERSUS_HISTORY})["data"]
    assert sorted(row["amount"] for row in trained) == [20.0, 100.0]


@pytest.mark.parametrize("request_rows, message", [
    (None, "pass their rows"),
    ({"orders": []}, "exactly the request sources"),
    ({"quote_form": [{"customer_id": "c1", "amount": 1.0}]}, "event time"),
    ({"quote_form": [{"customer_id": "c1", "at": "2026-12-02T00:00:00", "amount": 1.0}]}, "zone offset"),
    ({"quote_form": [{"customer_id": "c1", "at": "2026-12-02T00:00:00Z", "amount": "x"}]}, "float"),
    ({"quote_form": "not rows"}, "list of JSON objects"),
    ({"quote_form": [{"customer_id": "c1", "at": "2026-12-02T00:00:00Z", "amount": 1.0}] * 1001}, "at most 1000"),
])
def test_bad_request_rows_are_400(api, request_rows, message):
    saved = api.post("/v1.0/query/train?save=true", {"query": VERSUS_HISTORY})
    body = {"query_id": saved["query_id"], "index_key": "customer_id", "index_value": "c1"}
    if request_rows is not None:
        body["request_rows"] = request_rows
    error = api.post("/v1.0/query/realtime", body, 400)
    assert message in error["message"], error
    assert api.get("/v1.0/sources/quote_form")["warehouse"]["rows"] == 1


def test_request_rows_for_a_query_without_request_sources_are_refused(api):
    saved = api.post("/v1.0/query/train?save=true", {"query": "SELECT customer_id, sum(amount) AS s FROM orders "
                                                              "GROUP BY customer_id"})
    error = serve(api, saved["query_id"], [{"customer_id": "c1", "at": "2026-12-02T00:00:00Z", "amount": 1.0}], 400)
    assert error["details"]["unexpected"] == ["quote_form"]


def test_concurrent_requests_never_see_each_others_rows(api):
    saved = api.post("/v1.0/query/train?save=true", {"query": "SELECT customer_id, count(*) AS n, max(amount) AS top "
                                                              "FROM quote_form GROUP BY customer_id"})
    seen, errors = [], []

    def caller(amount: float) -> None:
        try:
            for _ in range(30):
                rows = [{"customer_id": "c1", "at": "2026-12-02T00:00:00Z", "amount": amount}]
                seen.append((amount, serve(JsonClient(api.client.application.test_client()), saved["query_id"],
                                           rows)["data"]))
        except Exception as error:  # noqa: BLE001 - reported below
            errors.append(error)

    threads = [threading.Thread(target=caller, args=(float(i),)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    assert all(data == [{"customer_id": "c1", "n": 1, "top": amount}] for amount, data in seen)
