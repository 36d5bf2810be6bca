"""The walkthrough on the production-shaped backends: PostgreSQL warehouse and catalog, Mongo catalog.

The Mongo catalog runs on mongomock (no MongoDB server can be installed on these machines).
"""
from __future__ import annotations

import uuid

import pytest

from common.errors import InvalidQuery
from tests.conftest import JsonClient
from tests.walkthrough import FOUR_TABLE_QUERY, example_repo, train_walkthrough


@pytest.fixture
def repo(tmp_path):
    return example_repo(tmp_path / "etl-repo")


def serve_first_user(api, trained):
    user_id, offline = next(iter(trained["features_by_user"].items()))
    online = api.post("/v1.0/extract/realtime", {"query_id": trained["query_id"], "etl_id": trained["etl_id"],
                                                 "index_key": "user_id", "index_value": user_id})["data"]
    return online, offline


@pytest.mark.postgres
def test_walkthrough_on_postgresql(make_app, tmp_path, pg_database_url, repo):
    api = JsonClient(make_app(CATALOG_URL=pg_database_url, WAREHOUSE_URL=pg_database_url).test_client())
    trained = train_walkthrough(api, repo)
    online, offline = serve_first_user(api, trained)
    assert online == [offline]
    assert api.get("/v1.0/health")["status"] == "ok"

    restarted = JsonClient(make_app(tmp_path / "other-data", CATALOG_URL=pg_database_url,
                                    WAREHOUSE_URL=pg_database_url).test_client())
    assert serve_first_user(restarted, trained)[0] == [offline]


@pytest.mark.postgres
def test_postgres_query_that_duckdb_cannot_serve_is_not_saved(make_app, pg_database_url):
    api = JsonClient(make_app(CATALOG_URL=pg_database_url, WAREHOUSE_URL=pg_database_url).test_client())
    assert api.post("/v1.0/query/train", {"query": "SELECT pg_backend_pid() AS pid"})["data"][0]["pid"] > 0
    error = api.post("/v1.0/query/train?save=true", {"query": "SELECT pg_backend_pid() AS pid"}, 400)
    assert "realtime store" in error["message"]
    assert api.get("/v1.0/queries")["total"] == 0


@pytest.mark.postgres
def test_postgres_warehouse_refuses_writes_even_past_the_parser(make_app, pg_database_url):
    app = make_app(WAREHOUSE_URL=pg_database_url)
    api = JsonClient(app.test_client())
    api.put("/v1.0/publish?n_flows=5&seed=1")
    warehouse = app.extensions["feature_service"].warehouse
    with pytest.raises(InvalidQuery, match="read-only transaction"):
        warehouse.query("DELETE FROM users")
    assert api.post("/v1.0/query/train", {"query": "SELECT count(*) AS n FROM quotes"})["data"] == [{"n": 5}]


def test_walkthrough_on_the_mongo_catalog(make_app, repo):
    api = JsonClient(make_app(CATALOG_URL=f"mongomock://localhost/fs_{uuid.uuid4().hex}").test_client())
    trained = train_walkthrough(api, repo)
    online, offline = serve_first_user(api, trained)
    assert online == [offline]
    again = api.post("/v1.0/query/train?save=true", {"query": FOUR_TABLE_QUERY})
    assert again["query_id"] == trained["query_id"] and api.get("/v1.0/queries")["total"] == 1
