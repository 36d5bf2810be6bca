"""The warehouse: cold data, the source of truth for training sets.

`WAREHOUSE_URL` picks it: ``duckdb:///path`` (the embedded default) or any
SQLAlchemy URL (PostgreSQL in production). Both create the demo tables on open,
append each batch in one transaction, and run user SQL read-only.
"""
from __future__ import annotations

import logging
import math
import os
from abc import ABC, abstractmethod
from typing import Any, Iterator

import pandas as pd
import pyarrow as pa
import psycopg
import sqlalchemy as sa
from psycopg import sql as psycopg_sql
from sqlalchemy.exc import DBAPIError, SQLAlchemyError

from common.errors import BackendUnavailable, InvalidInput, InvalidQuery
from common.urls import backend_registry, duckdb_path, sqlalchemy_url
from demo.flows import INDEX_COLUMNS, TABLES
from extraction.engines import (DuckDBEngine, _bounded_frame, checked_timeout, python_columns, query_timeout,
                                quote_identifier)

ROLE = "warehouse"
log = logging.getLogger(__name__)


class Warehouse(ABC):
    """Cold storage of the raw event tables."""

    dialect: str  # sqlglot dialect user SQL is read and written in

    @abstractmethod
    def query(self, sql: str, max_rows: int | None = None) -> pd.DataFrame:
        """Run a validated read-only query; with `max_rows`, refuse longer results."""

    @abstractmethod
    def append(self, frames: dict[str, pd.DataFrame]) -> dict[str, int]:
        """Insert rows into several tables in one transaction; return rows written per table."""

    @abstractmethod
    def query_batches(self, sql: str, rows: int = 65_536) -> tuple[Any, Iterator[Any]]:
        """Run a validated read-only query as Arrow record batches, with no row limit: (schema, batches)."""

    @abstractmethod
    def recent_rows(self, table: str, time_column: str, since: int | None) -> Any:
        """Rows of `table` with `time_column >= since` (all rows when None), as Arrow or pandas."""

    @abstractmethod
    def ping(self) -> None:
        """Return if the warehouse answers, else raise BackendUnavailable."""

    def close(self) -> None:
        """Release connections."""


class DuckDBWarehouse(Warehouse):
    """A DuckDB file (or ``:memory:``) as the warehouse."""

    dialect = "duckdb"

    def __init__(self, url: str, *, statement_timeout: float | None = None):
        path = duckdb_path(url)
        if path != ":memory:":
            os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        self.engine = DuckDBEngine(path, ROLE, statement_timeout=statement_timeout)
        self.engine.create_tables(TABLES, {})

    def query(self, sql: str, max_rows: int | None = None) -> pd.DataFrame:
        return self.engine.query(sql, max_rows=max_rows)

    def append(self, frames: dict[str, pd.DataFrame]) -> dict[str, int]:
        return self.engine.append(frames)

    def query_batches(self, sql: str, rows: int = 65_536) -> tuple[Any, Iterator[Any]]:
        return self.engine.batches(sql, rows)

    def recent_rows(self, table: str, time_column: str, since: int | None) -> Any:
        where = "" if since is None else f" WHERE {quote_identifier(time_column)} >= ?"
        params = [] if since is None else [since]
        return self.engine.arrow(f"SELECT * FROM {quote_identifier(table)}{where}", params)

    def ping(self) -> None:
        self.engine.ping()

    def close(self) -> None:
        self.engine.close()


_SA_TYPES = {"string": sa.Text, "integer": sa.BigInteger, "boolean": sa.Boolean, "float": sa.Float,
             "timestamp": sa.DateTime}


