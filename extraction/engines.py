"""SQL engines behind the warehouse and the realtime store.

`DuckDBEngine` serves both the default warehouse (a file) and the realtime
store (in memory): one connection, a cursor per thread, writes serialized and
each batch in one transaction, so a reader never sees half a batch. External
access (files, URLs, extensions) is switched off and the configuration locked
before any user SQL runs. `SqlAlchemyEngine` serves any SQLAlchemy warehouse
URL; user queries run in read-only transactions.
"""
from __future__ import annotations

import threading
from typing import Any, Iterator, Sequence

import duckdb
import pandas as pd

from common.errors import BackendUnavailable, InvalidQuery, ResultTooLarge

DUCKDB_TYPES = {"string": "VARCHAR", "integer": "BIGINT", "boolean": "BOOLEAN", "float": "DOUBLE",
                "timestamp": "TIMESTAMP"}
_DUCKDB_BAD_QUERY = (
    duckdb.ParserException, duckdb.BinderException, duckdb.CatalogException, duckdb.ConversionException,
    duckdb.InvalidInputException, duckdb.PermissionException, duckdb.OutOfRangeException,
    duckdb.NotImplementedException, duckdb.TypeMismatchException, duckdb.ConstraintException,
    duckdb.SyntaxException, duckdb.DataError, duckdb.ProgrammingError,
)


def quote_identifier(name: str) -> str:
    """A SQL identifier in double quotes, inner quotes doubled: the one way names enter SQL text."""
    return '"' + name.replace('"', '""') + '"'


class DuckDBEngine:
    """A DuckDB database shared by threads: `path` is a file or ``:memory:``."""

    def __init__(self, path: str, role: str):
        self.role = role
        self._write_lock = threading.Lock()
        self._local = threading.local()
        try:
            self._connection = duckdb.connect(path, config={
                "enable_external_access": False,
                "autoinstall_known_extensions": False,
                "autoload_known_extensions": False,
            })
            self._connection.execute("SET lock_configuration = true")
        except duckdb.Error as error:
            raise BackendUnavailable(role, error) from None

    def _cursor(self) -> duckdb.DuckDBPyConnection:
        cursor = getattr(self._local, "cursor", None)
        if cursor is None:
            cursor = self._local.cursor = self._connection.cursor()
        return cursor

    def create_tables(self, tables: dict[str, list[tuple[str, str]]], indexes: dict[str, list[str]]) -> None:
        """Create each table (and index) that does not exist yet."""
        with self._write_lock:
            cursor = self._cursor()
            for table, columns in tables.items():
                body = ", ".join(f"{quote_identifier(c)} {DUCKDB_TYPES[t]}" for c, t in columns)
                cursor.execute(f"CREATE TABLE IF NOT EXISTS {quote_identifier(table)} ({body})")
                for column in indexes.get(table, []):
                    index = quote_identifier(f"{table}_{column}_idx")
                    cursor.execute(f"CREATE INDEX IF NOT EXISTS {index} ON {quote_identifier(table)} "
                                   f"({quote_identifier(column)})")

    def append(self, frames: dict[str, Any]) -> dict[str, int]:
        """Insert DataFrames or Arrow tables by column name, all tables in one transaction."""
        with self._write_lock, self._translated():
            cursor = self._cursor()
            views = []
            cursor.execute("BEGIN TRANSACTION")
            try:
                for table, frame in frames.items():
                    views.append(f"_incoming_{table}")
                    cursor.register(views[-1], frame)
                    cursor.execute(f"INSERT INTO {quote_identifier(table)} BY NAME SELECT * FROM {views[-1]}")
                cursor.execute("COMMIT")
            except BaseException:
                cursor.execute("ROLLBACK")
                raise
            finally:  # after COMMIT/ROLLBACK: unregistering inside an aborted transaction would fail
                for view in views:
                    cursor.unregister(view)
        return {table: len(frame) for table, frame in frames.items()}

    def query(self, sql: str, params: Sequence[Any] = (), max_rows: int | None = None) -> pd.DataFrame:
        """Run one SELECT statement (DuckDB's own parser checks it too); with `max_rows`, refuse longer results."""
        with self._translated():
            cursor = self._cursor()
            statements = cursor.extract_statements(sql)
            if len(statements) != 1 or statements[0].type != duckdb.StatementType.SELECT:
                kinds = [statement.type.name for statement in statements]
                raise InvalidQuery(f"the {self.role} runs exactly one SELECT statement, not {kinds}")
            cursor = cursor.execute(sql, list(params))
            if max_rows is None:
                return cursor.df()
            return _bounded_frame(_duckdb_chunks(cursor), max_rows)

    def arrow(self, sql: str, params: Sequence[Any] = ()) -> Any:
        """Run one statement and return an Arrow table (for bulk copies)."""
        with self._translated():
            return self._cursor().sql(sql, params=list(params)).to_arrow_table()

    def ping(self) -> None:
        with self._translated():
            self._cursor().execute("SELECT 1").fetchone()

    def close(self) -> None:
        self._connection.close()

    def _translated(self) -> "_DuckDBErrors":
        return _DuckDBErrors(self.role)


class _DuckDBErrors:
    """Turn DuckDB exceptions into the service's errors: bad SQL is 400, the rest 503."""

    def __init__(self, role: str):
        self.role = role

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: type | None, error: BaseException | None, _tb: Any) -> bool:
        if error is None or not isinstance(error, duckdb.Error):
            return False
        if isinstance(error, _DUCKDB_BAD_QUERY):
            raise InvalidQuery(f"the {self.role} rejected the query: {error}") from None
        raise BackendUnavailable(self.role, error) from None


def _duckdb_chunks(cursor: duckdb.DuckDBPyConnection) -> Iterator[pd.DataFrame]:
    """The result in chunks; the first is yielded even when empty, so columns survive."""
    chunk = cursor.fetch_df_chunk()
    yield chunk
    while not chunk.empty:
        chunk = cursor.fetch_df_chunk()
        if not chunk.empty:
            yield chunk


def _bounded_frame(chunks: Iterator[pd.DataFrame], max_rows: int) -> pd.DataFrame:
    """Concatenate chunks, raising ResultTooLarge as soon as they pass `max_rows`."""
    kept: list[pd.DataFrame] = []
    rows = 0
    for chunk in chunks:
        rows += len(chunk)
        if rows > max_rows:
            raise ResultTooLarge(f"the result has more than {max_rows} rows, the limit for a JSON response",
                                 {"max_rows": max_rows})
        kept.append(chunk)
    return pd.concat(kept, ignore_index=True) if len(kept) > 1 else kept[0]
