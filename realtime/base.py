"""The realtime store contract: each declared source's hot rows, one entity at a time."""
from __future__ import annotations

import datetime as dt
import time
from abc import ABC, abstractmethod
from typing import Any, Callable, Iterable, Iterator, Mapping

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from catalog.base import SourceRecord
from common.errors import InvalidInput, InvalidQuery
from sources.rows import arrow_schema, stored_rows
from sql.duckdb_engine import quote_identifier
from sql.key_pushdown import PointLookup, Refusal, point_lookup
from sql.prepared import PreparedQuery
from warehouse import Warehouse

ROLE = "realtime store"
ROWS_PREFIX = "_fs_rows_"  # the table behind each source's view


def index_name(source: str, column: str) -> str:
    """A realtime index's name: the source's length first, so no two (source, column) pairs share one."""
    return f"_fs_idx_{len(source)}_{source}_{column}"


def newest_only(source: SourceRecord, table: str, alias: str) -> str | None:
    """The condition that keeps a row of `table` (as `alias`) unless a newer version replaced it: a row with
    the same entity keys and event time and a later `created_time` (None for a source without one).
    Serving, training and point-in-time training all read a source through it."""
    if source.created_time is None:
        return None
    same = " AND ".join(f"_fs_newer.{quote_identifier(c)} = {alias}.{quote_identifier(c)}"
                        for c in dict.fromkeys([*source.entity_keys, source.event_time]))
    created = quote_identifier(source.created_time)
    return (f"NOT EXISTS (SELECT 1 FROM {table} AS _fs_newer WHERE {same} "
            f"AND _fs_newer.{created} > {alias}.{created})")


def rows_table(source: str) -> str:
    """The table that holds a source's rows; the source's own name is a view over its hot window."""
    return ROWS_PREFIX + source


