"""A realtime store in an in-memory DuckDB database (``REALTIME_URL=duckdb:///:memory:``).

The same engine as the default warehouse, so any query the warehouse runs runs
here unchanged; but each point lookup costs milliseconds (hash joins scan whole
tables), against tens of microseconds in SQLite: see bench/realtime_engines.py.
Each source's view compares its event time with ``fs_cutoff('<name>')``, a
function of the store's clock (epoch seconds), as the SQLite store does.
"""
from __future__ import annotations

import re
from typing import Any, Iterable, Mapping

import pandas as pd

from catalog.base import SourceRecord
from sql import types as logical_types
from common.errors import FeatureStoreError, InvalidInput
from common.urls import duckdb_path
from sql.duckdb_engine import DuckDBEngine, quote_identifier
from sql.prepared import PreparedQuery
from realtime.base import ROLE, RealtimeStore, index_name, newest_only, rows_table, time_value


STAGED_BATCH = "_fs_loading"  # the name a batch being loaded is read by
QUADRATIC_JOINS = {"CROSS_PRODUCT", "NESTED_LOOP_JOIN", "BLOCKWISE_NL_JOIN"}  # plan operators with no hash key


class DuckDBRealtimeStore(RealtimeStore):
    """Hot rows of every declared source in an in-memory DuckDB database."""

    dialect = "duckdb"

    def __init__(self, url: str = "duckdb:///:memory:", *, statement_timeout: float | None = None,
                 key_pushdown: bool = True):
        """`statement_timeout`: seconds a lookup, check or query may run (None: no limit); appends have none."""
        super().__init__(key_pushdown)
        if duckdb_path(url) != ":memory:":
            raise InvalidInput(f"REALTIME_URL must be an in-memory database (duckdb:///:memory:), not {url!r}")
        self.engine = DuckDBEngine(":memory:", ROLE, statement_timeout=statement_timeout)
        self.engine.create_function("fs_cutoff", self._cutoff_seconds, ["VARCHAR"], "DOUBLE")
        self._indexes: dict[str, list[str]] = {}

    def _cutoff_seconds(self, name: str) -> float | None:
        source = self.sources.get(name)
        return None if source is None else self.cutoff(source)

    def register(self, source: SourceRecord) -> None:
        table = quote_identifier(rows_table(source.name))
        statements = []
        known = self.sources.get(source.name)
        if known is None:
            body = ", ".join(f"{quote_identifier(c['name'])} {logical_types.DUCKDB[c['type']]}" for c in source.columns)
            statements.append(f"CREATE TABLE {table} ({body})")
            self._indexes[source.name] = []
        else:
            have = {c["name"] for c in known.columns}
            statements += [f"ALTER TABLE {table} ADD COLUMN {quote_identifier(c['name'])} "
                           f"{logical_types.DUCKDB[c['type']]}" for c in source.columns if c["name"] not in have]
        column = quote_identifier(source.event_time)
        is_timestamp = any(c["name"] == source.event_time and c["type"] == "timestamp" for c in source.columns)
        bound = f"to_timestamp(fs_cutoff('{source.name}'))" if is_timestamp else f"fs_cutoff('{source.name}')"
        conditions = [c for c in (None if source.hot_window_seconds is None else f"_fs_row.{column} > {bound}",
                                  newest_only(source, table, "_fs_row")) if c]
        where = f" WHERE {' AND '.join(conditions)}" if conditions else ""
        statements.append(f"CREATE OR REPLACE VIEW {quote_identifier(source.name)} AS SELECT _fs_row.* FROM {table} "
                          f"AS _fs_row{where}")
        self.engine.execute_ddl(statements)
        self.sources[source.name] = source
        for key in source.entity_keys:  # as the SQLite store: eviction scans (columnar, cheap here)
            self.index(source.name, key)

    def index(self, source: str, column: str) -> None:
        if column in self._indexes[source]:
            return
        self.engine.execute_ddl([f"CREATE INDEX IF NOT EXISTS {quote_identifier(index_name(source, column))} ON "
                                 f"{quote_identifier(rows_table(source))} ({quote_identifier(column)})"])
        if column not in self._indexes[source]:
            self._indexes[source].append(column)

    def append(self, frames: dict[str, Any]) -> dict[str, int]:
        unknown = sorted(set(frames) - set(self.sources))
        if unknown:
            raise InvalidInput(f"the realtime store has no source(s) {unknown}")
        counts = self.engine.append({rows_table(name): frame for name, frame in frames.items()})
        return {name: counts[rows_table(name)] for name in frames}

    def load(self, source: str, batches: Iterable[Any]) -> int:
        """Insert the batches one at a time in one transaction (DuckDB reads each Arrow table in place)."""
        if source not in self.sources:
            raise InvalidInput(f"the realtime store has no source {source!r}")
        table = quote_identifier(rows_table(source))
        count = 0
        with self.engine.transaction() as cursor:
            for frame in batches:
                cursor.register(STAGED_BATCH, frame)
                try:
                    cursor.execute(f"INSERT INTO {table} BY NAME SELECT * FROM {STAGED_BATCH}")
                finally:
                    cursor.unregister(STAGED_BATCH)
                count += len(frame)
        return count

    def lookup(self, prepared: PreparedQuery, index_key: str, value: Any, max_rows: int,
               request_rows: dict[str, Any] | None = None, dtypes: Mapping[str, str] | None = None) -> pd.DataFrame:
        staged = {rows_table(name): rows for name, rows in (request_rows or {}).items()}
        lookup = self.point_lookup(prepared, index_key)
        return self.engine.query(lookup.sql, list(lookup.bind(value)), max_rows=max_rows, staged=staged)

    def check(self, prepared: PreparedQuery) -> list[tuple[str, str | None]] | None:
        self.refuse_unequal(prepared)
        self.engine.query(f"SELECT * FROM ({prepared.realtime_sql(self.dialect, self.tables())}) AS _fs_check "
                          "LIMIT 0")
        return prepared.output_types(self.tables())

    def lookup_scans(self, prepared: PreparedQuery) -> dict[str, list[str]]:
        """DuckDB scans whole tables for every lookup (hash joins): only a join with no equality to hash
        on (a cartesian product, a nested-loop join) grows with the product of the tables, so only its
        plan counts as not key-bounded."""
        try:
            plan = self.engine.arrow("EXPLAIN (FORMAT json) " + prepared.sql_for(self.dialect)).to_pylist()
        except FeatureStoreError:  # a plan it cannot explain: no warning rather than a failed save
            return {}
        operators = set(re.findall(r'"name":\s*"([A-Z_]+)"', " ".join(str(v) for row in plan for v in row.values())))
        tables = self._table_sources(prepared)
        if not operators & QUADRATIC_JOINS or not tables:
            return {}
        return {key: tables for key in self.serving_keys(prepared)}

    def _delete_through(self, source: SourceRecord, cutoff: float) -> int:
        with self.engine.transaction() as cursor:
            cursor.execute(f"DELETE FROM {quote_identifier(rows_table(source.name))} WHERE "
                           f"{quote_identifier(source.event_time)} <= ?", [time_value(source, cutoff)])
            return cursor.fetchall()[0][0]

    def stats(self, source: str) -> dict[str, Any]:
        column = quote_identifier(self.sources[source].event_time)
        row = self.engine.arrow(f"SELECT count(*) AS n, min({column}) AS lo, max({column}) AS hi FROM "
                                f"{quote_identifier(source)}").to_pylist()[0]
        return {"rows": row["n"], "min_event_time": row["lo"], "max_event_time": row["hi"]}

    def query(self, sql: str, params: list[Any] | tuple = ()) -> pd.DataFrame:
        """Run a statement (for tests and tools)."""
        return self.engine.query(sql, params)

    def ping(self) -> None:
        self.engine.ping()

    def close(self) -> None:
        self.engine.close()
