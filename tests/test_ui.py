"""The web UI: pages render for an admin, a serving key is refused by the API, CSRF is checked, no key in URLs."""
from __future__ import annotations

import re

from app.auth import create_key

ADMIN_KEY = "ui-test-admin-key-0123456789"


def _login(client, key: str):
    page = client.get("/ui/login").get_data(as_text=True)
    token = re.search(r'name="csrf" value="([^"]+)"', page).group(1)
    return client.post("/ui/login", data={"key": key, "csrf": token})


def test_admin_walks_pages_and_serving_is_refused(make_app):
    app = make_app(AUTH="on", ADMIN_KEY=ADMIN_KEY)
    client = app.test_client()
    assert client.get("/ui/").status_code == 302
    answer = _login(client, ADMIN_KEY)
    assert answer.status_code == 302 and ADMIN_KEY not in answer.location
    for path in ("/ui/", "/ui/queries", "/ui/etls", "/ui/feature-sets", "/ui/sources", "/ui/keys"):
        page = client.get(path)
        assert page.status_code == 200, path
        assert ADMIN_KEY not in page.get_data(as_text=True)
    _, token = create_key(app.extensions["feature_service"].catalog, "srv", "serving")
    serving = app.test_client()
    _login(serving, token)
    assert "The API refused: 403" in serving.get("/ui/keys").get_data(as_text=True)


def test_form_without_csrf_is_refused(make_app):
    client = make_app(AUTH="on", ADMIN_KEY=ADMIN_KEY).test_client()
    assert client.post("/ui/login", data={"key": ADMIN_KEY}).status_code == 400


def test_admin_creates_a_key_shown_once_and_revokes_it(make_app):
    app = make_app(AUTH="on", ADMIN_KEY=ADMIN_KEY)
    client = app.test_client()
    _login(client, ADMIN_KEY)
    page = client.get("/ui/keys").get_data(as_text=True)
    token = re.search(r'name="csrf" value="([^"]+)"', page).group(1)
    created = client.post("/ui/keys", data={"csrf": token, "name": "model-a", "role": "serving"}).get_data(as_text=True)
    new_key = re.search(r"shown once\): <code>([^<]+)</code>", created).group(1)
    assert client.get("/ui/keys").get_data(as_text=True).count(new_key) == 0  # shown only in the answer that made it
    key_id = next(k.key_id for k in app.extensions["feature_service"].catalog.list_api_keys() if k.name == "model-a")
    client.post("/ui/keys", data={"csrf": token, "revoke": key_id})
    refused = app.test_client()
    assert "unknown or revoked" in _login(refused, new_key).get_data(as_text=True)
