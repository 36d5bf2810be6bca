"""The whole flow over HTTP: publish, save a query, register an ETL from git, serve one user."""
from __future__ import annotations

import time

import pytest

from app import close_app
from tests.conftest import JsonClient
from tests.walkthrough import FOUR_TABLE_QUERY, example_repo, train_walkthrough


@pytest.fixture
def repo(tmp_path):
    return example_repo(tmp_path / "etl-repo")


def test_publish_writes_every_table(api):
    body = api.put("/v1.0/publish?n_flows=50&seed=3")
    assert body["written"]["quotes"] == 50
    assert 0 < body["written"]["policies"] <= body["written"]["users"] <= 50
    counts = api.post("/v1.0/query/train", {"query": "SELECT count(*) AS n FROM quotes"})
    assert counts["data"] == [{"n": 50}]


def test_publishing_a_seed_again_writes_nothing(api):
    """The README's walkthrough and its client snippet both publish seed 42: the second is a retry of
    the first (same seed, same n_flows, same ids), so nothing doubles; another size or seed is new data."""
    first = api.put("/v1.0/publish?n_flows=20&seed=42")
    assert first["duplicate"] is False and first["written"]["quotes"] == 20
    again = api.put("/v1.0/publish?n_flows=20&seed=42")
    assert again["duplicate"] is True and set(again["written"].values()) == {0}
    assert api.put("/v1.0/publish?n_flows=20&seed=43")["duplicate"] is False
    # the same seed with another size would repeat the first flows' ids (a seed fixes them): refused, not written
    error = api.put("/v1.0/publish?n_flows=30&seed=42", 400)
    assert error["code"] == "invalid_input" and "another seed" in error["message"]
    assert error["details"] == {"seed": 42, "n_flows": 30, "published_n_flows": 20}
    counts = api.post("/v1.0/query/train", {"query": "SELECT count(*) AS n, count(DISTINCT quote_id) AS ids "
                                                      "FROM quotes"})["data"]
    assert counts == [{"n": 40, "ids": 40}]
    served = api.post("/v1.0/query/train?save=true", {"query": "SELECT quote_id, count(*) AS n FROM quotes "
                                                               "GROUP BY quote_id"})
    quote_id = served["data"][0]["quote_id"]
    assert api.post("/v1.0/query/realtime", {"query_id": served["query_id"], "index_key": "quote_id",
                                             "index_value": quote_id})["data"] == [{"quote_id": quote_id, "n": 1}]


def test_unseeded_publishes_are_each_new_data(api):
    api.put("/v1.0/publish?n_flows=10")
    assert api.put("/v1.0/publish?n_flows=10")["duplicate"] is False
    assert api.post("/v1.0/query/train", {"query": "SELECT count(*) AS n FROM quotes"})["data"] == [{"n": 20}]


def test_walkthrough_serves_training_features(api, repo):
    trained = train_walkthrough(api, repo)
    assert trained["query"]["query_id"].startswith("q_") and trained["extract"]["etl_id"].startswith("e_")
    user_id, offline = next(iter(trained["features_by_user"].items()))

    raw = api.post("/v1.0/query/realtime", {"query_id": trained["query_id"], "index_key": "user_id",
                                            "index_value": user_id})["data"]
    assert raw == [trained["rows_by_user"][user_id]]

    online = api.post("/v1.0/extract/realtime", {"query_id": trained["query_id"], "etl_id": trained["etl_id"],
                                                 "index_key": "user_id", "index_value": user_id})["data"]
    assert online == [offline]
    assert list(online[0]) == [c["name"] for c in trained["extract"]["schema"]]
    assert {c["name"]: c["type"] for c in trained["extract"]["schema"]} == {
        "user_id": "string", "quote_type": "string", "is_mobile": "boolean", "minutes_to_bind": "float",
        "paid_by_amex": "boolean", "is_paid": "boolean"}


def test_legacy_etl_of_the_original_service_runs_unchanged(api, repo):
    trained = train_walkthrough(api, repo, etl="etls/legacy_features.py")
    user_id, offline = next(iter(trained["features_by_user"].items()))
    online = api.post("/v1.0/extract/realtime", {"query_id": trained["query_id"], "etl_id": trained["etl_id"],
                                                 "index_key": "user_id", "index_value": user_id})["data"]
    assert online == [offline] and set(offline) == {"user_id", "quote_type", "is_mobile", "is_binded", "is_paid"}


def test_catalog_records_the_exact_source(api, repo):
    trained = train_walkthrough(api, repo)
    etl = api.get(f"/v1.0/etls/{trained['etl_id']}")
    assert etl["source"] == {"kind": "git", "url": str(repo.file("etls/quote_features.py")), "repo": str(repo.path),
                             "ref": "main", "commit": repo.head_sha, "path": "etls/quote_features.py"}
    assert etl["code"] == repo.file("etls/quote_features.py").read_text()
    assert etl["query_id"] == trained["query_id"] and etl["name"] == "quote_features"
    query = api.get(f"/v1.0/queries/{trained['query_id']}")
    assert query["sql"] == FOUR_TABLE_QUERY and query["name"] == "quote_join"
    assert query["schema"] == trained["query"]["schema"]

    listed = api.get("/v1.0/etls?limit=10")
    assert listed["total"] == 1 and listed["items"][0]["etl_id"] == trained["etl_id"]
    assert "code" not in listed["items"][0]
    assert api.get(f"/v1.0/etls?query_id={trained['query_id']}")["total"] == 1
    assert api.get("/v1.0/etls?query_id=q_0000000000000000")["total"] == 0


