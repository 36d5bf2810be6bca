"""The realtime store: a recent window of the raw tables, in memory. `REALTIME_URL` picks the engine."""
from __future__ import annotations

from common.urls import backend_registry
from realtime.base import RealtimeStore

__all__ = ["RealtimeStore", "open_realtime_store"]


def _sqlite(url: str) -> RealtimeStore:
    from realtime.sqlite_store import SqliteRealtimeStore

    return SqliteRealtimeStore(url)


def _duckdb(url: str) -> RealtimeStore:
    from realtime.duckdb_store import DuckDBRealtimeStore

    return DuckDBRealtimeStore(url)


open_realtime_store = backend_registry("REALTIME_URL", {"sqlite": _sqlite, "duckdb": _duckdb})