class SqlAlchemyWarehouse(Warehouse):
    """Any SQLAlchemy database as the warehouse; queries run in read-only transactions.

    `statement_timeout` (seconds, None for no limit) bounds each user query on PostgreSQL, enforced by
    the server (its ``statement_timeout`` on the read-only sessions); other dialects ignore it.
    """

    def __init__(self, url: str, *, statement_timeout: float | None = None):
        self.statement_timeout = checked_timeout(statement_timeout)
        postgres = url.startswith("postgres")
        connect_args = {"connect_timeout": 5} if postgres else {}
        self.sa_engine = sa.create_engine(sqlalchemy_url(url), pool_pre_ping=True, connect_args=connect_args)
        # User SQL gets its own pool whose sessions are read-only by default, so even a statement
        # that ends the transaction ("COMMIT; DELETE …") cannot start a writable one. Nor can a query
        # lift the time limit: the server arms it when the statement starts, and a set_config() in one
        # query is rolled back with its transaction when the connection returns to the pool.
        options = "-c default_transaction_read_only=on"
        if self.statement_timeout is not None:
            options += f" -c statement_timeout={max(1, math.ceil(self.statement_timeout * 1000))}"
        read_only_args = {**connect_args, "options": options} if postgres else {}
        if self.statement_timeout is not None and not postgres:
            log.warning("statement_timeout is enforced on PostgreSQL only; %s runs queries without a limit",
                        url.split("://", 1)[0])
        self.read_engine = sa.create_engine(sqlalchemy_url(url), pool_pre_ping=True, connect_args=read_only_args)
        name = self.sa_engine.dialect.name
        # PostgreSQL through psycopg takes batches by COPY (about 6x the rows per second of executemany).
        self._copy = name == "postgresql" and self.sa_engine.dialect.driver == "psycopg"
        self.dialect = {"postgresql": "postgres"}.get(name, name)
        self.metadata = sa.MetaData()
        self.tables = {
            table: sa.Table(table, self.metadata, *(sa.Column(c, _SA_TYPES[t]()) for c, t in columns),
                            *(sa.Index(f"{table}_{c}_idx", c) for c in INDEX_COLUMNS.get(table, [])))
            for table, columns in TABLES.items()
        }
        with self._translated():
            self.metadata.create_all(self.sa_engine, checkfirst=True)

    def query(self, sql: str, max_rows: int | None = None) -> pd.DataFrame:
        with self._translated(self.statement_timeout), self.read_engine.connect() as connection:
            # A plain string goes to the driver as it is: no bind-parameter parsing of the user's text.
            if max_rows is None:
                return pd.read_sql(sql, connection, dtype_backend="numpy_nullable")
            chunks = pd.read_sql(sql, connection, dtype_backend="numpy_nullable", chunksize=10_000)
            return _bounded_frame(iter(chunks), max_rows)

    def append(self, frames: dict[str, pd.DataFrame]) -> dict[str, int]:
        unknown = sorted(set(frames) - set(self.tables))
        if unknown:
            raise InvalidInput(f"no such warehouse table(s): {unknown}")
        for table, frame in frames.items():
            extra = sorted(set(map(str, frame.columns)) - set(self.tables[table].c.keys()))
            if extra:
                raise InvalidInput(f"table {table} has no column(s) {extra}")
        if self._copy:
            batches = {table: self._copy_batch(table, frame) for table, frame in frames.items() if len(frame)}
        with self._translated(), self.sa_engine.begin() as connection:
            if self._copy:
                _copy_rows(connection, batches)
            else:
                for table, frame in frames.items():
                    if len(frame):
                        records = frame.astype(object).where(frame.notna(), None).to_dict("records")
                        connection.execute(self.tables[table].insert(), records)
        return {table: len(frame) for table, frame in frames.items()}

    def _copy_batch(self, table: str, frame: pd.DataFrame) -> tuple[list[str], list[list[Any]]]:
        """A frame's column names and values for COPY, booleans checked as SQLAlchemy's Boolean would."""
        names = [str(name) for name in frame.columns]
        columns = python_columns(frame, list(frame.columns))
        for name, values in zip(names, columns):
            if isinstance(self.tables[table].c[name].type, sa.Boolean):
                wrong = next((v for v in values if v is not None and v not in (True, False)), _NOTHING)
                if wrong is not _NOTHING:
                    raise InvalidInput(f"the warehouse refused the values: Not a boolean value: {wrong!r}")
        return names, columns

    def query_batches(self, sql: str, rows: int = 65_536) -> tuple[Any, Iterator[Any]]:
        connection = self.read_engine.connect()
        try:
            with self._translated():
                chunks = pd.read_sql(sql, connection, dtype_backend="pyarrow", chunksize=rows)
                first = next(chunks, None)
        except BaseException:
            connection.close()
            raise
        columns = pd.DataFrame() if first is None else first
        schema = pa.Schema.from_pandas(columns, preserve_index=False)

        def stream() -> Iterator[Any]:
            try:
                with self._translated():
                    if first is not None:
                        yield pa.RecordBatch.from_pandas(first, schema=schema, preserve_index=False)
                    for chunk in chunks:
                        yield pa.RecordBatch.from_pandas(chunk, schema=schema, preserve_index=False)
            finally:
                connection.close()

        return schema, stream()

    def recent_rows(self, table: str, time_column: str, since: int | None) -> Any:
        selected = sa.select(self.tables[table])
        if since is not None:
            selected = selected.where(self.tables[table].c[time_column] >= since)
        with self._translated(), self.sa_engine.connect() as connection:
            return pd.read_sql(selected, connection, dtype_backend="numpy_nullable")

    def ping(self) -> None:
        with self._translated(), self.sa_engine.connect() as connection:
            connection.exec_driver_sql("SELECT 1")

    def close(self) -> None:
        self.sa_engine.dispose()
        self.read_engine.dispose()

    def _translated(self, statement_timeout: float | None = None) -> "_SqlAlchemyErrors":
        return _SqlAlchemyErrors(statement_timeout)


