"""Concurrency over HTTP (Flask test client, one app, many threads): saves of the same query or ETL
converge on one record and one id; publishes never show a reader a torn flow."""
from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from tests.conftest import JsonClient
from tests.fixtures_catalog import race
from tests.walkthrough import FOUR_TABLE_QUERY, example_repo

THREADS = 16
# One query, formatted sixteen ways: case, whitespace, comments, aliases' quoting do not change its id.
SAME_QUERY = [
    "SELECT quote_id, quote_type, is_paid FROM quotes WHERE is_binded",
    "select quote_id, quote_type, is_paid from quotes where is_binded",
    "SELECT quote_id,quote_type,is_paid FROM quotes WHERE is_binded",
    "SELECT  quote_id ,  quote_type , is_paid\n  FROM quotes\n WHERE is_binded",
    "-- bound quotes\nSELECT quote_id, quote_type, is_paid FROM quotes WHERE is_binded",
    "SELECT quote_id, quote_type, is_paid /* paid? */ FROM quotes WHERE is_binded",
    "\n\tSELECT quote_id, quote_type, is_paid\n\tFROM quotes\n\tWHERE is_binded\n",
    "Select Quote_Id, Quote_Type, Is_Paid From Quotes Where Is_Binded",
]


def thread_client(app: Any) -> JsonClient:
    return JsonClient(app.test_client())


def saved_in_parallel(app: Any) -> list[dict[str, Any]]:
    return race(THREADS, lambda i: thread_client(app).post(
        "/v1.0/query/train?save=true&include_data=false",
        {"query": SAME_QUERY[i % len(SAME_QUERY)], "query_name": f"thread {i}"}))


def assert_one_query(app: Any, saved: list[dict[str, Any]]) -> None:
    ids = {response["query_id"] for response in saved}
    assert len(ids) == 1, ids
    api = JsonClient(app.test_client())
    page = api.get("/v1.0/queries")
    assert page["total"] == 1 and [q["query_id"] for q in page["items"]] == list(ids)
    record = api.get(f"/v1.0/queries/{ids.pop()}")
    assert record["sql"] in SAME_QUERY and record["name"] in {f"thread {i}" for i in range(THREADS)}
    assert record["schema"] == saved[0]["schema"]
    assert all(response["schema"] == record["schema"] for response in saved)


def test_same_query_saved_from_many_threads_sqlite(make_app):
    app = make_app()
    assert_one_query(app, saved_in_parallel(app))


@pytest.mark.postgres
def test_same_query_saved_from_many_threads_postgres(make_app, pg_database_url):
    app = make_app(CATALOG_URL=pg_database_url)
    assert_one_query(app, saved_in_parallel(app))


@pytest.mark.parametrize("location", ["path", "git+file"])
def test_same_etl_registered_from_many_threads(make_app, tmp_path, location):
    repo = example_repo(tmp_path / "etl-repo")
    app = make_app(CONSISTENCY_REPLAY_ENTITIES=10)  # every thread trains and replays: the race, not the replay
    api = JsonClient(app.test_client())
    api.put("/v1.0/publish?n_flows=50&seed=1")
    query_id = api.post("/v1.0/query/train?save=true&include_data=false", {"query": FOUR_TABLE_QUERY})["query_id"]
    etl_path = (str(repo.file("etls/quote_features.py")) if location == "path"
                else repo.git_url("etls/quote_features.py", "main"))

    saved = race(THREADS, lambda i: thread_client(app).post(
        "/v1.0/extract/train?save=true&include_data=false",
        {"query_id": query_id, "etl_path": etl_path, "name": f"thread {i}"}))
    ids = {response["etl_id"] for response in saved}
    assert len(ids) == 1, ids
    page = api.get("/v1.0/etls")
    assert page["total"] == 1 and page["items"][0]["etl_id"] in ids
    record = api.get(f"/v1.0/etls/{ids.pop()}")
    assert record["source"]["commit"] == repo.head_sha and record["code"] == repo.file(
        "etls/quote_features.py").read_text()
    assert all(response["schema"] == record["schema"] for response in saved)


# -- publish against readers ------------------------------------------------------------------

PUBLISHERS, BATCHES, FLOWS = 4, 5, 25
READ_QUERIES = {
    # a policy is never visible without its quote
    "policy_quote": "SELECT p.policy_id, q.quote_id AS policy_quote, 1 AS k "
                    "FROM policies p LEFT JOIN quotes q ON q.quote_id = p.quote_id",
    # a successfully paid quote is never visible without its policy
    "paid_policy": "SELECT q.quote_id, p.policy_id AS paid_policy, 1 AS k FROM quotes q "
                   "JOIN transactions t ON t.ref_id = q.quote_id AND t.successful "
                   "LEFT JOIN policies p ON p.quote_id = q.quote_id",
    # batches land whole: the quote count is always a multiple of the batch size
    "counts": "SELECT (SELECT count(*) FROM quotes) AS quotes, (SELECT count(*) FROM users) AS users, 1 AS k",
}


