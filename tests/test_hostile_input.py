"""Hostile input against every endpoint: a 4xx in the one JSON error shape, and nothing changed.

One app per module, trained by the README walkthrough (so every id exists), with a feature set
``conversion`` (version 1, production). Each case takes a snapshot of the catalog (every listing
and every record, the skew reports and the API keys) and of both stores (row counts per table:
the warehouse through ``query/train``, the realtime store through ``query/realtime`` of a saved
counts query) before and after the request, and requires them to be equal; so a case that leaks
a write fails itself and cannot spoil the next one.

Placeholders in paths and bodies (``@QUERY_ID@``, ``@ETL_ID@``, ``@USER@``, ``@REPO@``) are
replaced by the trained ids at run time, so the cases stay plain data and show in test ids.
"""
from __future__ import annotations

import io
import json
from dataclasses import dataclass, field
from typing import Any, Iterator
from urllib.parse import quote

import pytest
from flask import Flask

from app import close_app, create_app
from tests.conftest import ERROR_KEYS, JsonClient, app_config
from tests.walkthrough import example_repo, train_walkthrough

MAX_BODY = 64 * 1024  # MAX_BODY_BYTES of tests.conftest.app_config
Q, E, USER, REPO = "@QUERY_ID@", "@ETL_ID@", "@USER@", "@REPO@"
UNKNOWN_Q, UNKNOWN_E = "q_0123456789abcdef", "e_0123456789abcdef"
FEATURE_SET = "conversion"
COUNTS_SQL = ("SELECT 'all' AS scope, (SELECT count(*) FROM users) AS users, (SELECT count(*) FROM quotes) AS quotes, "
              "(SELECT count(*) FROM transactions) AS transactions, (SELECT count(*) FROM policies) AS policies")

SQL_INJECTIONS = ["' OR '1'='1", "x'; DROP TABLE users; --", '" OR 1=1 --', "1; SELECT * FROM api_keys",
                  "') UNION SELECT sql FROM sqlite_master --", "$where", "{\"$ne\": null}"]
TRAVERSALS = ["../../etc/passwd", "/etc/passwd", "file:///etc/passwd", "..%2F..%2Fetc%2Fpasswd",
              "....//....//etc/passwd", "\\..\\..\\windows\\win.ini"]
ODD_TEXT = {"nul": "q_\u0000", "rtl": "\u202eq_0123456789abcdef", "emoji": "q_💥💥💥",
            "zero_width": "q_0123456789abcde\u200bf", "long": "q_" + "a" * 10_000,
            "newline": "q_0123456789abcdef\n", "upper": "q_0123456789ABCDEF", "empty": "", "space": " "}


def hostile_values() -> Iterator[tuple[str, str]]:
    """(label, value): SQL injections, path traversals and odd text."""
    yield from ((f"sqli{i}", value) for i, value in enumerate(SQL_INJECTIONS))
    yield from ((f"traversal{i}", value) for i, value in enumerate(TRAVERSALS))
    yield from ODD_TEXT.items()


# -- the app, its ids and the snapshot -----------------------------------------------------------

