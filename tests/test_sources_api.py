"""Declared sources through the API: the user's journey from declaring (or adopting) a table of raw
events to serving a saved query over it, and the contracts each step keeps.

Every app here runs with DEMO_SOURCES=False (the user's own data, no demo tables) unless a test
says otherwise. Timestamps are sent as ISO-8601 with a ``Z`` and come back the same way.
"""
from __future__ import annotations

import copy
import datetime as dt
import io
import time
from pathlib import Path
from typing import Any, Callable

import psycopg
import pyarrow as pa
import pyarrow.ipc
import pyarrow.parquet as pq
import pytest
from flask import Flask

from app import close_app
from tests.conftest import JsonClient
from tests.walkthrough import FOUR_TABLE_QUERY

ARROW_STREAM = "application/vnd.apache.arrow.stream"
DEMO_TABLES = ("users", "quotes", "transactions", "policies")

CLICKS = {
    "name": "clicks",
    "columns": [{"name": "user_id", "type": "integer"}, {"name": "ts", "type": "timestamp"},
                {"name": "page", "type": "string"}, {"name": "amount", "type": "float"},
                {"name": "ok", "type": "boolean"}],
    "entity_keys": ["user_id"],
    "event_time": "ts",
    "hot_window_seconds": 3600,
    "description": "page clicks",
}
CLICKS_QUERY = "SELECT user_id, page, amount, ok, ts FROM clicks"


# -- helpers ---------------------------------------------------------------------------------------

def iso(moment: dt.datetime) -> str:
    return moment.astimezone(dt.timezone.utc).isoformat().replace("+00:00", "Z")


def ago(seconds: float) -> dt.datetime:
    """A whole-second UTC time `seconds` before now (whole seconds keep round trips exact)."""
    return dt.datetime.now(dt.timezone.utc).replace(microsecond=0) - dt.timedelta(seconds=seconds)


def click(user_id: int, seconds_ago: float = 60, **values: Any) -> dict[str, Any]:
    return {"user_id": user_id, "ts": iso(ago(seconds_ago)), "page": f"p{user_id}", "amount": user_id * 1.5,
            "ok": user_id % 2 == 0, **values}


def declare(api: JsonClient, body: dict[str, Any], status: int = 201) -> dict[str, Any]:
    return api.post("/v1.0/sources", body, status)


def counts(api: JsonClient, name: str) -> tuple[int, int | None]:
    """(rows in the warehouse, rows in the realtime store's window) of a source."""
    described = api.get(f"/v1.0/sources/{name}")
    return described["warehouse"]["rows"], None if described["realtime"] is None else described["realtime"]["rows"]


def save(api: JsonClient, sql: str, status: int = 200) -> dict[str, Any]:
    return api.post("/v1.0/query/train?save=true", {"query": sql}, status)


def serve(api: JsonClient, query_id: str, key: str, value: Any, status: int = 200) -> Any:
    answer = api.post("/v1.0/query/realtime", {"query_id": query_id, "index_key": key, "index_value": value},
                      status)
    return answer["data"] if status == 200 else answer


def unserved(api: JsonClient, query_id: str, key: str, value: Any) -> bool:
    """The lookup finds no hot rows: 404 entity_not_found, as extract/realtime answers."""
    return serve(api, query_id, key, value, 404)["code"] == "entity_not_found"


def arrow_bytes(table: pa.Table) -> bytes:
    sink = io.BytesIO()
    with pyarrow.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue()


def post_arrow(api: JsonClient, name: str, table: pa.Table, status: int = 200, batch_id: str | None = None) -> Any:
    path = f"/v1.0/sources/{name}/rows" + (f"?batch_id={batch_id}" if batch_id else "")
    return api.call("POST", path, status, data=arrow_bytes(table), content_type=ARROW_STREAM)


def service_of(app: Flask) -> Any:
    return app.extensions["feature_service"]


@pytest.fixture
def own(make_app: Callable[..., Flask]) -> tuple[Flask, JsonClient]:
    """An app over the user's own data only (no demo sources)."""
    app = make_app(DEMO_SOURCES=False)
    return app, JsonClient(app.test_client())


# -- 1. declaring, idempotence, versions -----------------------------------------------------------

def test_declare_makes_version_one_and_the_same_body_again_returns_it(own):
    app, api = own
    record = declare(api, CLICKS)
    assert record["name"] == "clicks" and record["version"] == 1 and record["table"] == "clicks"
    nullable = {c["name"]: c["nullable"] for c in record["columns"]}
    assert nullable == {"user_id": False, "ts": False, "page": True, "amount": True, "ok": True}
    assert [c["type"] for c in record["columns"]] == ["integer", "timestamp", "string", "float", "boolean"]
    assert record["entity_keys"] == ["user_id"] and record["event_time"] == "ts"
    assert record["hot_window_seconds"] == 3600 and record["kind"] == "table"

    again = declare(api, CLICKS, 200)
    assert again == record
    listing = api.get("/v1.0/sources")
    assert listing["total"] == 1 and [s["name"] for s in listing["items"]] == ["clicks"]
    described = api.get("/v1.0/sources/clicks")
    assert described["versions"] == [1]
    assert described["warehouse"]["rows"] == 0 and described["realtime"]["rows"] == 0
    assert service_of(app).warehouse.table_columns("clicks") is not None