@pytest.mark.parametrize("realtime_url", ["sqlite:///:memory:", "duckdb:///:memory:"])
def test_concurrent_publishes_never_show_a_torn_flow(make_app, realtime_url):
    app = make_app(REALTIME_URL=realtime_url)
    api = JsonClient(app.test_client())
    # saved on data, so their schemas have types (a seed no publisher below uses: a repeated seed writes nothing)
    api.put(f"/v1.0/publish?n_flows={FLOWS}&seed=999999")
    ids = {name: api.post("/v1.0/query/train?save=true&include_data=false", {"query": sql})["query_id"]
           for name, sql in READ_QUERIES.items()}
    assert all(column["type"] != "null" for name in ids for column in api.get(f"/v1.0/queries/{ids[name]}")["schema"])
    publishing = threading.Event()
    publishing.set()
    torn: list[Any] = []
    seen_counts: set[int] = set()
    reads = {"realtime": 0, "warehouse": 0, "rows": 0}
    errors: list[BaseException] = []

    def publisher(p: int) -> None:
        client = thread_client(app)
        for b in range(BATCHES):
            client.put(f"/v1.0/publish?n_flows={FLOWS}&seed={1000 * p + b}")

    def realtime_reader() -> None:
        client = thread_client(app)
        while publishing.is_set():
            for name, query_id in ids.items():
                rows = client.post("/v1.0/query/realtime",
                                   {"query_id": query_id, "index_key": "k", "index_value": 1})["data"]
                reads["realtime"] += 1
                reads["rows"] += len(rows)
                if name == "counts":
                    seen_counts.add(rows[0]["quotes"])
                    if rows[0]["quotes"] % FLOWS:
                        torn.append(("realtime", name, rows[0]))
                else:
                    torn.extend(("realtime", name, row) for row in rows if row[name] is None)

    def warehouse_reader() -> None:
        client = thread_client(app)
        while publishing.is_set():
            for name, sql in READ_QUERIES.items():
                rows = client.post("/v1.0/query/train", {"query": sql})["data"]
                reads["warehouse"] += 1
                if name == "counts":
                    if rows[0]["quotes"] % FLOWS:
                        torn.append(("warehouse", name, rows[0]))
                else:
                    torn.extend(("warehouse", name, row) for row in rows if row[name] is None)

    def guarded(work: Any, *args: Any) -> None:
        try:
            work(*args)
        except BaseException as err:  # noqa: BLE001 - reported by the test thread
            errors.append(err)
            publishing.clear()

    readers = [threading.Thread(target=guarded, args=(realtime_reader,)) for _ in range(3)]
    readers.append(threading.Thread(target=guarded, args=(warehouse_reader,)))
    publishers = [threading.Thread(target=guarded, args=(publisher, p)) for p in range(PUBLISHERS)]
    for thread in readers:
        thread.start()
    time.sleep(0.05)
    for thread in publishers:
        thread.start()
    for thread in publishers:
        thread.join(60)
    publishing.clear()
    for thread in readers:
        thread.join(60)

    assert not errors, errors
    assert not torn, torn[:5]
    assert len(seen_counts) > 2, seen_counts  # the readers did read while batches landed
    assert reads["rows"] > reads["realtime"], reads  # and got rows: not a vacuous pass
    assert reads["warehouse"] > 0
    final = api.post("/v1.0/query/realtime", {"query_id": ids["counts"], "index_key": "k", "index_value": 1})
    assert final["data"][0]["quotes"] == (PUBLISHERS * BATCHES + 1) * FLOWS
    warehouse = api.post("/v1.0/query/train", {"query": READ_QUERIES["counts"]})["data"]
    assert warehouse == final["data"]


def test_query_saved_before_any_publish_serves_rows_published_later(api):
    query_id = api.post("/v1.0/query/train?save=true", {"query": READ_QUERIES["policy_quote"]})["query_id"]
    written = api.put(f"/v1.0/publish?n_flows={FLOWS}&seed=1")["written"]
    rows = api.post("/v1.0/query/realtime", {"query_id": query_id, "index_key": "k", "index_value": 1})["data"]
    assert len(rows) == written["policies"] > 0
