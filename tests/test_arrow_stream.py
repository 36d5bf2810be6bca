"""Training sets as Arrow IPC streams: same rows and types as JSON, no row limit, ids in headers."""
from __future__ import annotations

import json
import time

import pyarrow as pa
import pytest
import requests

from client import IncompleteStream, InvalidQuery, transport

from tests.conftest import JsonClient
from tests.walkthrough import FOUR_TABLE_QUERY, example_repo

ARROW = "application/vnd.apache.arrow.stream"


def read_stream(response) -> pa.Table:
    assert response.status_code == 200, response.get_data(as_text=True)[:500]
    assert response.mimetype == ARROW
    return pa.ipc.open_stream(response.get_data()).read_all()


@pytest.fixture
def small_limit_api(make_app):
    api = JsonClient(make_app(MAX_RESPONSE_ROWS=10).test_client())
    api.put("/v1.0/publish?n_flows=200&seed=4")
    return api


@pytest.mark.parametrize("ask", [{"query_string": {"format": "arrow"}}, {"headers": {"Accept": ARROW}}])
def test_query_train_streams_every_row_past_the_json_limit(small_limit_api, ask):
    api = small_limit_api
    assert api.post("/v1.0/query/train", {"query": "SELECT * FROM quotes"}, 400)["code"] == "result_too_large"
    table = read_stream(api.client.post("/v1.0/query/train", json={"query": "SELECT * FROM quotes"}, **ask))
    assert table.num_rows == 200
    assert table.schema.field("is_paid").type == pa.bool_() and pa.types.is_integer(table.schema.field(
        "creation_date").type)


def test_saved_query_id_travels_in_a_header(small_limit_api):
    response = small_limit_api.client.post("/v1.0/query/train?save=true&format=arrow",
                                           json={"query": FOUR_TABLE_QUERY})
    assert read_stream(response).num_rows > 100
    query_id = response.headers["X-Query-Id"]
    assert small_limit_api.get(f"/v1.0/queries/{query_id}")["query_id"] == query_id


def test_extract_train_stream_equals_the_json_training_set(api, tmp_path):
    repo = example_repo(tmp_path / "etl-repo")
    api.put("/v1.0/publish?n_flows=300&seed=5")
    query_id = api.post("/v1.0/query/train?save=true&include_data=false", {"query": FOUR_TABLE_QUERY})["query_id"]
    body = {"query_id": query_id, "etl_path": str(repo.file("etls/fitted_features.py"))}
    as_json = api.post("/v1.0/extract/train?save=true", body)
    response = api.client.post("/v1.0/extract/train?save=true&format=arrow", json=body)
    frame = read_stream(response).to_pandas()
    assert response.headers["X-Etl-Id"] == as_json["etl_id"]
    assert frame.to_dict("records") == as_json["data"]
    api.post("/v1.0/feature-sets", {"name": "fitted", "query_id": query_id, "etl_id": as_json["etl_id"],
                                    "features": ["user_id", "is_mobile"]}, 201)
    by_name = read_stream(api.client.post("/v1.0/feature-sets/fitted/train?format=arrow", json={}))
    assert by_name.column_names == ["user_id", "is_mobile"] and by_name.num_rows == len(frame)


def test_bad_sql_is_still_a_json_error(api):
    response = api.client.post("/v1.0/query/train?format=arrow", json={"query": "DELETE FROM users"})
    assert response.status_code == 400 and response.get_json()["code"] == "invalid_query"


# -- the end marker: an error after the first batch is detectable, and so is a cut stream ---------------

# Endless when read batch by batch (DuckDB computes these rows as they are read): 10^10 rows.
ENDLESS = "SELECT a.range * b.range AS x FROM range(100000) a, range(100000) b"


def end_marker(body: bytes) -> tuple[int, dict]:
    """Rows before the last batch, and the JSON of that batch's `featurestore.end` metadata."""
    reader = pa.ipc.open_stream(body)
    rows, last = 0, None
    while True:
        try:
            batch, metadata = reader.read_next_batch_with_custom_metadata()
        except StopIteration:
            break
        if last is not None:
            rows += last[0].num_rows
        last = (batch, metadata)
    assert last is not None and last[0].num_rows == 0 and last[1] is not None, "no end marker batch"
    return rows, json.loads(last[1][b"featurestore.end"])