def test_git_reference_at_a_tag_records_that_commit(api, repo):
    api.put("/v1.0/publish?n_flows=20&seed=1")
    query_id = api.post("/v1.0/query/train?save=true", {"query": FOUR_TABLE_QUERY})["query_id"]
    v1 = repo.v1_sha
    repo.commit("etls/quote_features.py", repo.file("etls/quote_features.py").read_text() + "\n# v2\n", "v2")
    by_url = api.post("/v1.0/extract/train?save=true&include_data=false",
                      {"query_id": query_id, "etl_path": repo.git_url("etls/quote_features.py", "v1")})
    by_fields = api.post("/v1.0/extract/train?save=true&include_data=false",
                         {"query_id": query_id, "etl": {"repo": repo.path.as_uri(), "ref": "v1",
                                                        "path": "etls/quote_features.py"}})
    assert by_url["etl_id"] == by_fields["etl_id"] and by_url["data"] is None
    assert api.get(f"/v1.0/etls/{by_url['etl_id']}")["source"]["commit"] == v1
    head = api.post("/v1.0/extract/train?save=true", {"query_id": query_id, "etl_path": repo.git_url(
        "etls/quote_features.py", "main")})
    assert head["etl_id"] != by_url["etl_id"]


def test_saving_the_same_query_twice_returns_the_same_id(api):
    api.put("/v1.0/publish?n_flows=10&seed=2")
    first = api.post("/v1.0/query/train?save=true", {"query": "SELECT user_id, name FROM users",
                                                      "query_name": "users"})
    reformatted = api.post("/v1.0/query/train?save=true", {
        "query": "select\n  USER_ID,   name -- who\nFROM Users;", "query_name": "other name"})
    different = api.post("/v1.0/query/train?save=true", {"query": "SELECT user_id FROM users"})
    assert reformatted["query_id"] == first["query_id"] != different["query_id"]
    assert api.get("/v1.0/queries")["total"] == 2
    assert api.get(f"/v1.0/queries/{first['query_id']}")["name"] == "users"


def test_unsaved_query_gets_no_id_and_leaves_no_record(api):
    body = api.post("/v1.0/query/train", {"query": "SELECT 1 AS one, true AS yes"})
    assert body == {"query_id": None, "schema": [{"name": "one", "type": "integer"},
                                                 {"name": "yes", "type": "boolean"}],
                    "data": [{"one": 1, "yes": True}]}
    assert api.get("/v1.0/queries")["total"] == 0


def test_listing_pages_newest_first(api):
    ids = [api.post("/v1.0/query/train?save=true", {"query": f"SELECT {i} AS n"})["query_id"] for i in range(5)]
    page = api.get("/v1.0/queries?offset=1&limit=2")
    assert page["total"] == 5 and page["offset"] == 1 and page["limit"] == 2
    assert [item["query_id"] for item in page["items"]] == ids[::-1][1:3]


def test_timestamps_and_nulls_are_json_safe(api):
    body = api.post("/v1.0/query/train", {"query": "SELECT * FROM (VALUES (TIMESTAMP '2024-05-01 12:30:00', "
                                                   "CAST(NULL AS DOUBLE), 'NaN'::DOUBLE, NULL::INTEGER, 'x'), "
                                                   "(NULL, 1.5, 2.5, 3, NULL)) AS t(at, nothing, nan, n, s)"})
    assert body["data"] == [{"at": "2024-05-01T12:30:00", "nothing": None, "nan": None, "n": None, "s": "x"},
                            {"at": None, "nothing": 1.5, "nan": 2.5, "n": 3, "s": None}]


def test_restart_keeps_catalog_and_rehydrates_hot_data(make_app, tmp_path, repo):
    first = JsonClient(make_app(tmp_path / "data").test_client())
    trained = train_walkthrough(first, repo)
    user_id, offline = next(iter(trained["features_by_user"].items()))
    close_app(first.client.application)

    second = JsonClient(make_app(tmp_path / "data").test_client())
    assert second.get(f"/v1.0/queries/{trained['query_id']}")["schema"] == trained["query"]["schema"]
    online = second.post("/v1.0/extract/realtime", {"query_id": trained["query_id"], "etl_id": trained["etl_id"],
                                                    "index_key": "user_id", "index_value": user_id})["data"]
    assert online == [offline]