COMPATIBLE = {
    "new_nullable_column": lambda body: body["columns"].append({"name": "referrer", "type": "string"}),
    "longer_hot_window": lambda body: body.update(hot_window_seconds=7200),
    "description": lambda body: body.update(description="clicks on pages, v2"),
    "tags_and_owner": lambda body: body.update(tags=["web"], owner="growth"),
}


def _drop_window(body):
    del body["hot_window_seconds"]


@pytest.mark.parametrize("change", [
    *(pytest.param(change, id=name) for name, change in COMPATIBLE.items()),
    pytest.param(_drop_window, id="no_hot_window_by_omission"),
    pytest.param(lambda body: body.update(hot_window_seconds=None), id="no_hot_window_by_null"),
])
def test_compatible_change_is_version_two(own, change):
    _, api = own
    declare(api, CLICKS)
    body = copy.deepcopy(CLICKS)
    change(body)
    record = declare(api, body)
    assert record["version"] == 2
    assert declare(api, body, 200) == record
    described = api.get("/v1.0/sources/clicks")
    assert described["versions"] == [1, 2] and described["version"] == 2
    assert api.get("/v1.0/sources")["items"][0]["version"] == 2


def test_a_required_column_made_nullable_is_compatible(own):
    _, api = own
    strict = copy.deepcopy(CLICKS)
    strict["columns"][2]["nullable"] = False
    assert declare(api, strict)["version"] == 1
    error = api.post("/v1.0/sources/clicks/rows", {"rows": [{**click(1), "page": None}]}, 400)
    assert error["details"] == {"row": 0, "column": "page"}
    record = declare(api, CLICKS)
    assert record["version"] == 2 and record["columns"][2] == {"name": "page", "type": "string", "nullable": True}
    # and back is not: making it required again would refuse rows already stored
    assert declare(api, strict, 409)["details"]["diff"]["made_required"] == ["page"]


def test_rows_with_null_in_a_column_made_nullable_are_written(own):
    _, api = own
    strict = copy.deepcopy(CLICKS)
    strict["columns"][2]["nullable"] = False
    declare(api, strict)
    declare(api, CLICKS)
    assert api.post("/v1.0/sources/clicks/rows", {"rows": [{**click(1), "page": None}]})["rows"] == 1
    assert counts(api, "clicks") == (1, 1)


def test_null_in_an_optional_field_means_absent(own):
    _, api = own
    record = declare(api, {**CLICKS, "created_time": None, "table": None})
    assert record["created_time"] is None and record["table"] == "clicks"
    assert declare(api, CLICKS, 200) == record


def test_a_new_column_reaches_the_warehouse_and_later_rows_carry_it(own):
    app, api = own
    declare(api, CLICKS)
    api.post("/v1.0/sources/clicks/rows", {"rows": [click(1)]})
    body = copy.deepcopy(CLICKS)
    body["columns"].append({"name": "referrer", "type": "string"})
    assert declare(api, body)["version"] == 2
    assert ("referrer", "VARCHAR") in service_of(app).warehouse.table_columns("clicks")

    api.post("/v1.0/sources/clicks/rows", {"rows": [click(2, referrer="search")]})
    assert counts(api, "clicks") == (2, 2)
    trained = api.post("/v1.0/query/train", {"query": "SELECT user_id, referrer FROM clicks ORDER BY user_id"})
    assert trained["data"] == [{"user_id": 1, "referrer": None}, {"user_id": 2, "referrer": "search"}]
    query_id = save(api, "SELECT user_id, page, referrer FROM clicks")["query_id"]
    assert serve(api, query_id, "user_id", 2) == [{"user_id": 2, "page": "p2", "referrer": "search"}]
    assert serve(api, query_id, "user_id", 1) == [{"user_id": 1, "page": "p1", "referrer": None}]


def _retype_amount(body):
    next(c for c in body["columns"] if c["name"] == "amount")["type"] = "string"


def _remove_page(body):
    body["columns"] = [c for c in body["columns"] if c["name"] != "page"]


INCOMPATIBLE = {
    "type_change": (_retype_amount, lambda d: d["type_changed"] == [{"column": "amount", "from": "float",
                                                                     "to": "string"}]),
    "removed_column": (_remove_page, lambda d: d["removed"] == ["page"]),
    "entity_keys": (lambda b: b.update(entity_keys=["user_id", "page"]),
                    lambda d: d["changed"]["entity_keys"] == {"from": ["user_id"], "to": ["user_id", "page"]}),
    "shorter_window": (lambda b: b.update(hot_window_seconds=1800),
                       lambda d: d["changed"]["hot_window_seconds"] == {"from": 3600, "to": 1800}),
    "required_column_added": (lambda b: b["columns"].append({"name": "n", "type": "integer", "nullable": False}),
                              lambda d: d["required_added"] == ["n"]),
    "made_required": (lambda b: b["columns"][2].update(nullable=False), lambda d: d["made_required"] == ["page"]),
    "table": (lambda b: b.update(table="clicks_v2"), lambda d: "table" in d["changed"]),
}


