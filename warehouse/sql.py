"""Any SQLAlchemy database as the warehouse (PostgreSQL in production); user queries run read-only.

PostgreSQL takes batches by ``COPY … FROM STDIN (FORMAT csv)`` of Arrow-written CSV, inside the
same transaction as the batch ledger; other dialects insert row by row.
"""
from __future__ import annotations

import contextlib
import io
import json
import logging
import math
import threading
from typing import Any, Iterator

import pandas as pd
import pyarrow as pa
import pyarrow.csv as pa_csv
import psycopg
import sqlalchemy as sa
from psycopg import sql as psycopg_sql
from sqlalchemy.exc import DBAPIError, SQLAlchemyError

from catalog.base import SourceRecord
from sql import types as logical_types
from common import postgres as pg_deadlines
from common.errors import BackendUnavailable, InvalidInput, InvalidQuery
from common.urls import sqlalchemy_url
from sql.duckdb_engine import (_bounded_frame, checked_timeout, python_columns, query_timeout, quote_identifier,
                               quote_qualified)
from warehouse.base import (COPY_BATCH_ROWS, LEDGER_TABLE, BatchMark, StreamDeadline, Warehouse, WarehouseSnapshot,
                            WriteReceipt, split_table)

ROLE = "warehouse"
WRITE_DEADLINE_S = 300.0  # client-side limit of one wait on the server for the service's own writes (a big COPY)
log = logging.getLogger(__name__)


