"""The walkthrough on the production-shaped backends: PostgreSQL warehouse and catalog, Mongo catalog.

The Mongo catalog runs on mongomock (no MongoDB server can be installed on these machines).
"""
from __future__ import annotations

import uuid

import pytest
from psycopg import sql

from common.errors import InvalidQuery
from tests.conftest import JsonClient
from tests.fixtures_pg import admin_connection
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


@pytest.mark.postgres
def test_catalog_outage_is_a_503_naming_the_catalog_and_recovers(make_app, pg_server_url, pg_database_url):
    api = JsonClient(make_app(CATALOG_URL=pg_database_url).test_client())
    api.put("/v1.0/publish?n_flows=5&seed=1")
    database = sql.Identifier(pg_database_url.rsplit("/", 1)[1])
    with admin_connection(pg_server_url) as admin:  # the outage: no connections, existing ones cut
        admin.execute(sql.SQL("ALTER DATABASE {} ALLOW_CONNECTIONS false").format(database))
        admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s",
                      [pg_database_url.rsplit("/", 1)[1]])
    error = api.get("/v1.0/queries", 503)
    assert error["code"] == "backend_unavailable" and error["details"] == {"backend": "catalog"}
    assert api.post("/v1.0/query/train?save=true", {"query": "SELECT 1 AS one"}, 503)["details"]["backend"] == "catalog"
    health = api.get("/v1.0/health", 503)
    assert health["message"] == "unavailable: catalog"
    assert health["details"]["checks"]["catalog"]["ok"] is False
    assert health["details"]["checks"]["warehouse"] == {"ok": True}

    with admin_connection(pg_server_url) as admin:
        admin.execute(sql.SQL("ALTER DATABASE {} ALLOW_CONNECTIONS true").format(database))
    assert api.post("/v1.0/query/train?save=true", {"query": "SELECT 1 AS one"})["query_id"]
    assert api.get("/v1.0/health")["status"] == "ok"