_NOTHING = object()


def _copy_rows(connection: sa.Connection, batches: dict[str, tuple[list[str], list[list[Any]]]]) -> None:
    """COPY each table's rows inside the connection's transaction (psycopg's text format: None is NULL)."""
    driver_connection = connection.connection.driver_connection
    try:
        with driver_connection.cursor() as cursor:
            for table, (names, columns) in batches.items():
                statement = psycopg_sql.SQL("COPY {} ({}) FROM STDIN").format(
                    psycopg_sql.Identifier(table), psycopg_sql.SQL(", ").join(map(psycopg_sql.Identifier, names)))
                with cursor.copy(statement) as copy:
                    for row in zip(*columns):
                        copy.write_row(row)
    except psycopg.Error as error:  # the driver's own error, as SQLAlchemy would have wrapped it
        raise DBAPIError.instance("COPY", None, error, psycopg.Error) from error


class _SqlAlchemyErrors:
    """Connection trouble is 503; a statement cancelled at its time limit is query_timeout (400);
    anything else the database refuses is a bad query (400)."""

    def __init__(self, statement_timeout: float | None):
        self.statement_timeout = statement_timeout

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: type | None, error: BaseException | None, _tb: Any) -> bool:
        if isinstance(error, pd.errors.DatabaseError):  # pandas wraps the driver's error
            error = error.__cause__
        if error is None or not isinstance(error, SQLAlchemyError):
            return False
        # SQLSTATE 57014 (query_canceled): the server's statement_timeout, on a session that has one.
        if self.statement_timeout is not None and getattr(getattr(error, "orig", None), "sqlstate", None) == "57014":
            raise query_timeout(ROLE, self.statement_timeout) from None
        if isinstance(error, sa.exc.StatementError) and not isinstance(error, DBAPIError):
            raise InvalidInput(f"the warehouse refused the values: {error.orig}") from None
        if isinstance(error, DBAPIError) and not error.connection_invalidated and not isinstance(
                error, (sa.exc.OperationalError, sa.exc.InterfaceError)):
            raise InvalidQuery(f"the warehouse rejected the query: {error.orig}") from None
        raise BackendUnavailable(ROLE, getattr(error, "orig", None) or error) from None


open_warehouse = backend_registry("WAREHOUSE_URL", {
    "duckdb": DuckDBWarehouse,
    "postgresql": SqlAlchemyWarehouse,
    "sqlite": SqlAlchemyWarehouse,
    "mysql": SqlAlchemyWarehouse,
})
