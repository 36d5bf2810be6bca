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
import pyarrow.parquet as pq
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


def shop(api: JsonClient, customers: int = 25, now: float | None = NOW) -> dict[str, pa.Table]:
    for declaration in json.loads((SHOP / "sources.json").read_text()):
        api.post("/v1.0/sources", declaration, 201)
    data = generate(customers=customers, days=50, seed=11, now=now)
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


# -- edge cases, on the shop (timestamps) -------------------------------------------------------------


@pytest.fixture
def shop_api(make_app):
    app = make_app(DEMO_SOURCES=False)
    api = JsonClient(app.test_client())
    data = shop(api, customers=8)
    saved = api.post("/v1.0/query/train?save=true&include_data=false", {"query": SHOP_SQL, "query_name": "s"})
    return api, data, saved["query_id"]


def views_at(api, rows: list[dict], **spine) -> list[dict]:
    return api.post("/v1.0/query/train", {"query": SHOP_SQL, "spine": {"index_key": "customer_id", "time": "as_of",
                                                                       "rows": rows, **spine}})["data"]


def test_a_row_at_exactly_the_spine_time_is_included_and_one_microsecond_later_is_not(shop_api):
    api, data, _ = shop_api
    first = data["page_views"].slice(0, 1).to_pylist()[0]
    at = first["viewed_at"]
    before = at - pd.Timedelta(microseconds=1)
    answer = views_at(api, [{"customer_id": first["customer_id"], "as_of": iso_of(at)},
                            {"customer_id": first["customer_id"], "as_of": iso_of(before)}])
    assert answer[0]["views"] == answer[1]["views"] + 1
    assert answer[0]["last_view"] == at.isoformat() and answer[1]["last_view"] != at.isoformat()


def iso_of(stamp) -> str:
    return pd.Timestamp(stamp).isoformat()


def test_naive_times_are_refused_unless_a_time_zone_is_declared(shop_api):
    api, data, _ = shop_api
    customer = data["page_views"].column("customer_id")[0].as_py()
    naive = [{"customer_id": customer, "as_of": "2026-05-20T12:00:00"}]
    error = api.post("/v1.0/query/train", {"query": SHOP_SQL, "spine": {"index_key": "customer_id", "time": "as_of",
                                                                         "rows": naive}}, 400)
    assert error["code"] == "naive_time" and error["details"]["column"] == "as_of"
    declared = views_at(api, naive, time_zone="Asia/Jerusalem")
    zoned = views_at(api, [{"customer_id": customer, "as_of": "2026-05-20T12:00:00+03:00"}])
    assert [{k: v for k, v in row.items() if k != "as_of"} for row in declared] == \
        [{k: v for k, v in row.items() if k != "as_of"} for row in zoned]


@pytest.mark.parametrize("rows, code, detail", [
    ([{"customer_id": None, "as_of": "2026-05-20T12:00:00Z"}], "invalid_input", "row"),
    ([{"customer_id": "c000001", "as_of": None}], "invalid_input", "row"),
    ([{"customer_id": "c000001"}], "invalid_input", "columns"),
    ([{"customer_id": "c000001", "as_of": "yesterday"}], "naive_time", "column"),
    ([{"customer_id": "c000001", "as_of": "2026-13-45T00:00:00Z"}], "invalid_input", "column"),
    ([{"customer_id": "c000001", "as_of": "2026-05-20T12:00:00Z", "_fs_sid": 1}], "invalid_input", "columns"),
    ([{"customer_id": "c000001", "as_of": "2026-05-20T12:00:00Z", "views": 1}], "spine_column_clash", "columns"),
    ([], "empty_spine", None),
    ([1, 2], "invalid_input", None),
])
def test_bad_spines_are_refused_with_400(shop_api, rows, code, detail):
    api, _, _ = shop_api
    error = api.post("/v1.0/query/train", {"query": SHOP_SQL, "spine": {"index_key": "customer_id", "time": "as_of",
                                                                         "rows": rows}}, 400)
    assert error["code"] == code, error
    assert detail is None or detail in error["details"], error


