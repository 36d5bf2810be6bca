"""The embedded change feed: positions grow, entries come back exact and in order, across processes."""
from __future__ import annotations

import subprocess
import sys
import threading

import pyarrow as pa

from feed import FeedTailer, open_feed


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
