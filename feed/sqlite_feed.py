"""The embedded change feed: a SQLite table (WAL mode) that every process on one machine shares, so
WORKERS>1 needs no extra server; entries are only appended, and deleted from the oldest when the writer
trims. One connection per process (open it after a fork)."""
from __future__ import annotations

import os
import sqlite3
import threading

import pyarrow as pa

from feed.base import ChangeFeed, FeedEntry, bytes_table, table_bytes


# AUTOINCREMENT's counter: the newest position ever given, even once its entry is trimmed
_LAST_POSITION = "SELECT coalesce(max(seq), 0) FROM sqlite_sequence WHERE name = 'feed'"


class SqliteFeed(ChangeFeed):
    """A feed in the SQLite file at `path`; positions are the table's rowids (AUTOINCREMENT: never reused
    once trimmed)."""

    def __init__(self, path: str):
        self.path, self._pid = path, os.getpid()
        self._lock = threading.Lock()
        self._connection = self._connect()

    def _connect(self) -> sqlite3.Connection:
        os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
        connection = sqlite3.connect(self.path, timeout=30, check_same_thread=False, isolation_level=None)
        connection.execute("PRAGMA journal_mode=WAL")
        connection.execute("CREATE TABLE IF NOT EXISTS feed (position INTEGER PRIMARY KEY AUTOINCREMENT, "
                           "source TEXT NOT NULL, rows BLOB NOT NULL)")
        return connection

    def _db(self) -> sqlite3.Connection:
        if os.getpid() != self._pid:  # a forked child never uses its parent's connection
            self._pid, self._connection = os.getpid(), self._connect()
        return self._connection

    def append(self, frames: dict[str, pa.Table]) -> int:
        with self._lock:
            db = self._db()
            db.execute("BEGIN IMMEDIATE")
            try:
                for source, table in frames.items():
                    position = db.execute("INSERT INTO feed (source, rows) VALUES (?, ?)",
                                          (source, table_bytes(table))).lastrowid
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
        return int(position)

    def read_after(self, position: int, limit: int = 1000) -> list[FeedEntry]:
        with self._lock:
            rows = self._db().execute("SELECT position, source, rows FROM feed WHERE position > ? "
                                      "ORDER BY position LIMIT ?", (position, limit)).fetchall()
        return [FeedEntry(p, source, bytes_table(data)) for p, source, data in rows]

    def last_position(self) -> int:
        with self._lock:
            return int(self._db().execute(_LAST_POSITION).fetchone()[0])

    def trim_through(self, position: int) -> None:
        if position <= 0:
            return
        with self._lock:
            self._db().execute("DELETE FROM feed WHERE position <= ?", (position,))

    def trimmed_through(self) -> int:
        with self._lock:  # one statement, one snapshot: the oldest entry and the counter agree
            oldest, last = self._db().execute(f"SELECT (SELECT min(position) FROM feed), ({_LAST_POSITION})").fetchone()
        return int(oldest) - 1 if oldest is not None else int(last)

    def close(self) -> None:
        with self._lock:
            self._connection.close()