@pytest.mark.parametrize("spine", [
    {"time": "as_of", "rows": []},
    {"index_key": "customer_id", "rows": [], "query": "SELECT 1"},
    {"index_key": "customer_id", "rows": [], "colour": "red"},
    {"index_key": "customer_id", "spine_id": "../../etc/passwd"},
    {"index_key": "customer_id", "time_zone": "Mars/Olympus", "rows": [{"customer_id": "c"}]},
    "customer_id",
])
def test_malformed_spine_objects_are_refused_with_400(shop_api, spine):
    api, _, _ = shop_api
    api.post("/v1.0/query/train", {"query": SHOP_SQL, "spine": spine}, 400)


def test_hot_window_does_not_combine_with_a_spine(shop_api):
    api, _, _ = shop_api
    api.post("/v1.0/query/train?hot_window=true", {"query": SHOP_SQL, "spine": {
        "index_key": "customer_id", "time": "as_of", "rows": [{"customer_id": "c1", "as_of": 0}]}}, 400)


@pytest.mark.parametrize("sql, construct", [
    ("SELECT customer_id, page FROM page_views LIMIT 5", "LIMIT"),
    ("SELECT customer_id, row_number() OVER (ORDER BY viewed_at) AS n FROM page_views", "PARTITION BY"),
    ("SELECT customer_id, count(*) AS n FROM page_views GROUP BY page, customer_id HAVING count(*) > 1 "
     "UNION ALL SELECT customer_id, 1 FROM orders LIMIT 3", "LIMIT"),
    ("SELECT v.customer_id, o.amount FROM page_views v RIGHT JOIN orders o ON o.customer_id = v.customer_id",
     "RIGHT"),
    ("SELECT customer_id, page FROM page_views WHERE customer_id IN (SELECT customer_id FROM orders)",
     "subqueries"),
    ("SELECT v.customer_id, s.n FROM page_views v JOIN (SELECT channel, count(*) AS n FROM orders GROUP BY channel) s "
     "ON s.n > 0", "joined on the key"),
    ("SELECT count(*) AS n, 'c000001' AS customer_id FROM page_views", "key"),
    ("SELECT upper(customer_id) AS customer_id FROM page_views", "plain column"),
])
def test_queries_the_rewrite_cannot_answer_exactly_are_refused(shop_api, sql, construct):
    api, _, _ = shop_api
    error = api.post("/v1.0/query/train", {"query": sql, "spine": {
        "index_key": "customer_id", "time": "as_of", "rows": [{"customer_id": "c000001", "as_of": 0}]}}, 400)
    assert error["code"] == "point_in_time_unsupported", error
    assert construct.lower() in error["message"].lower(), error["message"]


def test_a_query_returning_several_rows_per_entity_repeats_the_spine_row(shop_api):
    api, data, _ = shop_api
    sql = "SELECT customer_id, order_id, amount FROM orders"
    ids = data["orders"].column("customer_id").to_pylist()
    customer = max(set(ids), key=ids.count)
    answer = api.post("/v1.0/query/train", {"query": sql, "spine": {"index_key": "customer_id", "time": "as_of",
                      "rows": [{"customer_id": customer, "as_of": iso(NOW + 1), "label": 1}]}})["data"]
    window = pd.Timestamp(NOW + 1 - 30 * 86400, unit="s", tz="UTC")  # orders keep a 30-day hot window
    orders = [row for row in data["orders"].to_pylist() if row["customer_id"] == customer and row["ordered_at"] > window]
    assert sorted(row["order_id"] for row in answer) == sorted(row["order_id"] for row in orders) and len(orders) > 1
    assert all(row["label"] == 1 and row["customer_id"] == customer for row in answer)