def bounded_body(response, seconds: float = 10.0) -> bytes:
    """The streamed body, read for at most `seconds` (a stream without a limit fails, it does not hang)."""
    started, chunks = time.monotonic(), []
    try:
        for chunk in response.response:
            chunks.append(chunk)
            assert time.monotonic() - started < seconds, "the stream ran past its time limit"
    finally:
        response.close()
    return b"".join(chunks)


def test_every_stream_ends_with_an_ok_marker(small_limit_api):
    response = small_limit_api.client.post("/v1.0/query/train?format=arrow", json={"query": "SELECT * FROM quotes"})
    rows, end = end_marker(response.get_data())
    assert rows == 200 and end == {"status": "ok", "rows": 200}
    assert read_stream(response).num_rows == 200  # a plain reader sees the empty marker batch as no rows


def test_a_stream_stopped_after_its_first_batch_ends_with_the_error(make_app):
    """A 200 already went out, so the time limit's error comes as the marker, in the one error shape."""
    client = make_app(QUERY_TIMEOUT_SECONDS=0.5).test_client()
    response = client.post("/v1.0/query/train?format=arrow", json={"query": ENDLESS}, buffered=False)
    assert response.status_code == 200 and response.mimetype == ARROW
    rows, end = end_marker(bounded_body(response))
    assert rows > 0 and end["status"] == "error" and end["rows"] == rows and end["http_status"] == 400
    assert end["error"]["code"] == "query_timeout" and set(end["error"]) == {"code", "message", "details"}


def test_a_query_error_after_the_first_batch_ends_with_the_error(api):
    """DuckDB meets the bad value only in a later batch: the marker carries a 400, not a cut or a 500.

    The bad values start ~25 of DuckDB's parallel morsels in, so a loaded machine's scan threads cannot
    reach them before the first batch is sent (at 1M rows in they sometimes did)."""
    late_error = ("SELECT CAST(CASE WHEN range > 3000000 THEN 'x' ELSE '1' END AS INTEGER) AS v "
                  "FROM range(4000000)")
    rows, end = end_marker(bounded_body(api.client.post("/v1.0/query/train?format=arrow",
                                                        json={"query": late_error}, buffered=False)))
    assert 0 < rows <= 3000001 and end["status"] == "error" and end["http_status"] == 400
    assert end["error"]["code"] == "invalid_query" and "convert" in end["error"]["message"]


def arrow_response(body: bytes) -> requests.Response:
    response = requests.Response()
    response.status_code, response._content = 200, body
    response.headers["Content-Type"] = ARROW
    return response


def served_stream(api, query: str) -> bytes:
    return api.client.post("/v1.0/query/train?format=arrow", json={"query": query}).get_data()


def test_the_client_reads_a_whole_stream_without_the_marker(small_limit_api):
    table, _headers = transport._payload(arrow_response(served_stream(small_limit_api, "SELECT * FROM quotes")))
    assert table.num_rows == 200 and table.to_batches()[-1].num_rows > 0


def test_the_client_raises_the_error_a_stream_ended_with(make_app):
    client = make_app(QUERY_TIMEOUT_SECONDS=0.5).test_client()
    body = bounded_body(client.post("/v1.0/query/train?format=arrow", json={"query": ENDLESS}, buffered=False))
    with pytest.raises(InvalidQuery) as caught:
        transport._payload(arrow_response(body))
    assert caught.value.code == "query_timeout" and caught.value.status == 400


def message_ends(body: bytes) -> list[int]:
    """Offsets at which each IPC message of `body` ends (schema, batches, marker), end-of-stream left out."""
    source, ends = pa.BufferReader(body), []
    while True:
        try:
            pa.ipc.read_message(source)
        except (EOFError, StopIteration, OSError):
            return ends
        ends.append(source.tell())


def test_the_client_raises_on_a_cut_stream(small_limit_api):
    body = served_stream(small_limit_api, "SELECT * FROM quotes")
    ends = message_ends(body)
    assert len(ends) == 3  # the schema, one batch of 200 rows, the end marker
    for cut in (ends[1], ends[1] + 10, ends[0], len(body) // 2):  # before the marker, inside it, in the rows
        with pytest.raises(IncompleteStream):
            transport._payload(arrow_response(body[:cut]))
    assert transport._payload(arrow_response(body[:ends[2]]))[0].num_rows == 200  # marker, no EOS: whole
