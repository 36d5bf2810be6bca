"""What a newcomer reads when something goes wrong: error texts that say what to do next."""
from __future__ import annotations

import re
from typing import Any

from app.cli import main
from common.errors import ExpectationsFailed, InvalidInput, NotFound
from featurerepo.service_client import describe
from tests.conftest import JsonClient


def _texts(node: Any, path: str = "") -> list[tuple[str, str]]:
    """(where, text) of every description and summary in an OpenAPI document."""
    if isinstance(node, dict):
        found = [(f"{path}/{key}", value) for key, value in node.items()
                 if key in ("description", "summary") and isinstance(value, str)]
        return found + [item for key, value in node.items() for item in _texts(value, f"{path}/{key}")]
    if isinstance(node, list):
        return [item for index, value in enumerate(node) for item in _texts(value, f"{path}[{index}]")]
    return []


def test_the_openapi_texts_show_angle_brackets_instead_of_swallowing_them(api):
    """Swagger UI renders descriptions as CommonMark: `<key>` outside a code span is an HTML tag and vanishes."""
    document = api.get("/v1.0/swagger.json")
    assert "`Authorization: Bearer <key>`" in document["info"]["description"]
    raw_html = [(where, text) for where, text in _texts(document) if re.search(r"<[A-Za-z/!]", re.sub(r"`[^`]*`", "", text))]
    assert not raw_html, raw_html


def test_a_401_says_how_to_get_a_key(make_app):
    api = JsonClient(make_app(AUTH="on").test_client())
    for headers in ({}, {"Authorization": "Bearer fs_nobody_secret"}):
        error = api.call("GET", "/v1.0/queries", 401, headers=headers)
        assert "python -m app keys create" in error["message"] and "POST /v1.0/keys" in error["message"]


def test_a_404_for_an_unsaved_id_says_to_save_it(api):
    api.put("/v1.0/publish?n_flows=5&seed=1")
    planned = api.post("/v1.0/query/plan", {"query": "SELECT user_id, name FROM users"})
    assert planned["exists"] is False
    for path in (f"/v1.0/queries/{planned['query_id']}", "/v1.0/etls/e_0123456789abcdef"):
        error = api.get(path, 404)
        assert error["code"] == "not_found" and "save=true" in error["message"]
    body = {"query_id": planned["query_id"], "index_key": "user_id", "index_value": "u"}
    assert "query/train?save=true" in api.post("/v1.0/query/realtime", body, 404)["message"]


def test_describe_names_the_column_and_rule_that_broke_an_expectation():
    error = ExpectationsFailed("the training output breaks 1 expectation(s) of the ETL", {
        "stage": "train", "violations": [{"column": "minutes_to_bind", "rule": "max", "expected": 10,
                                          "failed_rows": 3, "examples": [14.9, 22.5]}]})
    text = describe(error)
    assert text.startswith("expectations_failed: the training output breaks 1 expectation(s)")
    assert "column 'minutes_to_bind' max 10: 3 row(s), e.g. 14.9, 22.5" in text
    assert describe(NotFound("no query with id 'q_1'")) == "not_found: no query with id 'q_1'"
    long = describe(InvalidInput("bad", {"values": ["x" * 100] * 50}))
    assert len(long) < 700 and long.endswith("…]")


def test_the_command_line_prints_the_details_of_an_error(monkeypatch, capsys, tmp_path):
    monkeypatch.setenv("DATA_DIR", str(tmp_path))
    monkeypatch.delenv("CATALOG_URL", raising=False)
    assert main(["keys", "revoke", "k_nobody"]) == 2
    err = capsys.readouterr().err
    assert "error: not_found: no API key with id 'k_nobody'" in err and '"key_id": "k_nobody"' in err
