"""The warehouse contract: cold data, the source of truth for training sets.

The warehouse holds the rows of every declared source in tables the user owns.
It creates a table only when a source is declared with columns and the table
does not exist yet, adds a column only for a compatible new version, and
otherwise only reads; user SQL always runs read-only.
"""
from __future__ import annotations

import contextlib
import threading
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, Callable, Iterator

import pandas as pd

from catalog.base import SourceRecord
from common.errors import InvalidInput

LEDGER_TABLE = "_fs_batches"  # (source, batch_id) of every batch written with an id; created on first use
COPY_BATCH_ROWS = 131_072  # rows per batch of a bulk copy out of the warehouse (`recent_batches`)


@dataclass(frozen=True)
class BatchMark:
    """A batch written with a client's id: it is written once, and a retry gets the first answer back."""

    source: str
    batch_id: str
    answer: dict[str, Any]


@dataclass
class WriteReceipt:
    """Filled by `Warehouse.append`: the id of the transaction that wrote the rows, where the engine has one
    that a later snapshot can be asked about (PostgreSQL's ``pg_current_xact_id()``; None elsewhere)."""

    transaction: int | None = None


@dataclass(frozen=True)
class WarehouseSnapshot:
    """Which transactions' writes one read snapshot sees (PostgreSQL's ``pg_current_snapshot()``): every
    transaction below `xmin`, and those below `xmax` not listed `in_progress` when it was taken."""

    xmin: int
    xmax: int
    in_progress: frozenset[int]

    @classmethod
    def parse(cls, text: str) -> "WarehouseSnapshot":
        """From PostgreSQL's text form ``xmin:xmax:xip,xip,…``."""
        xmin, xmax, listed = text.split(":")
        return cls(int(xmin), int(xmax), frozenset(int(x) for x in listed.split(",") if x))

    def sees(self, transaction: int) -> bool:
        """Whether the rows a committed `transaction` wrote are visible in this snapshot."""
        return transaction < self.xmin or (transaction < self.xmax and transaction not in self.in_progress)


class Warehouse(ABC):
    """Cold storage of the sources' raw event tables. Every backend must:

    - run user SQL (`query`, `query_batches`) read-only, with the statement time limit it was built with;
      for `query_batches` that limit bounds the whole stream (every batch, and the client's pace), and
      closing the batch iterator early (the client went away) stops the query;
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

        The statement time limit is a deadline for the whole stream: past it the query is stopped and
        the next batch raises query_timeout. Closing `batches` stops the query too. `uploads` as for
        `query`, readable until the stream ends."""

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
    def append(self, frames: dict[str, Any], batch: BatchMark | None = None,
               receipt: WriteReceipt | None = None) -> dict[str, Any] | None:
        """Insert rows (Arrow tables or DataFrames, by column name) into several tables in one transaction.

        Returns None when written; with a `batch` already written, the stored answer (nothing written).
        A `receipt` gets the writing transaction's id, if the engine has one (`WriteReceipt`).
        """

    @abstractmethod
    def write_table(self, table: str, schema: Any, batches: Iterator[Any], replace: bool = False) -> None:
        """Create `table` with the Arrow `schema` and write `batches` into it, all in one transaction (an
        export: nothing of it is visible until it is complete); with `replace`, an existing table goes."""

    @abstractmethod
    def recent_rows(self, table: str, time_column: str, since: Any, columns: list[str] | None = None) -> Any:
        """`columns` (all when None) of the rows of `table` with `time_column > since` (all rows when None),
        as Arrow or pandas."""

    def recent_batches(self, table: str, time_column: str, since: Any, columns: list[str] | None = None,
                       rows: int = COPY_BATCH_ROWS) -> Iterator[Any]:
        """The rows of `recent_rows` as a stream of Arrow tables or DataFrames of at most `rows` rows each, so
        a bulk copy (hydrating the realtime store) holds one batch at a time; closing it early stops the read.
        This default reads the whole result first; backends that can stream override it."""
        result = self.recent_rows(table, time_column, since, columns)
        if isinstance(result, pd.DataFrame):
            yield from (result.iloc[start:start + rows] for start in range(0, len(result), rows))
        else:
            yield from (result.slice(start, rows) for start in range(0, result.num_rows, rows))

    @abstractmethod
    def table_stats(self, table: str, time_column: str) -> dict[str, Any]:
        """``{"rows", "min_event_time", "max_event_time"}`` of `table`."""

    @abstractmethod
    def ping(self) -> None:
        """Return if the warehouse answers, else raise BackendUnavailable."""

    def consistent_snapshot(self) -> contextlib.AbstractContextManager[WarehouseSnapshot]:
        """A context in which this thread's `recent_rows` all read one snapshot, which it yields (a
        replica hydrates in it; app/replicas.py). Only a warehouse that several machines share has one."""
        raise InvalidInput(f"the {self.dialect} warehouse cannot hydrate a replica: replicas share a PostgreSQL "
                           "warehouse (WAREHOUSE_URL=postgresql://…)")

    def close(self) -> None:
        """Release connections."""


class StreamDeadline:
    """One time limit across a whole stream of batches.

    At the deadline a timer thread calls `cancel` (it must be safe to call from another thread: DuckDB's
    ``interrupt``, PostgreSQL's cancel request), so a batch being computed stops, and `expired` tells the
    stream's error handling that the stop was the limit. `stop` disarms it when the stream ends.
    """

    def __init__(self, seconds: float | None, cancel: Callable[[], None]):
        self.seconds, self.expired = seconds, False
        self._cancel = cancel
        self._lock = threading.Lock()
        self._stopped = False
        self._timer: threading.Timer | None = None
        if seconds is not None:
            self._timer = threading.Timer(seconds, self._expire)
            self._timer.daemon = True
            self._timer.start()

    def _expire(self) -> None:
        with self._lock:  # never after `stop` returned: the connection may be in other hands by then
            if not self._stopped:
                self.expired = True
                self.cancel()

    def cancel(self) -> None:
        """Stop the statement in flight now (the deadline, or a client that went away)."""
        try:
            self._cancel()
        except Exception:  # noqa: BLE001 - the statement ended meanwhile: nothing left to stop
            pass

    def stop(self) -> None:
        """Disarm; once it returns, no cancel is in flight and `expired` no longer changes."""
        with self._lock:
            self._stopped = True
        if self._timer is not None:
            self._timer.cancel()


def split_table(table: str, default_schema: str) -> tuple[str, str]:
    """``schema.table`` or ``table`` as (schema, table)."""
    schema, _, name = table.rpartition(".")
    return schema or default_schema, name