class RealtimeStore(ABC):
    """A hot window of every declared table source, in memory, for point lookups. Every store must:

    - give each registered source a table named after it (a view) that shows only rows with
      ``event_time > now - hot_window_seconds`` (all rows without a window), so a row past its
      window is never served even before `evict` deletes it; "now" is `clock()`;
    - index every source on its entity keys and on the columns `index` is asked for;
    - run a saved query for one entity with the key as a bound parameter, returning the DataFrame
      dtypes the warehouse's DuckDB engine would (bool/boolean, int64/Int64, float64, str,
      datetime64[us, UTC]), typed from the registered sources' declared columns;
    - write each `append` in one transaction (no reader sees half a batch) and keep nothing on
      disk: `hydrate` rebuilds it from the warehouse;
    - let readers run at once: a lookup never waits for another lookup, nor for a write to commit;
    - stop a `lookup`, `check` or query running longer than ``statement_timeout`` with InvalidQuery
      code ``query_timeout`` (400) and keep answering; its own writes have no limit.
    """

    dialect: str  # the sqlglot dialect saved queries are transpiled to
    utc_timestamps_only = False  # True: every timestamp it returns is UTC-aware (a naive one cannot be served)

    def __init__(self, key_pushdown: bool = True) -> None:
        """`key_pushdown`: filter every source of a lookup by the key (`sql.key_pushdown`); off only to compare."""
        self.clock: Callable[[], float] = time.time
        self.sources: dict[str, SourceRecord] = {}
        self.key_pushdown = key_pushdown

    def tables(self) -> dict[str, list[tuple[str, str]]]:
        """(column, logical type) of every registered source: what queries are typed with here."""
        return {name: source.column_types() for name, source in self.sources.items()}

    def cutoff(self, source: SourceRecord, now: float | None = None) -> float | None:
        """Epoch seconds at or before which the source's rows are out of its window (None: no window)."""
        if source.hot_window_seconds is None:
            return None
        return (self.clock() if now is None else now) - source.hot_window_seconds

    @abstractmethod
    def register(self, source: SourceRecord) -> None:
        """Create the source's table, view and indexes, or widen them to a new compatible version."""

    @abstractmethod
    def index(self, source: str, column: str) -> None:
        """Index `column` of `source` (a column saved queries join on); idempotent."""

    @abstractmethod
    def append(self, frames: dict[str, Any]) -> dict[str, int]:
        """Add rows (DataFrames or Arrow tables) to several sources in one transaction."""

    @abstractmethod
    def lookup(self, prepared: PreparedQuery, index_key: str, value: Any, max_rows: int,
               request_rows: dict[str, Any] | None = None, dtypes: Mapping[str, str] | None = None) -> pd.DataFrame:
        """The saved query's rows whose `index_key` equals `value` (`dtypes`: the dtypes the caller will cast
        the columns to, a hint a store may build them in directly).

        `request_rows` (source name -> validated Arrow table) stand in for those request sources'
        rows during this lookup only: no other reader sees them and nothing of them is kept.
        """

    @abstractmethod
    def check(self, prepared: PreparedQuery) -> list[tuple[str, str | None]] | None:
        """Raise InvalidQuery unless the query runs here; return its output types where known."""

    def refuse_unequal(self, prepared: PreparedQuery) -> None:
        """Raise InvalidQuery naming what of the query this store would compute otherwise than the warehouse
        (`PreparedQuery.unequal_constructs`): a save-time refusal, not a value that differs in serving."""
        constructs = prepared.unequal_constructs(self.dialect, self.tables())
        if constructs:
            raise InvalidQuery(f"the realtime store ({self.dialect}) would compute other values than the warehouse "
                               f"for {', '.join(constructs)}; compute it in the ETL instead",
                               {"constructs": constructs, "realtime": self.dialect})

    def lookup_scans(self, prepared: PreparedQuery) -> dict[str, list[str]]:
        """For each likely serving key of a checked query (`serving_keys`), the table sources a point
        lookup by it reads in full: not bounded by the key (a cartesian product, or a join no index on
        the key reaches). Keys whose lookups are key-bounded are left out; {} when the store cannot tell."""
        return {}

    def point_lookup(self, prepared: PreparedQuery, index_key: str) -> PointLookup:
        """The statement a lookup of `prepared` by `index_key` runs here."""
        return point_lookup(prepared, index_key, self.dialect, self.tables(), self.key_pushdown)

    def lookup_columns(self, prepared: PreparedQuery) -> set[tuple[str, str]]:
        """(source, column) pairs the lookups by likely serving keys filter by the key: the columns to index."""
        if not self.key_pushdown:
            return set()
        return {pair for key in self.serving_keys(prepared) for pair in self.point_lookup(prepared, key).filtered}

    def lookup_refusals(self, prepared: PreparedQuery) -> dict[str, tuple[Refusal, ...]]:
        """For each likely serving key (`serving_keys`), the sources the key could not be pushed into, and why."""
        if not self.key_pushdown:
            return {}
        found = {key: self.point_lookup(prepared, key).refusals for key in self.serving_keys(prepared)}
        return {key: refusals for key, refusals in found.items() if refusals}

    def serving_keys(self, prepared: PreparedQuery) -> list[str]:
        """The query's output columns that are entity keys of a source it reads (all of them if none is)."""
        names = [name for name, _ in prepared.output_types(self.tables()) or []]
        keys = {key for table in prepared.table_names() if table in self.sources
                for key in self.sources[table].entity_keys}
        return [name for name in names if name in keys] or names

    def _table_sources(self, prepared: PreparedQuery) -> list[str]:
        """The table sources (not request sources) the query reads."""
        return [t for t in prepared.table_names() if t in self.sources and self.sources[t].kind == "table"]

    def evict(self, now: float | None = None) -> dict[str, int]:
        """Delete rows past each source's window; rows deleted per source (those with a window)."""
        deleted = {}
        for name, source in list(self.sources.items()):
            cutoff = self.cutoff(source, now)
            if cutoff is not None:
                deleted[name] = self._delete_through(source, cutoff)
        return deleted

    @abstractmethod
    def _delete_through(self, source: SourceRecord, cutoff: float) -> int:
        """Delete the source's rows with event time at or before `cutoff` (epoch seconds); how many."""

    @abstractmethod
    def stats(self, source: str) -> dict[str, Any]:
        """``{"rows", "min_event_time", "max_event_time"}`` of the source's rows held here."""

    def row_count(self, source: str) -> int:
        """How many of the source's rows are held here (`stats` without the event-time range)."""
        return self.stats(source)["rows"]

    @abstractmethod
    def ping(self) -> None:
        """Return if the store answers, else raise BackendUnavailable."""

    def close(self) -> None:
        """Release the database."""

    def backup(self, path: str) -> None:
        """Copy every source's rows, views and indexes, as of one commit, to the file `path` (a snapshot
        other processes `restore`)."""
        raise InvalidInput(f"the {self.dialect} realtime store cannot be snapshotted for other processes: "
                           "use REALTIME_URL=sqlite:///:memory: or WORKERS=1")

    def restore(self, path: str, sources: list[SourceRecord]) -> None:
        """Fill this new, empty store from a `backup` file and register `sources` (the catalog's newest
        versions) over it."""
        raise InvalidInput(f"the {self.dialect} realtime store cannot be restored from a snapshot")

    def hydrate(self, warehouse: Warehouse, sources: Iterable[SourceRecord], now: float | None = None
                ) -> dict[str, int]:
        """Register each table source and copy its hot window from the warehouse, one source at a time and
        one batch at a time (`window_batches` into `load`: a source's rows are never all in memory at once;
        this runs before the service answers)."""
        loaded = {}
        for source in sources:
            self.register(source)
            if source.kind != "table":  # a request source's rows come with each request
                continue
            loaded[source.name] = self.load(source.name, window_batches(warehouse, source, self.cutoff(source, now)))
        return loaded

    def load(self, source: str, batches: Iterable[Any]) -> int:
        """Add a stream of batches (DataFrames or Arrow tables) of one source's rows in one transaction, all
        or none (an error of a later batch leaves none of them): hydration and backfills; rows added.
        This default gathers the batches into one `append`; stores override it to hold one batch at a time."""
        tables = [batch if isinstance(batch, pa.Table) else pa.Table.from_pandas(batch, preserve_index=False)
                  for batch in batches]
        tables = [table for table in tables if table.num_rows]
        return self.append({source: pa.concat_tables(tables)})[source] if tables else 0


