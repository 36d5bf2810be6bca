"""Training sets as Arrow IPC streams: same rows and types as JSON, no row limit, ids in headers."""
from __future__ import annotations

import pyarrow as pa
import pytest

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