@pytest.fixture(scope="module")
def hostile(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """A pre-trained app: the walkthrough, a counts query, the feature set `conversion` in production."""
    root = tmp_path_factory.mktemp("hostile")
    repo = example_repo(root / "etl-repo")
    app: Flask = create_app(app_config(root / "data"))
    app.testing = True
    api = JsonClient(app.test_client())
    trained = train_walkthrough(api, repo, n_flows=30)
    counts_id = api.post("/v1.0/query/train?save=true", {"query": COUNTS_SQL, "query_name": "counts"})["query_id"]
    api.post("/v1.0/feature-sets", {"name": FEATURE_SET, "query_id": trained["query_id"],
                                    "etl_id": trained["etl_id"], "features": ["is_mobile", "minutes_to_bind"]},
             201)
    api.call("PUT", f"/v1.0/feature-sets/{FEATURE_SET}/versions/1/stage", 200, {"stage": "production"})
    user = next(iter(trained["rows_by_user"]))
    api.post("/v1.0/extract/realtime", {"query_id": trained["query_id"], "etl_id": trained["etl_id"],
                                        "index_key": "user_id", "index_value": user})  # a served row in the stats
    try:
        yield {"app": app, "api": api, "client": app.test_client(), "counts_id": counts_id,
               "values": {Q: trained["query_id"], E: trained["etl_id"], USER: user, REPO: str(repo.path)}}
    finally:
        close_app(app)
        repo.repo.close()


def snapshot(env: dict[str, Any], previous: dict[str, Any] | None = None) -> dict[str, Any]:
    """Every listing and record of the catalog, the skew reports, the keys, and row counts of both stores.

    Serving statistics change only through the realtime endpoints (``realtime_etl``), and a skew report
    costs more than the rest of the snapshot: given a `previous` snapshot of a known ETL, its report is
    taken from there instead of asked again.
    """
    api: JsonClient = env["api"]
    state: dict[str, Any] = {}
    for listing in ("/v1.0/queries?limit=500", "/v1.0/etls?limit=500", "/v1.0/feature-sets?limit=500",
                    "/v1.0/keys"):
        state[listing] = api.get(listing)
    for item in state["/v1.0/queries?limit=500"]["items"]:
        state[f"query {item['query_id']}"] = api.get(f"/v1.0/queries/{item['query_id']}")
    for item in state["/v1.0/etls?limit=500"]["items"]:
        state[f"etl {item['etl_id']}"] = api.get(f"/v1.0/etls/{item['etl_id']}")
        skew = f"skew {item['etl_id']}"
        state[skew] = (previous or {}).get(skew) or api.get(f"/v1.0/etls/{item['etl_id']}/skew")
    for item in state["/v1.0/feature-sets?limit=500"]["items"]:
        state[f"feature set {item['name']}"] = api.get(f"/v1.0/feature-sets/{quote(item['name'], safe='')}")
    state["warehouse"] = api.post("/v1.0/query/train", {"query": COUNTS_SQL})["data"]
    state["realtime"] = api.post("/v1.0/query/realtime", {"query_id": env["counts_id"], "index_key": "scope",
                                                          "index_value": "all"})["data"]
    return state


def start(env: dict[str, Any]) -> dict[str, Any]:
    """The snapshot before a test: the previous test's closing one (nothing runs in between), else a new one."""
    return env.pop("baseline", None) or snapshot(env)


def finish(env: dict[str, Any], before: dict[str, Any], serving: bool = True) -> dict[str, Any]:
    """The snapshot after a test, kept as the next test's `start`; `serving`: whether the test's requests
    could reach a realtime endpoint (else the skew reports are carried over from `before`)."""
    env["baseline"] = snapshot(env, None if serving else before)
    return env["baseline"]


def fill(value: Any, values: dict[str, str]) -> Any:
    """`value` with the placeholders replaced (in strings, keys and nested containers)."""
    if isinstance(value, str):
        for token, real in values.items():
            value = value.replace(token, real)
        return value
    if isinstance(value, dict):
        return {fill(k, values): fill(v, values) for k, v in value.items()}
    if isinstance(value, list):
        return [fill(v, values) for v in value]
    return value


# -- the cases -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class Case:
    """One request: a JSON `body` (encoded here) or `raw` bytes/text sent as they are."""

    id: str
    method: str
    path: str
    body: Any = None
    raw: str | bytes | None = None
    content_type: str | None = "application/json"
    headers: dict[str, str] = field(default_factory=dict)
    status: int | None = None  # the exact status expected; None: any 4xx
    code: str | None = None  # the error code expected, if one is certain
    streamed: bool = False  # sent without Content-Length, as a chunked request reaches the app


@dataclass(frozen=True)
class Endpoint:
    """A JSON endpoint, a valid body for it, and which of its fields are required."""

    name: str
    method: str
    path: str
    body: dict[str, Any]
    required: tuple[str, ...]
    strings: tuple[str, ...] = ()  # string fields that have a maximum length


ENDPOINTS = [
    Endpoint("query_train", "POST", "/v1.0/query/train?save=true",
             {"query": "SELECT 1 AS hostile_probe", "query_name": "probe"}, ("query",), ("query_name",)),
    Endpoint("query_plan", "POST", "/v1.0/query/plan",
             {"query": "SELECT 1 AS hostile_probe", "query_name": "probe"}, ("query",), ("query_name",)),
    Endpoint("extract_plan", "POST", "/v1.0/extract/plan",
             {"query_id": Q, "etl_path": REPO + "/etls/legacy_features.py", "name": "probe"},
             ("query_id",), ("query_id", "etl_path", "name")),
    Endpoint("query_realtime", "POST", "/v1.0/query/realtime",
             {"query_id": Q, "index_key": "user_id", "index_value": USER},
             ("query_id", "index_key", "index_value"), ("query_id", "index_key")),
    Endpoint("extract_train", "POST", "/v1.0/extract/train?save=true",
             {"query_id": Q, "etl_path": REPO + "/etls/legacy_features.py", "name": "probe"},
             ("query_id",), ("query_id", "etl_path", "name")),
    Endpoint("extract_realtime", "POST", "/v1.0/extract/realtime",
             {"query_id": Q, "etl_id": E, "index_key": "user_id", "index_value": USER},
             ("query_id", "etl_id", "index_key", "index_value"), ("query_id", "etl_id", "index_key")),
    Endpoint("feature_set_create", "POST", "/v1.0/feature-sets",
             {"name": "probe", "query_id": Q, "etl_id": E, "features": ["is_mobile"], "tags": ["t"]},
             ("name", "query_id", "etl_id"), ("name", "query_id", "etl_id")),
    Endpoint("feature_set_stage", "PUT", f"/v1.0/feature-sets/{FEATURE_SET}/versions/1/stage",
             {"stage": "staging"}, ("stage",)),
    Endpoint("feature_set_realtime", "POST", f"/v1.0/feature-sets/{FEATURE_SET}/realtime",
             {"index_value": USER, "version": 1}, ("index_value",)),
    Endpoint("feature_set_train", "POST", f"/v1.0/feature-sets/{FEATURE_SET}/train", {"version": 1}, ()),
    Endpoint("keys_create", "POST", "/v1.0/keys", {"name": "probe", "role": "serving"}, ("name", "role"),
             ("name",)),
]

# Values of the wrong JSON type for each field (the right type is in the endpoint's body).
WRONG_TYPES = {"string": [5, True, None, ["x"], {"$ne": None}],
               "scalar": [None, [1], {"$gt": ""}],  # index_value: a string, number or boolean
               "integer": ["1", 1.5, True, None, {}, 0],
               "list": ["is_mobile", None, {}, [5]]}


def field_kind(name: str, value: Any) -> str:
    if name == "index_value":
        return "scalar"
    if isinstance(value, bool) or not isinstance(value, (int, list)):
        return "string"
    return "integer" if isinstance(value, int) else "list"


def dumps_with(body: dict[str, Any], key: str, token: str) -> str:
    """`body` as JSON text with the value of `key` replaced by a raw token (not valid JSON)."""
    return json.dumps({**body, key: "@TOKEN@"}).replace('"@TOKEN@"', token)


def body_cases(endpoint: Endpoint) -> Iterator[Case]:
    method, path, body, name = endpoint.method, endpoint.path, endpoint.body, endpoint.name

    def case(tag: str, **kwargs: Any) -> Case:
        return Case(f"{name}-{tag}", method, path, **kwargs)

    valid = json.dumps(body)
    first = next(iter(body), None)
    # Not JSON, or not a JSON object.
    for tag, raw in [("malformed", "{not json"), ("truncated", valid[:-1]), ("empty", ""), ("null", "null"),
                     ("array", "[]"), ("string", '"text"'), ("number", "5"), ("true", "true"),
                     ("trailing_garbage", valid + " x"), ("two_documents", valid + valid),
                     ("single_quotes", valid.replace('"', "'")), ("comment", "/* c */" + valid),
                     ("bom", "\ufeff" + valid)]:
        yield case(tag, raw=raw, status=400, code="invalid_input")
    yield case("invalid_utf8", raw=b"\xff\xfe{\x00}", status=400, code="invalid_input")
    yield case("utf16", raw=valid.encode("utf-16"), status=400, code="invalid_input")
    yield case("deep_arrays_10k", raw="[" * 10_000 + "]" * 10_000, status=400, code="invalid_input")
    yield case("deep_objects_10k", raw='{"a":' * 10_000 + "1" + "}" * 10_000, status=400, code="invalid_input")
    # Sizes: near the limit (refused for what it is), over it (413, by Content-Length or streamed).
    near = MAX_BODY - len(valid) - 200
    yield case("huge_unknown_field_near_limit", body={**body, "padding": "x" * near}, status=400)
    yield case("over_limit", body={**body, "padding": "x" * (MAX_BODY + 10)}, status=413,
               code="request_entity_too_large")
    yield case("over_limit_streamed", raw=json.dumps({**body, "padding": "x" * (MAX_BODY + 10)}).encode(),
               status=413, code="request_entity_too_large", streamed=True)
    for key in endpoint.strings:
        yield case(f"{key}-near_limit", body={**body, key: "a" * near}, status=400)
    # Missing, extra and wrongly typed fields; number tokens JSON does not have.
    for key in endpoint.required:
        yield case(f"{key}-missing", body={k: v for k, v in body.items() if k != key}, status=400,
                   code="invalid_input")
    for tag, extra in [("extra_field", {"unexpected": True}), ("proto", {"__proto__": {"admin": True}}),
                       ("mongo_operator", {"$where": "sleep(1000)"}), ("nul_key", {"a\u0000b": 1})]:
        yield case(tag, body={**body, **extra}, status=400, code="invalid_input")
    for key, value in body.items():
        for i, wrong in enumerate(WRONG_TYPES[field_kind(key, value)]):
            yield case(f"{key}-wrong_type{i}", body={**body, key: wrong}, status=400)
        yield case(f"{key}-token_NaN", raw=dumps_with(body, key, "NaN"), status=400, code="invalid_input")
    if first is not None:  # the parser is shared: every other token on one field of each endpoint
        for tag, token in [("Infinity", "Infinity"), ("minus_Infinity", "-Infinity"), ("1e309", "1e309"),
                           ("minus_1e400", "-1e400"), ("400_digits", "9" * 400), ("hex", "0x10"),
                           ("leading_zero", "01"), ("plus", "+1"), ("bare_fraction", ".5"),
                           ("lone_surrogate", '"\\ud800"'), ("unpaired_low_surrogate", '"\\udc00x"'),
                           ("bad_escape", '"\\x41"'), ("raw_control_char", '"a\tb"'),
                           ("deep_value", "[" * 10_000 + "]" * 10_000)]:
            yield case(f"{first}-token_{tag}", raw=dumps_with(body, first, token), status=400, code="invalid_input")
    # Duplicate keys (RFC 8259: names SHOULD be unique; parsers disagree on which one wins): refused.
    if first is not None:
        member = json.dumps({first: body[first]})[1:-1]
        wrong = '{"$ne": null}'
        yield case("duplicate_key_last_wrong", raw=valid[:-1] + ', "' + first + '": ' + wrong + "}", status=400)
        yield case("duplicate_key_first_wrong", raw='{"' + first + '": ' + wrong + ", " + valid[1:], status=400)
        yield case("duplicate_key_same", raw="{" + member + ", " + valid[1:], status=400)
    # Wrong content types with a body that is not JSON.
    yield case("form_urlencoded", raw="query_id=x&index_key=y", content_type="application/x-www-form-urlencoded",
               status=400, code="invalid_input")
    yield case("multipart", raw=b"--b\r\nContent-Disposition: form-data; name=\"f\"\r\n\r\nx\r\n--b--\r\n",
               content_type="multipart/form-data; boundary=b", status=400, code="invalid_input")
    yield case("xml", raw="<query>SELECT 1</query>", content_type="application/xml", status=400,
               code="invalid_input")
    yield case("no_content_type_no_body", raw=b"", content_type=None, status=400, code="invalid_input")


def field_cases() -> Iterator[Case]:
    """Hostile values in the fields that name things: ids, keys, names, paths, stages, roles."""
    realtime = {"query_id": Q, "index_key": "user_id", "index_value": USER}
    extract = {**realtime, "etl_id": E}
    create = {"name": "probe", "query_id": Q, "etl_id": E}
    train = {"query_id": Q, "etl_path": REPO + "/etls/legacy_features.py"}
    targets = [("query_realtime", "/v1.0/query/realtime", realtime, "query_id"),
               ("extract_realtime", "/v1.0/extract/realtime", extract, "query_id"),
               ("extract_realtime", "/v1.0/extract/realtime", extract, "etl_id"),
               ("extract_train", "/v1.0/extract/train?save=true", train, "query_id"),
               ("extract_plan", "/v1.0/extract/plan", train, "query_id"),
               ("feature_set_create", "/v1.0/feature-sets", create, "query_id"),
               ("feature_set_create", "/v1.0/feature-sets", create, "etl_id"),
               ("feature_set_create", "/v1.0/feature-sets", create, "name"),
               ("query_realtime", "/v1.0/query/realtime", realtime, "index_key"),
               ("extract_realtime", "/v1.0/extract/realtime", extract, "index_key"),
               ("feature_set_create", "/v1.0/feature-sets", {**create, "index_key": "user_id"}, "index_key")]
    for name, path, body, key in targets:
        for label, value in hostile_values():
            if key == "name" and label == "upper":
                continue  # a valid feature-set name
            # An id with a trailing newline passes the id pattern (`$`) and is an unknown id: 404.
            status = None if label == "newline" and key != "name" else 400
            yield Case(f"{name}-{key}-{label}", "POST", path, body={**body, key: value}, status=status)
    for name, path, body, key in targets[:4]:
        unknown = UNKNOWN_E if key == "etl_id" else UNKNOWN_Q
        status = 400 if (name, key) == ("extract_realtime", "query_id") else 404  # not the ETL's query
        yield Case(f"{name}-{key}-unknown", "POST", path, body={**body, key: unknown}, status=status)
    # Feature-set names with a pattern and a maximum length.
    yield Case("feature_set_create-features-injection", "POST", "/v1.0/feature-sets",
               body={**create, "features": ["is_mobile", "is_mobile\"; DROP TABLE feature_sets; --"]}, status=400)
    yield Case("feature_set_create-features-duplicate", "POST", "/v1.0/feature-sets",
               body={**create, "features": ["is_mobile", "is_mobile"]}, status=400)
    yield Case("feature_set_create-features-too_many", "POST", "/v1.0/feature-sets",
               body={**create, "features": ["is_mobile"] * 1001}, status=400)
    yield Case("feature_set_create-tags-too_many", "POST", "/v1.0/feature-sets",
               body={**create, "tags": ["t"] * 51}, status=400)
    yield Case("feature_set_create-description-too_long", "POST", "/v1.0/feature-sets",
               body={**create, "description": "d" * 2001}, status=400)
    yield Case("feature_set_create-other_query", "POST", "/v1.0/feature-sets",
               body={**create, "query_id": UNKNOWN_Q}, status=400)
    # NUL in free text that is stored: refused on every catalog alike (PostgreSQL text cannot hold it).
    for tag, path, body in [
            ("query_train-query_name-nul", "/v1.0/query/train?save=true",
             {"query": "SELECT 3 AS nul_probe", "query_name": "quote\u0000join"}),
            ("extract_train-name-nul", "/v1.0/extract/train?save=true", {**train, "name": "legacy\u0000"}),
            ("feature_set_create-description-nul", "/v1.0/feature-sets",
             {**create, "name": "nul-probe", "description": "a\u0000b"}),
            ("feature_set_create-tags-nul", "/v1.0/feature-sets", {**create, "name": "nul-probe", "tags": ["\u0000"]}),
            ("keys_create-name-nul", "/v1.0/keys", {"name": "ci\u0000", "role": "serving"})]:
        yield Case(tag, "POST", path, body=body, status=400)
    # ETL locations: traversal out of the repository, files that are not ETLs, remotes not allowed.
    for i, etl_path in enumerate(TRAVERSALS + [
            REPO + "/../../../../etc/passwd", REPO + "/.git/config", REPO + "/etls/../../../../etc/passwd",
            "file://" + REPO + "/../../../../etc/passwd", "git+file://" + REPO + "@main#../../../../etc/passwd",
            "git+file:///etc@main#passwd", "git+file://" + REPO + "@--upload-pack=touch /tmp/pwned#etls/x.py",
            "git+file://" + REPO + "@main; rm -rf /#etls/quote_features.py",
            "http://169.254.169.254/latest/meta-data/x.py", "https://example.invalid/etl.py",
            "ssh://git@example.invalid/r.git", "ftp://example.invalid/x.py", "~/.ssh/id_rsa", "/dev/zero",
            "/proc/self/environ", "C:\\Windows\\win.ini", REPO + "/etls/quote_features.py\u0000.txt",
            REPO + "/etls/no_such.py", "-rf", " ", "\u202e" + REPO + "/etls/quote_features.py"]):
        for name, path in (("extract_train", "/v1.0/extract/train?save=true"), ("extract_plan", "/v1.0/extract/plan")):
            yield Case(f"{name}-etl_path-hostile{i}", "POST", path, body={**train, "etl_path": etl_path}, status=400)
    for i, (repo, ref, path) in enumerate([
            (REPO, None, "../../../../etc/passwd"), (REPO, None, "/etc/passwd"), (REPO, None, ".git/config"),
            ("/etc", None, "passwd"), (REPO, "--upload-pack=touch /tmp/pwned", "etls/quote_features.py"),
            (REPO, "main:../../..", "etls/quote_features.py"), (REPO, "no-such-ref", "etls/quote_features.py"),
            (REPO, "-x", "etls/quote_features.py"), ("/nonexistent/repo", None, "x.py"),
            (REPO, None, "etls/quote_features.py\u0000"), ("file:///etc/passwd", None, "x.py")]):
        etl = {"repo": repo, "path": path, **({"ref": ref} if ref is not None else {})}
        for name, path in (("extract_train", "/v1.0/extract/train?save=true"), ("extract_plan", "/v1.0/extract/plan")):
            yield Case(f"{name}-etl-hostile{i}", "POST", path, body={"query_id": Q, "etl": etl}, status=400)
    for tag, extra in [("both", {"etl": {"repo": REPO, "path": "etls/quote_features.py"}}),
                       ("etl_extra_field", {"etl_path": None, "etl": {"repo": REPO, "path": "x.py", "x": 1}})]:
        yield Case(f"extract_train-{tag}", "POST", "/v1.0/extract/train?save=true", body={**train, **extra},
                   status=400)
    yield Case("extract_train-neither", "POST", "/v1.0/extract/train?save=true", body={"query_id": Q},
               status=400)
    # Stages and roles outside their enums.
    for i, stage in enumerate(["PRODUCTION", "prod", "", "'; DROP TABLE feature_sets; --", "production\u0000",
                               "archived"]):
        yield Case(f"feature_set_stage-stage-hostile{i}", "PUT",
                   f"/v1.0/feature-sets/{FEATURE_SET}/versions/1/stage", body={"stage": stage}, status=400)
    for i, role in enumerate(["root", "ADMIN", "", "admin\u0000", "' OR '1'='1"]):
        yield Case(f"keys_create-role-hostile{i}", "POST", "/v1.0/keys", body={"name": "probe", "role": role},
                   status=400)
    yield Case("keys_create-name-empty", "POST", "/v1.0/keys", body={"name": "", "role": "serving"}, status=400)
    # A query body that is SQL but hostile (more in test_api_errors.py).
    for i, sql in enumerate(["SELECT 1; DROP TABLE users", "SELECT * FROM api_keys", "SELECT 'a\u0000b'",
                             "SELECT * FROM read_text('/etc/passwd')",
                             "SELECT " + "(" * 5000 + "1" + ")" * 5000, "SELECT " + "NOT " * 10_000 + "1"]):
        yield Case(f"query_train-query-hostile{i}", "POST", "/v1.0/query/train?save=true",
                   body={"query": sql, "query_name": "probe"}, status=400)


def path_cases() -> Iterator[Case]:
    """Hostile ids in URL paths and hostile query parameters, on every route that takes them."""
    segments = {"nul": "%00", "nul_raw": "q_%00abc", "traversal": "..%2F..%2Fetc%2Fpasswd",
                "dotdot": "..", "dots": "...", "injection": "q_0123456789abcdef'%20OR%20'1'='1",
                "injection2": "%27%3B%20DROP%20TABLE%20queries%3B%20--", "long": "a" * 10_000,
                "rtl": "%E2%80%AEq_0123456789abcdef", "emoji": "%F0%9F%92%A5", "bad_utf8": "%FF%FE",
                "space": "%20", "percent": "%25", "newline": "conversion%0A", "backslash": "%5C..%5C"}
    routes = [("queries", "GET", "/v1.0/queries/{}", None), ("etls", "GET", "/v1.0/etls/{}", None),
              ("skew", "GET", "/v1.0/etls/{}/skew", None), ("feature_set", "GET", "/v1.0/feature-sets/{}", None),
              ("feature_set_realtime", "POST", "/v1.0/feature-sets/{}/realtime", {"index_value": USER}),
              ("feature_set_train", "POST", "/v1.0/feature-sets/{}/train", {}),
              ("feature_set_stage", "PUT", "/v1.0/feature-sets/{}/versions/1/stage", {"stage": "staging"}),
              ("keys_revoke", "DELETE", "/v1.0/keys/{}", None)]
    for route, method, template, body in routes:
        for tag, segment in segments.items():
            yield Case(f"{route}-path_{tag}", method, template.format(segment), body=body)
    for route, method, template, body in routes[:2]:
        unknown = UNKNOWN_Q if route == "queries" else UNKNOWN_E
        yield Case(f"{route}-path_unknown", method, template.format(unknown), status=404, code="not_found")
    yield Case("skew-path_unknown", "GET", f"/v1.0/etls/{UNKNOWN_E}/skew", status=404, code="not_found")
    yield Case("skew-path_query_id", "GET", f"/v1.0/etls/{Q}/skew", status=400)
    yield Case("etls-path_query_id", "GET", f"/v1.0/etls/{Q}", status=400)
    yield Case("queries-path_etl_id", "GET", f"/v1.0/queries/{E}", status=400)
    yield Case("feature_set-path_unknown", "GET", "/v1.0/feature-sets/no-such-set", status=404)
    yield Case("keys_revoke-path_unknown", "DELETE", "/v1.0/keys/0123456789ab", status=404)
    for tag, version in [("zero", "0"), ("negative", "-1"), ("huge", str(10**12)), ("bigger_than_int64", "9" * 30),
                         ("int32_overflow", str(2**31)),
                         ("float", "1.5"), ("word", "one"), ("unknown", "99")]:
        yield Case(f"feature_set_stage-version_{tag}", "PUT",
                   f"/v1.0/feature-sets/{FEATURE_SET}/versions/{version}/stage", body={"stage": "staging"})
    for tag, body in [("zero", {"version": 0}), ("negative", {"version": -1}), ("huge", {"version": 10**12}),
                      ("int64_overflow", {"version": 2**63}), ("unknown", {"version": 99})]:
        for route in ("realtime", "train"):
            extra = {"index_value": USER} if route == "realtime" else {}
            yield Case(f"feature_set_{route}-version_{tag}", "POST", f"/v1.0/feature-sets/{FEATURE_SET}/{route}",
                       body={**extra, **body})
    # Query parameters: paging, filters, flags, publish sizes.
    for route in ("/v1.0/queries", "/v1.0/etls", "/v1.0/feature-sets"):
        for tag, params in [("limit_zero", "limit=0"), ("limit_negative", "limit=-1"), ("limit_huge", "limit=10000"),
                            ("limit_int64", "limit=" + "9" * 30), ("limit_word", "limit=abc"),
                            ("limit_float", "limit=1.5"), ("limit_nan", "limit=NaN"), ("limit_nul", "limit=%00"),
                            ("limit_exp", "limit=1e2"), ("offset_negative", "offset=-1"),
                            ("offset_huge", "offset=" + str(10**12)), ("offset_injection", "offset=0;DROP"),
                            ("limit_empty", "limit="), ("limit_underscore", "limit=1_0"),
                            ("limit_unicode_digits", "limit=%D9%A1%D9%A0")]:
            yield Case(f"{route.rsplit('/', 1)[1]}-{tag}", "GET", f"{route}?{params}", status=400,
                       code="invalid_input")
    for i, value in enumerate(SQL_INJECTIONS + TRAVERSALS + ["%00", "q_%00", "q_" + "a" * 5000]):
        yield Case(f"etls-query_id_param-hostile{i}", "GET", "/v1.0/etls?query_id=" + value, status=400)
    for route in ("/v1.0/query/train", "/v1.0/extract/train"):
        body = {"query": "SELECT 1 AS x"} if "query" in route else {"query_id": Q, "etl_path": "x.py"}
        for tag, params in [("save_word", "save=maybe"), ("save_nul", "save=%00"), ("include_data_2", "include_data=2"),
                            ("save_empty", "save=")]:
            yield Case(f"{route.split('/')[2]}_train-{tag}", "POST", f"{route}?{params}", body=body, status=400,
                       code="invalid_input")
    for tag, params in [("missing", ""), ("zero", "n_flows=0"), ("negative", "n_flows=-1"),
                        ("huge", f"n_flows={10**12}"), ("over_max", "n_flows=5001"), ("int64", "n_flows=" + "9" * 30),
                        ("word", "n_flows=ten"), ("float", "n_flows=1.5"), ("exp", "n_flows=1e3"),
                        ("nan", "n_flows=NaN"), ("inf", "n_flows=Infinity"), ("hex", "n_flows=0x10"),
                        ("empty", "n_flows="), ("nul", "n_flows=%00"), ("underscore", "n_flows=1_0"),
                        ("unicode_digits", "n_flows=%D9%A1%D9%A0"), ("injection", "n_flows=10;DROP%20TABLE%20users"),
                        ("seed_negative", "n_flows=10&seed=-1"), ("seed_huge", f"n_flows=10&seed={2**32}"),
                        ("seed_word", "n_flows=10&seed=abc"), ("seed_float", "n_flows=10&seed=1.5")]:
        yield Case(f"publish-{tag}", "PUT", f"/v1.0/publish?{params}", raw=b"", status=400, code="invalid_input")
    # Unknown routes and wrong methods.
    for tag, method, path, status in [
            ("unknown_route", "GET", "/v1.0/no/such/route", 404), ("unknown_nul", "GET", "/v1.0/%00", 404),
            ("trailing_segment", "GET", f"/v1.0/queries/{Q}/extra", 404),
            ("traversal_route", "GET", "/v1.0/../../etc/passwd", 404),
            ("delete_queries", "DELETE", "/v1.0/queries", 405),
            ("patch_query_train", "PATCH", "/v1.0/query/train", 405),
            ("put_query", "PUT", f"/v1.0/queries/{Q}", 405), ("delete_etl", "DELETE", f"/v1.0/etls/{E}", 405),
            ("post_health", "POST", "/v1.0/health", 405), ("get_publish", "GET", "/v1.0/publish", 405),
            ("post_publish", "POST", "/v1.0/publish?n_flows=10", 405),
            ("get_query_train", "GET", "/v1.0/query/train", 405),
            ("get_extract_realtime", "GET", "/v1.0/extract/realtime", 405),
            ("delete_feature_set", "DELETE", f"/v1.0/feature-sets/{FEATURE_SET}", 405),
            ("get_stage", "GET", f"/v1.0/feature-sets/{FEATURE_SET}/versions/1/stage", 405),
            ("trace", "TRACE", "/v1.0/queries", 405), ("bogus_method", "FOO", "/v1.0/queries", 405)]:
        yield Case(tag, method, path, raw=b"", status=status)


CASES = [case for endpoint in ENDPOINTS for case in body_cases(endpoint)] + list(field_cases()) + list(path_cases())
assert len({case.id for case in CASES}) == len(CASES), "case ids must be unique"

# Cases the service gets wrong today; strict, so a fix shows up as XPASS and the entry must go.
DUPLICATE_KEYS = ("BUG duplicate keys in a JSON body are accepted (orjson keeps the last) instead of refused "
                  "with 400: a proxy or WAF that reads the first occurrence sees another request")
LENIENT_INT = ("BUG query_int() parses with int(), which takes '1_0' and Arabic-Indic digits as 10; "
               "the OpenAPI document says integer: refuse anything but an optional '-' and ASCII digits")
NUL_TEXT = ("BUG NUL in free text is stored on SQLite (and is a 500 on the PostgreSQL catalog, see "
            "test_nul_and_big_numbers_on_the_postgres_catalog): refuse \\u0000 in stored strings with 400")
KNOWN_BUGS: dict[str, str] = {}  # none known: a case found to fail goes here, strict
assert set(KNOWN_BUGS) <= {case.id for case in CASES}, set(KNOWN_BUGS) - {case.id for case in CASES}


def send(env: dict[str, Any], case: Case):  # noqa: ANN201 - a werkzeug TestResponse
    values = env["values"]
    kwargs: dict[str, Any] = {"method": case.method, "headers": case.headers}
    if case.raw is not None:
        kwargs["data"] = fill(case.raw, values) if isinstance(case.raw, str) else case.raw
    elif case.body is not None:
        kwargs["data"] = json.dumps(fill(case.body, values))
    if case.content_type is not None and "data" in kwargs:
        kwargs["content_type"] = case.content_type
    if case.streamed:
        data = kwargs.pop("data")
        kwargs["input_stream"] = io.BytesIO(data.encode() if isinstance(data, str) else data)
        kwargs["environ_overrides"] = {"wsgi.input_terminated": True}
    return env["client"].open(fill(case.path, values), **kwargs)


def assert_error_shape(response, case: Case) -> dict[str, Any]:  # noqa: ANN001
    text = response.get_data(as_text=True)
    assert 400 <= response.status_code < 500, (case.method, case.path, response.status_code, text[:1000])
    if case.status is not None:
        assert response.status_code == case.status, (response.status_code, text[:1000])
    assert response.mimetype == "application/json", (response.mimetype, text[:300])
    payload = json.loads(text)
    assert isinstance(payload, dict) and set(payload) == ERROR_KEYS, payload
    assert isinstance(payload["code"], str) and payload["code"], payload
    assert isinstance(payload["message"], str) and isinstance(payload["details"], dict), payload
    if case.code is not None:
        assert payload["code"] == case.code, payload
    assert "Traceback" not in text and "root:x:0:0" not in text, text[:1000]
    assert len(text) < 16_384, f"an error body of {len(text)} characters echoes the input"
    return payload


def marks_for(case_id: str) -> list[Any]:
    reason = KNOWN_BUGS.get(case_id)
    return [pytest.mark.xfail(strict=True, reason=reason)] if reason else []


@pytest.mark.parametrize("case", [pytest.param(c, id=c.id, marks=marks_for(c.id)) for c in CASES])
def test_hostile_request_is_refused_and_changes_nothing(hostile, case):
    before = start(hostile)
    response = send(hostile, case)
    after = finish(hostile, before, serving="realtime" in case.path)
    assert_error_shape(response, case)
    assert after == before


# -- values that are only values: bound as parameters, so a 200 with nothing (or 404) is right ----

INDEX_VALUES = SQL_INJECTIONS + TRAVERSALS + ["\u202e💥", "\ud7ff\ue000", "x" * 60_000,
                                              "%", "_", "*", "\\", "' OR sleep(5) --"]


@pytest.mark.parametrize("value", ["\u0000", "a\u0000b"])
def test_nul_in_index_values_is_refused(hostile, value):
    api: JsonClient = hostile["api"]
    body = {"query_id": hostile["values"][Q], "index_key": "user_id", "index_value": value}
    assert api.post("/v1.0/query/realtime", body, 400)["code"] == "invalid_input"


@pytest.mark.parametrize("value", [pytest.param(v, id=f"value{i}") for i, v in enumerate(INDEX_VALUES)])
def test_hostile_index_values_are_just_values(hostile, value):
    api: JsonClient = hostile["api"]
    ids = hostile["values"]
    before = start(hostile)
    body = {"query_id": ids[Q], "index_key": "user_id", "index_value": value}
    assert api.post("/v1.0/query/realtime", body, 404)["code"] == "entity_not_found"
    assert api.post("/v1.0/extract/realtime", {**body, "etl_id": ids[E]}, 404)["code"] == "entity_not_found"
    error = api.post(f"/v1.0/feature-sets/{FEATURE_SET}/realtime", {"index_value": value}, 404)
    assert error["code"] == "entity_not_found"
    assert finish(hostile, before) == before


# -- methods without a body: HEAD, OPTIONS, GET with a body ---------------------------------------

GET_ROUTES = ["/v1.0/queries", "/v1.0/etls", "/v1.0/feature-sets", f"/v1.0/queries/{Q}", f"/v1.0/etls/{E}",
              f"/v1.0/etls/{E}/skew", f"/v1.0/feature-sets/{FEATURE_SET}", "/v1.0/health", "/v1.0/keys"]
POST_ROUTES = ["/v1.0/query/train", "/v1.0/query/plan", "/v1.0/query/realtime", "/v1.0/extract/train",
               "/v1.0/extract/plan", "/v1.0/extract/realtime",
               "/v1.0/feature-sets", f"/v1.0/feature-sets/{FEATURE_SET}/realtime",
               f"/v1.0/feature-sets/{FEATURE_SET}/train", "/v1.0/keys"]
PUT_ROUTES = ["/v1.0/publish?n_flows=10", f"/v1.0/feature-sets/{FEATURE_SET}/versions/1/stage"]


@pytest.mark.parametrize("path", GET_ROUTES)
def test_get_with_a_hostile_body_ignores_it(hostile, path):
    """A body on a GET is not read: the answer is the bodiless one, nothing is written."""
    client, values = hostile["client"], hostile["values"]
    before = start(hostile)
    url = fill(path, values)
    plain = client.get(url)
    for raw in ('{"query": "DROP TABLE users"}', "{not json", "[" * 10_000 + "]" * 10_000):
        response = client.open(url, method="GET", data=raw, content_type="application/json")
        assert response.status_code == plain.status_code == 200, response.get_data(as_text=True)[:500]
        if "skew" not in path:
            assert response.get_json() == plain.get_json()
    over = client.open(url, method="GET", data="x" * (MAX_BODY + 10), content_type="application/json")
    assert over.status_code in (200, 413), over.status_code
    assert finish(hostile, before) == before


@pytest.mark.parametrize("path", GET_ROUTES + POST_ROUTES + PUT_ROUTES)
def test_head_and_options_write_nothing(hostile, path):
    """HEAD answers a GET route without a body and refuses the others (405); OPTIONS lists the methods."""
    client, values = hostile["client"], hostile["values"]
    before = start(hostile)
    url = fill(path, values)
    head = client.open(url, method="HEAD")
    assert head.status_code == (200 if path in GET_ROUTES else 405), head.status_code
    assert head.get_data() == b""
    options = client.open(url, method="OPTIONS")
    assert options.status_code == 200, options.status_code
    allowed = {m.strip() for m in options.headers.get("Allow", "").split(",")}
    assert ("GET" in allowed) == (path in GET_ROUTES) and "OPTIONS" in allowed, allowed
    assert finish(hostile, before) == before


@pytest.mark.parametrize("path", POST_ROUTES)
def test_json_under_another_content_type_is_still_validated(hostile, path):
    """The body is read as JSON whatever its Content-Type (clients of the original service send none);
    an invalid body under any type is still refused with the error shape."""
    client = hostile["client"]
    before = start(hostile)
    for content_type in ("text/plain", "application/x-www-form-urlencoded", "application/octet-stream", None):
        response = client.open(fill(path, hostile["values"]), method="POST", data='{"unexpected": 1}',
                               content_type=content_type)
        assert_error_shape(response, Case("content-type", "POST", path, status=400, code="invalid_input"))
    assert finish(hostile, before) == before


# -- free text is data: stored and returned verbatim, never interpreted --------------------------

FREE_TEXT = SQL_INJECTIONS + ["Robert'); DROP TABLE queries;--", "%s%s%n", "{0.__class__}", "$(reboot)",
                              "\u202eevil\u202c", "💥 emoji", "名前", "a" * 200]


@pytest.mark.parametrize("text", [pytest.param(t, id=f"text{i}") for i, t in enumerate(FREE_TEXT)])
def test_free_text_is_stored_verbatim(hostile, text):
    """Names, descriptions and tags reach the catalog as bound values: they round-trip exactly,
    and every table (catalog and stores) is still there with the same rows."""
    api: JsonClient = hostile["api"]
    ids = hostile["values"]
    before = start(hostile)
    index = FREE_TEXT.index(text)
    query = api.post("/v1.0/query/train?save=true", {"query": f"SELECT {index} AS free_text_{index}",
                                                     "query_name": text})
    assert api.get(f"/v1.0/queries/{query['query_id']}")["name"] == text
    version = api.post("/v1.0/feature-sets", {"name": "free-text", "query_id": ids[Q], "etl_id": ids[E],
                                              "description": text, "tags": [text[:100]]}, 201)
    versions = api.get("/v1.0/feature-sets/free-text")["versions"]
    assert versions[-1]["description"] == text and versions[-1]["tags"] == [text[:100]]
    assert versions[-1]["version"] == version["version"]
    key = api.call("POST", "/v1.0/keys", 201, {"name": text, "role": "serving"})
    assert [k["name"] for k in api.get("/v1.0/keys")["items"] if k["key_id"] == key["key_id"]] == [text]
    after = finish(hostile, before)
    assert after["warehouse"] == before["warehouse"] and after["realtime"] == before["realtime"]
    assert after["/v1.0/queries?limit=500"]["total"] == before["/v1.0/queries?limit=500"]["total"] + 1
    assert after["/v1.0/etls?limit=500"] == before["/v1.0/etls?limit=500"]


# -- the same hostile text on the PostgreSQL catalog ---------------------------------------------

@pytest.mark.parametrize("method, path, body", [
    pytest.param("POST", "/v1.0/query/train?save=true", {"query": "SELECT 2 AS nul_probe", "query_name": "a\u0000b"},
                 id="query_name-nul"),
    pytest.param("POST", "/v1.0/keys", {"name": "a\u0000b", "role": "serving"}, id="key_name-nul"),
    pytest.param("PUT", f"/v1.0/feature-sets/{FEATURE_SET}/versions/{2**31}/stage", {"stage": "staging"},
                 id="stage_version-int32_overflow"),
    pytest.param("GET", "/v1.0/queries?offset=999999999", None, id="offset_max"),
    pytest.param("POST", f"/v1.0/feature-sets/{FEATURE_SET}/realtime", {"index_value": "x", "version": 2**31},
                 id="realtime_version-int32_overflow"),
])
def test_nul_and_big_numbers_on_the_postgres_catalog(make_app, pg_database_url, method, path, body):
    """PostgreSQL refuses NUL in text and integers past its column types: the service must answer
    4xx (or an empty page), never a 500, and write nothing."""
    api = JsonClient(make_app(CATALOG_URL=pg_database_url).test_client())
    before = api.get("/v1.0/queries")["total"], api.get("/v1.0/keys")["items"]
    response = api.client.open(path, method=method, json=body)
    assert response.status_code < 500, (response.status_code, response.get_data(as_text=True)[:500])
    if response.status_code >= 400:
        assert set(response.get_json()) == ERROR_KEYS
    assert (api.get("/v1.0/queries")["total"], api.get("/v1.0/keys")["items"]) == before