def test_hot_window_leaves_old_rows_cold_and_training_can_respect_it(make_app, tmp_path):
    """A source's hot window: older rows stay in the warehouse only, a restart hydrates only the window,
    and a training set asked to respect the window equals what serving reads."""
    first = JsonClient(make_app(tmp_path / "data", DEMO_SOURCES=False).test_client())
    first.post("/v1.0/sources", {"name": "events", "columns": [
        {"name": "k", "type": "integer"}, {"name": "at", "type": "integer"}, {"name": "v", "type": "float"}],
        "entity_keys": ["k"], "event_time": "at", "hot_window_seconds": 3600}, 201)
    now = int(time.time())
    ages = [10, 1800, 3599 - 60, 3700, 7 * 86400]
    answer = first.post("/v1.0/sources/events/rows", {"rows": [{"k": 1, "at": now - age, "v": float(age)}
                                                              for age in ages]})
    assert (answer["rows"], answer["realtime_rows"]) == (5, 3)
    close_app(first.client.application)

    second = JsonClient(make_app(tmp_path / "data", DEMO_SOURCES=False).test_client())
    sql = "SELECT k, count(*) AS n, sum(v) AS total FROM events GROUP BY k"
    saved = second.post("/v1.0/query/train?save=true", {"query": sql})
    assert saved["data"] == [{"k": 1, "n": 5, "total": float(sum(ages))}]
    assert [w["code"] for w in saved["warnings"]] == ["hot_window"]
    served = second.post("/v1.0/query/realtime", {"query_id": saved["query_id"], "index_key": "k", "index_value": 1})
    assert served["data"] == [{"k": 1, "n": 3, "total": float(sum(ages[:3]))}]
    windowed = second.post("/v1.0/query/train?hot_window=true", {"query": sql})["data"]
    assert windowed == served["data"]
    assert second.get("/v1.0/sources/events")["realtime"]["rows"] == 3


def test_health_reports_every_backend(api):
    newest = api.client.application.extensions["feature_service"].sources.feed.last_position()
    assert api.get("/v1.0/health") == {"status": "ok", "checks": {
        "catalog": {"ok": True}, "warehouse": {"ok": True}, "realtime": {"ok": True},
        "feed": {"ok": True, "applied": newest, "newest": newest, "behind": 0}}}


def test_openapi_document_and_docs(api):
    spec = api.get("/v1.0/swagger.json")
    for path in ("/publish", "/query/train", "/query/realtime", "/extract/train", "/extract/realtime",
                 "/queries", "/queries/{query_id}", "/etls", "/etls/{etl_id}", "/health"):
        assert path in spec["paths"], path
    assert spec["basePath"] == "/v1.0"
    assert api.client.get("/v1.0/docs").status_code == 200
    assert api.client.get("/docs").status_code == 302


def test_plan_says_what_a_save_would_do_and_saves_nothing(api, repo):
    api.put("/v1.0/publish?n_flows=20&seed=1")
    planned = api.post("/v1.0/query/plan", {"query": FOUR_TABLE_QUERY})
    assert planned["exists"] is False and planned["query_id"].startswith("q_")
    assert api.get("/v1.0/queries")["total"] == 0
    etl_plan = api.post("/v1.0/extract/plan", {"query_id": planned["query_id"],
                                               "etl_path": str(repo.file("etls/quote_features.py"))})
    assert etl_plan["exists"] is False and etl_plan["source"]["commit"] == repo.head_sha
    assert api.get("/v1.0/etls")["total"] == 0

    saved = api.post("/v1.0/query/train?save=true&include_data=false", {"query": FOUR_TABLE_QUERY})
    assert saved["query_id"] == planned["query_id"] and saved["schema"] == planned["schema"]
    registered = api.post("/v1.0/extract/train?save=true&include_data=false", {
        "query_id": planned["query_id"], "etl_path": str(repo.file("etls/quote_features.py"))})
    assert registered["etl_id"] == etl_plan["etl_id"]
    assert api.post("/v1.0/query/plan", {"query": FOUR_TABLE_QUERY})["exists"] is True
    assert api.post("/v1.0/extract/plan", {"query_id": planned["query_id"],
                                           "etl_path": str(repo.file("etls/quote_features.py"))})["exists"] is True
    assert api.post("/v1.0/query/plan", {"query": "DELETE FROM users"}, 400)["code"] == "invalid_query"


def test_schema_without_data_or_save(api):
    body = api.post("/v1.0/query/train?include_data=false", {"query": "SELECT 1 AS one"})
    assert body == {"query_id": None, "schema": [{"name": "one", "type": "integer"}], "data": None}


@pytest.mark.parametrize("isolation", ["process"])
def test_walkthrough_with_isolated_etl_workers(make_app, tmp_path, repo, isolation):
    api = JsonClient(make_app(tmp_path / "data", ETL_ISOLATION=isolation, ETL_WORKERS=1,
                              ETL_WORKER_MEMORY_MB=1024).test_client())
    trained = train_walkthrough(api, repo, etl="etls/fitted_features.py")
    user_id, offline = next(iter(trained["features_by_user"].items()))
    online = api.post("/v1.0/extract/realtime", {"query_id": trained["query_id"], "etl_id": trained["etl_id"],
                                                 "index_key": "user_id", "index_value": user_id})["data"]
    assert online == [offline]
