"""The change feed's contract on both backends (the embedded SQLite file and Redis Streams): positions
grow, entries come back exact, in order and once, across threads and processes; and the service's use of it."""
from __future__ import annotations

import datetime as dt
import subprocess
import sys
import threading
import time
from typing import Iterator

import pyarrow as pa
import pytest
import redis

from common.errors import InvalidInput
from demo.sources import demo_sources
from feed import ChangeFeed, FeedGap, FeedTailer, open_feed
from feed.base import table_bytes
from realtime import open_realtime_store
from tests.conftest import JsonClient
from tests.server_process import free_port, live_process
from tests.test_workers import _call, _lookup, _until_every_process, _user


@pytest.fixture(params=["sqlite", "redis"])
def feed_url(request, tmp_path) -> str:
    """A fresh feed's URL on each backend: a new SQLite file, or Redis under a unique prefix (deleted after)."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'feed.db'}"
    return f"{request.getfixturevalue('redis_server_url')}?prefix={request.getfixturevalue('redis_prefix')}"


@pytest.fixture
def feed(feed_url) -> Iterator[ChangeFeed]:
    opened = open_feed(feed_url)
    yield opened
    opened.close()


def test_entries_come_back_in_order_and_exact(feed):
    assert feed.last_position() == 0 and feed.read_after(0) == []
    users = pa.table({"user_id": ["a", None], "score": [0.1, float("nan")],
                      "seen": pa.array([dt.datetime(2024, 1, 1, 0, 0, 0, 1)], pa.timestamp("us", "UTC")).take([0, 0]),
                      "blob": pa.array([b"\x00\xff", b""], pa.binary())}).replace_schema_metadata({"fs_version": "3"})
    first = feed.append({"users": users})
    second = feed.append({"users": pa.table({"user_id": ["c"]}), "quotes": pa.table({"q": [0.5]})})
    assert 0 < first < second == feed.last_position()
    entries = feed.read_after(0)
    assert [(e.source, e.rows.to_pydict()) for e in entries[1:]] == [("users", {"user_id": ["c"]}),
                                                                    ("quotes", {"q": [0.5]})]
    assert table_bytes(entries[0].rows) == table_bytes(users)  # byte-exact, schema metadata included
    assert [e.position for e in entries] == [first, second - 1, second]
    assert [e.position for e in feed.read_after(first)] == [e.position for e in entries[1:]]
    assert feed.read_after(second) == []


def test_pages_of_a_read_hold_every_entry_once_in_order(feed):
    positions = [feed.append({"users": pa.table({"n": [n]})}) for n in range(7)]
    seen: list[tuple[int, int]] = []
    while page := feed.read_after(seen[-1][0] if seen else 0, limit=3):
        assert len(page) <= 3
        seen += [(e.position, e.rows.column(0)[0].as_py()) for e in page]
    assert seen == list(zip(positions, range(7)))


def test_concurrent_writers_get_growing_positions_and_each_append_stays_together(feed_url):
    def write(writer: int, answers: list[int]) -> None:
        own = open_feed(feed_url)  # each writer its own connection, as separate processes have
        try:
            for n in range(200):
                answers.append(own.append({"a": pa.table({"w": [writer], "n": [n]}),
                                           "b": pa.table({"w": [writer], "n": [n]})}))
        finally:
            own.close()

    answered: dict[int, list[int]] = {writer: [] for writer in range(4)}
    threads = [threading.Thread(target=write, args=(writer, answers)) for writer, answers in answered.items()]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    reader = open_feed(feed_url)
    try:
        entries = reader.read_after(0, limit=10_000)
    finally:
        reader.close()
    positions = [e.position for e in entries]
    assert len(entries) == 1600 and positions == sorted(set(positions))
    by_position = {e.position: (e.source, e.rows.to_pydict()) for e in entries}
    for writer, answers in answered.items():
        assert answers == sorted(answers)  # one writer's positions grow too
        for n, last in enumerate(answers):  # an append's two entries are adjacent: nothing came between
            row = {"w": [writer], "n": [n]}
            assert by_position[last - 1] == ("a", row) and by_position[last] == ("b", row)


def test_a_tailer_applies_another_process_s_appends_to_a_realtime_store(feed_url):
    store = open_realtime_store("sqlite:///:memory:")
    store.register(next(s for s in demo_sources() if s.name == "users"))
    feed = open_feed(feed_url)
    tailer = FeedTailer(feed, store.append)
    tailer.start()
    try:
        script = ("import sys, pyarrow as pa; from feed import open_feed; feed = open_feed(sys.argv[1])\n"
                  "for n in range(40):\n"
                  "    last = feed.append({'users': pa.table({'user_id': [f'u{n}'], 'name': ['Ada'], "
                  "'address': [None], 'creation_date': [1_700_000_000 + n]})})\n"
                  "print(last)")
        last = int(subprocess.run([sys.executable, "-c", script, feed_url], capture_output=True, text=True,
                                  check=True, timeout=60).stdout)
        assert tailer.wait_for(last, timeout=10)
        held = store.query("SELECT user_id, count(*) AS n FROM users GROUP BY user_id ORDER BY creation_date")
        assert held["user_id"].tolist() == [f"u{n}" for n in range(40)] and set(held["n"]) == {1}
        assert not tailer.wait_for(last + 1, timeout=0.05)
    finally:
        tailer.stop()
        feed.close()
        store.close()


def test_a_redis_position_never_goes_back_and_the_feed_keeps_one_key(redis_server_url, redis_prefix):
    feed = open_feed(f"{redis_server_url}?prefix={redis_prefix}")
    try:
        feed.append({"users": pa.table({"n": [1]})})
        second = feed.append({"users": pa.table({"n": [2]})})
        feed.client.xdel(f"{redis_prefix}:feed", f"0-{second}")  # the newest entry, deleted by hand
        assert feed.last_position() == second
        assert feed.append({"users": pa.table({"n": [3]})}) == second + 1
        assert [key.decode() for key in feed.client.scan_iter(match=f"{redis_prefix}:*")] == [f"{redis_prefix}:feed"]
    finally:
        feed.close()


def test_two_serving_processes_share_a_redis_feed(tmp_path, redis_server_url, redis_prefix):
    url = f"{redis_server_url}?prefix={redis_prefix}"
    with live_process(tmp_path / "data", startup_seconds=60, WORKERS="2", FEED_URL=url) as live:
        saved = _call("POST", f"{live.base}/v1.0/query/train?save=true",
                      json={"query": "SELECT user_id, name FROM users"})
        assert saved.status_code == 200, saved.text
        for n in range(2):
            position = _user(live.base, f"u-{n}", f"name {n}")
            answers = _until_every_process(_lookup(live.base, saved.json()["query_id"], f"u-{n}", position), 2)
            for response in answers.values():
                assert response.json()["data"] == [{"user_id": f"u-{n}", "name": f"name {n}"}]
        feed = open_feed(url)
        try:
            assert feed.last_position() == position
            assert feed.read_after(position - 1)[0].rows.column("user_id").to_pylist() == ["u-1"]
        finally:
            feed.close()


@pytest.mark.parametrize("url", ["kafka://127.0.0.1:9092", "sqlite:///:memory:", "redis://127.0.0.1:6379/0?prefix=",
                                 "redis://127.0.0.1:6379/zero", "redis://127.0.0.1:6379/0?prefx=a",
                                 "redis://127.0.0.1:port/0", "redis://127.0.0.1:6379/0?socket_timeout=soon"])
def test_an_unknown_in_memory_or_malformed_feed_url_is_the_service_s_error(url):
    with pytest.raises(InvalidInput) as refused:
        open_feed(url)
    assert refused.value.status == 400 and "FEED_URL" in refused.value.message


def test_a_redis_feed_that_does_not_answer_is_an_error_not_a_wait():
    feed = open_feed("redis://127.0.0.1:9/0?socket_connect_timeout=1")  # the discard port: nothing listens
    try:
        with pytest.raises(redis.ConnectionError):
            feed.append({"users": pa.table({"n": [1]})})
    finally:
        feed.close()


def _feed_rows(app) -> dict[str, list[int]]:
    """Source -> the first column's values the app's feed holds for it, in feed order."""
    feed = app.extensions["feature_service"].sources.feed
    held: dict[str, list] = {}
    for entry in feed.read_after(0, limit=100_000):
        held.setdefault(entry.source, []).extend(entry.rows.column(0).to_pylist())
    return held


def test_every_acknowledged_ingest_and_publish_is_in_the_feed_at_its_position(make_app, feed_url):
    app = make_app(FEED_URL=feed_url)
    api = JsonClient(app.test_client())
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


def test_a_refused_ingest_reaches_neither_the_warehouse_nor_the_feed(make_app, feed_url):
    app = make_app(FEED_URL=feed_url)
    api = JsonClient(app.test_client())
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


class FailingFirst:
    """Fault injection (a feed server going away cannot be staged on cue here): the wrapped real feed's
    first `failures` reads raise redis.ConnectionError, as a Redis restart does."""

    def __init__(self, feed: ChangeFeed, failures: int):
        self.feed, self.failures = feed, failures

    def read_after(self, position: int, limit: int = 1000) -> list:
        if self.failures:
            self.failures -= 1
            raise redis.ConnectionError("Connection refused (injected)")
        return self.feed.read_after(position, limit)

    def __getattr__(self, name: str):
        return getattr(self.feed, name)


def test_a_tailer_outlives_failing_reads_and_applies_and_skips_nothing(feed):
    store = open_realtime_store("sqlite:///:memory:")
    store.register(next(s for s in demo_sources() if s.name == "users"))
    refusals = [InvalidInput("the store refused (injected)")]

    def apply(frames: dict[str, pa.Table]) -> None:
        if refusals:
            raise refusals.pop()
        store.append(frames)

    for n in range(5):
        last = feed.append({"users": pa.table({"user_id": [f"u{n}"], "name": ["Ada"], "address": [None],
                                               "creation_date": [1_700_000_000 + n]})})
    tailer = FeedTailer(FailingFirst(feed, 3), apply, interval=0.001)
    tailer.start()
    try:
        assert tailer.wait_for(last, timeout=10)
        held = store.query("SELECT user_id, count(*) AS n FROM users GROUP BY user_id ORDER BY user_id")
        assert held["user_id"].tolist() == [f"u{n}" for n in range(5)] and set(held["n"]) == {1}
        assert not refusals
    finally:
        tailer.stop()
        store.close()


def _one_row(n: int) -> dict[str, pa.Table]:
    return {"users": pa.table({"n": [n]})}


def test_trimming_drops_the_oldest_entries_and_positions_keep_growing(feed, feed_url):
    positions = [feed.append(_one_row(n)) for n in range(5)]
    assert positions == [1, 2, 3, 4, 5] and feed.trimmed_through() == 0
    feed.trim_through(2)
    assert [e.position for e in feed.read_after(0)] == [3, 4, 5]
    assert feed.trimmed_through() == 2 and feed.last_position() == 5
    feed.trim_through(1)  # behind the trim already: nothing changes
    assert feed.trimmed_through() == 2 and len(feed.read_after(0)) == 3
    feed.trim_through(10)  # past the newest: the feed holds nothing, positions stay
    assert feed.read_after(0) == [] and feed.trimmed_through() == 5 == feed.last_position()
    assert feed.append(_one_row(6)) == 6
    assert [e.rows.column(0)[0].as_py() for e in feed.read_after(5)] == [6] and feed.trimmed_through() == 5
    reopened = open_feed(feed_url)  # another process's view: the same ends
    try:
        assert (reopened.last_position(), reopened.trimmed_through()) == (6, 5)
    finally:
        reopened.close()


def test_a_tailer_behind_a_trim_reports_the_gap_instead_of_serving_without_the_rows(feed, monkeypatch):
    monkeypatch.setattr("feed.base.GAP_CHECK_SECONDS", 0.0)  # an idle tailer checks on every poll, not once a second
    for n in range(3):
        feed.append(_one_row(n))
    feed.trim_through(2)
    applied: list[int] = []

    def apply(frames: dict[str, pa.Table]) -> None:
        applied.extend(frames["users"].column(0).to_pylist())

    with pytest.raises(FeedGap) as gap:
        FeedTailer(feed, apply, start=0).catch_up()  # a process starting from a snapshot at 0
    assert (gap.value.applied, gap.value.trimmed_through) == (0, 2) and applied == []
    tailer = FeedTailer(feed, apply, start=2)  # a snapshot at 2: nothing it needs is gone
    tailer.catch_up()
    assert applied == [2] and tailer.applied == 3

    feed.append(_one_row(3))
    feed.append(_one_row(4))
    feed.trim_through(5)  # trimmed past the tailer while it was not reading: no entry left to read
    assert feed.read_after(3) == []
    with pytest.raises(FeedGap):
        tailer.poll()
    feed.append(_one_row(5))  # and with entries after the hole
    with pytest.raises(FeedGap):
        tailer.poll()
    assert applied == [2] and tailer.applied == 3


def test_a_running_tailer_hands_the_gap_over_and_stops(feed):
    for n in range(3):
        feed.append(_one_row(n))
    feed.trim_through(3)
    gaps: list[FeedGap] = []
    tailer = FeedTailer(feed, lambda frames: None, start=0, interval=0.001, on_gap=gaps.append)
    tailer.start()
    tailer._thread.join(timeout=10)
    assert not tailer._thread.is_alive() and len(gaps) == 1 and gaps[0].trimmed_through == 3
    tailer.stop()


TAILING = {  # a tailer that meets the gap while running, and one that starts behind it
    "running": "tailer.start()\ntime.sleep(30)\n",
    "starting": "from app import catch_up_or_exit\ncatch_up_or_exit(tailer)\ntime.sleep(30)\n"}


@pytest.mark.parametrize("when", sorted(TAILING))
def test_a_process_that_missed_trimmed_entries_exits_to_start_again(feed_url, when):
    """app.exit_on_feed_gap, in a real process: exit code 75 (the supervisor starts a fresh one)."""
    feed = open_feed(feed_url)
    try:
        for n in range(3):
            feed.append(_one_row(n))
        feed.trim_through(2)
    finally:
        feed.close()
    code = ("import sys, time\n"
            "from app import exit_on_feed_gap\n"
            "from feed import FeedTailer, open_feed\n"
            "tailer = FeedTailer(open_feed(sys.argv[1]), lambda frames: None, start=0, on_gap=exit_on_feed_gap)\n"
            + TAILING[when])
    done = subprocess.run([sys.executable, "-c", code, feed_url], capture_output=True, text=True, timeout=60)
    assert done.returncode == 75, done.stderr[-2000:]
    assert "trimmed through position 2" in done.stderr


def test_the_writer_keeps_only_the_newest_feed_entries(make_app, feed_url, monkeypatch, caplog):
    monkeypatch.setattr("app.sources.FEED_TRIM_CHUNK", 2)  # several steps per round
    app = make_app(FEED_URL=feed_url, FEED_RETAIN_ENTRIES=3, EVICT_INTERVAL_SECONDS=0.05)
    api = JsonClient(app.test_client())
    last = api.put("/v1.0/publish?n_flows=20&seed=5")["position"]
    last = api.put("/v1.0/publish?n_flows=20&seed=6")["position"]
    feed = app.extensions["feature_service"].sources.feed
    deadline = time.monotonic() + 10
    while feed.trimmed_through() < last - 3 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert feed.trimmed_through() == last - 3 and [e.position for e in feed.read_after(0)] == [last - 2, last - 1, last]
    sources = app.extensions["feature_service"].sources
    sources.trim_feed(10 * last)  # keeping more than the feed holds: nothing to drop, nothing to warn of
    assert feed.trimmed_through() == last - 3
    assert not [record for record in caplog.records if "trimming the change feed failed" in record.getMessage()]


def test_health_says_how_far_behind_the_feed_a_tailing_process_is_and_when_it_stopped(make_app, feed_url):
    app = make_app(FEED_URL=feed_url)
    api = JsonClient(app.test_client())
    sources = app.extensions["feature_service"].sources
    newest = api.put("/v1.0/publish?n_flows=5&seed=1")["position"]
    tailer = FeedTailer(open_feed(feed_url), lambda frames: None, start=newest - 2)  # as a serving process's
    sources.tailer = tailer
    try:
        health = api.get("/v1.0/health", status=503)  # its tailer is not running
        assert health["details"]["checks"]["feed"] == {
            "ok": False, "applied": newest - 2, "newest": newest, "behind": 2,
            "error": "this process no longer applies the change feed"}
        tailer.start()
        assert tailer.wait_for(newest, timeout=10)
        assert api.get("/v1.0/health")["checks"]["feed"] == {"ok": True, "applied": newest, "newest": newest,
                                                              "behind": 0}
    finally:
        sources.tailer = None
        tailer.stop()
        tailer.feed.close()


def test_health_reports_a_feed_that_does_not_answer(make_app):
    app = make_app()
    api = JsonClient(app.test_client())
    sources = app.extensions["feature_service"].sources
    working, sources.feed = sources.feed, open_feed(f"redis://127.0.0.1:{free_port()}/0?socket_connect_timeout=1")
    try:
        health = api.get("/v1.0/health", status=503)
        feed = health["details"]["checks"]["feed"]
        assert feed["ok"] is False and feed["error"].startswith("the change feed does not answer")
        assert health["details"]["checks"]["catalog"] == {"ok": True}
    finally:
        sources.feed.close()
        sources.feed = working