class SqlAlchemyWarehouse(Warehouse):
    """Any SQLAlchemy database as the warehouse; queries run in read-only transactions.

    `statement_timeout` (seconds, None for no limit) bounds each user query on PostgreSQL, enforced by
    the server (its ``statement_timeout`` on the read-only sessions); other dialects ignore it.
    """

    def __init__(self, url: str, *, statement_timeout: float | None = None, read_url: str | None = None):
        self.statement_timeout = checked_timeout(statement_timeout)
        postgres = url.startswith("postgres")
        if read_url and not (postgres and read_url.startswith("postgres")):
            raise InvalidInput("WAREHOUSE_READ_URL is for a PostgreSQL warehouse (a role that may only read)")
        self.sa_engine = _engine(url, WRITE_DEADLINE_S)
        # User SQL gets its own pool (as the read-only role of `read_url`, if given) whose sessions are
        # read-only by default, so even a statement that ends the transaction ("COMMIT; DELETE …") cannot
        # start a writable one. Nor can a query lift the time limit: the server arms it when the statement
        # starts, and a set_config() in one query is rolled back with its transaction when the connection
        # returns to the pool.
        # ...and in UTC, whatever the server's TimeZone: EXTRACT(HOUR FROM ts) and timestamp literals without
        # an offset then mean what they mean on DuckDB and in the realtime store (sql/parity.py).
        options = "-c default_transaction_read_only=on -c TimeZone=UTC"
        if self.statement_timeout is not None:
            options += f" -c statement_timeout={max(1, math.ceil(self.statement_timeout * 1000))}"
        if self.statement_timeout is not None and not postgres:
            log.warning("statement_timeout is enforced on PostgreSQL only; %s runs queries without a limit",
                        url.split("://", 1)[0])
        read_deadline = None if self.statement_timeout is None else self.statement_timeout + pg_deadlines.GRACE_S
        self.read_engine = _engine(read_url or url, read_deadline, {"options": options} if postgres else {})
        name = self.sa_engine.dialect.name
        # PostgreSQL through psycopg takes batches by COPY (about 6x the rows per second of executemany).
        self._copy = name == "postgresql" and self.sa_engine.dialect.driver == "psycopg"
        self.dialect = {"postgresql": "postgres"}.get(name, name)
        self._ledger_ready = False
        self._pinned = threading.local()  # .connection: this thread's `consistent_snapshot` transaction
    def query(self, sql: str, max_rows: int | None = None, uploads: dict[str, Any] | None = None) -> pd.DataFrame:
        with self._translated(self.statement_timeout), self.read_engine.connect() as connection:
            self._upload(connection, uploads)
            # A plain string goes to the driver as it is, with its '%' escaped (see `_driver_text`).
            if max_rows is None:
                return pd.read_sql(self._driver_text(sql), connection, dtype_backend="numpy_nullable")
            chunks = pd.read_sql(self._driver_text(sql), connection, dtype_backend="numpy_nullable", chunksize=10_000)
            return _bounded_frame(iter(chunks), max_rows)

    def _driver_text(self, sql: str) -> str:
        """`sql` as the driver reads it: psycopg takes '%' for a placeholder even with no parameters, so a
        LIKE pattern ('%p%') or a modulo (i % 3) was refused; '%%' is its literal '%'."""
        return sql.replace("%", "%%") if self.sa_engine.dialect.paramstyle in ("format", "pyformat") else sql

    def table_columns(self, table: str) -> list[tuple[str, str]] | None:
        schema, name = split_table(table, "public" if self.dialect == "postgres" else "main")
        if self.dialect != "postgres":  # no information_schema: SQLAlchemy's inspector (the default schema unless named)
            inspector, named = sa.inspect(self.sa_engine), schema if "." in table else None
            with self._translated():
                if not inspector.has_table(name, schema=named):
                    return None
                return [(c["name"], str(c["type"])) for c in inspector.get_columns(name, schema=named)]
        with self._translated(), self.sa_engine.connect() as connection:
            rows = connection.execute(sa.text(
                "SELECT column_name, data_type FROM information_schema.columns WHERE table_schema = :schema "
                "AND table_name = :name ORDER BY ordinal_position"), {"schema": schema, "name": name}).all()
        return [(row[0], row[1]) for row in rows] or None

    def create_table(self, source: SourceRecord) -> None:
        types = logical_types.POSTGRES if self.dialect == "postgres" else logical_types.SQLITE
        body = ", ".join(f"{quote_identifier(c['name'])} {types[c['type']]}{'' if c.get('nullable', True) else ' NOT NULL'}"
                         for c in source.columns)
        with self._translated(), self.sa_engine.begin() as connection:
            connection.exec_driver_sql(f"CREATE TABLE IF NOT EXISTS {quote_qualified(source.table)} ({body})")

    def add_columns(self, table: str, columns: list[dict[str, Any]]) -> None:
        types = logical_types.POSTGRES if self.dialect == "postgres" else logical_types.SQLITE
        with self._translated(), self.sa_engine.begin() as connection:
            for column in columns:
                connection.exec_driver_sql(f"ALTER TABLE {quote_qualified(table)} ADD COLUMN "
                                           f"{quote_identifier(column['name'])} {types[column['type']]}")

    def drop_not_null(self, table: str, columns: list[str]) -> None:
        if self.dialect != "postgres":  # SQLite cannot drop a constraint in place; tables it made have none
            return
        with self._translated(), self.sa_engine.begin() as connection:
            for column in columns:
                connection.exec_driver_sql(f"ALTER TABLE {quote_qualified(table)} ALTER COLUMN {quote_identifier(column)} "
                                           "DROP NOT NULL")

    def append(self, frames: dict[str, Any], batch: BatchMark | None = None,
               receipt: WriteReceipt | None = None) -> dict[str, Any] | None:
        tables = {table: _arrow(frame) for table, frame in frames.items()}
        if batch is not None and not self._ledger_ready:  # once per process: a batch id's first use creates it
            self._ensure_ledger()
            self._ledger_ready = True
        with self._translated(), self.sa_engine.begin() as connection:
            if batch is not None:
                claimed = connection.execute(sa.text(
                    f"INSERT INTO {LEDGER_TABLE} (source, batch_id, answer) VALUES (:source, :batch_id, :answer) "
                    "ON CONFLICT DO NOTHING RETURNING batch_id"),
                    {"source": batch.source, "batch_id": batch.batch_id, "answer": json.dumps(batch.answer)}).first()
                if claimed is None:  # written before (or by a concurrent retry that committed first)
                    answer = connection.execute(sa.text(
                        f"SELECT answer FROM {LEDGER_TABLE} WHERE source = :source AND batch_id = :batch_id"),
                        {"source": batch.source, "batch_id": batch.batch_id}).scalar_one()
                    connection.rollback()
                    return json.loads(answer)
            if receipt is not None and self.dialect == "postgres":  # the id replicas compare with their snapshot
                receipt.transaction = int(connection.exec_driver_sql("SELECT pg_current_xact_id()::text").scalar_one())
            for table, rows in tables.items():
                if not rows.num_rows:
                    continue
                if self._copy:
                    _copy_csv(connection, table, rows)
                else:
                    columns = python_columns(rows, rows.column_names)
                    names = rows.column_names
                    statement = sa.text(f"INSERT INTO {quote_qualified(table)} ({', '.join(map(quote_identifier, names))}) "
                                        f"VALUES ({', '.join(f':p{i}' for i in range(len(names)))})")
                    connection.execute(statement, [{f"p{i}": v for i, v in enumerate(row)} for row in zip(*columns)])
        return None

    def _ensure_ledger(self) -> None:
        with self._translated(), self.sa_engine.begin() as connection:
            connection.exec_driver_sql(f"CREATE TABLE IF NOT EXISTS {LEDGER_TABLE} (source TEXT NOT NULL, "
                                       "batch_id TEXT NOT NULL, answer TEXT NOT NULL, PRIMARY KEY (source, batch_id))")

    def query_batches(self, sql: str, rows: int = 65_536, uploads: dict[str, Any] | None = None
                      ) -> tuple[Any, Iterator[Any]]:
        """Batches from a server-side cursor (`stream_results`), under one deadline for the whole stream:
        at it, or when the stream is closed early, the statement in flight is cancelled."""
        connection = self.read_engine.connect().execution_options(stream_results=True, max_row_buffer=rows)
        try:
            driver = connection.connection.driver_connection
            deadline = StreamDeadline(self.statement_timeout, _canceller(driver))
        except BaseException:
            connection.close()
            raise
        try:
            with self._stream_translated(deadline):
                self._upload(connection, uploads)
                chunks = pd.read_sql(self._driver_text(sql), connection, dtype_backend="pyarrow", chunksize=rows)
                first = next(chunks, None)
        except BaseException:
            deadline.stop()
            connection.close()
            raise
        columns = pd.DataFrame() if first is None else first
        schema = pa.Schema.from_pandas(columns, preserve_index=False)

        def stream() -> Iterator[Any]:
            finished = False
            try:
                with self._stream_translated(deadline):
                    if first is not None:
                        yield pa.RecordBatch.from_pandas(first, schema=schema, preserve_index=False)
                    for chunk in chunks:
                        yield pa.RecordBatch.from_pandas(chunk, schema=schema, preserve_index=False)
                finished = True
            finally:
                deadline.stop()
                if not finished:  # closed early (the client went away): cancel the statement in flight
                    deadline.cancel()
                if not finished or deadline.expired:  # cancelled: never hand this session on to the pool
                    connection.invalidate()
                connection.close()

        return schema, stream()

    def write_table(self, table: str, schema: Any, batches: Iterator[Any], replace: bool = False) -> None:
        if not self._copy:
            raise InvalidInput("exports into a table need a DuckDB or PostgreSQL warehouse")
        columns = ", ".join(f"{quote_identifier(field.name)} {_postgres_type(field.type)}" for field in schema)
        with self._translated(), self.sa_engine.begin() as connection:
            if replace:
                connection.exec_driver_sql(f"DROP TABLE IF EXISTS {quote_qualified(table)}")
            connection.exec_driver_sql(f"CREATE TABLE {quote_qualified(table)} ({columns})")
            for batch in batches:
                _copy_csv(connection, table, pa.Table.from_batches([batch]))

    def _upload(self, connection: sa.Connection, uploads: dict[str, Any] | None) -> None:
        """Copy `uploads` into temporary tables of this connection's transaction, which then turns read-only;
        the rollback that ends it drops them."""
        if not uploads:
            return
        if not self._copy:
            raise InvalidInput("point-in-time training needs a DuckDB or PostgreSQL warehouse")
        # on the driver's own cursor: a streaming connection would run these through a server-side cursor
        with connection.connection.driver_connection.cursor() as cursor:
            cursor.execute("SET TRANSACTION READ WRITE")
            for name, table in uploads.items():
                columns = ", ".join(f"{quote_identifier(f.name)} {_postgres_type(f.type)}" for f in table.schema)
                cursor.execute(f"CREATE TEMPORARY TABLE {quote_identifier(name)} ({columns})")
        for name, table in uploads.items():
            _copy_csv(connection, name, table)
        with connection.connection.driver_connection.cursor() as cursor:
            cursor.execute("SET TRANSACTION READ ONLY")

    def recent_rows(self, table: str, time_column: str, since: Any, columns: list[str] | None = None) -> Any:
        statement, params = _recent_sql(table, time_column, since, columns)
        with self._translated(), self._reading() as connection:
            return pd.read_sql(statement, connection, params=params, dtype_backend="pyarrow")

    def recent_batches(self, table: str, time_column: str, since: Any, columns: list[str] | None = None,
                       rows: int = COPY_BATCH_ROWS) -> Iterator[Any]:
        """DataFrames of `rows` rows from a server-side cursor (`stream_results`): the result is never held whole."""
        statement, params = _recent_sql(table, time_column, since, columns)
        with self._translated(), self._reading() as connection:
            streaming = connection.execution_options(stream_results=True, max_row_buffer=rows)
            yield from pd.read_sql(statement, streaming, params=params, chunksize=rows, dtype_backend="pyarrow")

    def _reading(self) -> Any:
        """The connection `consistent_snapshot` pinned on this thread (left open), else a new one."""
        pinned = getattr(self._pinned, "connection", None)
        return contextlib.nullcontext(pinned) if pinned else self.sa_engine.connect()

    @contextlib.contextmanager
    def consistent_snapshot(self) -> Iterator[WarehouseSnapshot]:
        """PostgreSQL: one REPEATABLE READ, read-only transaction whose snapshot (taken by its first
        statement, ``pg_current_snapshot()``) every `recent_rows` of this thread reads until the context ends."""
        if self.dialect != "postgres":
            super().consistent_snapshot()  # raises: only PostgreSQL has one
        with self._translated(), self.sa_engine.connect() as connection:
            connection = connection.execution_options(isolation_level="REPEATABLE READ", postgresql_readonly=True)
            with connection.begin():
                snapshot = WarehouseSnapshot.parse(
                    connection.exec_driver_sql("SELECT pg_current_snapshot()::text").scalar_one())
                self._pinned.connection = connection
                try:
                    yield snapshot
                finally:
                    self._pinned.connection = None

    def table_stats(self, table: str, time_column: str) -> dict[str, Any]:
        column = quote_identifier(time_column)
        with self._translated(), self.sa_engine.connect() as connection:
            row = connection.execute(sa.text(f"SELECT count(*), min({column}), max({column}) "
                                             f"FROM {quote_qualified(table)}")).one()
        return {"rows": int(row[0]), "min_event_time": row[1], "max_event_time": row[2]}

    def ping(self) -> None:
        with self._translated(), self.sa_engine.connect() as connection:
            connection.exec_driver_sql("SELECT 1")

    def close(self) -> None:
        self.sa_engine.dispose()
        self.read_engine.dispose()

    def _translated(self, statement_timeout: float | None = None) -> "_SqlAlchemyErrors":
        return _SqlAlchemyErrors(statement_timeout)

    def _stream_translated(self, deadline: StreamDeadline) -> "_SqlAlchemyErrors":
        return _SqlAlchemyErrors(self.statement_timeout, deadline)