@pytest.mark.parametrize("change,check", INCOMPATIBLE.values(), ids=INCOMPATIBLE.keys())
def test_incompatible_change_is_409_with_the_diff_and_dependent_queries(own, change, check):
    app, api = own
    declare(api, CLICKS)
    query_id = save(api, CLICKS_QUERY)["query_id"]
    body = copy.deepcopy(CLICKS)
    change(body)
    error = declare(api, body, 409)
    assert error["code"] == "source_incompatible"
    assert error["details"]["diff"]["compatible"] is False
    assert check(error["details"]["diff"]), error["details"]["diff"]
    assert error["details"]["dependent_queries"] == [query_id]
    assert error["details"]["version"] == 1
    described = api.get("/v1.0/sources/clicks")
    assert described["versions"] == [1] and described["dependent_queries"] == [query_id]
    assert service_of(app).warehouse.table_columns("clicks_v2") is None


# -- 2. adopting an existing warehouse table -------------------------------------------------------

def _duckdb_ddl(app: Flask, statements: list[str]) -> None:
    service_of(app).warehouse.engine.execute_ddl(statements)


def _pg_ddl(url: str, statements: list[str]) -> None:
    with psycopg.connect(url, autocommit=True) as connection:
        for statement in statements:
            connection.execute(statement)


ADOPT_DDL = {
    "duckdb": "CREATE TABLE events (user_id BIGINT, ts TIMESTAMPTZ, name VARCHAR, score DOUBLE, flag BOOLEAN, "
              "small INTEGER, code VARCHAR(8))",
    "postgres": "CREATE TABLE events (user_id bigint, ts timestamptz, name text, score double precision, "
                "flag boolean, small integer, code varchar(8))",
}
ADOPTED_TYPES = [("user_id", "integer"), ("ts", "timestamp"), ("name", "string"), ("score", "float"),
                 ("flag", "boolean"), ("small", "integer"), ("code", "string")]
BACKENDS = [pytest.param("duckdb", id="duckdb"), pytest.param("postgres", id="postgres", marks=pytest.mark.postgres)]


@pytest.fixture
def warehouse_of(request: pytest.FixtureRequest, make_app: Callable[..., Flask], tmp_path: Path):
    """(make an app on the backend, run DDL/inserts directly on its warehouse)."""
    backend = request.param
    if backend == "duckdb":
        return backend, (lambda **kw: make_app(tmp_path / "data", DEMO_SOURCES=False, **kw)), _duckdb_ddl
    url = request.getfixturevalue("pg_database_url")
    return (backend, (lambda **kw: make_app(tmp_path / "data", DEMO_SOURCES=False, WAREHOUSE_URL=url, **kw)),
            lambda app, statements: _pg_ddl(url, statements))


def _adopt_rows() -> list[str]:
    first, second = iso(ago(120)), iso(ago(60))
    return [f"INSERT INTO events VALUES (1, '{first}', 'ann', 0.5, true, 7, 'a'), "
            f"(1, '{second}', 'ann', 1.5, false, 8, 'b'), (2, '{second}', 'bob', 2.5, NULL, NULL, NULL)"]


@pytest.mark.parametrize("warehouse_of", BACKENDS, indirect=True)
def test_adopt_introspects_types_and_a_restart_serves_the_existing_rows(warehouse_of):
    backend, start, ddl = warehouse_of
    app = start()
    ddl(app, [ADOPT_DDL[backend], *_adopt_rows()])
    api = JsonClient(app.test_client())
    record = declare(api, {"name": "events", "entity_keys": ["user_id"], "event_time": "ts"})
    assert [(c["name"], c["type"]) for c in record["columns"]] == ADOPTED_TYPES
    assert {c["name"]: c["nullable"] for c in record["columns"]}["user_id"] is False
    assert record["table"] == "events" and record["version"] == 1
    assert declare(api, {"name": "events", "entity_keys": ["user_id"], "event_time": "ts"}, 200) == record
    assert counts(api, "events")[0] == 3
    query = save(api, "SELECT user_id, name, score, flag, small, code FROM events")
    assert len(query["data"]) == 3
    close_app(app)

    restarted = JsonClient(start().test_client())
    assert counts(restarted, "events") == (3, 3)
    served = serve(restarted, query["query_id"], "user_id", 1)
    assert sorted(served, key=lambda r: r["score"]) == [
        {"user_id": 1, "name": "ann", "score": 0.5, "flag": True, "small": 7, "code": "a"},
        {"user_id": 1, "name": "ann", "score": 1.5, "flag": False, "small": 8, "code": "b"}]
    assert serve(restarted, query["query_id"], "user_id", 2) == [
        {"user_id": 2, "name": "bob", "score": 2.5, "flag": None, "small": None, "code": None}]
    # new rows go into the adopted table through the API as for any source
    restarted.post("/v1.0/sources/events/rows", {"rows": [{"user_id": 3, "ts": iso(ago(5)), "name": "cy"}]})
    assert counts(restarted, "events") == (4, 4)


