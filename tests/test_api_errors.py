"""Bad input of every kind: one JSON error shape, the right status, and nothing written or run."""
from __future__ import annotations

import textwrap

import pytest

from tests.conftest import JsonClient
from tests.walkthrough import example_repo, train_walkthrough

RAISING_ETL = textwrap.dedent('''\
    from extraction.etl_contract import BaseEtl


    class Etl(BaseEtl):
        def transform(self, df):
            raise ValueError("age column is missing")
''')
LIST_ETL = "from extraction.etl_contract import BaseEtl\n\n\nclass Etl(BaseEtl):\n" \
           "    def transform(self, df):\n        return [1, 2]\n"
SYNTAX_ERROR_ETL = "class Etl(:\n    pass\n"
NO_ETL_CLASS = "def transform(df):\n    return df\n"


@pytest.fixture
def repo(tmp_path):
    return example_repo(tmp_path / "etl-repo", {"etls/raising.py": RAISING_ETL, "etls/list.py": LIST_ETL,
                                                 "etls/syntax.py": SYNTAX_ERROR_ETL,
                                                 "etls/no_class.py": NO_ETL_CLASS})


@pytest.fixture
def trained(api, repo):
    return train_walkthrough(api, repo, n_flows=30)


def catalog_state(api):
    return api.get("/v1.0/queries")["total"], api.get("/v1.0/etls")["total"]


def table_counts(api):
    sql = ("SELECT (SELECT count(*) FROM users) AS users, (SELECT count(*) FROM quotes) AS quotes, "
           "(SELECT count(*) FROM transactions) AS transactions, (SELECT count(*) FROM policies) AS policies")
    return api.post("/v1.0/query/train", {"query": sql})["data"][0]


@pytest.mark.parametrize("sql, code", [
    ("DROP TABLE users", "invalid_query"),
    ("DELETE FROM users", "invalid_query"),
    ("INSERT INTO users VALUES ('x', 'x', 'x', 1)", "invalid_query"),
    ("UPDATE quotes SET is_paid = false", "invalid_query"),
    ("CREATE TABLE stolen AS SELECT * FROM users", "invalid_query"),
    ("SELECT 1; DROP TABLE users", "invalid_query"),
    ("ATTACH '/tmp/other.db' AS other", "invalid_query"),
    ("COPY users TO '/tmp/users.csv'", "invalid_query"),
    ("PRAGMA database_list", "invalid_query"),
    ("SET threads = 1", "invalid_query"),
    ("INSTALL httpfs", "invalid_query"),
    ("SELECT * FROM read_csv('/etc/passwd')", "invalid_query"),
    ("SELECT * FROM glob('/etc/*')", "invalid_query"),
    ("SELECT * FROM no_such_table", "invalid_query"),
    ("SELECT no_such_column FROM users", "invalid_query"),
    ("SELEC 1", "invalid_query"),
    ("", "invalid_input"),
    ("SELECT 'a\u0000b'", "invalid_input"),
])
def test_bad_sql_is_refused_and_changes_nothing(api, trained, sql, code):
    before = table_counts(api), catalog_state(api)
    error = api.post("/v1.0/query/train?save=true", {"query": sql, "query_name": "bad"}, 400)
    assert error["code"] == code
    assert (table_counts(api), catalog_state(api)) == before


@pytest.mark.parametrize("sql", [
    "SELECT * FROM force_checkpoint()",
    "SELECT * FROM which_secret('s3://bucket/x', 's3')",
    "SELECT * FROM duckdb_databases()",
    "SELECT current_setting('temp_directory') AS t",
    "SELECT * FROM pragma_database_list",
    "SELECT name, value FROM duckdb_settings()",
    "SELECT * FROM duckdb_extensions()",
])
@pytest.mark.parametrize("path", ["/v1.0/query/train", "/v1.0/query/train?format=arrow",
                                  "/v1.0/query/train?save=true"])
def test_server_revealing_sql_is_a_400_that_names_no_server_path(api, tmp_path, sql, path):
    """Security 8: these answered 503 backend_unavailable (retried by clients) or the server's file paths."""
    for _ in range(2):  # a second which_secret() used to break the connection's state: 503
        response = api.client.post(path, json={"query": sql})
        body = response.get_data(as_text=True)
        assert response.status_code == 400, body
        assert response.get_json()["code"] == "invalid_query"
        assert str(tmp_path) not in body and "/root" not in body
    assert api.post("/v1.0/query/train", {"query": "SELECT 1 AS one"})["data"] == [{"one": 1}]


