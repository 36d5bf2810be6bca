"""The web UI at /ui: server-rendered pages that are a client of the service's own API.

Every page calls the API through Flask's test client with the logged-in key, so the API's role checks apply
unchanged: nothing the API refuses is possible here. The key lives in the session cookie (HttpOnly,
SameSite=Strict), never in a URL; every form carries a CSRF token. The pages are in `ui.views` and
`ui.etl_views`, the SVG plots in `ui.plots`, the lineage graph in `ui.lineage`.
"""
from __future__ import annotations

import secrets
from typing import Any
from urllib.parse import quote

from flask import Blueprint, Flask, abort, current_app, redirect, render_template, request, session, url_for

from app.api import API_PREFIX

bp = Blueprint("ui", __name__, url_prefix="/ui", template_folder="templates", static_folder="static")
OPEN_ENDPOINTS = ("ui.login", "ui.static")
LIST_LIMIT = 500  # the API's largest page
Page = tuple[str, int]  # a rendered page and its HTTP status


def install_ui(app: Flask) -> None:
    """Register the UI and make its session cookie safe (a per-process secret unless one is set)."""
    from ui import etl_views, lineage, views  # noqa: F401 - registers the routes on `bp`

    app.secret_key = app.config.get("UI_SECRET_KEY") or secrets.token_hex(32)
    app.config.update(SESSION_COOKIE_HTTPONLY=True, SESSION_COOKIE_SAMESITE="Strict")
    app.register_blueprint(bp)


def api(method: str, path: str, body: Any = None) -> tuple[int, Any]:
    """Call the API as the logged-in key: (status, JSON answer)."""
    headers = {"Authorization": f"Bearer {session['key']}"} if session.get("key") else {}
    with current_app.test_client() as client:
        answer = client.open(API_PREFIX + path, method=method, json=body, headers=headers)
    return answer.status_code, answer.get_json(silent=True)


def segment(name: str) -> str:
    """`name` as one path segment of an API call, never a query string or a second segment."""
    return quote(str(name), safe="")


def api_items(path: str, **params: str) -> tuple[int, list[dict[str, Any]], Any]:
    """A listing's items (up to LIST_LIMIT): (status, items, the whole answer); no items when refused."""
    query = "&".join(f"{key}={quote(value, safe='')}" for key, value in {"limit": str(LIST_LIMIT), **params}.items())
    status, answer = api("GET", f"{path}?{query}")
    items = answer.get("items", []) if status == 200 and isinstance(answer, dict) else []
    return status, items, answer


def csrf_token() -> str:
    """This session's CSRF token (made on first use)."""
    if "csrf" not in session:
        session["csrf"] = secrets.token_urlsafe(24)
    return session["csrf"]


@bp.before_request
def check_csrf_and_login() -> Any:
    """Forms need the session's CSRF token; pages other than login (and the stylesheet) need a key."""
    expected = session.get("csrf")
    sent = request.form.get("csrf", "")
    if request.method == "POST" and (not expected or not secrets.compare_digest(sent, expected)):
        abort(400, "missing or wrong CSRF token")
    if request.endpoint not in OPEN_ENDPOINTS and "key" not in session:
        return redirect(url_for("ui.login"))
    return None


@bp.app_context_processor
def template_helpers() -> dict[str, Any]:
    return {"csrf_token": csrf_token}


def page(template: str, **context: Any) -> Page:
    """Render a page with the logged-in role (templates hide what a role may not see); a page whose API
    call was refused answers with the API's status (403, 404, …) as well as saying so."""
    status = context.get("status", 200)
    return render_template(template, role=session.get("role"), **context), status if status >= 400 else 200


def may_read_code() -> bool:
    """ETL code, its repository and commit are for scientists and admins only."""
    return session.get("role") in ("admin", "scientist")


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
    return page("login.html", error=error, title="Log in")


def _role_of_key() -> str | None:
    """The key's role, found by what the API lets it read (admin: keys; scientist: queries; serving: neither)."""
    if api("GET", "/keys")[0] == 200:
        return "admin"
    status = api("GET", "/queries?limit=1")[0]
    return "scientist" if status == 200 else ("serving" if status == 403 else None)


@bp.post("/logout")
def logout() -> Any:
    session.clear()
    return redirect(url_for("ui.login"))


@bp.route("/keys", methods=["GET", "POST"])
def keys() -> Page:
    """Admins list, create (shown once) and revoke keys; others see the API's refusal."""
    created = None
    if request.method == "POST" and request.form.get("revoke"):
        api("DELETE", "/keys/" + segment(request.form["revoke"]))
    elif request.method == "POST":
        created = api("POST", "/keys", {"name": request.form.get("name", ""), "role": request.form.get("role")})
    status, answer = api("GET", "/keys")
    return page("keys.html", status=status, answer=answer, created=created, title="API keys")
