"""The Python client against a live `python -m app`, and against loopback stubs for retries and timeouts."""
from __future__ import annotations

import json
import socket
import textwrap
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import SimpleNamespace
from typing import Any, Iterator
from urllib.parse import parse_qs, urlsplit

import pandas as pd
import pyarrow as pa
import pytest
from pandas.api import types as ptypes

import client
from client.frames import records_frame
from common import errors
from tests.fixtures_server import free_port, live_server  # noqa: F401  (fixture)
from tests.walkthrough import FOUR_TABLE_QUERY, example_repo

BROKEN_ETL = textwrap.dedent('''\
    from extraction.etl_contract import BaseEtl


    class Etl(BaseEtl):
        def transform(self, df):
            raise ValueError("no quotes to score")
''')
# One-hot encoding: training sees every quote type, a single serving row only its own.
ONE_HOT_ETL = textwrap.dedent('''\
    import pandas as pd

    from extraction.etl_contract import BaseEtl


    class Etl(BaseEtl):
        def transform(self, df):
            return pd.concat([df[["user_id"]], pd.get_dummies(df["quote_type"], prefix="type")], axis=1)
''')
FEATURE_COLUMNS = ["user_id", "quote_type", "is_mobile", "minutes_to_bind", "paid_by_amex", "is_paid"]


def logical(frame: pd.DataFrame) -> list[str]:
    """Each column's kind of dtype, nullable or not: the types a caller programs against."""
    kinds = []
    for dtype in frame.dtypes:
        kinds.append("boolean" if ptypes.is_bool_dtype(dtype) else "integer" if ptypes.is_integer_dtype(dtype)
                     else "float" if ptypes.is_float_dtype(dtype) else "timestamp"
                     if ptypes.is_datetime64_any_dtype(dtype) else "string" if ptypes.is_string_dtype(dtype)
                     else str(dtype))
    return kinds


# -- the live service ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def store(live_server: str) -> Iterator[client.FeatureStore]:  # noqa: F811
    with client.FeatureStore(live_server, timeout=30) as fs:
        yield fs


