"""Authentication and roles: 401 without a valid key, 403 for a role that may not, revocation at once."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import JsonClient
from tests.walkthrough import FOUR_TABLE_QUERY, example_repo

ROOT = Path(__file__).resolve().parent.parent
ADMIN_KEY = "admin-key-for-tests-0123456789"


class KeyClient(JsonClient):
    """A JSON client that sends one API key."""

    def __init__(self, client, key: str | None):
        super().__init__(client)
        self.key = key

    def call(self, method, path, status, body=None, **kwargs):
        headers = {"Authorization": f"Bearer {self.key}"} if self.key else {}
        return super().call(method, path, status, body, headers=headers, **kwargs)


@pytest.fixture
def secured(make_app, tmp_path):
    """An app with AUTH on, an admin from ADMIN_KEY, and one key of every role, plus trained ids."""
    app = make_app(AUTH="on", ADMIN_KEY=ADMIN_KEY)
    admin = KeyClient(app.test_client(), ADMIN_KEY)
    keys = {role: admin.post("/v1.0/keys", {"name": f"{role} tests", "role": role}, 201)
            for role in ("scientist", "serving")}
    clients = {role: KeyClient(app.test_client(), body["key"]) for role, body in keys.items()}
    clients["admin"] = admin
    clients["anonymous"] = KeyClient(app.test_client(), None)
    repo = example_repo(tmp_path / "etl-repo")
    admin.put("/v1.0/publish?n_flows=30&seed=1")
    query = clients["scientist"].post("/v1.0/query/train?save=true", {"query": FOUR_TABLE_QUERY})
    etl = clients["scientist"].post("/v1.0/extract/train?save=true", {
        "query_id": query["query_id"], "etl_path": str(repo.file("etls/quote_features.py"))})
    user = query["data"][0]["user_id"]
    return app, clients, keys, {"query_id": query["query_id"], "etl_id": etl["etl_id"], "user": user}


def requests_by_role(ids):
    realtime = {"query_id": ids["query_id"], "index_key": "user_id", "index_value": ids["user"]}
    return [
        ("PUT", "/v1.0/publish?n_flows=1", None, {"admin"}),
        ("POST", "/v1.0/query/train", {"query": "SELECT 1 AS one"}, {"admin", "scientist"}),
        ("POST", "/v1.0/query/realtime", realtime, {"admin", "scientist", "serving"}),
        ("POST", "/v1.0/extract/realtime", {**realtime, "etl_id": ids["etl_id"]}, {"admin", "scientist", "serving"}),
        ("GET", "/v1.0/queries", None, {"admin", "scientist"}),
        ("GET", f"/v1.0/etls/{ids['etl_id']}", None, {"admin", "scientist"}),
        ("GET", f"/v1.0/etls/{ids['etl_id']}/skew", None, {"admin", "scientist"}),
        ("GET", "/v1.0/feature-sets", None, {"admin", "scientist"}),
        ("GET", "/v1.0/keys", None, {"admin"}),
        ("POST", "/v1.0/keys", {"name": "x", "role": "serving"}, {"admin"}),
    ]


def test_every_endpoint_checks_the_role(secured):
    _, clients, _, ids = secured
    for method, path, body, allowed in requests_by_role(ids):
        for role, client in clients.items():
            response = client.client.open(path, method=method, json=body, headers=(
                {"Authorization": f"Bearer {client.key}"} if client.key else {}))
            expected = 401 if role == "anonymous" else (403 if role not in allowed else response.status_code)
            assert response.status_code == expected, (method, path, role, response.get_json())
            if role in allowed:
                assert response.status_code < 400, (method, path, role, response.get_json())
            else:
                assert response.get_json()["code"] == ("unauthorized" if role == "anonymous" else "forbidden")


def test_serving_key_gets_features_by_name_but_no_registration(secured):
    _, clients, _, ids = secured
    clients["scientist"].post("/v1.0/feature-sets", {"name": "conv", "query_id": ids["query_id"],
                                                     "etl_id": ids["etl_id"]}, 201)
    assert clients["serving"].post("/v1.0/feature-sets/conv/realtime", {"index_value": ids["user"]})["data"]
    clients["serving"].post("/v1.0/feature-sets", {"name": "x", "query_id": ids["query_id"],
                                                   "etl_id": ids["etl_id"]}, 403)
    clients["serving"].post("/v1.0/feature-sets/conv/train", {}, 403)


@pytest.mark.parametrize("header", ["", "Bearer", "Bearer ", "Basic abc", "Bearer nope", "bearer " + "x" * 5000,
                                    "Bearer fs_000000000000_forged"])
def test_missing_or_bad_keys_are_401(secured, header):
    app, _, _, _ = secured
    response = app.test_client().get("/v1.0/queries", headers={"Authorization": header} if header else {})
    assert response.status_code == 401 and response.get_json()["code"] == "unauthorized"


def test_revocation_takes_effect_at_once(secured):
    _, clients, keys, _ = secured
    clients["scientist"].get("/v1.0/queries")
    revoked = clients["admin"].call("DELETE", f"/v1.0/keys/{keys['scientist']['key_id']}", 200)
    assert revoked["revoked_at"]
    assert clients["scientist"].get("/v1.0/queries", 401)["code"] == "unauthorized"
    listed = {k["key_id"]: k for k in clients["admin"].get("/v1.0/keys")["items"]}
    assert listed[keys["scientist"]["key_id"]]["revoked_at"] == revoked["revoked_at"]
    assert all("key_hash" not in k and "key" not in k for k in listed.values())


def test_only_a_hash_of_each_key_is_stored(secured):
    app, _, keys, _ = secured
    stored = app.extensions["feature_service"].catalog.list_api_keys()
    tokens = [k["key"] for k in keys.values()] + [ADMIN_KEY]
    for record in stored:
        assert all(token not in str(record.to_dict()) for token in tokens)


def test_created_by_names_the_key(secured):
    _, clients, keys, ids = secured
    query = clients["scientist"].get(f"/v1.0/queries/{ids['query_id']}")
    assert query["created_by"] == f"scientist tests ({keys['scientist']['key_id']})"


def test_health_and_docs_are_open(secured):
    app, _, _, _ = secured
    assert app.test_client().get("/v1.0/health").status_code == 200
    assert app.test_client().get("/v1.0/swagger.json").status_code == 200


def test_cli_creates_lists_and_revokes_keys(tmp_path, make_app):
    env = {"DATA_DIR": str(tmp_path / "data"), "PATH": "/usr/bin:/bin"}

    def cli(*args):
        return subprocess.run([sys.executable, "-m", "app", "keys", *args], cwd=ROOT, env=env, capture_output=True,
                              text=True, check=True).stdout

    created = cli("create", "--name", "first admin", "--role", "admin")
    token = created.strip().splitlines()[-1]
    key_id = created.split(" key ")[1].split(" ")[0]
    assert token.startswith(f"fs_{key_id}_")
    assert key_id in cli("list") and "active" in cli("list")

    app = make_app(tmp_path / "data", AUTH="on")
    admin = KeyClient(app.test_client(), token)
    assert admin.get("/v1.0/keys")["items"][0]["name"] == "first admin"
    cli("revoke", key_id)
    admin.get("/v1.0/keys", 401)
    assert "revoked" in cli("list")


def test_a_short_admin_key_fails_the_start_and_releases_the_stores(make_app, tmp_path):
    from common.errors import InvalidInput

    with pytest.raises(InvalidInput, match="ADMIN_KEY"):
        make_app(tmp_path / "data", AUTH="on", ADMIN_KEY="short")
    # The DuckDB warehouse file was closed: a new app can open it in this same process.
    assert make_app(tmp_path / "data", AUTH="on").test_client().get("/v1.0/health").status_code == 200