def test_without_a_time_column_the_spine_is_scored_as_of_now_like_serving(make_app):
    api = JsonClient(make_app(DEMO_SOURCES=False).test_client())
    data = shop(api, customers=8, now=None)  # up to now: serving holds the last week and month
    query_id = api.post("/v1.0/query/train?save=true&include_data=false", {"query": SHOP_SQL})["query_id"]
    customers = sorted(set(data["page_views"].column("customer_id").to_pylist()))[:6] + ["nobody"]
    answer = api.post("/v1.0/query/train", {"query": SHOP_SQL, "spine": {
        "index_key": "customer_id", "rows": [{"customer_id": c} for c in customers]}})["data"]
    assert [row["customer_id"] for row in answer] == customers
    for row in answer:
        response = api.client.post("/v1.0/query/realtime", json={"query_id": query_id, "index_key": "customer_id",
                                                                  "index_value": row["customer_id"]})
        assert response.status_code in (200, 404), response.get_data(as_text=True)
        served = response.get_json()["data"] if response.status_code == 200 else []  # 404: entity_not_found
        if served:
            assert canonical([row], {"customer_id"}) == canonical(served, {"customer_id"})
        else:
            assert row["customer_id"] == "nobody" and all(v is None for k, v in row.items() if k != "customer_id")


def test_an_uploaded_arrow_spine_and_an_arrow_answer(shop_api):
    api, data, query_id = shop_api
    customers = sorted(set(data["page_views"].column("customer_id").to_pylist()))
    spine = pa.table({"customer_id": customers * 3,
                      "as_of": pa.array([pd.Timestamp(NOW - d * 86400, unit="s", tz="UTC") for d in (1, 10, 40)
                                         for _ in customers], pa.timestamp("ms", tz="UTC")),
                      "label": list(range(3 * len(customers)))})
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, spine.schema) as writer:
        writer.write_table(spine)
    response = api.client.post("/v1.0/spines", data=sink.getvalue().to_pybytes(),
                               content_type="application/vnd.apache.arrow.stream")
    assert response.status_code == 201, response.get_data(as_text=True)
    upload = response.get_json()
    assert upload["rows"] == spine.num_rows and upload["spine_id"].startswith("sp_")
    body = {"query": SHOP_SQL, "spine": {"index_key": "customer_id", "time": "as_of", "spine_id": upload["spine_id"]}}
    streamed = api.client.post("/v1.0/query/train?format=arrow", json=body)
    assert streamed.status_code == 200 and streamed.mimetype == "application/vnd.apache.arrow.stream"
    table = pa.ipc.open_stream(streamed.data).read_all()
    assert table.column("label").to_pylist() == list(range(spine.num_rows)), "every spine row, in spine order"
    assert table.column_names[:3] == ["customer_id", "as_of", "label"] and "views" in table.column_names
    as_json = api.post("/v1.0/query/train", body)["data"]
    assert [row["views"] for row in as_json] == table.column("views").to_pylist()
    api.post("/v1.0/query/train", {**body, "spine": {**body["spine"], "spine_id": "sp_" + "0" * 24}}, 404)


def test_a_spine_selected_by_a_query_over_the_sources(shop_api):
    api, data, _ = shop_api
    spine_sql = "SELECT customer_id, ordered_at AS as_of, amount > 50 AS big FROM orders"
    answer = api.post("/v1.0/query/train", {"query": SHOP_SQL, "spine": {
        "index_key": "customer_id", "time": "as_of", "query": spine_sql}})["data"]
    assert len(answer) == data["orders"].num_rows
    assert all(row["orders"] >= 1 for row in answer if row["views"] is not None), \
        "at an order's own time, that order is counted"
    api.post("/v1.0/query/train", {"query": SHOP_SQL, "spine": {
        "index_key": "customer_id", "time": "as_of", "query": "DELETE FROM orders"}}, 400)
    api.post("/v1.0/query/train", {"query": SHOP_SQL, "spine": {
        "index_key": "customer_id", "time": "as_of", "query": "SELECT * FROM secrets"}}, 400)


# -- the ETL: fitted on the point-in-time rows; feature sets ---------------------------------------------


FOUR_TABLE_SQL = (ROOT / "examples" / "four_table_join.sql").read_text()


