"""A DuckDB file (or ``:memory:``) as the warehouse: the embedded default."""
from __future__ import annotations

import json
import os
from typing import Any, Iterator

import duckdb
import pandas as pd
import pyarrow as pa

from catalog.base import SourceRecord
from common.errors import InvalidQuery
from sql import types as logical_types
from common.urls import duckdb_path
from sql.duckdb_engine import DuckDBEngine, query_timeout, quote_identifier, quote_qualified
from warehouse.base import COPY_BATCH_ROWS, LEDGER_TABLE, BatchMark, StreamDeadline, Warehouse, WriteReceipt, split_table

ROLE = "warehouse"


class DuckDBWarehouse(Warehouse):
    """The sources' tables in one DuckDB database; writes serialized, each batch one transaction."""

    dialect = "duckdb"

    def __init__(self, url: str, *, statement_timeout: float | None = None, memory_limit: str | None = None):
        path = duckdb_path(url)
        if path != ":memory:":
            os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        self.engine = DuckDBEngine(path, ROLE, statement_timeout=statement_timeout, memory_limit=memory_limit)
        self._ledger_ready = False

    def query(self, sql: str, max_rows: int | None = None, uploads: dict[str, Any] | None = None) -> pd.DataFrame:
        return self.engine.query(sql, max_rows=max_rows, relations=uploads)

    def query_batches(self, sql: str, rows: int = 65_536, uploads: dict[str, Any] | None = None
                      ) -> tuple[Any, Iterator[Any]]:
        """The engine's checks and always-rolled-back transaction, on a cursor of the stream's own, under one
        deadline for the whole stream (DuckDB computes batches as they are read, so a per-statement limit
        would bound only the first); closing the stream interrupts the cursor. `uploads` are registered on
        that cursor only, and go with it."""
        engine = self.engine
        with engine._translated(user_sql=True):
            engine._checked_select(sql)
            cursor = engine._connection.cursor()
            for name, table in (uploads or {}).items():
                cursor.register(name, table)
        deadline = StreamDeadline(engine.statement_timeout, cursor.interrupt)
        try:
            with self._stream_errors(deadline):
                cursor.execute("BEGIN TRANSACTION")
                reader = cursor.sql(sql).to_arrow_reader(rows)
        except BaseException:
            deadline.stop()
            cursor.close()
            raise

        def stream() -> Iterator[Any]:
            finished = False
            try:
                with self._stream_errors(deadline):
                    yield from reader
                finished = True
            finally:
                deadline.stop()
                if not finished:  # closed early (the client went away) or failed: stop what still runs
                    deadline.cancel()
                try:
                    cursor.execute("ROLLBACK")
                except duckdb.Error:  # interrupted: closing the cursor discards the transaction
                    pass
                cursor.close()

        return reader.schema, stream()

    def _stream_errors(self, deadline: StreamDeadline) -> "_StreamErrors":
        return _StreamErrors(self.engine, deadline)

    def write_table(self, table: str, schema: Any, batches: Iterator[Any], replace: bool = False) -> None:
        import pyarrow as pa

        name = quote_qualified(table)
        with self.engine.transaction() as cursor:
            cursor.register("_fs_export", pa.Table.from_batches([], schema=schema))
            cursor.execute(f"CREATE {'OR REPLACE ' if replace else ''}TABLE {name} AS SELECT * FROM _fs_export")
            cursor.unregister("_fs_export")
            for batch in batches:
                cursor.register("_fs_export", pa.Table.from_batches([batch]))
                cursor.execute(f"INSERT INTO {name} SELECT * FROM _fs_export")
                cursor.unregister("_fs_export")

    def table_columns(self, table: str) -> list[tuple[str, str]] | None:
        schema, name = split_table(table, "main")
        rows = self.engine.arrow(
            "SELECT column_name, data_type FROM information_schema.columns WHERE table_schema = ? "
            "AND table_name = ? ORDER BY ordinal_position", [schema, name]).to_pylist()
        return [(row["column_name"], row["data_type"]) for row in rows] or None

    def create_table(self, source: SourceRecord) -> None:
        body = ", ".join(f"{quote_identifier(c['name'])} {logical_types.DUCKDB[c['type']]}"
                         f"{'' if c.get('nullable', True) else ' NOT NULL'}" for c in source.columns)
        self.engine.execute_ddl([f"CREATE TABLE IF NOT EXISTS {quote_qualified(source.table)} ({body})"])

    def add_columns(self, table: str, columns: list[dict[str, Any]]) -> None:
        self.engine.execute_ddl([f"ALTER TABLE {quote_qualified(table)} ADD COLUMN IF NOT EXISTS "
                                 f"{quote_identifier(c['name'])} {logical_types.DUCKDB[c['type']]}" for c in columns])

    def drop_not_null(self, table: str, columns: list[str]) -> None:
        self.engine.execute_ddl([f"ALTER TABLE {quote_qualified(table)} ALTER COLUMN {quote_identifier(c)} DROP NOT NULL"
                                 for c in columns])

    def append(self, frames: dict[str, Any], batch: BatchMark | None = None,
               receipt: WriteReceipt | None = None) -> dict[str, Any] | None:
        if batch is not None and not self._ledger_ready:  # once per process: a batch id's first use creates it
            self.engine.execute_ddl([f"CREATE TABLE IF NOT EXISTS {LEDGER_TABLE} (source VARCHAR, batch_id VARCHAR, "
                                     "answer VARCHAR, PRIMARY KEY (source, batch_id))"])
            self._ledger_ready = True
        seen: list[dict[str, Any]] = []

        def already_written(cursor: Any) -> bool:
            """Claim the batch id in the ledger inside the transaction, unless it is there already."""
            row = cursor.execute(f"SELECT answer FROM {LEDGER_TABLE} WHERE source = ? AND batch_id = ?",
                                 [batch.source, batch.batch_id]).fetchall()
            if row:
                seen.append(json.loads(row[0][0]))
                return True
            cursor.execute(f"INSERT INTO {LEDGER_TABLE} VALUES (?, ?, ?)",
                           [batch.source, batch.batch_id, json.dumps(batch.answer)])
            return False

        self.engine.append(frames, abort_if=None if batch is None else already_written)
        return seen[0] if seen else None

    def recent_rows(self, table: str, time_column: str, since: Any, columns: list[str] | None = None) -> Any:
        return self.engine.arrow(*_recent_sql(table, time_column, since, columns))

    def recent_batches(self, table: str, time_column: str, since: Any, columns: list[str] | None = None,
                       rows: int = COPY_BATCH_ROWS) -> Iterator[Any]:
        """Arrow record batches from a cursor of the copy's own, computed as they are read (DuckDB streams a
        plain scan): the whole result is never held, and closing the stream early closes the cursor."""
        sql, params = _recent_sql(table, time_column, since, columns)
        cursor = self.engine._connection.cursor()
        try:
            with self.engine._translated():
                reader = cursor.sql(sql, params=params or None).to_arrow_reader(rows)
                for batch in reader:
                    yield pa.Table.from_batches([batch])
        finally:
            cursor.close()

    def table_stats(self, table: str, time_column: str) -> dict[str, Any]:
        column = quote_identifier(time_column)
        row = self.engine.arrow(f"SELECT count(*) AS n, min({column}) AS lo, max({column}) AS hi "
                                f"FROM {quote_qualified(table)}").to_pylist()[0]
        return {"rows": row["n"], "min_event_time": row["lo"], "max_event_time": row["hi"]}

    def ping(self) -> None:
        self.engine.ping()

    def close(self) -> None:
        self.engine.close()


def _recent_sql(table: str, time_column: str, since: Any, columns: list[str] | None) -> tuple[str, list[Any]]:
    """The SELECT of `recent_rows` and its parameters."""
    where = "" if since is None else f" WHERE {quote_identifier(time_column)} > ?"
    selected = "*" if columns is None else ", ".join(map(quote_identifier, columns))
    return f"SELECT {selected} FROM {quote_qualified(table)}{where}", [] if since is None else [since]


class _StreamErrors:
    """The engine's error translation, except that any failure after the deadline fired is query_timeout
    (DuckDB reports an interrupted Arrow read as an OSError), and other errors of a read are the query's."""

    def __init__(self, engine: DuckDBEngine, deadline: StreamDeadline):
        self.engine, self.deadline = engine, deadline

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: type | None, error: BaseException | None, tb: Any) -> bool:
        if error is None or not isinstance(error, Exception):
            return False
        if self.deadline.expired:
            raise query_timeout(ROLE, self.deadline.seconds) from None
        if isinstance(error, OSError):  # an error of the query met while reading (a cast in a later batch)
            raise InvalidQuery(f"the {ROLE} rejected the query: {error}") from None
        return self.engine._translated(user_sql=True).__exit__(kind, error, tb)
