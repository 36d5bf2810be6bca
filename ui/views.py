"""Home (health, counts, recent registrations, search), sources and queries, each read from the API."""
from __future__ import annotations

import datetime as dt
from typing import Any, Iterable

from flask import abort, request, url_for
from markupsafe import Markup
from pygments import highlight
from pygments.formatters import HtmlFormatter
from pygments.lexers import PythonLexer, SqlLexer

from ui import Page, api, api_items, bp, page, segment

KINDS = {"sources": "/sources", "queries": "/queries", "etls": "/etls", "feature-sets": "/feature-sets"}
TITLES = {"sources": "Sources", "queries": "Queries", "etls": "ETLs", "feature-sets": "Feature sets"}
PAGES = {"sources": ("ui.source", "name"), "queries": ("ui.query", "query_id"), "etls": ("ui.etl", "etl_id"),
         "feature-sets": ("ui.feature_set", "name")}  # kind -> (its page's endpoint, the argument naming one)
RECENT = 10


@bp.app_template_global()
def item_id(kind: str, item: dict[str, Any]) -> str:
    """The id a page of `kind` is found by: a name, or a query's / ETL's id."""
    return item.get(PAGES[kind][1]) or ""


@bp.app_template_global()
def page_url(kind: str, id: str) -> str:  # noqa: A002 - the templates' word for it
    """The URL of an item's page."""
    endpoint, argument = PAGES[kind]
    return url_for(endpoint, **{argument: id})


def highlighted(code: str, language: str) -> Markup:
    """`code` as HTML highlighted by Pygments (it escapes the text; the classes are styled in ui.css)."""
    lexer = SqlLexer() if language == "sql" else PythonLexer()
    return Markup(highlight(code, lexer, HtmlFormatter(cssclass="code")))


@bp.app_template_filter("event_time")
def event_time(value: Any) -> str:
    """An event time as the API gave it, with epoch seconds also shown as UTC."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return f"{dt.datetime.fromtimestamp(value, dt.timezone.utc):%Y-%m-%d %H:%M:%S} UTC ({value})"
    return "—" if value is None else str(value)


def _haystack(item: dict[str, Any]) -> str:
    """What the search looks in: names, descriptions, tags and column names."""
    columns = [c.get("name", "") for c in item.get("columns", []) + item.get("schema", [])]
    words = [item.get("name"), item.get("description"), item.get("query_id"), item.get("etl_id"),
             *item.get("tags", []), *columns, *item.get("features", [])]
    return " ".join(str(w) for w in words if w).lower()


def search(lists: dict[str, list[dict[str, Any]]], term: str) -> list[tuple[str, dict[str, Any]]]:
    """The items whose names, descriptions, tags or columns contain every word of `term`."""
    words = term.lower().split()
    return [(kind, item) for kind, items in lists.items() for item in items
            if words and all(word in _haystack(item) for word in words)]


def recent(lists: dict[str, list[dict[str, Any]]]) -> list[tuple[str, dict[str, Any]]]:
    """The newest registrations over every kind."""
    everything = [(kind, item) for kind, items in lists.items() for item in items]
    return sorted(everything, key=lambda pair: pair[1].get("created_at", ""), reverse=True)[:RECENT]


@bp.get("/")
def home() -> Page:
    """Health of every backend, counts, recent registrations and a search over what the key may read."""
    status, health = api("GET", "/health")
    health = health if isinstance(health, dict) else {}
    checks = health.get("checks") or health.get("details", {}).get("checks", {})  # 503: in the error's details
    answers = {kind: api_items(path) for kind, path in KINDS.items()}
    lists = {kind: items for kind, (_, items, _) in answers.items()}
    counts = {kind: (answer.get("total") if code == 200 else None) for kind, (code, _, answer) in answers.items()}
    term = request.args.get("q", "").strip()
    return page("home.html", title="Feature store", healthy=status == 200, checks=checks, counts=counts,
                recent=recent(lists), term=term, hits=search(lists, term), titles=TITLES)


@bp.get("/sources")
def sources() -> Page:
    status, items, answer = api_items("/sources")
    return page("sources.html", title="Sources", status=status, answer=answer, items=items)


@bp.get("/sources/<name>")
def source(name: str) -> Page:
    """A source: columns, keys, event time, hot window, rows in each store and the queries using it."""
    status, answer = api("GET", "/sources/" + segment(name))
    names = query_names() if status == 200 else {}
    return page("source.html", title=f"Source {name}", status=status, answer=answer, query_names=names)


def query_names() -> dict[str, str]:
    """Saved query id -> name (the id when unnamed), for links."""
    return {q["query_id"]: q.get("name") or q["query_id"] for q in api_items("/queries")[1]}


@bp.get("/queries")
def queries() -> Page:
    status, items, answer = api_items("/queries")
    return page("queries.html", title="Queries", status=status, answer=answer, items=items)


@bp.route("/queries/<query_id>", methods=["GET", "POST"])
def query(query_id: str) -> Page:
    """A saved query: highlighted SQL, schema, who saved it, its ETLs and a realtime "try it" form."""
    status, answer = api("GET", "/queries/" + segment(query_id))
    if status != 200:
        return page("query.html", title=f"Query {query_id}", status=status, answer=answer)
    tried = try_realtime(answer) if request.method == "POST" else None
    return page("query.html", title=f"Query {answer.get('name') or query_id}", status=status, answer=answer,
                sql=highlighted(answer["sql"], "sql"), etls=api_items("/etls", query_id=query_id)[1],
                tried=tried, form=request.form)


def try_realtime(query_record: dict[str, Any]) -> tuple[int, Any]:
    """Call the realtime path for the entity in the form (typed as the query's key column)."""
    types = {c["name"]: c["type"] for c in query_record["schema"]}
    index_key = request.form.get("index_key", "")
    if index_key not in types:
        abort(400, "index_key must be one of the query's columns")
    value = typed(request.form.get("index_value", ""), types[index_key])
    return api("POST", "/query/realtime", {"query_id": query_record["query_id"], "index_key": index_key,
                                           "index_value": value})


def typed(text: str, logical_type: str) -> Any:
    """A form's text as the key column's type (the API refuses what still does not fit)."""
    if logical_type == "integer":
        try:
            return int(text)
        except ValueError:
            return text
    return text


@bp.app_template_global()
def columns_of(rows: Iterable[dict[str, Any]]) -> list[str]:
    """The column names of result rows, in first-seen order."""
    names: dict[str, None] = {}
    for row in rows:
        names.update(dict.fromkeys(row))
    return list(names)