@pytest.mark.parametrize("warehouse_of", BACKENDS, indirect=True)
def test_adopted_rows_are_served_without_a_restart(warehouse_of):
    backend, start, ddl = warehouse_of
    app = start()
    ddl(app, [ADOPT_DDL[backend], *_adopt_rows()])
    api = JsonClient(app.test_client())
    declare(api, {"name": "events", "entity_keys": ["user_id"], "event_time": "ts"})
    query_id = save(api, "SELECT user_id, name FROM events")["query_id"]
    assert counts(api, "events") == (3, 3)
    assert serve(api, query_id, "user_id", 2) == [{"user_id": 2, "name": "bob"}]


UNMAPPED = {
    "duckdb": [("INTERVAL", "INTERVAL"), ("TIMESTAMP", "TIMESTAMP"), ("BLOB", "BLOB"), ("INTEGER[]", "INTEGER[]")],
    "postgres": [("json", "json"), ("timestamp", "timestamp without time zone"), ("bytea", "bytea")],
}


@pytest.mark.parametrize("warehouse_of", BACKENDS, indirect=True)
def test_adopt_refuses_unmapped_types_and_missing_tables(warehouse_of):
    backend, start, ddl = warehouse_of
    app = start()
    api = JsonClient(app.test_client())
    for i, (declared_type, reported) in enumerate(UNMAPPED[backend]):
        table = f"odd_{i}"
        ddl(app, [f"CREATE TABLE {table} (user_id BIGINT, ts TIMESTAMPTZ, weird {declared_type})"])
        error = declare(api, {"name": table, "entity_keys": ["user_id"], "event_time": "ts"}, 400)
        assert "weird" in error["message"], error
        assert error["details"]["columns"] == [{"column": "weird", "type": reported}], error
    error = declare(api, {"name": "nowhere", "entity_keys": ["user_id"], "event_time": "ts"}, 400)
    assert "nowhere" in error["message"] and error["details"] == {"table": "nowhere"}
    error = declare(api, {"name": "alias", "table": "missing_table", "entity_keys": ["user_id"],
                          "event_time": "ts"}, 400)
    assert error["details"] == {"table": "missing_table"}
    assert api.get("/v1.0/sources")["total"] == 0


@pytest.mark.parametrize("warehouse_of", BACKENDS, indirect=True)
def test_adopt_under_another_name_and_with_columns_that_disagree(warehouse_of):
    backend, start, ddl = warehouse_of
    app = start()
    ddl(app, [ADOPT_DDL[backend], *_adopt_rows()])
    api = JsonClient(app.test_client())
    record = declare(api, {"name": "ev", "table": "events", "entity_keys": ["user_id"], "event_time": "ts"})
    assert record["table"] == "events" and counts(api, "ev")[0] == 3
    assert save(api, "SELECT user_id, name FROM ev")["data"]
    # declaring columns over an existing table: the types must agree and no column may be missing
    wrong = declare(api, {"name": "ev2", "table": "events", "entity_keys": ["user_id"], "event_time": "ts",
                          "columns": [{"name": "user_id", "type": "string"}, {"name": "ts", "type": "timestamp"}]},
                    400)
    assert wrong["details"]["type_changed"] == [{"column": "user_id", "declared": "string", "warehouse": "integer"}]
    missing = declare(api, {"name": "ev3", "table": "events", "entity_keys": ["user_id"], "event_time": "ts",
                            "columns": [{"name": "user_id", "type": "integer"}, {"name": "ts", "type": "timestamp"},
                                        {"name": "extra", "type": "string"}]}, 400)
    assert missing["details"]["missing"] == ["extra"]
    assert [s["name"] for s in api.get("/v1.0/sources")["items"]] == ["ev"]


# -- 3. ingesting JSON and Arrow -------------------------------------------------------------------

def test_json_ingest_answers_counts_and_is_idempotent_by_batch_id(own):
    _, api = own
    declare(api, CLICKS)
    rows = [click(1, 300), click(2, 200), click(1, 100)]
    answer = api.post("/v1.0/sources/clicks/rows", {"rows": rows, "batch_id": "batch-1"})
    assert isinstance(answer["position"], int) and answer["position"] > 0  # the change feed's, for read-your-write
    assert answer == {"source": "clicks", "version": 1, "rows": 3, "realtime_rows": 3,
                      "min_event_time": rows[0]["ts"], "max_event_time": rows[2]["ts"], "batch_id": "batch-1",
                      "duplicate": False, "position": answer["position"]}
    described = api.get("/v1.0/sources/clicks")
    assert described["warehouse"] == {"rows": 3, "min_event_time": rows[0]["ts"], "max_event_time": rows[2]["ts"]}
    assert described["realtime"] == described["warehouse"]

    again = api.post("/v1.0/sources/clicks/rows", {"rows": rows, "batch_id": "batch-1"})
    assert again == {**answer, "duplicate": True}
    assert counts(api, "clicks") == (3, 3)
    # the id is what counts, not the rows: other rows under a used id are not written either
    other = api.post("/v1.0/sources/clicks/rows", {"rows": [click(9)], "batch_id": "batch-1"})
    assert other["duplicate"] is True and other["rows"] == 3
    assert counts(api, "clicks") == (3, 3)
    # without a batch id, the same rows are written again (at-least-once)
    api.post("/v1.0/sources/clicks/rows", {"rows": rows})
    assert counts(api, "clicks") == (6, 6)


