"""Point-in-time training against a brute-force reference: serving itself, on a store cut at each time.

For every spine row (k, t) the reference builds a fresh realtime store holding only the source rows with
event time <= t, sets its clock to t (so each hot window is cut as serving cuts it), and runs the saved
query's point lookup (and the ETL) for k — the serving path, unchanged. The point-in-time answer must
equal it row for row, on the demo (a four-table join with history aggregates, epoch-second times) and on
the shop (aggregates within 7- and 30-day windows, and the latest value per key within a window), on the
DuckDB and PostgreSQL warehouses.
"""
from __future__ import annotations

import copy
import json
import random
import sys
from pathlib import Path

import orjson
import pandas as pd
import pyarrow as pa
import pytest

from app import jsonio
from app.jsonio import frame_records
from common.errors import NotFound
from realtime import open_realtime_store
from tests.conftest import JsonClient
from tests.walkthrough import example_repo

ROOT = Path(__file__).resolve().parent.parent
SHOP = ROOT / "examples" / "shop"
sys.path.insert(0, str(SHOP))
from generate import generate  # noqa: E402 - the example's own generator

HISTORY_SQL = (ROOT / "examples" / "user_history.sql").read_text()
SHOP_SQL = (SHOP / "customer_activity.sql").read_text()
LATEST_SQL = (SHOP / "latest_page.sql").read_text()
WAREHOUSES = ["duckdb", pytest.param("postgresql", marks=pytest.mark.postgres)]
NOW = 1_780_000_000.0  # the shop's data ends here (fixed, so spines are reproducible)


@pytest.fixture(params=WAREHOUSES)
def make_api(request, make_app):
    def make(**settings):
        if request.param == "postgresql":
            settings["WAREHOUSE_URL"] = request.getfixturevalue("pg_database_url")
        app = make_app(**settings)
        return JsonClient(app.test_client()), app.extensions["feature_service"]
    return make


def shop(api: JsonClient, customers: int = 25) -> dict[str, pa.Table]:
    for declaration in json.loads((SHOP / "sources.json").read_text()):
        api.post("/v1.0/sources", declaration, 201)
    data = generate(customers=customers, days=50, seed=11, now=NOW)
    for name, table in data.items():
        sink = pa.BufferOutputStream()
        with pa.ipc.new_stream(sink, table.schema) as writer:
            writer.write_table(table)
        response = api.client.post(f"/v1.0/sources/{name}/rows", data=sink.getvalue().to_pybytes(),
                                   content_type="application/vnd.apache.arrow.stream")
        assert response.status_code == 200, response.get_data(as_text=True)
    return data


def cut_service(service, t: float):
    """The service with its realtime store replaced by one holding only rows with event time <= t, at clock t."""
    store = open_realtime_store("sqlite:///:memory:")
    store.clock = lambda: t
    for name in service.sources.tables():
        source = service.sources.get(name)
        store.register(source)
        rows = service.warehouse.recent_rows(source.table, source.event_time, None)
        rows = rows if isinstance(rows, pd.DataFrame) else rows.to_pandas()
        times = rows[source.event_time]
        bound = pd.Timestamp(t, unit="s", tz="UTC") if source.column_types() and dict(
            source.column_types())[source.event_time] == "timestamp" else t
        kept = rows[times <= bound]
        if len(kept):
            store.append({name: pa.Table.from_pandas(kept, preserve_index=False)})
    reference = copy.copy(service)
    reference.realtime = store
    return reference, store


def served_rows(service, t: float, query_id: str, key: str, value, etl_id: str | None = None) -> list[dict]:
    """What serving returned for `value` at time `t`: the query's rows, or the ETL's features ([] for 404)."""
    reference, store = cut_service(service, t)
    try:
        if etl_id is None:
            frame = reference.realtime_query(query_id, key, value)
        else:
            frame = reference.realtime_etl(query_id, etl_id, key, value)[0]
    except NotFound:
        return []
    finally:
        store.close()
    return frame_records(frame)


def canonical(rows: list[dict], drop: set[str]) -> list[str]:
    """Rows as sorted JSON text without `drop`, so two answers compare whatever their row order and types."""
    rows = orjson.loads(jsonio.dumps(rows))  # as the API would have written them
    # DuckDB sums integers into HUGEINT, which the warehouse delivers as float (its saved schema says float):
    # 0.0 in training and 0 in serving are the same value; averages may differ in the last bits by summation order
    rows = [{k: (int(v) if v.is_integer() else float(f"{v:.12g}")) if isinstance(v, float) else v
             for k, v in row.items()} for row in rows]
    return sorted(orjson.dumps({k: v for k, v in row.items() if k not in drop}, option=orjson.OPT_SORT_KEYS).decode()
                  for row in rows)


