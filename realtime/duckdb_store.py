"""The realtime store: hot data for serving, in an in-memory DuckDB database.

It holds a recent window of the warehouse's tables, indexed on the keys
queries filter by, and runs the very SQL the warehouse ran for training (same
engine family, same types: a boolean stays a boolean). It keeps nothing on
disk: on start it is re-hydrated from the warehouse, the source of truth.
"""
from __future__ import annotations

import time
from typing import Any, Sequence

import pandas as pd

from common.urls import backend_registry, duckdb_path
from common.errors import InvalidInput
from demo.flows import INDEX_COLUMNS, TABLES, TIME_COLUMNS
from extraction.engines import DuckDBEngine
from extraction.warehouse import Warehouse

ROLE = "realtime store"


class InMemoryRealtimeStore:
    """Hot rows of every demo table in an in-memory DuckDB database."""

    dialect = "duckdb"

    def __init__(self, url: str = "duckdb:///:memory:"):
        if duckdb_path(url) != ":memory:":
            raise InvalidInput(f"REALTIME_URL must be an in-memory database (duckdb:///:memory:), not {url!r}")
        self.engine = DuckDBEngine(":memory:", ROLE)
        self.engine.create_tables(TABLES, INDEX_COLUMNS)

    def hydrate(self, warehouse: Warehouse, window_seconds: int | None, now: int | None = None) -> dict[str, int]:
        """Copy the rows of the last `window_seconds` (all rows when None) from the warehouse."""
        since = None if window_seconds is None else int(now if now is not None else time.time()) - window_seconds
        frames = {table: warehouse.recent_rows(table, TIME_COLUMNS[table], since) for table in TABLES}
        return self.engine.append(frames)

    def append(self, frames: dict[str, pd.DataFrame]) -> dict[str, int]:
        """Add rows to several tables in one transaction."""
        return self.engine.append(frames)

    def query(self, sql: str, params: Sequence[Any] = (), max_rows: int | None = None) -> pd.DataFrame:
        """Run a validated read-only statement with bound parameters."""
        return self.engine.query(sql, params, max_rows=max_rows)

    def ping(self) -> None:
        self.engine.ping()

    def close(self) -> None:
        self.engine.close()


open_realtime_store = backend_registry("REALTIME_URL", {"duckdb": InMemoryRealtimeStore})
