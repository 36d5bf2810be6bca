"""The web UI at /ui: server-rendered pages that are a client of the service's own API.

Every page calls the API through Flask's test client with the logged-in key, so the API's role checks apply
unchanged: nothing the API refuses is possible here. The key lives in the session cookie (HttpOnly,
SameSite=Strict), never in a URL; every form carries a CSRF token.
"""
from __future__ import annotations

import secrets
from typing import Any
from urllib.parse import quote

from flask import Blueprint, Flask, abort, current_app, redirect, render_template, request, session, url_for

from app.api import API_PREFIX

bp = Blueprint("ui", __name__, url_prefix="/ui", template_folder="templates")


def install_ui(app: Flask) -> None:
    """Register the UI and make its session cookie safe (a per-process secret unless one is set)."""
    app.secret_key = app.config.get("UI_SECRET_KEY") or secrets.token_hex(32)
    app.config.update(SESSION_COOKIE_HTTPONLY=True, SESSION_COOKIE_SAMESITE="Strict")
    app.register_blueprint(bp)


def api(method: str, path: str, body: Any = None) -> tuple[int, Any]:
    """Call the API as the logged-in key: (status, JSON answer)."""
    headers = {"Authorization": f"Bearer {session['key']}"} if session.get("key") else {}
    with current_app.test_client() as client:
        answer = client.open(API_PREFIX + path, method=method, json=body, headers=headers)
    return answer.status_code, answer.get_json(silent=True)


def csrf_token() -> str:
    """This session's CSRF token (made on first use)."""
    if "csrf" not in session:
        session["csrf"] = secrets.token_urlsafe(24)
    return session["csrf"]


@bp.before_request
def check_csrf_and_login() -> Any:
    """Forms need the session's CSRF token; pages other than login need a key."""
    expected = session.get("csrf")
    if request.method == "POST" and (not expected or not secrets.compare_digest(request.form.get("csrf", ""), expected)):
        abort(400, "missing or wrong CSRF token")
    if request.endpoint != "ui.login" and "key" not in session:
        return redirect(url_for("ui.login"))
    return None


@bp.app_context_processor
def template_helpers() -> dict[str, Any]:
    return {"csrf_token": csrf_token}


def page(template: str, **context: Any) -> str:
    return render_template(template, role=session.get("role"), **context)


@bp.route("/login", methods=["GET", "POST"])
def login() -> Any:
    """Log in with an API key; it is checked against the API before it is kept."""
    error = None
    if request.method == "POST":
        session["key"] = request.form.get("key", "").strip()
        role = _role_of_key()
        if role is None:
            session.pop("key")
            error = "That key is unknown or revoked."
        else:
            session["role"] = role
            return redirect(url_for("ui.home"))
    return page("login.html", error=error)


def _role_of_key() -> str | None:
    """The key's role, found by what the API lets it read (admin: keys; scientist: queries; serving: neither)."""
    if api("GET", "/keys")[0] == 200:
        return "admin"
    status = api("GET", "/queries")[0]
    return "scientist" if status == 200 else ("serving" if status == 403 else None)


@bp.post("/logout")
def logout() -> Any:
    session.clear()
    return redirect(url_for("ui.login"))


@bp.get("/")
def home() -> str:
    """Health, counts and a search over what the key may read."""
    status, health = api("GET", "/health")
    lists = {name: _list(path) for name, path in
             (("queries", "/queries"), ("etls", "/etls"), ("feature sets", "/feature-sets"), ("sources", "/sources"))}
    term = request.args.get("q", "").lower()
    hits = [(kind, item) for kind, items in lists.items() for item in items if term and term in str(item).lower()]
    return page("home.html", health=health, lists=lists, term=term, hits=hits)


def _list(path: str) -> list[Any]:
    status, answer = api("GET", path)
    if status != 200:
        return []
    return answer if isinstance(answer, list) else next((v for v in answer.values() if isinstance(v, list)), [])


@bp.get("/<kind>")
def listing(kind: str) -> str:
    paths = {"queries": "/queries", "etls": "/etls", "feature-sets": "/feature-sets", "sources": "/sources"}
    if kind not in paths:
        abort(404)
    status, answer = api("GET", paths[kind])
    return page("detail.html", title=kind, status=status, answer=answer, items=_list(paths[kind]), kind=kind)


@bp.get("/<kind>/<name>")
def detail(kind: str, name: str) -> str:
    paths = {"queries": "/queries/", "etls": "/etls/", "feature-sets": "/feature-sets/", "sources": "/sources/"}
    if kind not in paths:
        abort(404)
    name = quote(name, safe="")  # a name is one path segment of the API call, never a query string
    status, answer = api("GET", paths[kind] + name)
    skew = api("GET", f"/etls/{name}/skew") if kind == "etls" else None
    return page("detail.html", title=f"{kind}: {name}", status=status, answer=answer, items=None, kind=kind,
                skew=skew)


@bp.route("/keys", methods=["GET", "POST"])
def keys() -> str:
    """Admins list, create (shown once) and revoke keys; others see the API's refusal."""
    created = None
    if request.method == "POST" and request.form.get("revoke"):
        api("DELETE", "/keys/" + quote(request.form["revoke"], safe=""))
    elif request.method == "POST":
        created = api("POST", "/keys", {"name": request.form.get("name", ""), "role": request.form.get("role")})
    status, answer = api("GET", "/keys")
    return page("keys.html", status=status, answer=answer, created=created)