def test_rows_older_than_the_hot_window_go_to_the_warehouse_only(own):
    _, api = own
    declare(api, CLICKS)
    rows = [click(1, 2 * 3600), click(2, 3600 + 5), click(3, 60)]
    answer = api.post("/v1.0/sources/clicks/rows", {"rows": rows})
    assert answer["rows"] == 3 and answer["realtime_rows"] == 1
    assert answer["min_event_time"] == rows[0]["ts"] and answer["max_event_time"] == rows[2]["ts"]
    described = api.get("/v1.0/sources/clicks")
    assert described["warehouse"]["rows"] == 3
    assert described["realtime"] == {"rows": 1, "min_event_time": rows[2]["ts"], "max_event_time": rows[2]["ts"]}
    query_id = save(api, CLICKS_QUERY)["query_id"]
    assert unserved(api, query_id, "user_id", 1)
    assert [r["user_id"] for r in serve(api, query_id, "user_id", 3)] == [3]


def test_arrow_ingest_casts_compatible_types_and_answers_like_json(own):
    _, api = own
    declare(api, CLICKS)
    first, last = ago(300), ago(30)
    paris = pa.timestamp("ms", tz="Europe/Paris")
    table = pa.table({
        "user_id": pa.array([1, 2, 1], pa.int32()),
        "ts": pa.array([first, ago(200), last], paris),
        "page": pa.array(["a", "b", None], pa.string()),
        "amount": pa.array([1, 2, None], pa.int64()),  # integers into a float column
        "ok": pa.array([True, None, False]),
    })
    answer = post_arrow(api, "clicks", table, batch_id="arrow-1")
    assert answer == {"source": "clicks", "version": 1, "rows": 3, "realtime_rows": 3, "min_event_time": iso(first),
                      "max_event_time": iso(last), "batch_id": "arrow-1", "duplicate": False,
                      "position": answer["position"]}
    assert post_arrow(api, "clicks", table, batch_id="arrow-1")["duplicate"] is True
    assert counts(api, "clicks") == (3, 3)

    # a stream with several batches and a subset of the columns (the rest are null)
    schema = pa.schema([("ts", pa.timestamp("us", tz="UTC")), ("user_id", pa.int64())])
    sink = io.BytesIO()
    with pyarrow.ipc.new_stream(sink, schema) as writer:
        for user in (5, 6):
            writer.write_batch(pa.record_batch([pa.array([ago(10)], schema[0].type), pa.array([user])],
                                               schema=schema))
    answer = api.call("POST", "/v1.0/sources/clicks/rows", 200, data=sink.getvalue(), content_type=ARROW_STREAM)
    assert answer["rows"] == 2 and answer["batch_id"] is None
    assert counts(api, "clicks") == (5, 5)
    query_id = save(api, CLICKS_QUERY)["query_id"]
    assert serve(api, query_id, "user_id", 5) == [{"user_id": 5, "page": None, "amount": None, "ok": None,
                                                    "ts": answer["min_event_time"].replace("Z", "+00:00")}]
    served = sorted(serve(api, query_id, "user_id", 1), key=lambda r: r["ts"])
    assert served == [
        {"user_id": 1, "page": "a", "amount": 1.0, "ok": True, "ts": iso(first).replace("Z", "+00:00")},
        {"user_id": 1, "page": None, "amount": None, "ok": False, "ts": iso(last).replace("Z", "+00:00")}]


def test_ingest_into_an_unknown_source_is_404(own):
    _, api = own
    assert api.post("/v1.0/sources/nothing/rows", {"rows": [click(1)]}, 404)["code"] == "source_not_found"
    assert api.call("POST", "/v1.0/sources/nothing/rows", 404, data=arrow_bytes(pa.table({"a": [1]})),
                    content_type=ARROW_STREAM)["code"] == "source_not_found"
    assert api.get("/v1.0/sources/nothing", 404)["code"] == "source_not_found"
    assert api.post("/v1.0/sources/nothing/load", {"path": "x.csv"}, 404)["code"] == "source_not_found"