def window_batches(warehouse: Warehouse, source: SourceRecord, since: float | None,
                   through: float | None = None) -> Iterator[pa.Table]:
    """The source's declared columns of its warehouse rows with event time in (since, through] (epoch
    seconds; None: unbounded), cast to the declared types (InvalidInput when a value does not fit), as a
    stream of Arrow tables of at most `warehouse.base.COPY_BATCH_ROWS` rows each (empty ones left out)."""
    bound = None if through is None else time_value(source, through)
    for batch in warehouse.recent_batches(source.table, source.event_time, time_value(source, since),
                                          [c["name"] for c in source.columns]):
        rows = stored_rows(source, batch)
        if bound is not None and rows.num_rows:
            column = rows.column(source.event_time)
            limit = pa.scalar(bound, column.type) if pa.types.is_timestamp(column.type) else bound
            rows = rows.filter(pc.fill_null(pc.less_equal(column, limit), False))
        if rows.num_rows:
            yield rows


def window_rows(warehouse: Warehouse, source: SourceRecord, since: float | None,
                through: float | None = None) -> pa.Table:
    """`window_batches` as one table (a small window: a backfill of a new, longer window)."""
    batches = list(window_batches(warehouse, source, since, through))
    return pa.concat_tables(batches) if batches else stored_rows(source, arrow_schema(source).empty_table())


def time_value(source: SourceRecord, epoch_seconds: float | None) -> Any:
    """A cutoff as the event-time column compares: epoch seconds, or a UTC datetime."""
    if epoch_seconds is None:
        return None
    kind = next(c["type"] for c in source.columns if c["name"] == source.event_time)
    if kind == "timestamp":
        return dt.datetime.fromtimestamp(epoch_seconds, dt.timezone.utc)
    return epoch_seconds