def test_fit_runs_on_the_point_in_time_training_set_and_serving_uses_that_state(make_app, tmp_path):
    api = JsonClient(make_app().test_client())
    api.put("/v1.0/publish?n_flows=80&seed=4")
    query = api.post("/v1.0/query/train?save=true", {"query": FOUR_TABLE_SQL})
    users = sorted({(row["user_id"], row["user_created"]) for row in query["data"]})
    # every other user as of one second before they existed: nothing of them had happened yet
    spine = {"index_key": "user_id", "time": "as_of", "rows": [
        {"user_id": user, "as_of": created + (1 if i % 2 else -1), "churned": i % 2} for i, (user, created) in enumerate(users)]}
    as_of = api.post("/v1.0/query/train", {"query": FOUR_TABLE_SQL, "spine": spine})["data"]
    minutes = pd.Series([row["seconds_to_bind"] / 60 for row in as_of if row["seconds_to_bind"] is not None])
    everything = pd.Series([row["seconds_to_bind"] / 60 for row in query["data"] if row["seconds_to_bind"] is not None])
    assert len(minutes) < len(everything), "the spine sees fewer rows than the whole history"
    path = str(example_repo(tmp_path / "repo").file("etls/fitted_features.py"))
    etl = api.post("/v1.0/extract/train?save=true", {"query_id": query["query_id"], "etl_path": path, "spine": spine})
    state = api.get(f"/v1.0/etls/{etl['etl_id']}")["state"]
    assert state["minutes_mean"] == pytest.approx(minutes.mean()) != pytest.approx(everything.mean())
    assert api.get(f"/v1.0/etls/{etl['etl_id']}")["extra"] == {"point_in_time": True}
    assert [row["churned"] for row in etl["data"]][:5] == [row["churned"] for row in spine["rows"]][:5]
    served = api.post("/v1.0/extract/realtime", {"query_id": query["query_id"], "etl_id": etl["etl_id"],
                                                 "index_key": "user_id", "index_value": users[0][0]})["data"][0]
    assert "minutes_to_bind_z" in served  # computed with the stored (point-in-time) state


def test_a_feature_set_trains_as_of_a_spine_with_its_features_only(make_app, tmp_path):
    api = JsonClient(make_app(DEMO_SOURCES=False).test_client())
    data = shop(api, customers=8)
    query_id = api.post("/v1.0/query/train?save=true&include_data=false", {"query": SHOP_SQL})["query_id"]
    path = str(example_repo(tmp_path / "repo").file("etls/customer_features.py"))
    etl = api.post("/v1.0/extract/train?save=true&include_data=false", {"query_id": query_id, "etl_path": path})
    api.post("/v1.0/feature-sets", {"name": "churn", "query_id": query_id, "etl_id": etl["etl_id"],
                                    "index_key": "customer_id", "features": ["views", "coupon_share"]}, 201)
    customers = sorted(set(data["page_views"].column("customer_id").to_pylist()))
    rows = [{"customer_id": c, "as_of": iso(NOW - 86400 * d), "label": d} for c in customers for d in (2, 20)]
    answer = api.post("/v1.0/feature-sets/churn/train", {"spine": {"index_key": "customer_id", "time": "as_of",
                                                                  "rows": rows}})
    assert [column["name"] for column in answer["schema"]] == ["customer_id", "as_of", "label", "views", "coupon_share"]
    assert [row["label"] for row in answer["data"]] == [row["label"] for row in rows]
    arrow = api.client.post("/v1.0/extract/train?format=arrow", json={
        "query_id": query_id, "etl_path": path, "spine": {"index_key": "customer_id", "time": "as_of", "rows": rows}})
    table = pa.ipc.open_stream(arrow.data).read_all()
    assert table.column("views").to_pylist() == [row["views"] for row in answer["data"]]
    api.post("/v1.0/feature-sets/churn/train", {"spine": {"index_key": "label", "time": "as_of", "rows": rows}}, 400)


# -- exports -------------------------------------------------------------------------------------------