def _canceller(driver: Any) -> Any:
    """What stops a running statement of this DBAPI connection from another thread (a no-op if none)."""
    for name in ("cancel_safe", "cancel", "interrupt"):  # psycopg 3.2+, psycopg, sqlite3
        if callable(getattr(driver, name, None)):
            return getattr(driver, name)
    return lambda: None


def _arrow(frame: Any) -> pa.Table:
    """A DataFrame (the demo generator's) or an Arrow table, as Arrow."""
    if isinstance(frame, pa.Table):
        return frame
    try:
        return pa.Table.from_pandas(frame, preserve_index=False)
    except (pa.ArrowInvalid, pa.ArrowTypeError) as error:
        raise InvalidInput(f"the warehouse refused the values: {error}") from None


def _postgres_type(arrow_type: pa.DataType) -> str:
    """The PostgreSQL column type for an uploaded Arrow column (the spine's own columns)."""
    kinds = ((pa.types.is_boolean, "boolean"), (pa.types.is_integer, "integer"), (pa.types.is_floating, "float"),
             (lambda t: pa.types.is_string(t) or pa.types.is_large_string(t), "string"),
             (lambda t: pa.types.is_timestamp(t) and t.tz is not None, "timestamp"))
    for matches, logical in kinds:
        if matches(arrow_type):
            return logical_types.POSTGRES[logical]
    raise InvalidInput(f"a column of type {arrow_type} has no PostgreSQL type here (integers, floats, booleans, "
                       "strings and zoned timestamps do)")


