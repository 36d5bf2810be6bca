"""One slow lookup must not freeze serving: readers of the realtime store do not wait for one another, a
lookup has its own short limit (LOOKUP_TIMEOUT_SECONDS), and a query whose lookups are not bounded by the
key is flagged when it is saved.

The slow statement runs until its limit (seconds); the other calls take milliseconds. "Not serialized" is
shown by order, not by timing: every other call has finished while the slow one is still running.
"""
from __future__ import annotations

import threading
import time
from typing import Iterator

import pytest

from common.errors import InvalidQuery
from demo.flows import generate_flows
from demo.sources import with_demo_tables
from realtime import open_realtime_store
from realtime.base import RealtimeStore
from sql.prepared import prepare_query
from tests.conftest import JsonClient
from tests.walkthrough import FOUR_TABLE_QUERY

SLOW_LIMIT = 8.0  # seconds the slow lookup runs before the store stops it
# A cartesian product whose key no index reaches: a lookup by k computes every combination (300^5), while
# the warehouse's first rows of it (what a save samples) come at once.
CARTESIAN = ("SELECT length(a.quote_id || b.quote_id || c.quote_id || d.quote_id || e.quote_id) AS k, "
             "a.user_id FROM quotes a, quotes b, quotes c, quotes d, quotes e")


@pytest.fixture(params=["sqlite:///:memory:", "duckdb:///:memory:"])
def store(request: pytest.FixtureRequest) -> Iterator[RealtimeStore]:
    opened = open_realtime_store(request.param, statement_timeout=SLOW_LIMIT)
    with_demo_tables(realtime=opened)
    opened.append(generate_flows(300, seed=4))
    yield opened
    opened.close()


def test_lookups_and_ping_do_not_wait_for_a_slow_lookup(store: RealtimeStore) -> None:
    slow, quick = prepare_query(CARTESIAN), prepare_query(FOUR_TABLE_QUERY)
    for table, column in quick.join_columns(store.tables()):
        store.index(table, column)
    user = store.query("SELECT user_id FROM users LIMIT 1")["user_id"].iloc[0]
    outcome: list[BaseException] = []
    started = threading.Event()

    def run_slow() -> None:
        started.set()
        try:
            store.lookup(slow, "k", -1, 10)
        except InvalidQuery as error:
            outcome.append(error)

    thread = threading.Thread(target=run_slow)
    thread.start()
    started.wait()
    time.sleep(0.5)  # the slow statement is running now
    served = [len(store.lookup(quick, "user_id", user, 100)) for _ in range(20)]
    store.ping()
    slow_still_running = thread.is_alive()
    thread.join(SLOW_LIMIT + 30)
    assert slow_still_running, "a lookup or ping waited for the slow lookup to end"
    assert served == [served[0]] * 20 and served[0] >= 1
    assert [error.code for error in outcome] == ["query_timeout"]


def test_the_realtime_store_gets_the_lookup_limit_not_the_query_limit(make_app, tmp_path) -> None:
    app = make_app(QUERY_TIMEOUT_SECONDS=30.0, LOOKUP_TIMEOUT_SECONDS=0.5)
    api = JsonClient(app.test_client())
    api.put("/v1.0/publish?n_flows=300&seed=5")
    saved = api.post("/v1.0/query/train?save=true&include_data=false", {"query": CARTESIAN})
    answer = api.post("/v1.0/query/realtime", {"query_id": saved["query_id"], "index_key": "k",
                                               "index_value": -1}, 400)
    assert answer["code"] == "query_timeout" and answer["details"] == {"timeout_seconds": 0.5}
    assert api.get("/v1.0/health")["status"] == "ok"
    # the lookup limit is never longer than the statement limit
    assert make_app(tmp_path / "other", QUERY_TIMEOUT_SECONDS=0.2, LOOKUP_TIMEOUT_SECONDS=5.0).extensions[
        "feature_service"].realtime.statement_timeout == 0.2


@pytest.mark.parametrize("realtime_url", ["sqlite:///:memory:", "duckdb:///:memory:"])
def test_a_query_whose_lookup_is_not_key_bounded_is_flagged_at_save(make_app, realtime_url: str) -> None:
    api = JsonClient(make_app(REALTIME_URL=realtime_url).test_client())
    api.put("/v1.0/publish?n_flows=20&seed=6")
    cartesian = "SELECT q.user_id, t.transaction_id FROM quotes q CROSS JOIN transactions t LIMIT 10"
    warnings = api.post("/v1.0/query/train?save=true&include_data=false", {"query": cartesian})["warnings"]
    flagged = [w for w in warnings if w["code"] == "lookup_not_key_bounded"]
    assert [(w["index_key"], w["source"]) for w in flagged] == [("user_id", "quotes"), ("user_id", "transactions")]
    assert "LOOKUP_TIMEOUT_SECONDS" in flagged[0]["message"]
    for bounded in (FOUR_TABLE_QUERY, "SELECT user_id, count(*) AS n FROM transactions GROUP BY user_id"):
        saved = api.post("/v1.0/query/train?save=true&include_data=false", {"query": bounded})
        assert "warnings" not in saved or not [w for w in saved["warnings"] if w["code"] == "lookup_not_key_bounded"]


def test_sqlite_request_rows_are_seen_only_by_their_own_lookup(make_app) -> None:
    """Request rows live in each reader connection's own temporary tables: another reader sees none."""
    from realtime.sqlite_store import SqliteRealtimeStore

    store = SqliteRealtimeStore()
    try:
        store.register(_request_source())
        prepared = prepare_query("SELECT k, v FROM req")
        import pyarrow as pa

        rows = {"req": pa.table({"k": ["a"], "v": [1], "at": [0]})}
        assert store.lookup(prepared, "k", "a", 10, rows)["v"].tolist() == [1]
        assert store.lookup(prepared, "k", "a", 10).empty  # the next lookup, on the same connection
        with store._readers.reader() as other:  # a second connection, while the first is idle
            assert other.connection.execute("SELECT count(*) FROM req").fetchone() == (0,)
    finally:
        store.close()


def _request_source():  # noqa: ANN202 - a SourceRecord
    from dataclasses import replace

    from sources.definition import parse_source

    declared = parse_source({"name": "req", "kind": "request", "columns": [
        {"name": "k", "type": "string"}, {"name": "v", "type": "integer"}, {"name": "at", "type": "integer"}],
        "entity_keys": ["k"], "event_time": "at"},
        created_by="test", created_at="2024-01-01T00:00:00.000+00:00")
    return replace(declared, version=1)