def wait_for(api, job: dict, seconds: float = 60.0) -> dict:
    import time

    deadline = time.monotonic() + seconds
    while job["status"] == "running" and time.monotonic() < deadline:
        time.sleep(0.05)
        job = api.get(f"/v1.0/jobs/{job['job_id']}")
    return job


def test_an_export_writes_parquet_under_the_export_dir_and_says_where_and_how_many(make_app):
    app = make_app(DEMO_SOURCES=False)
    api = JsonClient(app.test_client())
    data = shop(api, customers=8)
    customers = sorted(set(data["page_views"].column("customer_id").to_pylist()))
    spine = {"index_key": "customer_id", "time": "as_of",
             "rows": [{"customer_id": c, "as_of": iso(NOW - 86400 * d)} for c in customers for d in (1, 9)]}
    job = api.post("/v1.0/query/train", {"query": SHOP_SQL, "spine": spine,
                                         "export": {"path": "churn/december.parquet"}}, 202)
    done = wait_for(api, job)
    assert done["status"] == "succeeded", done
    assert done["result"]["rows"] == len(spine["rows"]) == done["progress"]["rows_written"]
    written = pq.read_table(Path(app.config["EXPORT_DIR"]) / "churn" / "december.parquet")
    answer = api.post("/v1.0/query/train", {"query": SHOP_SQL, "spine": spine})["data"]
    assert written.column("views").to_pylist() == [row["views"] for row in answer]
    again = api.post("/v1.0/query/train", {"query": SHOP_SQL, "spine": spine,
                                           "export": {"path": "churn/december.parquet"}}, 409)
    assert again["code"] == "export_exists"
    assert not [p for p in Path(app.config["EXPORT_DIR"]).rglob("*") if p.name.endswith(".partial")]


@pytest.mark.parametrize("target", [{"path": "../outside.parquet"}, {"path": "/tmp/x.parquet"},
                                    {"path": "x.csv"}, {"path": ".hidden/x.parquet"}, {"table": "users; DROP"},
                                    {"path": "a.parquet", "table": "t"}, {"table": "page_views"}, "x.parquet"])
def test_bad_export_targets_are_refused_before_any_work(shop_api, target):
    api, _, _ = shop_api
    api.post("/v1.0/query/train", {"query": SHOP_SQL, "export": target}, 400)


def test_an_export_into_a_warehouse_table_and_a_failed_job_reports_its_error(make_api, tmp_path):
    api, service = make_api(DEMO_SOURCES=False)
    shop(api, customers=6)
    query_id = api.post("/v1.0/query/train?save=true&include_data=false", {"query": SHOP_SQL})["query_id"]
    path = str(example_repo(tmp_path / "repo").file("etls/customer_features.py"))
    spine = {"index_key": "customer_id", "query": "SELECT customer_id, ordered_at AS as_of FROM orders", "time": "as_of"}
    job = wait_for(api, api.post("/v1.0/extract/train", {"query_id": query_id, "etl_path": path, "spine": spine,
                                                         "export": {"table": "churn_training"}}, 202))
    assert job["status"] == "succeeded", job["error"]
    counted = api.post("/v1.0/query/train", {"query": "SELECT count(*) AS n FROM orders"})["data"][0]["n"]
    assert job["result"] == {**job["result"], "table": "churn_training", "rows": counted}
    assert service.warehouse.table_columns("churn_training") is not None
    failed = wait_for(api, api.post("/v1.0/query/train", {"query": "SELECT customer_id, amount FROM orders",
                                                          "spine": {**spine, "time": "nope"},
                                                          "export": {"path": "bad.parquet"}}, 202))
    assert failed["status"] == "failed" and failed["error"]["code"] == "invalid_input", failed
    api.get("/v1.0/jobs/job_unknown", 404)