@pytest.fixture(scope="module")
def trained(store: client.FeatureStore, tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    """The walkthrough through the client: publish, save the four-table join, register the example ETL."""
    repo = example_repo(tmp_path_factory.mktemp("client") / "etl-repo",
                        {"etls/broken.py": BROKEN_ETL, "etls/one_hot.py": ONE_HOT_ETL})
    published = store.publish(200, seed=7)
    query = store.query_train(FOUR_TABLE_QUERY, name="quote_join", save=True)
    assert query.query_id
    extract = store.extract_train(query.query_id, repo.file("etls/quote_features.py"), save=True)
    yield SimpleNamespace(repo=repo, published=published, query=query, extract=extract)
    repo.repo.close()


@pytest.mark.slow
def test_walkthrough_through_the_client(store, trained):
    assert trained.published["written"]["quotes"] == 200
    query, extract = trained.query, trained.extract
    assert query.query_id.startswith("q_") and query.etl_id is None
    assert list(query.data.columns) == [column["name"] for column in query.schema]
    assert dict(query.data.dtypes.astype(str)) == {
        "user_id": "str", "user_created": "int64", "quote_type": "str", "quote_device": "str", "is_binded": "bool",
        "is_paid": "bool", "seconds_to_bind": "int64", "payment_successful": "boolean", "card_type": "str",
        "policy_type": "str"}
    assert extract.etl_id.startswith("e_") and extract.query_id == query.query_id
    assert list(extract.data.columns) == FEATURE_COLUMNS
    assert logical(extract.data) == ["string", "string", "boolean", "float", "boolean", "boolean"]

    paid = query.data[query.data["payment_successful"].fillna(False)]["user_id"].iloc[0]
    unpaid = query.data[query.data["payment_successful"].isna()]["user_id"].iloc[0]
    for user in (paid, unpaid):
        raw = store.query_realtime(query.query_id, "user_id", user)
        expected_raw = query.data[query.data["user_id"] == user].reset_index(drop=True)
        pd.testing.assert_frame_equal(raw, expected_raw, check_dtype=False)
        assert logical(raw) == logical(expected_raw)
        features = store.extract_realtime(query.query_id, extract.etl_id, "user_id", user)
        expected = extract.data[extract.data["user_id"] == user].reset_index(drop=True)
        pd.testing.assert_frame_equal(features, expected)  # same values, columns, order and dtypes


@pytest.mark.slow
def test_saving_again_returns_the_same_id(store, trained):
    reformatted = "-- the same join\n" + FOUR_TABLE_QUERY.replace("SELECT", "select").replace("\n", "\n   ")
    again = store.query_train(reformatted, save=True, include_data=False)
    assert again.query_id == trained.query.query_id and again.data is None
    assert again.schema == trained.query.schema
    etl_again = store.extract_train(trained.query.query_id, str(trained.repo.file("etls/quote_features.py")),
                                    save=True, include_data=False)
    assert etl_again.etl_id == trained.extract.etl_id and etl_again.data is None
    structured = store.extract_train(trained.query.query_id, repo=str(trained.repo.path), ref="v1",
                                     path="etls/quote_features.py")  # not saved: no id, and no schema to type by
    assert structured.etl_id is None and list(structured.data.columns) == FEATURE_COLUMNS


@pytest.mark.slow
def test_catalog_reads_and_health(store, trained, live_server):  # noqa: F811
    query_id, etl_id = trained.query.query_id, trained.extract.etl_id
    page = store.queries(limit=500)
    assert query_id in page.frame()["query_id"].tolist() and page.total >= 1 and page.limit == 500
    etls = store.etls(query_id=query_id)
    assert etl_id in [item["etl_id"] for item in etls.items]
    assert {item["query_id"] for item in etls.items} == {query_id}
    assert store.query(query_id)["name"] == "quote_join"
    record = store.etl(etl_id)
    assert "class Etl" in record["code"] and record["source"]["commit"] == trained.repo.head_sha
    with client.FeatureStore(live_server + "/v1.0/") as prefixed:
        assert prefixed.url == live_server + "/v1.0"
        assert prefixed.health()["status"] == "ok"


@pytest.mark.slow
def test_no_hot_rows_is_entity_not_found_on_both_lookups(store, trained):
    lookups = [lambda: store.query_realtime(trained.query.query_id, "user_id", "nobody"),
               lambda: store.extract_realtime(trained.query.query_id, trained.extract.etl_id, "user_id", "nobody")]
    for lookup in lookups:
        with pytest.raises(client.NotFound) as caught:
            lookup()
        assert caught.value.code == "entity_not_found" and caught.value.status == 404
        assert caught.value.details["index_value"] == "nobody"


@pytest.mark.slow
def test_timestamps_become_datetimes(store, trained):
    result = store.query_train("SELECT user_id, to_timestamp(creation_date) AS created FROM users LIMIT 5")
    assert {"name": "created", "type": "timestamp"} in result.schema
    assert ptypes.is_datetime64_any_dtype(result.data["created"]) and len(result.data) == 5


@pytest.mark.slow
def test_unknown_id_is_not_found(store, trained):
    with pytest.raises(errors.NotFound) as caught:
        store.query("q_" + "0" * 16)
    assert isinstance(caught.value, client.NotFound)
    assert (caught.value.code, caught.value.status) == ("not_found", 404) and caught.value.message


@pytest.mark.slow
def test_a_write_statement_is_an_invalid_query(store, trained):
    with pytest.raises(client.InvalidQuery) as caught:
        store.query_train("DELETE FROM users", save=True)
    assert isinstance(caught.value, client.InvalidInput)
    assert (caught.value.code, caught.value.status) == ("invalid_query", 400)


@pytest.mark.slow
def test_schema_mismatch_exposes_the_diff(store, trained):
    with pytest.raises(client.TrainServeMismatch) as refused:  # the registration replay sees it first
        store.extract_train(trained.query.query_id, trained.repo.file("etls/one_hot.py"), save=True)
    assert refused.value.status == 409 and refused.value.details["consistency"]["mismatched_columns"]
    etl = store.extract_train(trained.query.query_id, trained.repo.file("etls/one_hot.py"), save=True,
                              allow_mismatch=True)
    assert len(etl.schema) == 5  # user_id and one column per quote type
    user = etl.data["user_id"].iloc[0]
    with pytest.raises(client.SchemaMismatch) as caught:
        store.extract_realtime(trained.query.query_id, etl.etl_id, "user_id", user)
    error = caught.value
    assert isinstance(error, errors.SchemaMismatch) and (error.code, error.status) == ("schema_mismatch", 409)
    assert set(error.diff) == {"missing", "extra", "type_changed"}
    assert len(error.diff["missing"]) == 3 and set(error.diff["missing"]) < {c["name"] for c in etl.schema}
    assert error.diff["extra"] == [] and error.diff["type_changed"] == []
    assert error.details["stage"] == "etl" and error.details["etl_id"] == etl.etl_id


@pytest.mark.slow
def test_a_raising_etl_is_etl_failed_with_its_message(store, trained):
    with pytest.raises(client.EtlFailed) as caught:
        store.extract_train(trained.query.query_id, trained.repo.file("etls/broken.py"))
    assert caught.value.status == 422 and "no quotes to score" in caught.value.message


CLICKS = [{"name": "user_id", "type": "string"}, {"name": "at", "type": "timestamp"},
          {"name": "amount", "type": "float"}, {"name": "clicks", "type": "integer"}]


def clicks_frame(users: list[str]) -> pd.DataFrame:
    """Three clicks: Paris time (12:00Z, 13:30Z, next day 07:00Z), a NaN amount and a missing click count."""
    at = pd.to_datetime(["2024-05-01 14:00", "2024-05-01 15:30", "2024-05-02 09:00"]).tz_localize("Europe/Paris")
    return pd.DataFrame({"user_id": users, "at": at, "amount": [1.5, float("nan"), 3.0],
                         "clicks": pd.array([2, None, 7], dtype="Int64")})


@pytest.mark.slow
def test_a_source_declared_ingested_and_read_back(store):
    declared = store.declare_source("client_clicks", columns=CLICKS, entity_keys=["user_id"], event_time="at",
                                    description="clicks", tags=["client"])
    assert declared["version"] == 1 and declared["columns"][1] == {"name": "at", "type": "timestamp",
                                                                   "nullable": False}
    assert store.declare_source("client_clicks", columns=CLICKS, entity_keys=["user_id"], event_time="at",
                                description="clicks", tags=["client"]) == declared  # the same definition

    frame = clicks_frame(["u1", "u1", "u2"])
    written = store.ingest("client_clicks", frame, batch_id="clicks-1")
    assert (written["rows"], written["realtime_rows"], written["duplicate"]) == (3, 3, False)
    assert (written["min_event_time"], written["max_event_time"]) == ("2024-05-01T12:00:00Z", "2024-05-02T07:00:00Z")
    assert store.ingest("client_clicks", frame, batch_id="clicks-1")["duplicate"] is True
    chunked = store.ingest("client_clicks", clicks_frame(["u3"] * 3), batch_id="clicks-2", chunk_rows=2)
    assert (chunked["rows"], chunked["batch_id"], chunked["duplicate"]) == (3, "clicks-2", False)
    assert store.ingest("client_clicks", clicks_frame(["u3"] * 3), batch_id="clicks-2", chunk_rows=2)["duplicate"]
    row = {"user_id": "u4", "at": pd.Timestamp("2024-05-03T10:00Z"), "amount": float("nan"), "clicks": None}
    assert store.ingest_rows("client_clicks", [row], batch_id="rows-1")["rows"] == 1
    assert store.ingest_rows("client_clicks", [row], batch_id="rows-1")["duplicate"] is True
    described = store.source("client_clicks")
    assert described["warehouse"]["rows"] == 7 and described["versions"] == [1]
    assert "client_clicks" in [item["name"] for item in store.sources(limit=500).items]

    query = store.query_train("SELECT user_id, at, amount, clicks FROM client_clicks", name="clicks", save=True)
    assert logical(query.data) == ["string", "timestamp", "float", "integer"] and len(query.data) == 7
    served = store.query_realtime(query.query_id, "user_id", "u1").sort_values("at", ignore_index=True)
    assert served["at"].tolist() == [pd.Timestamp("2024-05-01T12:00:00Z"), pd.Timestamp("2024-05-01T13:30:00Z")]
    assert served["amount"].isna().tolist() == [False, True] and served["clicks"].tolist() == [2, pd.NA]
    assert logical(served) == logical(query.data)

    wider = store.declare_source("client_clicks", columns=[*CLICKS, {"name": "page", "type": "string"}],
                                 entity_keys=["user_id"], event_time="at", description="clicks", tags=["client"])
    assert wider["version"] == 2  # a new nullable column: the next version
    with pytest.raises(client.SourceIncompatible) as caught:
        store.declare_source("client_clicks", columns=[*CLICKS[:3], {"name": "clicks", "type": "string"}],
                             entity_keys=["user_id"], event_time="at")
    error = caught.value
    assert isinstance(error, errors.SourceIncompatible) and (error.code, error.status) == ("source_incompatible", 409)
    assert error.details["diff"]["type_changed"] == [{"column": "clicks", "from": "integer", "to": "string"}]
    assert error.details["dependent_queries"] == [query.query_id]


@pytest.mark.slow
def test_source_errors_are_the_services_classes(store):
    with pytest.raises(client.NotFound) as caught:
        store.source("no_such_source")
    assert (caught.value.code, caught.value.status) == ("source_not_found", 404)
    with pytest.raises(client.NotFound):
        store.ingest("no_such_source", clicks_frame(["u1"] * 3))
    store.declare_source("client_naive", columns=CLICKS, entity_keys=["user_id"], event_time="at")
    with pytest.raises(client.InvalidInput, match="time zone"):
        store.ingest("client_naive", clicks_frame(["u1"] * 3).assign(at=lambda f: f["at"].dt.tz_localize(None)))
    with pytest.raises(client.InvalidInput, match="outside the load directory"):
        store.load("client_naive", "../elsewhere.parquet")


def test_etl_location_is_etl_path_or_repo_and_path():
    bad = ({}, {"etl_path": "a.py", "repo": "r", "path": "a.py"}, {"repo": "r"}, {"etl_path": "a.py", "ref": "v1"})
    with client.FeatureStore(f"http://127.0.0.1:{free_port()}") as fs:
        for kwargs in bad:
            with pytest.raises(ValueError):
                fs.extract_train("q_" + "0" * 16, **kwargs)


# -- retries and timeouts, against loopback stubs --------------------------------------------------

class StubServer:
    """A loopback HTTP server that records each request and answers from a script (the last reply repeats)."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.replies: list[tuple[int, str, bytes]] = []
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                stub.requests.append({"method": self.command, "path": self.path, "headers": dict(self.headers),
                                      "body": self.rfile.read(length)})
                status, content_type, body = stub.replies[0] if len(stub.replies) == 1 else stub.replies.pop(0)
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = do_PUT = _answer

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def reply(self, *replies: tuple[int, Any]) -> None:
        """Answer with these (status, JSON body or str) in turn, then the last one forever."""
        self.requests.clear()
        self.replies = [(status, "application/json", json.dumps(body).encode()) if not isinstance(body, str)
                        else (status, "text/html", body.encode()) for status, body in replies]

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def error(code: str, message: str = "stub", **details: Any) -> dict[str, Any]:
    return {"code": code, "message": message, "details": details}


DOWN = (503, error("backend_unavailable", "catalog is unavailable: gone", backend="catalog"))
PAGE = {"items": [], "total": 0, "offset": 0, "limit": 50}
REALTIME = {"query_id": "q_" + "0" * 16, "index_key": "user_id", "index_value": "u1"}


@pytest.fixture(scope="module")
def stub() -> Iterator[StubServer]:
    server = StubServer()
    yield server
    server.stop()


@pytest.fixture
def fs(stub: StubServer) -> Iterator[client.FeatureStore]:
    with client.FeatureStore(stub.url, retries=2, backoff=0.01) as store:
        yield store


def test_reads_are_retried_on_503_then_raise_the_typed_error(stub, fs):
    stub.reply(DOWN)
    with pytest.raises(client.BackendUnavailable) as caught:
        fs.queries()
    assert caught.value.details == {"backend": "catalog"} and caught.value.status == 503
    assert [r["method"] for r in stub.requests] == ["GET"] * 3


def test_realtime_lookups_are_retried_and_recover(stub, fs):
    schema = [{"name": "user_id", "type": "string"}, {"name": "n", "type": "integer"}]
    stub.reply(DOWN, (504, "<html>Gateway Timeout</html>"), (200, {"data": [{"n": 1, "user_id": "u1"}]}),
               (200, {"query_id": REALTIME["query_id"], "schema": schema}), (200, {"data": []}))
    frame = fs.query_realtime(**REALTIME)  # then the query's schema, fetched once, types the rows
    assert frame.to_dict("records") == [{"user_id": "u1", "n": 1}] and logical(frame) == ["string", "integer"]
    assert logical(fs.query_realtime(**REALTIME)) == ["string", "integer"]  # the cached schema, no new fetch
    assert [r["path"] for r in stub.requests] == (["/v1.0/query/realtime"] * 3 + ["/v1.0/queries/" + "q_" + "0" * 16]
                                                  + ["/v1.0/query/realtime"])
    assert json.loads(stub.requests[0]["body"]) == REALTIME


def test_publish_is_attempted_exactly_once(stub, fs):
    stub.reply(DOWN)
    with pytest.raises(client.BackendUnavailable):
        fs.publish(10, seed=1)
    assert [(r["method"], r["path"]) for r in stub.requests] == [("PUT", "/v1.0/publish?n_flows=10&seed=1")]


def test_a_4xx_is_never_retried(stub, fs):
    stub.reply((400, error("invalid_query", "not a SELECT")))
    with pytest.raises(client.InvalidQuery, match="not a SELECT"):
        fs.query_train("DELETE FROM users")
    assert len(stub.requests) == 1


def test_an_unknown_code_keeps_its_code_and_status(stub, fs):
    stub.reply((418, error("teapot", "short and stout", spout=True)))
    with pytest.raises(client.ServiceError) as caught:
        fs.health()
    assert (caught.value.code, caught.value.status, caught.value.details) == ("teapot", 418, {"spout": True})
    assert isinstance(caught.value, client.FeatureStoreError) and len(stub.requests) == 1


def test_a_proxy_page_is_an_unexpected_response(stub, fs):
    stub.reply((502, "<html><body>Bad Gateway</body></html>"))
    with pytest.raises(client.UnexpectedResponse) as caught:
        fs.etl("e_" + "0" * 16)
    assert caught.value.status == 502 and "Bad Gateway" in caught.value.text
    assert len(stub.requests) == 3


INGESTED = {"source": "clicks", "version": 1, "rows": 2, "realtime_rows": 2, "min_event_time": "2024-05-01T12:00:00Z",
            "max_event_time": "2024-05-01T13:00:00Z", "batch_id": None, "duplicate": False}


def sent_batch_ids(stub: StubServer) -> list[str | None]:
    return [parse_qs(urlsplit(r["path"]).query).get("batch_id", [None])[0] for r in stub.requests]


def test_ingest_is_retried_only_with_a_batch_id(stub, fs):
    frame = clicks_frame(["u1", "u1", "u2"])
    for write in (lambda: fs.ingest("clicks", frame), lambda: fs.ingest_rows("clicks", [{"user_id": "u1"}]),
                  lambda: fs.load("clicks", "clicks.parquet")):
        stub.reply(DOWN)
        with pytest.raises(client.BackendUnavailable):
            write()
        assert len(stub.requests) == 1
    stub.reply(DOWN, (200, INGESTED))
    assert fs.ingest("clicks", frame, batch_id="b1") == INGESTED
    assert [r["path"].split("?")[0] for r in stub.requests] == ["/v1.0/sources/clicks/rows"] * 2
    assert sent_batch_ids(stub) == ["b1", "b1"]
    assert stub.requests[0]["headers"]["Content-Type"] == "application/vnd.apache.arrow.stream"
    sent = pa.ipc.open_stream(stub.requests[0]["body"]).read_all()
    assert sent.schema.field("at").type == pa.timestamp("us", tz="Europe/Paris")
    assert sent.column("amount").to_pylist() == [1.5, None, 3.0] and sent.column("clicks").to_pylist() == [2, None, 7]
    stub.reply(DOWN, (200, INGESTED))
    fs.ingest_rows("clicks", [{"user_id": "u1", "at": frame["at"][0], "amount": float("nan")}], batch_id="b2")
    assert len(stub.requests) == 2 and json.loads(stub.requests[1]["body"]) == {
        "rows": [{"user_id": "u1", "at": "2024-05-01T14:00:00+02:00", "amount": None}], "batch_id": "b2"}


def test_a_large_frame_goes_in_chunks_of_their_own_batch_ids(stub, fs):
    stub.reply((200, INGESTED), (200, {**INGESTED, "min_event_time": "2024-05-01T11:00:00Z", "duplicate": True}),
               (200, {**INGESTED, "rows": 1, "realtime_rows": 0, "max_event_time": "2024-05-01T13:00:00.5Z"}))
    frame = pd.concat([clicks_frame(["u1", "u2", "u3"]), clicks_frame(["u4", "u5", "u6"])], ignore_index=True)
    answer = fs.ingest("clicks", frame.iloc[:5], batch_id="big", chunk_rows=2)
    assert sent_batch_ids(stub) == ["big:0", "big:1", "big:2"]
    assert [pa.ipc.open_stream(r["body"]).read_all().num_rows for r in stub.requests] == [2, 2, 1]
    assert answer == {**INGESTED, "rows": 5, "realtime_rows": 4, "min_event_time": "2024-05-01T11:00:00Z",
                      "max_event_time": "2024-05-01T13:00:00.5Z", "batch_id": "big", "duplicate": False}
    fs.ingest("clicks", frame.iloc[:2], batch_id="small", chunk_rows=2)
    assert sent_batch_ids(stub)[3:] == ["small"]  # one call: the batch id as given


def test_declaring_a_source_is_retried_and_adopts_without_columns(stub, fs):
    record = {"name": "clicks", "version": 1, "table": "raw.clicks"}
    stub.reply(DOWN, (201, record))
    assert fs.declare_source("clicks", table="raw.clicks", entity_keys=["user_id"], event_time="at") == record
    assert len(stub.requests) == 2 and json.loads(stub.requests[1]["body"]) == {
        "name": "clicks", "table": "raw.clicks", "entity_keys": ["user_id"], "event_time": "at", "kind": "table",
        "description": "", "tags": [], "owner": ""}
    stub.reply((409, error("source_incompatible", "not compatible", diff={"removed": ["x"]})))
    with pytest.raises(client.SourceIncompatible) as caught:
        fs.declare_source("clicks", columns=CLICKS, entity_keys=["user_id"], event_time="at")
    assert caught.value.details["diff"] == {"removed": ["x"]} and len(stub.requests) == 1


def test_the_api_key_is_a_bearer_token_on_one_session(stub):
    stub.reply((200, PAGE))
    with client.FeatureStore(stub.url + "/v1.0", api_key="s3cret") as fs:
        fs.queries()
        fs.etls(query_id="q_" + "1" * 16)
    assert [r["headers"]["Authorization"] for r in stub.requests] == ["Bearer s3cret"] * 2
    assert stub.requests[1]["path"] == "/v1.0/etls?offset=0&limit=50&query_id=q_" + "1" * 16
    with client.FeatureStore(stub.url) as fs:
        fs.queries()
    assert "Authorization" not in stub.requests[2]["headers"]


def test_a_closed_port_is_unreachable_after_every_attempt():
    with client.FeatureStore(f"http://127.0.0.1:{free_port()}", retries=3, backoff=0.02) as fs:
        started = time.monotonic()
        with pytest.raises(client.ServiceUnreachable) as caught:
            fs.health()
        assert caught.value.attempts == 4 and time.monotonic() - started >= 0.02 + 0.04 + 0.08
        assert isinstance(caught.value, ConnectionError) and caught.value.status == 0
        with pytest.raises(client.ServiceUnreachable) as caught:
            fs.publish(1)
        assert caught.value.attempts == 1


def test_a_silent_server_fails_within_the_timeout():
    with socket.socket() as silent:  # accepts connections (the kernel's backlog) and never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        with client.FeatureStore(f"http://127.0.0.1:{silent.getsockname()[1]}", timeout=0.5, retries=3) as fs:
            started = time.monotonic()
            with pytest.raises(client.ServiceTimeout) as caught:
                fs.queries()
            elapsed = time.monotonic() - started
    assert 0.5 <= elapsed < 1.5 and isinstance(caught.value, client.ServiceUnreachable)


# -- typing rows by the schema --------------------------------------------------------------------

def test_an_empty_result_keeps_its_typed_columns():
    schema = [{"name": "n", "type": "integer"}, {"name": "ok", "type": "boolean"}, {"name": "at", "type": "timestamp"},
              {"name": "x", "type": "float"}, {"name": "s", "type": "string"}]
    frame = records_frame([], schema)
    assert list(frame.columns) == ["n", "ok", "at", "x", "s"] and frame.empty
    assert logical(frame) == ["integer", "boolean", "timestamp", "float", "string"]


def test_nulls_make_nullable_columns_in_schema_order():
    schema = [{"name": "n", "type": "integer"}, {"name": "ok", "type": "boolean"}, {"name": "at", "type": "timestamp"}]
    frame = records_frame([{"ok": None, "n": None, "at": "2024-05-01T12:00:00+00:00", "more": 1},
                           {"ok": True, "n": 3, "at": None, "more": 2}], schema)
    assert list(frame.columns) == ["n", "ok", "at", "more"]
    assert [str(dtype) for dtype in frame.dtypes[:2]] == ["Int64", "boolean"]
    assert frame["n"].tolist() == [pd.NA, 3] and frame["at"].iloc[0] == pd.Timestamp("2024-05-01T12:00:00Z")


@pytest.mark.slow
def test_feature_sets_and_skew_through_the_client(store, trained):
    query_id, etl_id = trained.query.query_id, trained.extract.etl_id
    v1 = store.create_feature_set("client-conversion", query_id, etl_id, features=["is_mobile", "minutes_to_bind"])
    assert v1["version"] == 1
    assert store.create_feature_set("client-conversion", query_id, etl_id,
                                    features=["is_mobile", "minutes_to_bind"]) == v1
    store.set_stage("client-conversion", 1, "production")
    assert [v["stage"] for v in store.feature_set_versions("client-conversion")] == ["production"]
    user = trained.extract.data["user_id"].iloc[0]
    online = store.feature_set_realtime("client-conversion", user)
    offline = trained.extract.data[trained.extract.data["user_id"] == user][["is_mobile", "minutes_to_bind"]]
    pd.testing.assert_frame_equal(online, offline.reset_index(drop=True))
    assert online.attrs["version"] == 1
    training = store.feature_set_train("client-conversion")
    assert list(training.columns) == ["is_mobile", "minutes_to_bind"] and len(training) == len(trained.extract.data)
    report = store.skew(etl_id)
    assert report["etl_id"] == etl_id and report["outcomes"]["served"] >= 1
    with pytest.raises(client.NotFound):
        store.feature_set_realtime("no-such-set", user)


@pytest.mark.slow
def test_training_sets_as_arrow_through_the_client(store, trained):
    as_arrow = store.extract_train(trained.query.query_id, trained.repo.file("etls/quote_features.py"),
                                   save=True, arrow=True)
    assert as_arrow.etl_id == trained.extract.etl_id
    pd.testing.assert_frame_equal(as_arrow.data, trained.extract.data, check_dtype=False)
    rows = store.query_train(FOUR_TABLE_QUERY, arrow=True)
    assert rows.query_id is None and len(rows.data) == len(trained.query.data)