def test_integer_event_time_in_epoch_seconds(own):
    _, api = own
    declare(api, {"name": "taps", "columns": [{"name": "device", "type": "string"},
                                              {"name": "at", "type": "integer"}, {"name": "n", "type": "integer"}],
                  "entity_keys": ["device"], "event_time": "at", "hot_window_seconds": 3600})
    now = int(time.time())
    answer = api.post("/v1.0/sources/taps/rows", {"rows": [{"device": "d1", "at": now - 7200, "n": 1},
                                                           {"device": "d1", "at": now - 10, "n": 2}]})
    assert answer["min_event_time"] == now - 7200 and answer["max_event_time"] == now - 10
    assert answer["realtime_rows"] == 1
    assert counts(api, "taps") == (2, 1)
    query_id = save(api, "SELECT device, n FROM taps")["query_id"]
    assert serve(api, query_id, "device", "d1") == [{"device": "d1", "n": 2}]


# -- 4. loading files from LOAD_DIR ----------------------------------------------------------------

def _load_dir(app: Flask) -> Path:
    folder = Path(app.config["LOAD_DIR"])
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def test_load_parquet_and_csv_from_the_load_dir(own):
    app, api = own
    declare(api, CLICKS)
    folder = _load_dir(app)
    first, second = ago(120), ago(60)
    pq.write_table(pa.table({"user_id": [1, 2], "ts": pa.array([first, second], pa.timestamp("us", tz="UTC")),
                             "page": ["a", "b"], "amount": [1.0, 2.0], "ok": [True, False]}),
                   folder / "clicks.parquet")
    answer = api.post("/v1.0/sources/clicks/load", {"path": "clicks.parquet"})
    assert answer["rows"] == 2 and answer["format"] == "parquet" and answer["path"] == "clicks.parquet"
    assert answer["min_event_time"] == iso(first) and answer["max_event_time"] == iso(second)
    assert counts(api, "clicks") == (2, 2)

    (folder / "more").mkdir()
    (folder / "more" / "clicks.csv").write_text(
        "user_id,ts,page,amount,ok\n"
        f"3,{iso(ago(30))},c,3.5,true\n"
        f"4,{iso(ago(20))},,,\n")
    answer = api.post("/v1.0/sources/clicks/load", {"path": "more/clicks.csv", "batch_id": "csv-1"})
    assert answer["rows"] == 2 and answer["format"] == "csv" and answer["realtime_rows"] == 2
    assert api.post("/v1.0/sources/clicks/load", {"path": "more/clicks.csv", "batch_id": "csv-1"})["duplicate"]
    assert counts(api, "clicks") == (4, 4)
    rows = api.post("/v1.0/query/train", {"query": "SELECT user_id, page, amount, ok FROM clicks WHERE user_id > 2 "
                                                   "ORDER BY user_id"})["data"]
    # an empty CSV field is null in every column (so an empty required string is refused, as null is in JSON)
    assert rows == [{"user_id": 3, "page": "c", "amount": 3.5, "ok": True},
                    {"user_id": 4, "page": None, "amount": None, "ok": None}]

    # a file without a known suffix needs a format
    (folder / "clicks.data").write_bytes((folder / "clicks.parquet").read_bytes())
    assert api.post("/v1.0/sources/clicks/load", {"path": "clicks.data"}, 400)["details"] == {"path": "clicks.data"}
    assert api.post("/v1.0/sources/clicks/load", {"path": "clicks.data", "format": "parquet"})["rows"] == 2
    assert counts(api, "clicks") == (6, 6)


def test_load_a_folder_of_parquet_files(own):
    app, api = own
    declare(api, CLICKS)
    folder = _load_dir(app) / "day"
    folder.mkdir()
    for part in range(3):
        pq.write_table(pa.table({"user_id": [part], "ts": pa.array([ago(10)], pa.timestamp("us", tz="UTC"))}),
                       folder / f"part-{part}.parquet")
    assert api.post("/v1.0/sources/clicks/load", {"path": "day"})["rows"] == 3
    assert counts(api, "clicks") == (3, 3)


def test_load_refuses_paths_outside_the_load_dir_and_missing_files(own, tmp_path):
    app, api = own
    declare(api, CLICKS)
    folder = _load_dir(app)
    outside = tmp_path / "outside.parquet"
    pq.write_table(pa.table({"user_id": [1], "ts": pa.array([ago(10)], pa.timestamp("us", tz="UTC"))}), outside)
    (folder / "escape.parquet").symlink_to(outside)
    bad = {"../outside.parquet": "outside", str(outside): "outside", "/etc/passwd": "outside",
           "sub/../../outside.parquet": "outside", "escape.parquet": "outside",
           "missing.parquet": "no file", "": None, "nul\x00.csv": None}
    for path, words in bad.items():
        error = api.post("/v1.0/sources/clicks/load", {"path": path}, 400)
        assert error["code"] == "invalid_input"
        if words:
            assert words in error["message"], (path, error)
    # an absolute path even inside LOAD_DIR is refused: paths are relative to it
    pq.write_table(pa.table({"user_id": [1], "ts": pa.array([ago(10)], pa.timestamp("us", tz="UTC"))}),
                   folder / "inside.parquet")
    assert api.post("/v1.0/sources/clicks/load", {"path": str(folder / "inside.parquet")}, 400)
    assert counts(api, "clicks") == (0, 0)
    assert api.post("/v1.0/sources/clicks/load", {"path": "inside.parquet"})["rows"] == 1