def test_spine_rows_without_data_keep_the_features_types(make_app, tmp_path):
    api = JsonClient(make_app(DEMO_SOURCES=False).test_client())
    data = shop(api, customers=6)
    query_id = api.post("/v1.0/query/train?save=true&include_data=false", {"query": SHOP_SQL})["query_id"]
    path = str(example_repo(tmp_path / "repo").file("etls/customer_features.py"))
    customer = data["page_views"].column("customer_id")[0].as_py()
    rows = [{"customer_id": customer, "as_of": iso(NOW)}, {"customer_id": "nobody", "as_of": iso(NOW)}]
    body = {"query_id": query_id, "etl_path": path, "spine": {"index_key": "customer_id", "time": "as_of", "rows": rows}}
    table = pa.ipc.open_stream(api.client.post("/v1.0/extract/train?format=arrow", json=body).data).read_all()
    assert table.schema.field("views").type == pa.int64() and table.column("views").null_count == 1
    assert table.schema.field("browser_not_buyer").type == pa.bool_()
    answer = api.post("/v1.0/extract/train", body)["data"]
    assert isinstance(answer[0]["views"], int) and answer[1]["views"] is None


def test_a_spine_larger_than_a_json_body_may_be_is_uploaded_as_arrow(shop_api):
    api, _, _ = shop_api
    n = 20_000  # about 400 KB of Arrow, past the tests' MAX_BODY_BYTES (64 KB), within MAX_INGEST_BYTES
    spine = pa.table({"customer_id": [f"c{i % 9:06d}" for i in range(n)], "as_of": [NOW] * n})
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, spine.schema) as writer:
        writer.write_table(spine)
    body = sink.getvalue().to_pybytes()
    assert len(body) > 64 * 1024
    response = api.client.post("/v1.0/spines", data=body, content_type="application/vnd.apache.arrow.stream")
    assert response.status_code == 201, response.get_data(as_text=True)
    assert response.get_json()["rows"] == n


def test_a_streamed_answer_in_many_spine_chunks_equals_one_statement(shop_api):
    api, data, _ = shop_api
    service = api.client.application.extensions["feature_service"]
    customers = sorted(set(data["page_views"].column("customer_id").to_pylist())) + ["nobody"]
    rows = [{"customer_id": c, "as_of": iso(NOW - 86400 * d), "label": i}
            for i, (c, d) in enumerate((c, d) for d in (1, 3, 9, 30) for c in customers)]
    body = {"query": SHOP_SQL, "spine": {"index_key": "customer_id", "time": "as_of", "rows": rows}}
    whole = pa.ipc.open_stream(api.client.post("/v1.0/query/train?format=arrow", json=body).data).read_all()
    service.point_in_time.chunk_rows = 7  # several chunks, one of them shorter
    chunked = pa.ipc.open_stream(api.client.post("/v1.0/query/train?format=arrow", json=body).data).read_all()
    assert chunked.num_rows == whole.num_rows == len(rows)
    for a, b in zip(chunked.to_pylist(), whole.to_pylist()):  # sums of floats may differ in the last bit
        assert {k: v for k, v in a.items()
                if (v != pytest.approx(b[k], rel=1e-12) if isinstance(v, float) else v != b[k])} == {}, (a, b)


def test_a_spine_longer_than_a_json_answer_may_be_is_refused_before_it_runs(shop_api):
    api, _, _ = shop_api
    n = 5001  # the tests' MAX_RESPONSE_ROWS is 5000: the answer would have at least n rows
    spine = pa.table({"customer_id": [f"c{i % 9:06d}" for i in range(n)], "as_of": [NOW] * n})
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, spine.schema) as writer:
        writer.write_table(spine)
    spine_id = api.client.post("/v1.0/spines", data=sink.getvalue().to_pybytes(),
                               content_type="application/vnd.apache.arrow.stream").get_json()["spine_id"]
    body = {"query": SHOP_SQL, "spine": {"index_key": "customer_id", "time": "as_of", "spine_id": spine_id}}
    error = api.post("/v1.0/query/train", body, 400)
    assert error["code"] == "result_too_large" and error["details"] == {"rows": n, "max_rows": 5000}
    streamed = api.client.post("/v1.0/query/train?format=arrow", json=body)
    assert streamed.status_code == 200 and pa.ipc.open_stream(streamed.data).read_all().num_rows == n