def check_against_reference(api, service, query_id: str, sql: str, key: str, spine: list[dict], time_of,
                            etl_id: str | None = None, etl_path: str | None = None) -> None:
    """The point-in-time answer for `spine` equals, spine row by spine row, serving at that row's time."""
    body = {"spine": {"index_key": key, "time": "as_of", "rows": spine}}
    if etl_id is None:
        answer = api.post("/v1.0/query/train", {"query": sql, **body})["data"]
    else:
        answer = api.post("/v1.0/extract/train", {"query_id": query_id, "etl_path": etl_path, **body})["data"]
    spine_columns = set(spine[0])
    order = [row["row"] for row in answer]
    assert order == sorted(order) and set(order) == set(range(len(spine))), "every spine row, in spine order"
    by_row: list[list[dict]] = [[] for _ in spine]
    for row in answer:
        by_row[row["row"]].append(row)
    for i, row in enumerate(spine):
        expected = served_rows(service, time_of(row["as_of"]), query_id, key, row[key], etl_id)
        got = [r for r in by_row[i] if any(v is not None for c, v in r.items() if c not in spine_columns)]
        assert by_row[i], f"spine row {i} is kept"
        assert canonical(got, spine_columns | {key}) == canonical(expected, {key}), (i, row)


def random_spine(keys: list, times: list[float], rng: random.Random, n: int, encode) -> list[dict]:
    """n spine rows: known and unknown keys, times before, between, exactly at and after the events."""
    low, high = min(times) - 86400, max(times) + 86400
    rows = []
    for i in range(n):
        key = rng.choice(keys) if i % 7 else "nobody"
        t = rng.choice(times) if i % 3 == 0 else rng.uniform(low, high)
        rows.append({"user_id": key, "as_of": encode(t), "label": i % 2})
    rows.append(dict(rows[1]))  # a duplicate spine row is answered twice
    rows.append({**rows[2], "as_of": encode(low - 86400)})  # before any data
    return [{"row": i, **row} for i, row in enumerate(rows)]


def test_demo_history_aggregates_equal_serving_at_each_time(make_api):
    api, service = make_api()
    api.put("/v1.0/publish?n_flows=60&seed=3")
    saved = api.post("/v1.0/query/train?save=true&include_data=false", {"query": HISTORY_SQL, "query_name": "h"})
    history = api.post("/v1.0/query/train", {"query": "SELECT user_id, creation_date AS t FROM quotes "
                                                       "UNION ALL SELECT user_id, purchase_time FROM policies"})
    keys = sorted({row["user_id"] for row in history["data"] if row["user_id"] is not None})
    times = [float(row["t"]) for row in history["data"]]
    spine = random_spine(keys, times, random.Random(5), 30, lambda t: int(t))
    check_against_reference(api, service, saved["query_id"], HISTORY_SQL, "user_id", spine, float)


def renamed(row: dict) -> dict:
    """A spine row keyed by customer_id instead of user_id."""
    return {("customer_id" if name == "user_id" else name): value for name, value in row.items()}


def iso(t: float) -> str:
    return pd.Timestamp(t, unit="s", tz="UTC").isoformat().replace("+00:00", "Z")


def from_iso(text: str) -> float:
    return pd.Timestamp(text).timestamp()


@pytest.mark.parametrize("sql", [SHOP_SQL, LATEST_SQL], ids=["window_aggregates", "latest_value"])
def test_shop_windows_equal_serving_at_each_time(make_api, sql):
    api, service = make_api(DEMO_SOURCES=False)
    data = shop(api)
    saved = api.post("/v1.0/query/train?save=true&include_data=false", {"query": sql, "query_name": "s"})
    keys = sorted(set(data["page_views"].column("customer_id").to_pylist()))
    times = [t.timestamp() for t in data["page_views"].column("viewed_at").to_pylist()[:200]]
    spine = [renamed(row) for row in random_spine(keys, times, random.Random(8), 30, iso)]
    check_against_reference(api, service, saved["query_id"], sql, "customer_id", spine, from_iso)


def test_shop_etl_features_equal_served_features_at_each_time(make_api, tmp_path):
    api, service = make_api(DEMO_SOURCES=False)
    data = shop(api)
    saved = api.post("/v1.0/query/train?save=true&include_data=false", {"query": SHOP_SQL, "query_name": "s"})
    path = str(example_repo(tmp_path / "repo").file("etls/customer_features.py"))
    keys = sorted(set(data["orders"].column("customer_id").to_pylist()))
    times = [t.timestamp() for t in data["orders"].column("ordered_at").to_pylist()]
    spine = [renamed(row) for row in random_spine(keys, times, random.Random(2), 20, iso)]
    etl = api.post("/v1.0/extract/train?save=true&include_data=false",
                   {"query_id": saved["query_id"], "etl_path": path,
                    "spine": {"index_key": "customer_id", "time": "as_of", "rows": spine}})
    check_against_reference(api, service, saved["query_id"], SHOP_SQL, "customer_id", spine, from_iso,
                            etl_id=etl["etl_id"], etl_path=path)