# -- 5. the hot window -------------------------------------------------------------------------------

@pytest.mark.parametrize("event_time", ["timestamp", "integer"])
def test_a_row_past_its_window_is_hidden_before_eviction_and_evict_deletes_it(own, event_time):
    app, api = own
    body = copy.deepcopy(CLICKS)
    body["columns"][1]["type"] = event_time
    declare(api, body)
    row = click(1, 600) if event_time == "timestamp" else {**click(1), "ts": int(time.time()) - 600}  # 10 min old
    api.post("/v1.0/sources/clicks/rows", {"rows": [row]})
    query_id = save(api, "SELECT user_id, page FROM clicks")["query_id"]
    assert serve(api, query_id, "user_id", 1) == [{"user_id": 1, "page": "p1"}]

    realtime = service_of(app).realtime
    later = time.time() + 3600  # the row (10 minutes old) is now past its one-hour window
    realtime.clock = lambda: later
    try:
        assert unserved(api, query_id, "user_id", 1)
        assert counts(api, "clicks") == (1, 0)
        assert realtime.query("SELECT count(*) AS n FROM _fs_rows_clicks")["n"][0] == 1  # hidden, not deleted
        assert realtime.evict(later) == {"clicks": 1}
        assert realtime.query("SELECT count(*) AS n FROM _fs_rows_clicks")["n"][0] == 0
    finally:
        realtime.clock = time.time
    # back at the real time the row is inside the window again, but it was evicted
    assert unserved(api, query_id, "user_id", 1)
    assert counts(api, "clicks") == (1, 0)


def test_evict_keeps_rows_inside_the_window_and_sources_without_one(own):
    app, api = own
    declare(api, CLICKS)
    forever = copy.deepcopy(CLICKS)
    forever["name"] = "visits"
    del forever["hot_window_seconds"]
    declare(api, forever)
    api.post("/v1.0/sources/clicks/rows", {"rows": [click(1, 3000), click(2, 60)]})
    api.post("/v1.0/sources/visits/rows", {"rows": [click(1, 10 * 86400)]})
    realtime = service_of(app).realtime
    assert realtime.evict(time.time() + 600) == {"clicks": 1}
    assert counts(api, "clicks") == (2, 1) and counts(api, "visits") == (1, 1)


def test_restart_keeps_sources_and_rehydrates_only_the_window(make_app, tmp_path):
    app = make_app(tmp_path / "data", DEMO_SOURCES=False)
    api = JsonClient(app.test_client())
    declare(api, CLICKS)
    forever = copy.deepcopy(CLICKS)
    forever["name"] = "visits"
    del forever["hot_window_seconds"]
    declare(api, forever)
    api.post("/v1.0/sources/clicks/rows", {"rows": [click(1, 2 * 3600), click(1, 60), click(2, 30)]})
    api.post("/v1.0/sources/visits/rows", {"rows": [click(1, 30 * 86400)]})
    query_id = save(api, CLICKS_QUERY)["query_id"]
    before = api.get("/v1.0/sources")
    close_app(app)

    api = JsonClient(make_app(tmp_path / "data", DEMO_SOURCES=False).test_client())
    assert api.get("/v1.0/sources") == before
    assert counts(api, "clicks") == (3, 2) and counts(api, "visits") == (1, 1)
    assert len(serve(api, query_id, "user_id", 1)) == 1
    described = api.get("/v1.0/sources/clicks")
    assert described["dependent_queries"] == [query_id] and described["versions"] == [1]


# -- 6. queries over sources: undeclared tables, joins, indexes --------------------------------------

ACCOUNTS = {"name": "accounts", "columns": [{"name": "user_id", "type": "integer"},
                                            {"name": "created", "type": "timestamp"},
                                            {"name": "country", "type": "string"}],
            "entity_keys": ["user_id"], "event_time": "created"}
ORDERS = {"name": "orders", "columns": [{"name": "order_id", "type": "string"}, {"name": "user_id", "type": "integer"},
                                        {"name": "placed", "type": "timestamp"}, {"name": "total", "type": "float"}],
          "entity_keys": ["order_id"], "event_time": "placed"}
JOIN = ("SELECT o.order_id, o.total, a.country FROM orders o JOIN accounts a ON a.user_id = o.user_id")


def test_a_query_over_an_undeclared_table_is_not_saved(own):
    app, api = own
    declare(api, CLICKS)
    service_of(app).warehouse.engine.execute_ddl(["CREATE TABLE raw_stuff (id BIGINT)",
                                                  "INSERT INTO raw_stuff VALUES (1)"])
    assert api.post("/v1.0/query/train", {"query": "SELECT id FROM raw_stuff"})["data"] == [{"id": 1}]
    error = save(api, "SELECT id FROM raw_stuff", 400)
    assert error["details"]["undeclared_tables"] == ["raw_stuff"] and "raw_stuff" in error["message"]
    error = save(api, "SELECT c.user_id, r.id FROM clicks c JOIN raw_stuff r ON r.id = c.user_id", 400)
    assert error["details"]["undeclared_tables"] == ["raw_stuff"]
    assert api.get("/v1.0/queries")["total"] == 0


