"""The realtime store: a recent window of the raw tables, in memory. `REALTIME_URL` picks the engine."""
from __future__ import annotations

from typing import Any

from common.urls import backend_registry
from realtime.base import RealtimeStore

__all__ = ["RealtimeStore", "open_realtime_store"]


def _sqlite(url: str, **options: Any) -> RealtimeStore:
    from realtime.sqlite_store import SqliteRealtimeStore

    return SqliteRealtimeStore(url, **options)


def _duckdb(url: str, **options: Any) -> RealtimeStore:
    from realtime.duckdb_store import DuckDBRealtimeStore

    return DuckDBRealtimeStore(url, **options)


open_realtime_store = backend_registry("REALTIME_URL", {"sqlite": _sqlite, "duckdb": _duckdb})
