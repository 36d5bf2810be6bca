"""The warehouse contract: cold data, the source of truth for training sets.

The warehouse holds the rows of every declared source in tables the user owns.
It creates a table only when a source is declared with columns and the table
does not exist yet, adds a column only for a compatible new version, and
otherwise only reads; user SQL always runs read-only.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, Iterator

import pandas as pd

from catalog.base import SourceRecord

LEDGER_TABLE = "_fs_batches"  # (source, batch_id) of every batch written with an id; created on first use


@dataclass(frozen=True)
class BatchMark:
    """A batch written with a client's id: it is written once, and a retry gets the first answer back."""

    source: str
    batch_id: str
    answer: dict[str, Any]


class Warehouse(ABC):
    """Cold storage of the sources' raw event tables. Every backend must:

    - run user SQL (`query`, `query_batches`) read-only, with the statement time limit it was built with;
    - write each `append` in one transaction, durable when it returns; with a `BatchMark` whose
      (source, batch_id) was written before, write nothing and return that batch's stored answer;
    - report a table's columns with the engine's own type names (`table_columns`), None for no table;
    - never create or alter a table except through `create_table`, `add_columns` and `drop_not_null`.
    """

    dialect: str  # sqlglot dialect user SQL is read and written in

    @abstractmethod
    def query(self, sql: str, max_rows: int | None = None, uploads: dict[str, Any] | None = None) -> pd.DataFrame:
        """Run a validated read-only query; with `max_rows`, refuse longer results.

        `uploads` (name -> Arrow table, e.g. a training spine) are tables the query can read by that
        name; no other query sees them, and nothing of them is left behind.
        """

    @abstractmethod
    def query_batches(self, sql: str, rows: int = 65_536, uploads: dict[str, Any] | None = None
                      ) -> tuple[Any, Iterator[Any]]:
        """Run a validated read-only query as Arrow record batches, with no row limit: (schema, batches).

        `uploads` as for `query`, readable until the stream ends."""

    @abstractmethod
    def table_columns(self, table: str) -> list[tuple[str, str]] | None:
        """(column, engine type) of `table` (``schema.table`` allowed) in order, or None if there is no such table."""

    @abstractmethod
    def create_table(self, source: SourceRecord) -> None:
        """Create the source's table with its declared columns (the caller checked it does not exist)."""

    @abstractmethod
    def add_columns(self, table: str, columns: list[dict[str, Any]]) -> None:
        """Add nullable columns to `table` (a compatible new version of its source)."""

    @abstractmethod
    def drop_not_null(self, table: str, columns: list[str]) -> None:
        """Let `columns` of `table` hold nulls (a compatible new version made them nullable)."""

    @abstractmethod
    def append(self, frames: dict[str, Any], batch: BatchMark | None = None) -> dict[str, Any] | None:
        """Insert rows (Arrow tables or DataFrames, by column name) into several tables in one transaction.

        Returns None when written; with a `batch` already written, the stored answer (nothing written).
        """

    @abstractmethod
    def write_table(self, table: str, schema: Any, batches: Iterator[Any], replace: bool = False) -> None:
        """Create `table` with the Arrow `schema` and write `batches` into it, all in one transaction (an
        export: nothing of it is visible until it is complete); with `replace`, an existing table goes."""

    @abstractmethod
    def recent_rows(self, table: str, time_column: str, since: Any, columns: list[str] | None = None) -> Any:
        """`columns` (all when None) of the rows of `table` with `time_column > since` (all rows when None),
        as Arrow or pandas."""

    @abstractmethod
    def table_stats(self, table: str, time_column: str) -> dict[str, Any]:
        """``{"rows", "min_event_time", "max_event_time"}`` of `table`."""

    @abstractmethod
    def ping(self) -> None:
        """Return if the warehouse answers, else raise BackendUnavailable."""

    def close(self) -> None:
        """Release connections."""


def split_table(table: str, default_schema: str) -> tuple[str, str]:
    """``schema.table`` or ``table`` as (schema, table)."""
    schema, _, name = table.rpartition(".")
    return schema or default_schema, name