def _copy_csv(connection: sa.Connection, table: str, rows: pa.Table) -> None:
    """COPY `rows` inside the connection's transaction as CSV written by Arrow in C.

    Every valid value is quoted and nulls are left empty, so PostgreSQL reads an empty string
    as '' and a missing value as NULL.
    """
    buffer = io.BytesIO()
    pa_csv.write_csv(rows, buffer, pa_csv.WriteOptions(include_header=False, quoting_style="all_valid"))
    driver_connection = connection.connection.driver_connection
    statement = psycopg_sql.SQL("COPY {} ({}) FROM STDIN (FORMAT csv)").format(
        psycopg_sql.SQL(".").join(map(psycopg_sql.Identifier, table.split("."))),
        psycopg_sql.SQL(", ").join(map(psycopg_sql.Identifier, rows.column_names)))
    try:
        with driver_connection.cursor() as cursor, cursor.copy(statement) as copy:
            copy.write(buffer.getbuffer())
    except psycopg.Error as error:  # the driver's own error, as SQLAlchemy would have wrapped it
        raise DBAPIError.instance("COPY", None, error, psycopg.Error) from error


def _recent_sql(table: str, time_column: str, since: Any, columns: list[str] | None) -> tuple[Any, dict[str, Any]]:
    """The SELECT of `recent_rows` (a SQLAlchemy text clause) and its parameters."""
    where = "" if since is None else f" WHERE {quote_identifier(time_column)} > :since"
    selected = "*" if columns is None else ", ".join(map(quote_identifier, columns))
    return (sa.text(f"SELECT {selected} FROM {quote_qualified(table)}{where}"),
            {} if since is None else {"since": since})


class _SqlAlchemyErrors:
    """Connection trouble is 503; a statement cancelled at its time limit is query_timeout (400);
    anything else the database refuses is a bad query (400)."""

    def __init__(self, statement_timeout: float | None, deadline: StreamDeadline | None = None):
        self.statement_timeout = statement_timeout
        self.deadline = deadline

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: type | None, error: BaseException | None, _tb: Any) -> bool:
        if self.deadline is not None and self.deadline.expired and isinstance(error, Exception):
            raise query_timeout(ROLE, self.deadline.seconds) from None  # cancelled at the stream's deadline
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


def _engine(url: str, deadline: float | None, extra: dict[str, Any] | None = None) -> sa.Engine:
    """A pre-pinging engine; on PostgreSQL with a connect timeout, keepalives and a client-side deadline."""
    if not url.startswith("postgres"):
        return sa.create_engine(sqlalchemy_url(url), pool_pre_ping=True)
    parsed = sa.make_url(sqlalchemy_url(url))
    arguments = pg_deadlines.connect_args(parsed, connect_timeout=5, **(extra or {}))
    return pg_deadlines.with_deadlines(sa.create_engine(parsed, pool_pre_ping=True, connect_args=arguments),
                                       deadline)