def test_sql_error_messages_have_no_ansi_escapes(api):
    """Newcomer 5: sqlglot underlines the failing token with ANSI codes."""
    error = api.post("/v1.0/query/train", {"query": "SELECT * FROM (SELECT 1"}, 400)
    assert error["code"] == "invalid_query" and "\x1b" not in error["message"]


@pytest.mark.parametrize("body", [
    None, [], "select 1", 5, {}, {"query": 5}, {"query": ["SELECT 1"]}, {"query": "SELECT 1", "query_name": 7},
    {"query": "SELECT 1", "unexpected": True}, {"query": "SELECT 1", "query_name": "n" * 201},
])
def test_malformed_query_bodies(api, body):
    assert api.post("/v1.0/query/train", body, 400)["code"] == "invalid_input"


def test_malformed_json_and_deep_nesting(api):
    for raw in ("{not json", "[" * 5000 + "]" * 5000, '{"query": "SELECT 1"', "\xff\xfe"):
        response = api.client.post("/v1.0/query/train", data=raw, content_type="application/json")
        assert response.status_code == 400 and response.get_json()["code"] == "invalid_input", raw[:20]


def test_body_over_the_size_limit(api):
    response = api.client.post("/v1.0/query/train", json={"query": "SELECT 1 -- " + "x" * 70_000})
    assert response.status_code == 413
    assert set(response.get_json()) == {"code", "message", "details"}


@pytest.mark.parametrize("path, status, code", [
    ("/v1.0/queries/q_0123456789abcdef", 404, "not_found"),
    ("/v1.0/etls/e_0123456789abcdef", 404, "not_found"),
    ("/v1.0/queries/not-an-id", 400, "invalid_input"),
    ("/v1.0/etls/e_XYZ", 400, "invalid_input"),
    ("/v1.0/queries/q_0123456789abcdef' OR '1'='1", 400, "invalid_input"),
    ("/v1.0/queries?limit=0", 400, "invalid_input"),
    ("/v1.0/queries?limit=abc", 400, "invalid_input"),
    ("/v1.0/queries?offset=-1", 400, "invalid_input"),
    ("/v1.0/etls?query_id=bad", 400, "invalid_input"),
    ("/v1.0/no/such/route", 404, "not_found"),
])
def test_unknown_and_malformed_ids(api, path, status, code):
    assert api.get(path, status)["code"] == code


def test_wrong_method_is_405(api):
    assert api.call("DELETE", "/v1.0/publish", 405)["code"] == "method_not_allowed"


@pytest.mark.parametrize("query", ["", "?n_flows=0", "?n_flows=-1", "?n_flows=1000000000000", "?n_flows=ten",
                                   "?n_flows=10&seed=-5", "?n_flows=1.5"])
def test_publish_out_of_range(api, query):
    assert api.put(f"/v1.0/publish{query}", 400)["code"] == "invalid_input"
    assert table_counts(api) == {"users": 0, "quotes": 0, "transactions": 0, "policies": 0}


def realtime_body(trained, **changes):
    return {"query_id": trained["query_id"], "index_key": "user_id",
            "index_value": next(iter(trained["rows_by_user"])), **changes}


@pytest.mark.parametrize("changes, status, code", [
    ({"index_key": "password"}, 400, "invalid_input"),
    ({"index_key": 'user_id" = user_id OR "1'}, 400, "invalid_input"),
    ({"index_value": {"$ne": 1}}, 400, "invalid_input"),
    ({"index_value": [1]}, 400, "invalid_input"),
    ({"index_value": None}, 400, "invalid_input"),
    ({"query_id": "q_0123456789abcdef"}, 404, "not_found"),
    ({"query_id": "'; DROP TABLE users; --"}, 400, "invalid_input"),
    ({"query_id": 17}, 400, "invalid_input"),
])
def test_bad_realtime_query_requests(api, trained, changes, status, code):
    assert api.post("/v1.0/query/realtime", realtime_body(trained, **changes), status)["code"] == code


def test_injection_in_index_value_is_just_a_value(api, trained):
    before = table_counts(api)
    for value in ("' OR '1'='1", "x'; DROP TABLE users; --", "\u202e💥"):
        assert api.post("/v1.0/query/realtime", realtime_body(trained, index_value=value), 404
                        )["code"] == "entity_not_found"
        error = api.post("/v1.0/extract/realtime", {**realtime_body(trained, index_value=value),
                                                    "etl_id": trained["etl_id"]}, 404)
        assert error["code"] == "entity_not_found"
    assert table_counts(api) == before


