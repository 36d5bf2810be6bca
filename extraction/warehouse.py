"""The warehouse: cold data, the source of truth for training sets.

`WAREHOUSE_URL` picks it: ``duckdb:///path`` (the embedded default) or any
SQLAlchemy URL (PostgreSQL in production). Both create the demo tables on open,
append each batch in one transaction, and run user SQL read-only.
"""
from __future__ import annotations

import os
from abc import ABC, abstractmethod
from typing import Any

import pandas as pd
import sqlalchemy as sa
from sqlalchemy.exc import DBAPIError, SQLAlchemyError

from common.errors import BackendUnavailable, InvalidInput, InvalidQuery
from common.urls import backend_registry, duckdb_path, sqlalchemy_url
from demo.flows import INDEX_COLUMNS, TABLES
from extraction.engines import DuckDBEngine, _bounded_frame, quote_identifier

ROLE = "warehouse"


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

    def __init__(self, url: str):
        path = duckdb_path(url)
        if path != ":memory:":
            os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        self.engine = DuckDBEngine(path, ROLE)
        self.engine.create_tables(TABLES, {})

    def query(self, sql: str, max_rows: int | None = None) -> pd.DataFrame:
        return self.engine.query(sql, max_rows=max_rows)

    def append(self, frames: dict[str, pd.DataFrame]) -> dict[str, int]:
        return self.engine.append(frames)

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
    """Any SQLAlchemy database as the warehouse; queries run in read-only transactions."""

    def __init__(self, url: str):
        postgres = url.startswith("postgres")
        connect_args = {"connect_timeout": 5} if postgres else {}
        self.sa_engine = sa.create_engine(sqlalchemy_url(url), pool_pre_ping=True, connect_args=connect_args)
        # User SQL gets its own pool whose sessions are read-only by default, so even a statement
        # that ends the transaction ("COMMIT; DELETE …") cannot start a writable one.
        read_only_args = {**connect_args, "options": "-c default_transaction_read_only=on"} if postgres else {}
        self.read_engine = sa.create_engine(sqlalchemy_url(url), pool_pre_ping=True, connect_args=read_only_args)
        name = self.sa_engine.dialect.name
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
        with self._translated(), self.read_engine.connect() as connection:
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
        with self._translated(), self.sa_engine.begin() as connection:
            for table, frame in frames.items():
                if len(frame):
                    records = frame.astype(object).where(frame.notna(), None).to_dict("records")
                    connection.execute(self.tables[table].insert(), records)
        return {table: len(frame) for table, frame in frames.items()}

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

    def _translated(self) -> "_SqlAlchemyErrors":
        return _SqlAlchemyErrors()


class _SqlAlchemyErrors:
    """Connection trouble is 503; anything else the database refuses is a bad query (400)."""

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: type | None, error: BaseException | None, _tb: Any) -> bool:
        if isinstance(error, pd.errors.DatabaseError):  # pandas wraps the driver's error
            error = error.__cause__
        if error is None or not isinstance(error, SQLAlchemyError):
            return False
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
