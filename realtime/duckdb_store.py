"""A realtime store in an in-memory DuckDB database (``REALTIME_URL=duckdb:///:memory:``).

The same engine as the default warehouse, so any query the warehouse runs runs
here unchanged; but each point lookup costs milliseconds (hash joins scan whole
tables), against tens of microseconds in SQLite: see bench/realtime_engines.py.
"""
from __future__ import annotations

from functools import lru_cache
from typing import Any

import pandas as pd

from common.errors import InvalidInput
from common.urls import duckdb_path
from demo.flows import INDEX_COLUMNS, TABLES
from extraction.engines import DuckDBEngine
from extraction.sql import PreparedQuery
from realtime.base import RealtimeStore

ROLE = "realtime store"


class DuckDBRealtimeStore(RealtimeStore):
    """Hot rows of every demo table in an in-memory DuckDB database."""

    dialect = "duckdb"

    def __init__(self, url: str = "duckdb:///:memory:", *, statement_timeout: float | None = None):
        """`statement_timeout`: seconds a lookup, check or query may run (None: no limit); appends have none."""
        if duckdb_path(url) != ":memory:":
            raise InvalidInput(f"REALTIME_URL must be an in-memory database (duckdb:///:memory:), not {url!r}")
        self.engine = DuckDBEngine(":memory:", ROLE, statement_timeout=statement_timeout)
        self.engine.create_tables(TABLES, INDEX_COLUMNS)

    def append(self, frames: dict[str, Any]) -> dict[str, int]:
        return self.engine.append(frames)

    def lookup(self, prepared: PreparedQuery, index_key: str, value: Any, max_rows: int) -> pd.DataFrame:
        return self.engine.query(_lookup_sql(prepared, index_key), [value], max_rows=max_rows)

    def check(self, prepared: PreparedQuery) -> list[tuple[str, str | None]] | None:
        self.engine.query(f"SELECT * FROM ({prepared.sql_for(self.dialect)}) AS _fs_check LIMIT 0")
        return prepared.output_types(TABLES)

    def query(self, sql: str, params: list[Any] | tuple = ()) -> pd.DataFrame:
        """Run a statement (for tests and tools)."""
        return self.engine.query(sql, params)

    def ping(self) -> None:
        self.engine.ping()

    def close(self) -> None:
        self.engine.close()


@lru_cache(maxsize=4096)
def _lookup_sql(prepared: PreparedQuery, index_key: str) -> str:
    return prepared.point_lookup_sql(index_key, DuckDBRealtimeStore.dialect)