def test_integer_key_rejects_non_numbers(api, trained):
    query_id = api.post("/v1.0/query/train?save=true", {"query": "SELECT creation_date, user_id FROM users"}
                        )["query_id"]
    error = api.post("/v1.0/query/realtime", {"query_id": query_id, "index_key": "creation_date",
                                              "index_value": "soon"}, 400)
    assert error["details"]["expected_type"] == "integer"
    assert api.post("/v1.0/query/realtime", {"query_id": query_id, "index_key": "creation_date",
                                             "index_value": "12"}, 404)["code"] == "entity_not_found"


def test_unknown_entity_is_404_on_both_realtime_endpoints(api, trained):
    """query/realtime and extract/realtime agree: no hot rows for the entity is 404 entity_not_found, with the
    key and value in details (not a 200 with no rows on one and a 404 on the other)."""
    body = realtime_body(trained, index_value="nobody")
    for path, extra in (("/v1.0/query/realtime", {}), ("/v1.0/extract/realtime", {"etl_id": trained["etl_id"]})):
        error = api.post(path, {**body, **extra}, 404)
        assert error["code"] == "entity_not_found"
        assert error["details"] == {"index_key": body["index_key"], "index_value": "nobody"}


def test_etl_trained_on_another_query(api, trained):
    other = api.post("/v1.0/query/train?save=true", {"query": "SELECT user_id FROM users"})["query_id"]
    error = api.post("/v1.0/extract/realtime", {**realtime_body(trained, query_id=other),
                                                "etl_id": trained["etl_id"]}, 400)
    assert error["details"]["trained_query_id"] == trained["query_id"]


@pytest.mark.parametrize("etl, status, code", [
    ("etls/raising.py", 422, "etl_failed"),
    ("etls/list.py", 422, "etl_failed"),
    ("etls/syntax.py", 400, "invalid_etl"),
    ("etls/no_class.py", 400, "invalid_etl"),
    ("etls/missing.py", 400, "invalid_etl"),
    ("README.md", 400, "invalid_etl"),
])
def test_failing_etls_are_reported_and_not_saved(api, trained, repo, etl, status, code):
    before = catalog_state(api)
    error = api.post("/v1.0/extract/train?save=true", {"query_id": trained["query_id"],
                                                       "etl_path": str(repo.path / etl)}, status)
    assert error["code"] == code
    assert "Traceback" not in error["message"]
    assert catalog_state(api) == before


def test_etl_exception_message_reaches_the_caller(api, trained, repo):
    error = api.post("/v1.0/extract/train", {"query_id": trained["query_id"],
                                             "etl_path": str(repo.file("etls/raising.py"))}, 422)
    assert error["message"] == "ValueError: age column is missing"
    assert error["details"]["line"] == 6


@pytest.mark.parametrize("body", [
    {"etl_path": "x.py"},
    {"query_id": "q_0123456789abcdef"},
    {"query_id": "q_0123456789abcdef", "etl_path": "a.py", "etl": {"repo": "r", "path": "p.py"}},
    {"query_id": "q_0123456789abcdef", "etl": {"repo": "r"}},
    {"query_id": "q_0123456789abcdef", "etl": {"repo": "r", "path": "p.py", "branch": "x"}},
])
def test_malformed_extract_bodies(api, body):
    assert api.post("/v1.0/extract/train", body, 400)["code"] == "invalid_input"


def test_remote_not_allowed_by_default(api, trained):
    error = api.post("/v1.0/extract/train", {"query_id": trained["query_id"],
                                             "etl_path": "https://example.com/features.py"}, 400)
    assert "ETL_ALLOWED_REMOTES" in error["message"]


def test_unknown_query_for_extract(api, repo):
    error = api.post("/v1.0/extract/train", {"query_id": "q_0123456789abcdef",
                                             "etl_path": str(repo.file("etls/quote_features.py"))}, 404)
    assert error["code"] == "not_found"


def test_json_response_row_limit(make_app):
    api = JsonClient(make_app(MAX_RESPONSE_ROWS=10).test_client())
    api.put("/v1.0/publish?n_flows=20&seed=1")
    assert api.post("/v1.0/query/train", {"query": "SELECT * FROM quotes"}, 400)["code"] == "result_too_large"
    saved = api.post("/v1.0/query/train?save=true&include_data=false", {"query": "SELECT * FROM quotes"})
    assert saved["data"] is None and saved["query_id"]
