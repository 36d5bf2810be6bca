"""Shared fixtures: an app on a temporary data dir with tight limits, and a JSON client.

Plugins hold the pieces other areas need: PostgreSQL databases (fixtures_pg), Redis key prefixes (fixtures_redis)
and local git repositories of ETL scripts (fixtures_git).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Iterator

import pytest
from flask import Flask
from flask.testing import FlaskClient

from app import close_app, create_app

pytest_plugins = ["tests.fixtures_pg", "tests.fixtures_git", "tests.fixtures_catalog", "tests.fixtures_pgserver",
                  "tests.fixtures_redis"]

ERROR_KEYS = {"code", "message", "details"}


def app_config(data_dir: Path, **overrides: Any) -> dict[str, Any]:
    """Settings for a test app: embedded backends under `data_dir`, small limits, authentication off
    (tests/test_auth.py turns it on), the demo's sources declared (tests of a user's own data turn it off)."""
    return {"DATA_DIR": str(data_dir), "CATALOG_URL": None, "WAREHOUSE_URL": None,
            "REALTIME_URL": "sqlite:///:memory:", "MAX_RESPONSE_ROWS": 5000, "MAX_PUBLISH_FLOWS": 5000,
            "MAX_BODY_BYTES": 64 * 1024, "ETL_ALLOWED_REMOTES": (), "REMOTE_TIMEOUT_SECONDS": 10.0,
            "AUTH": "off", "STATS_FLUSH_SECONDS": 0.0, "DEMO_SOURCES": True,
            "CONSISTENCY_REPEAT_GAP_SECONDS": 0.0,  # tests/test_registration_replay.py sets a gap where it matters
            # every registration replays; 50 entities (the default is 200) covers the walkthroughs' coverage picks and
            # keeps the suite quick; tests of the replay set their own
            "CONSISTENCY_REPLAY_ENTITIES": 50,
            **overrides}


@pytest.fixture
def make_app(tmp_path: Path) -> Iterator[Callable[..., Flask]]:
    """Build apps (several may share one data dir, to test restarts); all are closed afterwards."""
    apps: list[Flask] = []

    def make(data_dir: Path | None = None, **overrides: Any) -> Flask:
        app = create_app(app_config(data_dir or tmp_path / "data", **overrides))
        app.testing = True
        apps.append(app)
        return app

    yield make
    for app in apps:
        close_app(app)


@pytest.fixture
def app(make_app: Callable[..., Flask]) -> Flask:
    return make_app()


class JsonClient:
    """Calls the API and checks the status and that the body is JSON (errors in the one shape)."""

    def __init__(self, client: FlaskClient):
        self.client = client

    def call(self, method: str, path: str, status: int, body: Any = None, **kwargs: Any) -> Any:
        response = self.client.open(path, method=method, json=body, **kwargs)
        assert response.status_code == status, (response.status_code, response.get_data(as_text=True)[:2000])
        assert response.mimetype == "application/json", response.mimetype
        payload = response.get_json()
        if status >= 400:
            assert set(payload) == ERROR_KEYS, payload
            assert isinstance(payload["code"], str) and isinstance(payload["details"], dict)
        return payload

    def get(self, path: str, status: int = 200, **kwargs: Any) -> Any:
        return self.call("GET", path, status, **kwargs)

    def post(self, path: str, body: Any, status: int = 200, **kwargs: Any) -> Any:
        return self.call("POST", path, status, body, **kwargs)

    def put(self, path: str, status: int = 200, **kwargs: Any) -> Any:
        return self.call("PUT", path, status, **kwargs)


@pytest.fixture
def api(app: Flask) -> JsonClient:
    return JsonClient(app.test_client())
