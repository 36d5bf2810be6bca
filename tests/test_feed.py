"""The embedded change feed: positions grow, entries come back exact and in order, across processes."""
from __future__ import annotations

import subprocess
import sys
import threading

import pyarrow as pa
import pytest

from common.errors import InvalidInput
from feed import FeedTailer, open_feed
from tests.conftest import JsonClient


def test_entries_come_back_in_order_and_exact(tmp_path):
    feed = open_feed(f"sqlite:///{tmp_path / 'feed.db'}")
    first = feed.append({"users": pa.table({"user_id": [1, 2]})})
    second = feed.append({"users": pa.table({"user_id": [3]}), "quotes": pa.table({"q": [0.5]})})
    assert 0 < first < second == feed.last_position()
    entries = feed.read_after(0)
    assert [(e.source, e.rows.to_pydict()) for e in entries] == [
        ("users", {"user_id": [1, 2]}), ("users", {"user_id": [3]}), ("quotes", {"q": [0.5]})]
    assert [e.position for e in feed.read_after(first)] == [e.position for e in entries[1:]]


def test_a_tailer_applies_another_process_s_appends_and_waits_for_a_position(tmp_path):
    path = tmp_path / "feed.db"
    feed = open_feed(f"sqlite:///{path}")
    applied: list[dict] = []
    tailer = FeedTailer(feed, lambda frames: applied.append({s: t.to_pydict() for s, t in frames.items()}))
    tailer.start()
    try:
        script = ("import pyarrow as pa; from feed import open_feed; "
                  f"print(open_feed('sqlite:///{path}').append({{'users': pa.table({{'user_id': [7]}})}}))")
        position = int(subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                                      check=True).stdout)
        assert tailer.wait_for(position, timeout=5)
        assert applied == [{"users": {"user_id": [7]}}]
        assert not tailer.wait_for(position + 1, timeout=0.05)
    finally:
        tailer.stop()


def test_an_unknown_or_in_memory_feed_url_is_the_service_s_error(tmp_path):
    for url in ("redis://127.0.0.1:6379/0", "sqlite:///:memory:"):
        with pytest.raises(InvalidInput) as refused:
            open_feed(url)
        assert refused.value.status == 400 and "FEED_URL" in refused.value.message


def _feed_rows(app) -> dict[str, list[int]]:
    """Source -> the first column's values the app's feed holds for it, in feed order."""
    feed = app.extensions["feature_service"].sources.feed
    held: dict[str, list] = {}
    for entry in feed.read_after(0, limit=100_000):
        held.setdefault(entry.source, []).extend(entry.rows.column(0).to_pylist())
    return held


def test_every_acknowledged_ingest_and_publish_is_in_the_feed_at_its_position(app, api):
    published = api.put("/v1.0/publish?n_flows=30&seed=5")
    feed = app.extensions["feature_service"].sources.feed
    assert published["position"] == feed.last_position() > 0
    users = app.extensions["feature_service"].warehouse.query("SELECT user_id FROM users")["user_id"].tolist()
    assert sorted(_feed_rows(app)["users"]) == sorted(users)  # the feed holds what the warehouse holds
    row = {"user_id": "u-new", "name": "Ada", "address": "Oslo", "creation_date": 1_700_000_000}
    ingested = api.post("/v1.0/sources/users/rows", {"rows": [row], "batch_id": "b1"})
    assert ingested["position"] == feed.last_position() > published["position"]
    assert _feed_rows(app)["users"][-1] == "u-new"
    again = api.post("/v1.0/sources/users/rows", {"rows": [row], "batch_id": "b1"})
    assert again["duplicate"] and again["position"] == ingested["position"] == feed.last_position()


def test_a_refused_ingest_reaches_neither_the_warehouse_nor_the_feed(app, api):
    feed = app.extensions["feature_service"].sources.feed
    before = feed.last_position()
    api.post("/v1.0/sources/users/rows", {"rows": [{"user_id": "not a number"}]}, status=400)
    assert feed.last_position() == before


def test_a_realtime_request_waits_for_its_min_position_else_503(make_app):
    app = make_app(MIN_POSITION_WAIT_SECONDS=0.1)
    api = JsonClient(app.test_client())
    saved = api.post("/v1.0/query/train?save=true", {"query": "SELECT user_id, name FROM users"})
    position = api.put("/v1.0/publish?n_flows=5&seed=1")["position"]
    sources = app.extensions["feature_service"].sources
    user = sources.realtime.query("SELECT user_id FROM users LIMIT 1")["user_id"][0]
    body = {"query_id": saved["query_id"], "index_key": "user_id", "index_value": user}
    sources.tailer = FeedTailer(sources.feed, lambda frames: None, start=position - 1)  # one entry behind
    try:
        refused = api.post(f"/v1.0/query/realtime?min_position={position}", body, status=503)
        assert refused["code"] == "position_not_applied" and refused["details"]["applied"] == position - 1
        api.post("/v1.0/query/realtime", body, headers={"X-Min-Position": str(position - 1)})
        assert sources.tailer.poll() == 1
        api.post(f"/v1.0/query/realtime?min_position={position}", body)
    finally:
        sources.tailer = None
