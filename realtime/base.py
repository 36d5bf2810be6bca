"""The realtime store contract: hot rows of the raw tables, one entity at a time."""
from __future__ import annotations

import time
from abc import ABC, abstractmethod
from typing import Any

import pandas as pd

from demo.flows import TABLES, TIME_COLUMNS
from extraction.sql import PreparedQuery
from extraction.warehouse import Warehouse


class RealtimeStore(ABC):
    """A recent window of the warehouse's tables, in memory, for point lookups.

    Every store must: run a saved query for one entity with the key as a bound
    parameter; return the DataFrame dtypes the warehouse's DuckDB engine would
    (bool/boolean, int64/Int64, float64, str), so ETLs see the same input online and
    offline; write each batch in one transaction (no reader sees half a flow); and
    keep nothing on disk: `hydrate` rebuilds it from the warehouse. A store built with
    ``statement_timeout=seconds`` stops any `lookup`, `check` or query running longer with
    InvalidQuery code ``query_timeout`` (400) and keeps answering; its own writes have no limit.
    """

    dialect: str  # the sqlglot dialect saved queries are transpiled to

    @abstractmethod
    def append(self, frames: dict[str, Any]) -> dict[str, int]:
        """Add rows (DataFrames or Arrow tables) to several tables in one transaction."""

    @abstractmethod
    def lookup(self, prepared: PreparedQuery, index_key: str, value: Any, max_rows: int) -> pd.DataFrame:
        """The saved query's rows whose `index_key` equals `value`."""

    @abstractmethod
    def check(self, prepared: PreparedQuery) -> list[tuple[str, str | None]] | None:
        """Raise InvalidQuery unless the query runs here; return its output types where known."""

    @abstractmethod
    def ping(self) -> None:
        """Return if the store answers, else raise BackendUnavailable."""

    def close(self) -> None:
        """Release the database."""

    def hydrate(self, warehouse: Warehouse, window_seconds: int | None, now: int | None = None) -> dict[str, int]:
        """Copy the rows of the last `window_seconds` (all rows when None) from the warehouse.

        One table at a time, so only one table's rows are held in memory at once (this runs before
        the service answers, so no reader can see a table loaded before the next).
        """
        since = None if window_seconds is None else int(now if now is not None else time.time()) - window_seconds
        return {table: self.append({table: warehouse.recent_rows(table, TIME_COLUMNS[table], since)})[table]
                for table in TABLES}
