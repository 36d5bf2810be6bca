"""The second example domain, end to end with nothing of the demo: an online shop's page views and orders.

declare → load Parquet and ingest Arrow → save the query → register the ETL → training set → served
features, on the embedded DuckDB warehouse and on PostgreSQL; with hot_window=true the training rows
equal what serving returns for every customer.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from tests.conftest import JsonClient
from tests.ui_demo import arrow_body
from tests.walkthrough import example_repo

SHOP = Path(__file__).resolve().parent.parent / "examples" / "shop"
sys.path.insert(0, str(SHOP))
from generate import generate  # noqa: E402 - the example's own generator

WAREHOUSES = ["duckdb", pytest.param("postgresql", marks=pytest.mark.postgres)]


@pytest.fixture(params=WAREHOUSES)
def shop_api(request, make_app, tmp_path):
    settings = {"DEMO_SOURCES": False, "MAX_RESPONSE_ROWS": 100_000}
    if request.param == "postgresql":
        settings["WAREHOUSE_URL"] = request.getfixturevalue("pg_database_url")
    app = make_app(**settings)
    return JsonClient(app.test_client()), Path(app.config["LOAD_DIR"])


def test_shop_from_declaration_to_served_features(shop_api, tmp_path):
    api, load_dir = shop_api
    for declaration in json.loads((SHOP / "sources.json").read_text()):
        assert api.post("/v1.0/sources", declaration, 201)["version"] == 1
    data = generate(customers=60, days=60, seed=3)
    load_dir.mkdir(parents=True, exist_ok=True)
    pq.write_table(data["page_views"], load_dir / "page_views.parquet")
    loaded = api.post("/v1.0/sources/page_views/load", {"path": "page_views.parquet"})
    assert loaded["rows"] == data["page_views"].num_rows > loaded["realtime_rows"] > 0  # 60 days, 7-day window
    response = api.client.post("/v1.0/sources/orders/rows", data=arrow_body(data["orders"]),
                               content_type="application/vnd.apache.arrow.stream")
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.get_json()["rows"] == data["orders"].num_rows

    sql = (SHOP / "customer_activity.sql").read_text()
    saved = api.post("/v1.0/query/train?save=true&include_data=false", {"query": sql, "query_name": "activity"})
    assert {w["source"] for w in saved["warnings"]} == {"page_views", "orders"}
    repo = example_repo(tmp_path / "etl-repo")
    etl = api.post("/v1.0/extract/train?save=true&hot_window=true",
                   {"query_id": saved["query_id"], "etl_path": str(repo.file("etls/customer_features.py"))})
    training = {row["customer_id"]: row for row in etl["data"]}
    assert training, "some customers viewed a page within the last week"
    for customer_id, offline in list(training.items())[:25]:
        online = api.post("/v1.0/extract/realtime", {"query_id": saved["query_id"], "etl_id": etl["etl_id"],
                                                     "index_key": "customer_id", "index_value": customer_id})
        assert online["data"] == [offline], customer_id
    described = api.get("/v1.0/sources/page_views")
    assert described["warehouse"]["rows"] == data["page_views"].num_rows
    assert described["realtime"]["rows"] == loaded["realtime_rows"]
    assert described["dependent_queries"] == [saved["query_id"]]
    tables = api.post("/v1.0/query/train", {"query": "SELECT count(*) AS n FROM information_schema.tables "
                                                     "WHERE table_name IN ('users', 'quotes')"})["data"]
    assert tables == [{"n": 0}], "nothing of the demo was created in the user's warehouse"
