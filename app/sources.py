"""Declared sources: declare or adopt, version, ingest, load files, evict; free of HTTP.

The current version of every source is held in memory (loaded from the catalog on
start) because every query save and every served lookup is typed by it. The warehouse
is written first and durably; the rows inside their hot window then go to the change
feed and, in the same step, to this process's realtime store (see `_to_realtime`).
"""
from __future__ import annotations

import logging
import threading
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq
import sqlglot
from sqlglot import exp

from catalog.base import Catalog, SourceRecord, utc_now
from common.errors import BackendUnavailable, FeatureStoreError, InvalidInput, InvalidQuery, NotFound
from common.errors import SourceIncompatible
from feed import AppliedPosition, ChangeFeed, FeedTailer
from sql.types import logical_of_engine_type
from sql.duckdb_engine import quote_qualified
from sql.prepared import ROW_ALIAS, prepare_query
from realtime.base import RealtimeStore, newest_only, time_value, window_batches
from sources.definition import check_table_name, parse_source, source_diff
from sources.rows import arrow_schema, event_time_range, json_time, rows_from_arrow, rows_from_json
from warehouse import BatchMark, Warehouse, WriteReceipt

log = logging.getLogger(__name__)
FEED_TRIM_CHUNK = 1_000  # feed entries one trim step deletes (ingests wait for one step at most)
MAX_BATCH_ID = 200
MAX_REQUEST_ROWS = 1000  # rows one serving request may supply per request source