def test_hot_window_warning_on_save(own):
    _, api = own
    declare(api, CLICKS)
    saved = save(api, CLICKS_QUERY)
    assert [w["code"] for w in saved["warnings"]] == ["hot_window"]
    assert saved["warnings"][0]["source"] == "clicks" and saved["warnings"][0]["hot_window_seconds"] == 3600
    declare(api, ACCOUNTS)
    assert "warnings" not in save(api, "SELECT user_id, country FROM accounts")


def _index_names(app: Flask) -> set[str]:
    connection = service_of(app).realtime._connection
    return {row[0] for row in connection.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}


def test_a_join_of_two_sources_serves_the_joined_row_and_indexes_the_join_column(make_app, tmp_path):
    app = make_app(tmp_path / "data", DEMO_SOURCES=False)
    api = JsonClient(app.test_client())
    declare(api, ACCOUNTS)
    declare(api, ORDERS)
    assert "user_id" not in service_of(app).realtime._indexes["orders"]
    api.post("/v1.0/sources/accounts/rows", {"rows": [{"user_id": 1, "created": iso(ago(600)), "country": "FR"},
                                                      {"user_id": 2, "created": iso(ago(600)), "country": "DE"}]})
    api.post("/v1.0/sources/orders/rows", {"rows": [{"order_id": "o1", "user_id": 1, "placed": iso(ago(60)),
                                                     "total": 9.5},
                                                    {"order_id": "o2", "user_id": 2, "placed": iso(ago(50)),
                                                     "total": 3.0}]})
    saved = save(api, JOIN)
    assert sorted(saved["data"], key=lambda r: r["order_id"]) == [
        {"order_id": "o1", "total": 9.5, "country": "FR"}, {"order_id": "o2", "total": 3.0, "country": "DE"}]
    assert serve(api, saved["query_id"], "order_id", "o1") == [{"order_id": "o1", "total": 9.5, "country": "FR"}]
    assert unserved(api, saved["query_id"], "order_id", "o3")
    indexes = service_of(app).realtime._indexes
    assert "user_id" in indexes["orders"] and "user_id" in indexes["accounts"]
    assert "_fs_idx_6_orders_user_id" in _index_names(app)
    close_app(app)

    restarted = make_app(tmp_path / "data", DEMO_SOURCES=False)  # saved queries index their joins on start
    assert "_fs_idx_6_orders_user_id" in _index_names(restarted)
    assert serve(JsonClient(restarted.test_client()), saved["query_id"], "order_id", "o2") == [
        {"order_id": "o2", "total": 3.0, "country": "DE"}]


def test_sources_named_like_sql_keywords_are_quoted_everywhere(own):
    _, api = own
    declare(api, {"name": "order", "columns": [{"name": "select", "type": "integer"},
                                               {"name": "from", "type": "timestamp"},
                                               {"name": "group", "type": "string"}],
                  "entity_keys": ["select"], "event_time": "from", "hot_window_seconds": 3600})
    api.post("/v1.0/sources/order/rows", {"rows": [{"select": 1, "from": iso(ago(5)), "group": "g"}]})
    assert counts(api, "order") == (1, 1)
    query_id = save(api, 'SELECT "select", "group" FROM "order"')["query_id"]
    assert serve(api, query_id, "select", 1) == [{"select": 1, "group": "g"}]


# -- 7. the demo is one example of sources -----------------------------------------------------------

def test_without_demo_sources_publish_declares_them_and_the_walkthrough_serves(own):
    app, api = own
    warehouse = service_of(app).warehouse
    assert all(warehouse.table_columns(table) is None for table in DEMO_TABLES)
    assert api.get("/v1.0/sources")["total"] == 0
    assert save(api, FOUR_TABLE_QUERY, 400)["details"]["undeclared_tables"]

    api.put("/v1.0/publish?n_flows=10&seed=3")
    listing = api.get("/v1.0/sources")
    assert sorted(s["name"] for s in listing["items"]) == sorted(DEMO_TABLES)
    assert all(warehouse.table_columns(table) is not None for table in DEMO_TABLES)
    assert counts(api, "quotes") == (10, 10)
    saved = save(api, FOUR_TABLE_QUERY)
    user_id = saved["data"][0]["user_id"]
    expected = sorted((r for r in saved["data"] if r["user_id"] == user_id), key=repr)
    assert sorted(serve(api, saved["query_id"], "user_id", user_id), key=repr) == expected
    # a second publish reuses the declared sources (version 1 stays)
    api.put("/v1.0/publish?n_flows=5&seed=4")
    assert api.get("/v1.0/sources/quotes")["versions"] == [1]
    assert counts(api, "quotes") == (15, 15)
