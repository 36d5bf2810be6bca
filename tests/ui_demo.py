"""Catalog contents for the web UI's tests and benchmark, made through the API (no pytest: bench/ui.py uses it).

The insurance demo (published flows, the four-table join, two ETLs on it, a feature set with two versions
of which the first is in production, serving skewed to iOS users so a feature is flagged) and the shop
example (its two sources ingested as Arrow, its query, ETL and feature set, some customers served).
`call(method, path, body=None, data=None, content_type=None)` makes one API call and returns its JSON
answer (raising on a non-2xx status).
"""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, Callable

import pyarrow as pa

from tests.walkthrough import FOUR_TABLE_QUERY, ROOT, example_repo

SHOP = ROOT / "examples" / "shop"
Call = Callable[..., Any]
IOS_REQUESTS = 60  # above SKEW_MIN_SAMPLES (50): enough for the skew report to flag is_mobile


def arrow_body(table: pa.Table) -> bytes:
    """A table as one Arrow IPC stream (the rows endpoint's bulk format)."""
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue().to_pybytes()


def populate_demo(call: Call, repo_dir: Path) -> dict[str, Any]:
    """The insurance walkthrough, two ETLs, feature set `conversion` (v1 in production) and skewed serving."""
    repo = example_repo(repo_dir)
    call("PUT", "/v1.0/publish?n_flows=100&seed=7")
    query = call("POST", "/v1.0/query/train?save=true", {"query": FOUR_TABLE_QUERY, "query_name": "quote_join"})
    etls = {name: call("POST", "/v1.0/extract/train?save=true&include_data=false",
                       {"query_id": query["query_id"], "etl_path": str(repo.file(f"etls/{name}.py"))})["etl_id"]
            for name in ("quote_features", "fitted_features")}
    feature_set = {"name": "conversion", "query_id": query["query_id"], "description": "conversion model",
                   "tags": ["demo"]}
    call("POST", "/v1.0/feature-sets", {**feature_set, "etl_id": etls["quote_features"],
                                        "features": ["is_mobile", "minutes_to_bind"]})
    call("POST", "/v1.0/feature-sets", {**feature_set, "etl_id": etls["fitted_features"],
                                        "features": ["is_mobile", "minutes_to_bind_z"]})
    call("PUT", "/v1.0/feature-sets/conversion/versions/1/stage", {"stage": "production"})
    ios_users = sorted({row["user_id"] for row in query["data"] if row["quote_device"] == "ios"})
    for i in range(IOS_REQUESTS):
        call("POST", "/v1.0/extract/realtime", {"query_id": query["query_id"], "etl_id": etls["quote_features"],
                                                "index_key": "user_id", "index_value": ios_users[i % len(ios_users)]})
    return {"query_id": query["query_id"], "etl_ids": etls, "user_id": ios_users[0]}


def populate_shop(call: Call, repo_dir: Path, customers: int = 60) -> dict[str, Any]:
    """The shop example: its sources, rows (Arrow), query `activity`, ETL and feature set `shop_activity`."""
    sys.path.insert(0, str(SHOP))
    from generate import generate  # the example's own generator

    for declaration in json.loads((SHOP / "sources.json").read_text()):
        call("POST", "/v1.0/sources", declaration)
    for name, table in generate(customers=customers, days=60, seed=3).items():
        call("POST", f"/v1.0/sources/{name}/rows", data=arrow_body(table),
             content_type="application/vnd.apache.arrow.stream")
    query = call("POST", "/v1.0/query/train?save=true&include_data=false",
                 {"query": (SHOP / "customer_activity.sql").read_text(), "query_name": "activity"})
    etl_path = str(example_repo(repo_dir).file("etls/customer_features.py"))
    etl = call("POST", "/v1.0/extract/train?save=true&hot_window=true",
               {"query_id": query["query_id"], "etl_path": etl_path})
    call("POST", "/v1.0/feature-sets", {"name": "shop_activity", "query_id": query["query_id"],
                                        "etl_id": etl["etl_id"], "description": "shop customers", "tags": ["shop"]})
    served = [row["customer_id"] for row in etl["data"]][:20]
    for customer_id in served:
        call("POST", "/v1.0/extract/realtime", {"query_id": query["query_id"], "etl_id": etl["etl_id"],
                                                "index_key": "customer_id", "index_value": customer_id})
    return {"query_id": query["query_id"], "etl_id": etl["etl_id"], "customer_id": served[0]}


def client_call(client: Any, headers: dict[str, str]) -> Call:
    """`call` over a Flask test client."""
    def call(method: str, path: str, body: Any = None, data: bytes | None = None,
             content_type: str | None = None) -> Any:
        answer = client.open(path, method=method, json=body, data=data, content_type=content_type, headers=headers)
        assert answer.status_code < 300, (path, answer.status_code, answer.get_data(as_text=True)[:1000])
        return answer.get_json()
    return call


def http_call(base: str, headers: dict[str, str]) -> Call:
    """`call` over HTTP to a live server at `base`."""
    import requests

    def call(method: str, path: str, body: Any = None, data: bytes | None = None,
             content_type: str | None = None) -> Any:
        extra = {"Content-Type": content_type} if content_type else {}
        answer = requests.request(method, base + path, json=body, data=data, headers={**headers, **extra},
                                  timeout=120)
        assert answer.status_code < 300, (path, answer.status_code, answer.text[:1000])
        return answer.json()
    return call