class SourceService:
    """Sources over the catalog, the warehouse and the realtime store."""

    def __init__(self, catalog: Catalog, warehouse: Warehouse, realtime: RealtimeStore, *, load_dir: Path,
                 feed: ChangeFeed | None = None):
        self.catalog = catalog
        self.warehouse = warehouse
        self.realtime = realtime
        self.load_dir = load_dir
        self.feed = feed
        # the newest feed position this process's realtime store holds (the warehouse, hydrated from, has it all)
        self.applied = AppliedPosition(feed.last_position() if feed is not None else 0)
        self._realtime_lock = threading.Lock()  # a feed append and its realtime append are one step
        self.tailer: FeedTailer | None = None  # a serving process's: applies the primary's appends
        self._current: dict[str, SourceRecord] = {}
        self._loaded = False
        self._hydrated: set[str] = set()  # sources whose hot window is in the realtime store
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._evictor: threading.Thread | None = None

    # -- the current definitions ------------------------------------------------------------------

    def load(self) -> bool:
        """Read the newest version of every source from the catalog (on start, or on first use if the catalog
        was down then); whether it could be read. `hydrate` then marks the sources ready."""
        try:
            total = self.catalog.list_sources(0, 0).total
            records = self.catalog.list_sources(0, total).items if total else []
        except BackendUnavailable as error:
            log.warning("sources not loaded (%s); the realtime store starts empty until they are", error.message)
            return False
        self._current = {record.name: record for record in records}
        return True

    def ensure_loaded(self) -> bool:
        """Load and hydrate the sources once (at start, or on first use if the catalog or the warehouse was down
        then); whether they are loaded."""
        if self._loaded:
            return True
        with self._lock:
            if not self._loaded and self.load():
                try:
                    log.info("realtime store hydrated from the warehouse: %s", self.hydrate())
                except BackendUnavailable as error:  # the service starts (degraded) and tries again on use
                    log.warning("realtime store not hydrated (%s); it is on first use once the warehouse "
                                "answers", error.message)
        return self._loaded

    def tables(self) -> dict[str, list[tuple[str, str]]]:
        """(column, logical type) of every source, by name: what saved queries are typed with."""
        self.ensure_loaded()
        return {name: record.column_types() for name, record in self._current.items()}

    def _publish(self, record: SourceRecord) -> None:
        """Make `record` the current version: a new mapping, so readers iterating the old one never see it change."""
        self._current = {**self._current, record.name: record}

    def versions(self) -> dict[str, int]:
        """Source name -> the version held as current."""
        return {name: record.version for name, record in self._current.items()}

    def warehouse_tables(self) -> dict[str, str]:
        """Source name -> the warehouse table that holds its rows."""
        return {name: record.table for name, record in self._current.items()}

    def request_tables(self, reads: list[str], given: Any) -> dict[str, pa.Table]:
        """The request rows for the request sources a query `reads`, validated; 400 when one is missing,
        is not such a source, is not read by the query, or carries too many rows."""
        wanted = [name for name in reads if name in self._current and self._current[name].kind == "request"]
        if given is None and not wanted:
            return {}
        if not isinstance(given, dict):
            raise InvalidInput(f"the query reads request source(s) {wanted}: pass their rows as "
                               "request_rows {source: [row, …]}", {"request_sources": wanted})
        unexpected = sorted(set(given) - set(wanted))
        missing = [name for name in wanted if name not in given]
        if unexpected or missing:
            raise InvalidInput("request_rows must name exactly the request sources the query reads",
                               {"request_sources": wanted, "unexpected": unexpected, "missing": missing})
        tables = {}
        for name in wanted:
            rows = given[name]
            if isinstance(rows, list) and len(rows) > MAX_REQUEST_ROWS:
                raise InvalidInput(f"request_rows.{name} has {len(rows)} rows; at most {MAX_REQUEST_ROWS}",
                                   {"source": name, "max_rows": MAX_REQUEST_ROWS})
            tables[name] = rows_from_json(self._current[name], rows)
        return tables

    def row_filters(self, hot_window: bool = False) -> dict[str, Any]:
        """Source name -> the condition on its warehouse rows (as `_fs_row`) that training reads them with:
        only the newest version of a row (sources with a created_time, as serving reads them), and with
        `hot_window` only the rows inside the source's hot window now."""
        filters = {}
        for name, record in self._current.items():
            parts = []
            cutoff = self.realtime.cutoff(record) if hot_window else None
            if cutoff is not None:
                bound = time_value(record, cutoff)
                literal = exp.cast(exp.Literal.string(bound.isoformat()), "TIMESTAMPTZ") \
                    if hasattr(bound, "isoformat") else exp.Literal.number(repr(float(bound)))
                parts.append(exp.column(record.event_time, table=ROW_ALIAS, quoted=True) > literal)
            newest = newest_only(record, quote_qualified(record.table), ROW_ALIAS)
            if newest is not None:
                parts.append(sqlglot.parse_one(newest, read="duckdb"))
            if parts:
                filters[name] = exp.and_(*parts)
        return filters

    def get(self, name: str) -> SourceRecord:
        self.ensure_loaded()
        record = self._current.get(name)
        if record is None:
            raise NotFound(f"no source named {name!r}", {"name": name}, code="source_not_found")
        return record

    # -- declaring ---------------------------------------------------------------------------------

    def declare(self, body: dict[str, Any], created_by: str = "anonymous") -> tuple[SourceRecord, bool]:
        """Declare (or adopt) a source; (the stored record, whether it is new). Idempotent.

        Without `columns`, the columns are read from the existing warehouse table. A compatible
        change makes the next version; an incompatible one is SourceIncompatible with the diff and the
        saved queries that read the source.
        """
        if not isinstance(body, dict):
            raise InvalidInput("a source is a JSON object")
        if "columns" not in body:
            body = {**body, "columns": self._introspected(body)}
        declared = parse_source(body, created_by=created_by, created_at=utc_now())
        self.ensure_loaded()
        known = self._current.get(declared.name)
        if known is not None and known.definition() == declared.definition():
            return known, False
        with self._lock:
            versions = self.catalog.source_versions(declared.name)
            latest = versions[-1] if versions else None
            if latest is not None and latest.definition() == declared.definition():
                if self.warehouse.table_columns(latest.table) is None:  # a new, empty warehouse
                    self.warehouse.create_table(latest)
                self._publish(latest)
                return latest, False
            if latest is not None:
                diff = source_diff(latest, declared)
                if not diff["compatible"]:
                    raise SourceIncompatible(
                        f"source {declared.name!r} exists (version {latest.version}) and this definition is not a "
                        "compatible change; declare it under a new name", {
                            "name": declared.name, "version": latest.version, "diff": diff,
                            "dependent_queries": self.dependent_queries(declared.name)})
            adopted = self._prepare_warehouse(declared, latest)  # checks an existing table's types first
            self._check_table_is_its_own(declared)
            record = replace(declared, version=(latest.version if latest else 0) + 1)
            backfill = self._backfill(record, latest, adopted)  # read (and type-checked) before anything is saved
            self.realtime.register(record)  # before the catalog: a store that refuses leaves no record behind
            record = self.catalog.save_source(record)
            # every new version goes through the feed, rows or none, so other processes adopt it too
            self._stream_to_realtime(record, backfill() if backfill is not None else iter(()))
            self._publish(record)
        return record, True

    def _backfill(self, record: SourceRecord, latest: SourceRecord | None, adopted: bool
                  ) -> Callable[[], Iterator[pa.Table]] | None:
        """The warehouse rows the realtime store must get with this version, as a function that streams them
        (`window_batches`): an adopted table's window, or the rows a longer window now reaches (between the
        new and the old cutoff). They are read once here, one batch at a time, so a value that does not fit
        the declared types is refused before anything is saved."""
        if record.kind != "table":
            return None
        old_cutoff = None if latest is None else self.realtime.cutoff(latest)
        new_cutoff = self.realtime.cutoff(record)
        if adopted:
            old_cutoff = None
        elif old_cutoff is None or (new_cutoff is not None and new_cutoff >= old_cutoff):
            return None

        def batches() -> Iterator[pa.Table]:
            return window_batches(self.warehouse, record, new_cutoff, through=old_cutoff)

        for _ in batches():  # type-checked only: no batch is kept
            pass
        return batches

    def _check_table_is_its_own(self, declared: SourceRecord) -> None:
        """Refuse a warehouse table another source already reads: its rows would reach only one realtime view."""
        owner = next((r.name for r in self._current.values() if r.table == declared.table and r.name != declared.name),
                     None)
        if owner is not None:
            raise InvalidInput(f"the warehouse table {declared.table!r} is already source {owner!r}'s",
                               {"table": declared.table, "source": owner})

    def _introspected(self, body: dict[str, Any]) -> list[dict[str, Any]]:
        """The columns of the warehouse table a source adopts, as logical types (400 for unmapped ones)."""
        table = body.get("table") or body.get("name")
        columns = self.warehouse.table_columns(check_table_name(table))
        if columns is None:
            raise InvalidInput(f"the warehouse has no table {table!r} to adopt; declare the source with columns "
                               "to create it", {"table": table})
        unmapped = [{"column": name, "type": kind} for name, kind in columns if logical_of_engine_type(kind) is None]
        if unmapped:
            named = ", ".join(f"{u['column']} ({u['type']})" for u in unmapped)
            raise InvalidInput(f"column(s) of {table!r} have no logical type: {named}; declare the "
                               "source with columns over a view that casts them", {"columns": unmapped})
        return [{"name": name, "type": logical_of_engine_type(kind)} for name, kind in columns]

    def _prepare_warehouse(self, declared: SourceRecord, latest: SourceRecord | None) -> bool:
        """Create the table, apply a compatible version's changes, or check an existing table agrees;
        whether a table that existed before its source is being adopted (it may hold rows)."""
        existing = self.warehouse.table_columns(declared.table)
        if existing is None:
            self.warehouse.create_table(declared)
            return False
        have = {name: logical_of_engine_type(kind) for name, kind in existing}
        missing = [c for c in declared.columns if c["name"] not in have]
        wrong = [{"column": c["name"], "declared": c["type"], "warehouse": have[c["name"]]}
                 for c in declared.columns if c["name"] in have and have[c["name"]] != c["type"]]
        if wrong:
            raise InvalidInput(f"the warehouse table {declared.table!r} has other types than declared",
                               {"type_changed": wrong})
        if missing and latest is None:
            raise InvalidInput(f"the warehouse table {declared.table!r} exists without column(s) "
                               f"{[c['name'] for c in missing]}; the service does not alter a table it did not "
                               "create", {"missing": [c["name"] for c in missing]})
        if missing:
            self.warehouse.add_columns(declared.table, missing)
        if latest is not None:
            before = {c["name"]: c.get("nullable", True) for c in latest.columns}
            relaxed = [c["name"] for c in declared.columns if c.get("nullable", True) and before.get(c["name"]) is False]
            if relaxed:
                self.warehouse.drop_not_null(declared.table, relaxed)
        return latest is None

    def dependent_queries(self, name: str) -> list[str]:
        """Ids of the saved queries that read source `name`."""
        ids, offset = [], 0
        while True:
            page = self.catalog.list_queries(offset, 200)
            for query in page.items:
                try:
                    if name in prepare_query(query.sql, self.warehouse.dialect).table_names():
                        ids.append(query.query_id)
                except InvalidInput:
                    continue
            offset += len(page.items)
            if not page.items or offset >= page.total:
                return ids

    def describe(self, name: str) -> dict[str, Any]:
        """A source with its versions and the rows and event-time range in each store."""
        record = self.get(name)
        versions = self.catalog.source_versions(name)
        warehouse = self.warehouse.table_stats(record.table, record.event_time)
        realtime = self.realtime.stats(name) if record.kind == "table" else None
        return {**record.to_dict(), "versions": [v.version for v in versions],
                "warehouse": _json_stats(warehouse), "realtime": None if realtime is None else _json_stats(realtime),
                "dependent_queries": self.dependent_queries(name)}

    def list(self, offset: int, limit: int) -> Any:
        return self.catalog.list_sources(offset, limit)

    # -- rows --------------------------------------------------------------------------------------

    def ingest(self, name: str, rows: pa.Table, batch_id: str | None = None) -> dict[str, Any]:
        """Write validated rows: the warehouse durably in one transaction, then the realtime store
        (rows inside the hot window). A `batch_id` seen before writes nothing and answers as the first time."""
        if batch_id is not None and (not isinstance(batch_id, str) or not 0 < len(batch_id) <= MAX_BATCH_ID):
            raise InvalidInput(f"batch_id must be a string of 1 to {MAX_BATCH_ID} characters", {"field": "batch_id"})
        return self.ingest_many({name: rows}, batch_id)[name]

    def ingest_many(self, rows: dict[str, pa.Table], batch_id: str | None = None,
                    note: dict[str, Any] | None = None) -> dict[str, dict[str, Any]]:
        """Rows of several sources: one transaction in the warehouse, then one in the realtime store. With a
        `batch_id`, `note` is kept in its ledger entry (a retry's answer carries it)."""
        records = {name: self.get(name) for name in rows}  # loads the sources first, if start-up could not
        answers = {name: {"source": name, "version": records[name].version, "rows": table.num_rows,
                          **event_time_range(records[name], table), "batch_id": batch_id}
                   for name, table in rows.items()}
        hot = {name: self._hot_rows(records[name], table) for name, table in rows.items()
               if records[name].kind == "table"}
        for name, answer in answers.items():
            answer["realtime_rows"] = hot[name].num_rows if name in hot else 0
        first = next(iter(rows))
        mark = None if batch_id is None else BatchMark(first, batch_id, {**answers[first], **(note or {})})
        receipt = WriteReceipt()
        try:
            seen = self.warehouse.append({records[name].table: table for name, table in rows.items()}, mark, receipt)
        except InvalidQuery as error:  # the engine's own refusal of a value (a constraint, an encoding)
            raise InvalidInput(f"the warehouse refused the rows: {error.message}",
                               {"sources": sorted(rows)}) from None
        if seen is not None:  # any position at or past the first write's serves it
            return {seen["source"]: {**seen, "duplicate": True, "position": self.applied.position}}
        hot = {name: table for name, table in hot.items() if table.num_rows}
        position = self._to_realtime(hot, records, receipt.transaction) if hot else self.applied.position
        return {name: {**answer, "duplicate": False, "position": position} for name, answer in answers.items()}

    def _to_realtime(self, frames: dict[str, pa.Table], records: dict[str, SourceRecord],
                     transaction: int | None = None) -> int:
        """After the warehouse committed `frames`: append them to the feed, then to this process's realtime
        store, under one lock (a snapshot sees both or neither); the feed position (0 without a feed). Each
        entry carries its source's version and the warehouse `transaction` that wrote the rows (a
        replica skips those its hydration already read: app/replicas.py).

        Ordering: warehouse, then feed, then acknowledgement. So no feed row is missing from the warehouse,
        and no acknowledged row is missing from the feed; if the feed append fails, the caller gets 503 and
        the rows (in the warehouse) reach every process at its next start, as after a realtime outage."""
        with self._realtime_lock:
            position = self._feed_append(frames, records, transaction)
            rows = {name: table for name, table in frames.items()
                    if table.num_rows and records[name].kind == "table"}
            try:
                if rows:
                    self.realtime.append(rows)
            except FeatureStoreError as error:  # the warehouse has the rows: not a refusal, an outage of the copy
                raise BackendUnavailable("realtime store", f"{error.message} (the rows are in the warehouse; the "
                                         "realtime store gets them at the next start)") from None
            self.applied.advance(position)
        return position

    def _stream_to_realtime(self, record: SourceRecord, batches: Iterator[pa.Table]) -> int:
        """`_to_realtime` for a backfill's stream of batches: the version first goes through the feed as an
        empty table, then each batch as an entry of its own as it is read, while the realtime store takes
        them all in one transaction (`RealtimeStore.load`); one batch is held at a time. The feed position."""
        def fed() -> Iterator[pa.Table]:
            for batch in batches:
                positions.append(self._feed_append({record.name: batch}, {record.name: record}))
                yield batch

        with self._realtime_lock:
            positions = [self._feed_append({record.name: arrow_schema(record).empty_table()}, {record.name: record})]
            try:
                if record.kind == "table":  # a request source has no rows to keep
                    self.realtime.load(record.name, fed())
            except FeatureStoreError as error:  # the warehouse has the rows: not a refusal, an outage of the copy
                raise BackendUnavailable("realtime store", f"{error.message} (the rows are in the warehouse; the "
                                         "realtime store gets them at the next start)") from None
            self.applied.advance(positions[-1])
        return positions[-1]

    def _feed_append(self, frames: dict[str, pa.Table], records: dict[str, SourceRecord],
                     transaction: int | None = None) -> int:
        """Append `frames` to the feed, tagged with their sources' versions and the warehouse `transaction`
        that wrote them (if known); the position (0 without a feed)."""
        if self.feed is None:
            return 0
        written = {} if transaction is None else {"fs_xid": str(transaction)}
        tagged = {name: table.replace_schema_metadata({"fs_version": str(records[name].version), **written})
                  for name, table in frames.items()}
        try:
            return self.feed.append(tagged)
        except Exception as error:  # noqa: BLE001 - any engine's error: the rows did not reach the feed
            raise BackendUnavailable("change feed", f"{error} (the rows are in the warehouse; every "
                                     "process gets them at its next start)") from None

    def snapshot(self, path: str) -> int:
        """Copy the realtime store to the file `path` (`RealtimeStore.backup`) between two feed appends; the
        feed position it holds everything through."""
        with self._realtime_lock:
            self.realtime.backup(path)
            return self.applied.position

    def progress(self) -> AppliedPosition:
        """The feed position this process's realtime store holds (its own appends, or its tailer's)."""
        return self.tailer.progress if self.tailer is not None else self.applied

    def feed_check(self) -> dict[str, Any] | None:
        """The change feed as /health reports it for this process (None without one): whether it answers,
        the position this process's store holds (`applied`), the feed's newest (`newest`) and the entries
        between (`behind`); a serving process or replica whose tailer has stopped is not ok."""
        feed = self.tailer.feed if self.tailer is not None else self.feed
        if feed is None:
            return None
        applied = self.progress().position
        try:
            newest = feed.last_position()
        except Exception as error:  # noqa: BLE001 - any backend's error: reported, not raised
            return {"ok": False, "error": f"the change feed does not answer: {error}"[:300], "applied": applied}
        check: dict[str, Any] = {"ok": True, "applied": applied, "newest": newest, "behind": max(0, newest - applied)}
        if self.tailer is not None and not self.tailer.running:
            check.update(ok=False, error="this process no longer applies the change feed")
        return check

    def wait_for(self, position: int, timeout: float) -> bool:
        """Whether this process's realtime store holds feed `position` within `timeout` seconds; a position
        the feed has not reached (no write answered it) is InvalidInput."""
        feed = self.tailer.feed if self.tailer is not None else self.feed
        newest = feed.last_position() if feed is not None else self.applied.position
        if position > newest:
            raise InvalidInput(f"min_position {position} is past the change feed's newest position {newest}: "
                               "pass a position an ingest or publish answered", {"min_position": position,
                                                                                 "newest": newest})
        return self.progress().wait_for(position, timeout)

    def apply_feed(self, frames: dict[str, pa.Table]) -> None:
        """Apply other processes' feed entries (a serving process): adopt a source version first met here
        from the catalog, then append the rows."""
        for name, table in frames.items():
            version = int((table.schema.metadata or {}).get(b"fs_version", 0))
            known = self._current.get(name)
            if known is None or known.version < version:
                record = self.catalog.source_versions(name)[-1]
                self.realtime.register(record)
                self._publish(record)
        rows = {name: table for name, table in frames.items()
                if table.num_rows and self._current[name].kind == "table"}
        if rows:
            self.realtime.append(rows)

    def restore_snapshot(self, path: str) -> None:
        """Fill the realtime store from a snapshot file (a serving process) instead of the warehouse, the
        sources' newest definitions read from the catalog."""
        if not self.load():
            raise BackendUnavailable("catalog", "a serving process needs the sources' definitions to start")
        self.realtime.restore(path, list(self._current.values()))
        self._hydrated.update(self._current)
        self._loaded = True

    def _hot_rows(self, source: SourceRecord, rows: pa.Table) -> pa.Table:
        """The rows inside the source's hot window now (all rows without a window)."""
        cutoff = self.realtime.cutoff(source)
        if cutoff is None or not rows.num_rows:
            return rows
        column = rows.column(source.event_time)
        bound = pa.scalar(time_value(source, cutoff), column.type) if pa.types.is_timestamp(column.type) else cutoff
        if pc.greater(pc.min(column), bound).as_py():  # all inside: no copy
            return rows
        return rows.filter(pc.greater(column, bound))

    def load_file(self, name: str, path: str, file_format: str | None = None,
                  batch_id: str | None = None) -> dict[str, Any]:
        """Bulk-load Parquet or CSV file(s) under the load directory into the source."""
        source = self.get(name)
        target = self._load_path(path)
        kind = file_format or ("parquet" if target.suffix in (".parquet", ".pq") or target.is_dir() else
                               "csv" if target.suffix == ".csv" else None)
        if kind not in ("parquet", "csv"):
            raise InvalidInput("format must be 'parquet' or 'csv' (or the file must end in .parquet or .csv)",
                               {"path": path})
        files = self._files_in(target, path)
        try:
            if kind == "parquet":
                tables = [pq.read_table(file) for file in files]
            else:  # only an empty field is null (an empty string too: a required string column refuses it)
                options = pa_csv.ConvertOptions(column_types=arrow_schema(source), null_values=[""],
                                                strings_can_be_null=True)
                tables = [pa_csv.read_csv(file, convert_options=options) for file in files]
            table = pa.concat_tables(tables, promote_options="default") if tables else \
                pa.Table.from_batches([], schema=arrow_schema(source))
        except (pa.ArrowInvalid, pa.ArrowTypeError, OSError) as error:
            raise InvalidInput(f"cannot read {path!r} as {kind}: {error}", {"path": path}) from None
        rows = rows_from_arrow(source, table.to_batches(max_chunksize=1_000_000))
        return {**self.ingest(name, rows, batch_id), "path": path, "format": kind}

    def _load_path(self, path: Any) -> Path:
        """`path` inside the load directory (relative, no escape through '..' or links), or InvalidInput."""
        if not isinstance(path, str) or not path or "\x00" in path:
            raise InvalidInput("path must be a file or folder name inside the load directory", {"field": "path"})
        root = self.load_dir.resolve()
        target = (root / path).resolve()
        if not target.is_relative_to(root) or Path(path).is_absolute():
            raise InvalidInput(f"path {path!r} is outside the load directory (LOAD_DIR); only files there can be "
                               "loaded", {"path": path})
        if not target.exists():
            raise InvalidInput(f"no file {path!r} in the load directory", {"path": path})
        return target

    def _files_in(self, target: Path, path: str) -> list[Path]:
        """The file `target`, or every file below the folder `target`, each one checked to resolve inside
        the load directory (a link inside a folder may point anywhere)."""
        if not target.is_dir():
            return [target]
        root = self.load_dir.resolve()
        files = sorted(p for p in target.rglob("*") if not p.is_dir())
        outside = [str(p.relative_to(target)) for p in files if not p.resolve().is_relative_to(root)]
        if outside:
            raise InvalidInput(f"{path!r} holds links to files outside the load directory: {outside[:5]}",
                               {"path": path, "outside": outside[:20]})
        return files

    # -- the hot window ------------------------------------------------------------------------------

    def hydrate(self) -> dict[str, int]:
        """Fill the realtime store with every table source's hot window (on start; each source once). A warehouse
        that cannot be reached raises BackendUnavailable, the sources left registered (empty) for the next try."""
        loaded = {}
        for source in self._current.values():
            if source.name in self._hydrated:
                continue
            try:
                if self.warehouse.table_columns(source.table) is None:
                    log.warning("source %r: the warehouse has no table %r; nothing to hydrate", source.name,
                                source.table)
                    self.realtime.register(source)
                else:
                    loaded.update(self.realtime.hydrate(self.warehouse, [source]))
            except InvalidInput as error:  # a value the store refuses: serve the rest, say which source
                log.error("source %r not hydrated: %s", source.name, error.message)
                self.realtime.register(source)
            except BackendUnavailable:
                for waiting in self._current.values():
                    if waiting.name not in self._hydrated:
                        self.realtime.register(waiting)
                raise
            self._hydrated.add(source.name)
        self._loaded = True
        return loaded

    def start_evictor(self, interval_seconds: float, feed_retain_entries: int = 0) -> None:
        """Every `interval_seconds` (0: never), delete rows past their window (the views hide them anyway)
        and, in the process that writes the feed, its entries older than the newest `feed_retain_entries`."""
        if interval_seconds <= 0 or self._evictor is not None:
            return

        def run() -> None:
            while not self._stop.wait(interval_seconds):
                try:
                    self.realtime.evict()
                except FeatureStoreError as error:
                    log.warning("eviction failed: %s", error.message)
                self.trim_feed(feed_retain_entries)

        self._evictor = threading.Thread(target=run, name="realtime-evictor", daemon=True)
        self._evictor.start()

    def trim_feed(self, retain_entries: int) -> None:
        """Delete the feed's entries older than the newest `retain_entries` (0: keep all), FEED_TRIM_CHUNK at a
        time so that ingests (which append under the same lock) and the feed's readers wait for one chunk at
        most; only the process that writes the feed does (a serving process or replica has none of its own)."""
        if self.feed is None or retain_entries <= 0:
            return
        try:
            through = self.feed.last_position() - retain_entries
            done = self.feed.trimmed_through()
            while done < through:
                done = min(through, done + FEED_TRIM_CHUNK)
                self.feed.trim_through(done)
        except Exception as error:  # noqa: BLE001 - any backend's error: the next round tries again
            log.warning("trimming the change feed failed: %s", error)

    def stop(self) -> None:
        """Stop the evictor (and a serving process's tailer) and close the feed."""
        self._stop.set()
        if self._evictor is not None:
            self._evictor.join(timeout=5)
        if self.tailer is not None:
            self.tailer.stop()
            self.tailer.feed.close()
        if self.feed is not None:
            self.feed.close()


def _json_stats(stats: dict[str, Any]) -> dict[str, Any]:
    return {key: json_time(value) for key, value in stats.items()}
