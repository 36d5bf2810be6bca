"""The change feed's contract and the tailer that applies it to a realtime store.

Every backend must:
- give each appended entry a position greater than every earlier one (positions only grow);
- return entries after a position in position order, each exactly once per read;
- keep an entry's rows byte-exact (Arrow IPC), so a process applies the same rows the writer had;
- drop the oldest entries when the writer trims it (`trim_through`), and say through which position it
  holds nothing any more (`trimmed_through`), so a process that fell behind that far knows it missed rows
  (`FeedGap`) instead of serving without them.
"""
from __future__ import annotations

import logging
import threading
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Callable

import pyarrow as pa

log = logging.getLogger(__name__)
RETRY_SECONDS_MAX = 5.0  # the longest pause between tries while the feed or the store is failing
GAP_CHECK_SECONDS = 1.0  # how often an idle tailer checks that the feed was not trimmed past it


class FeedGap(Exception):
    """The feed no longer holds entries a process has not applied: it must hydrate again."""

    def __init__(self, applied: int, trimmed_through: int):
        super().__init__(f"the change feed was trimmed through position {trimmed_through}, but this process "
                         f"has applied only through {applied}: the entries between are gone (FEED_RETAIN_ENTRIES)")
        self.applied, self.trimmed_through = applied, trimmed_through


@dataclass(frozen=True)
class FeedEntry:
    """One ingest's hot rows for one source, at `position` in the feed."""
    position: int
    source: str
    rows: pa.Table


def table_bytes(table: pa.Table) -> bytes:
    """`table` as an Arrow IPC stream."""
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue().to_pybytes()


def bytes_table(data: bytes) -> pa.Table:
    """The table an Arrow IPC stream holds."""
    return pa.ipc.open_stream(data).read_all()


def _concat(tables: list[pa.Table]) -> pa.Table:
    """One source's entries as one table (a newer entry may add columns), with the newest one's metadata."""
    if len(tables) == 1:
        return tables[0]
    return pa.concat_tables(tables, promote_options="default").replace_schema_metadata(tables[-1].schema.metadata)


class ChangeFeed(ABC):
    """An ordered log of ingested rows that several processes append to and tail."""

    @abstractmethod
    def append(self, frames: dict[str, pa.Table]) -> int:
        """Append one entry per source, atomically; the position of the last one."""

    @abstractmethod
    def read_after(self, position: int, limit: int = 1000) -> list[FeedEntry]:
        """Up to `limit` entries after `position`, in position order."""

    @abstractmethod
    def last_position(self) -> int:
        """The newest position ever given (0 for a new feed), held or already trimmed."""

    @abstractmethod
    def trim_through(self, position: int) -> None:
        """Drop every entry at `position` or before (later positions are unchanged; new ones keep growing)."""

    @abstractmethod
    def trimmed_through(self) -> int:
        """The newest position the feed holds no entry for any more: the one before its oldest entry, or
        `last_position()` when it holds none (0 for a new feed)."""

    def check_holds_after(self, applied: int) -> None:
        """FeedGap unless every entry after `applied` is still in the feed."""
        trimmed = self.trimmed_through()
        if trimmed > applied:
            raise FeedGap(applied, trimmed)

    def close(self) -> None:
        """Release connections."""


class AppliedPosition:
    """The newest feed position a process's realtime store holds; requests wait on it (read-your-writes)."""

    def __init__(self, start: int = 0):
        self.position = start
        self._changed = threading.Condition()

    def advance(self, position: int) -> None:
        """Record that everything through `position` is applied (positions never go back)."""
        with self._changed:
            self.position = max(self.position, position)
            self._changed.notify_all()

    def wait_for(self, position: int, timeout: float) -> bool:
        """Whether `position` is applied within `timeout` seconds."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while self.position < position:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._changed.wait(left)
        return True


class FeedTailer:
    """Applies a feed's entries after `start` to `apply`, polling every `interval` seconds on a thread;
    `wait_for` lets a request wait until its process has applied a position (read-your-writes). Entries
    `skip` returns True for are passed over (their position still counts as applied). Entries trimmed
    before they were applied are a `FeedGap`: raised by `poll` and `catch_up`, and handed to `on_gap` on
    the thread, which then stops (the process must hydrate again; app/__init__.py exits it)."""

    def __init__(self, feed: ChangeFeed, apply: Callable[[dict[str, pa.Table]], object], *, start: int = 0,
                 interval: float = 0.005, skip: Callable[[FeedEntry], bool] | None = None,
                 on_gap: Callable[[FeedGap], object] | None = None):
        self.feed, self.apply, self.interval, self.skip = feed, apply, interval, skip
        self.on_gap = on_gap or (lambda gap: log.critical("feed tailer stopped: %s", gap))
        self.progress = AppliedPosition(start)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._gap_checked = float("-inf")  # the first idle poll checks

    @property
    def applied(self) -> int:
        """The newest position applied."""
        return self.progress.position

    @property
    def running(self) -> bool:
        """Whether the tailing thread runs (it ends on `stop` and on a FeedGap)."""
        return self._thread is not None and self._thread.is_alive()

    def poll(self) -> int:
        """Apply what is new (one batch per source per read); the number of entries applied."""
        entries = self.feed.read_after(self.applied)
        if not entries:
            if time.monotonic() - self._gap_checked >= GAP_CHECK_SECONDS:  # trimmed past us while idle?
                self.feed.check_holds_after(self.applied)
                self._gap_checked = time.monotonic()
            return 0
        if entries[0].position > self.applied + 1:  # positions are consecutive: some are missing, or trimmed
            self.feed.check_holds_after(self.applied)
        frames: dict[str, list[pa.Table]] = {}
        for entry in entries:
            if self.skip is None or not self.skip(entry):
                frames.setdefault(entry.source, []).append(entry.rows)
        if frames:
            self.apply({source: _concat(tables) for source, tables in frames.items()})
        self.progress.advance(entries[-1].position)
        return len(entries)

    def catch_up(self) -> None:
        """Apply everything the feed holds now (before a process starts answering); FeedGap if the feed no
        longer holds what comes after `start`."""
        self.feed.check_holds_after(self.applied)
        while self.poll():
            pass

    def wait_for(self, position: int, timeout: float) -> bool:
        """Whether this process has applied `position` within `timeout` seconds."""
        return self.progress.wait_for(position, timeout)

    def start(self) -> None:
        """Tail on a daemon thread until `stop`. A read or an apply that fails (Redis restarting, the catalog
        down while a new source version is adopted) is tried again, pausing longer each time up to
        RETRY_SECONDS_MAX; nothing is skipped, since the position advances only after an apply."""
        def run() -> None:
            failures = 0
            while not self._stop.is_set():
                try:
                    applied = self.poll()
                except FeedGap as gap:  # not an outage: waiting brings nothing back
                    self.on_gap(gap)
                    return
                except Exception as error:  # noqa: BLE001 - any backend's error: an outage to wait out
                    failures += 1
                    pause = min(RETRY_SECONDS_MAX, self.interval * 2 ** failures)
                    log.warning("feed tailer at position %s: %s (trying again in %.2f s)", self.applied, error,
                                pause)
                    self._stop.wait(pause)
                    continue
                failures = 0
                if not applied:
                    self._stop.wait(self.interval)
        self._thread = threading.Thread(target=run, name="feed-tailer", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop tailing and wait for the thread."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
