"""Point-in-time training sets: a saved query and its ETL answered as of each row of a spine.

For a spine row (key k, time t) the answer is what serving returns for k at t: the query over the
sources cut at t (see `sql.point_in_time`), then the ETL with its stored state. One statement runs on
the warehouse for the whole spine; the ETL runs once over every row it returned. The answer keeps
every spine row, in the spine's order: its columns first, then the features (nulls where the query
had no rows yet); a spine row with several query rows is repeated for each.
"""
from __future__ import annotations

from typing import Any, Iterator

import numpy as np
import pandas as pd
import pyarrow as pa

from app.spine import Spine, SpineSpec, SpineUploads, build_spine, rows_table
from common.errors import EtlFailed, ExpectationsFailed, InvalidInput, ResultTooLarge
from checks.expectations import check_expectations
from sql.point_in_time import AS_OF, SID, SPINE, SourceCut, output_names, point_in_time_sql
from realtime.base import newest_only
from sql.duckdb_engine import quote_qualified
from sql.prepared import ROW_ALIAS, PreparedQuery, prepare_query


CHUNK_ROWS = 250_000  # spine rows per warehouse statement of a streamed answer (see `query_batches`)


class PointInTime:
    """Spines in, point-in-time training sets out, over the service's warehouse, sources and ETL runner."""

    def __init__(self, service: Any, uploads: SpineUploads, max_spine_rows: int, chunk_rows: int = CHUNK_ROWS):
        self.service = service
        self.uploads = uploads
        self.max_spine_rows = max_spine_rows
        self.chunk_rows = chunk_rows

    # -- spines ----------------------------------------------------------------------------------

    def spine(self, spec: SpineSpec, schema: list[dict[str, str]], max_answer_rows: int | None = None) -> Spine:
        """The spine a request names, checked and keyed (its key cast to the type the query's `schema` gives
        it). With `max_answer_rows` (a JSON answer's limit), a spine longer than that is refused before any
        query runs: the answer has a row for every spine row at least."""
        key_type = self.key_type(schema, spec.index_key)
        spine = self._keyed(spec, key_type)
        if max_answer_rows is not None and spine.rows > max_answer_rows:
            raise ResultTooLarge(f"the spine has {spine.rows} rows, more than the {max_answer_rows} a JSON response "
                                 "may carry; ask for Arrow (format=arrow) or an export", {
                                     "rows": spine.rows, "max_rows": max_answer_rows})
        return spine

    def _keyed(self, spec: SpineSpec, key_type: str) -> Spine:
        if spec.rows is not None:
            if len(spec.rows) > self.max_spine_rows:
                raise InvalidInput(f"the spine has {len(spec.rows)} rows; at most {self.max_spine_rows}",
                                   {"rows": len(spec.rows), "max_rows": self.max_spine_rows}, code="spine_too_large")
            table = rows_table(spec.rows)
            if not spec.rows:
                raise InvalidInput("the spine has no rows", code="empty_spine")
        elif spec.spine_id is not None:
            table = self.uploads.load(spec.spine_id)
        else:
            table = self._spine_from_query(spec.query)
        return build_spine(table, spec, key_type, self.max_spine_rows)

    def _spine_from_query(self, sql: str) -> pa.Table:
        """A spine selected from the sources by a read-only query (checked like a saved query)."""
        prepared = prepare_query(sql, self.service.warehouse.dialect)
        self.service._check_declared(prepared)
        schema, batches = self.service.warehouse.query_batches(self.service._training_sql(prepared))
        kept, rows = [], 0
        for batch in batches:
            rows += batch.num_rows
            if rows > self.max_spine_rows:
                raise InvalidInput(f"the spine query returns more than {self.max_spine_rows} rows",
                                   {"max_rows": self.max_spine_rows}, code="spine_too_large")
            kept.append(batch)
        return pa.Table.from_batches(kept, schema=schema)

    def key_type(self, schema: list[dict[str, str]], index_key: str) -> str:
        """The logical type of the query's key column (400 if it is not an output column)."""
        types = {column["name"]: column["type"] for column in schema}
        if index_key not in types:
            raise InvalidInput(f"spine.index_key {index_key!r} is not an output column of the query",
                               {"index_key": index_key, "columns": list(types)})
        if types[index_key] not in ("integer", "float", "boolean", "string"):
            raise InvalidInput(f"the key {index_key!r} is {types[index_key]}; keys are integers, strings, floats "
                               "or booleans", {"index_key": index_key})
        return types[index_key]

    # -- the query ---------------------------------------------------------------------------------

    def query_batches(self, prepared: PreparedQuery, spine: Spine) -> tuple[pa.Schema, Iterator[pa.RecordBatch]]:
        """The query as of every spine row, as Arrow batches: the spine's columns, then the query's.

        The spine goes to the warehouse `chunk_rows` rows at a time, one statement each, in order: the
        answer is the same, and the memory the warehouse needs (joins, windows, the final sort) is that of
        one chunk, not of the whole spine."""
        sql, names = self._sql(prepared, spine, keep_unmatched=True)

        def chunk(start: int) -> Iterator[pa.RecordBatch]:
            uploads = {SPINE: spine.keyed.slice(start, self.chunk_rows)}
            return self.service.warehouse.query_batches(sql, uploads=uploads)[1]

        batches = chunk(0)
        first = next(batches, None)
        template = _joined(spine, first, names) if first is not None else None
        schema = template.schema if template is not None else _joined(spine, None, names).schema

        def stream() -> Iterator[pa.RecordBatch]:
            current = batches
            try:
                if template is not None:
                    yield from template.to_batches()
                for start in range(0, spine.rows, self.chunk_rows):
                    if start:
                        current = chunk(start)
                    for batch in current:
                        yield from _joined(spine, batch, names).cast(schema).to_batches()
            finally:
                current.close()  # a stream closed early stops the warehouse's query now, not when collected

        return schema, stream()

    def query_frame(self, prepared: PreparedQuery, spine: Spine, max_rows: int | None) -> pd.DataFrame:
        """The query as of every spine row, as a DataFrame (at most `max_rows` rows)."""
        sql, names = self._sql(prepared, spine, keep_unmatched=True)
        frame = self.service.warehouse.query(sql, max_rows=max_rows, uploads={SPINE: spine.keyed})
        return _with_spine(spine, frame.pop(SID).to_numpy(), frame)

    # -- the ETL -------------------------------------------------------------------------------------

    def etl_features(self, etl_id: str, code: str, code_sha256: str, prepared: PreparedQuery, spine: Spine,
                     state: dict[str, Any] | None, expectations: list[Any]
                     ) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, Any]]:
        """(the answer: spine columns then features, the ETL's own output, the state it ran with).

        With `state` None the ETL is fitted on the point-in-time rows first (what the model trains on).
        The ETL must keep its input's row index (a row-wise transform), so each output row maps back
        to its spine row; expectations are checked on its own output."""
        sql, names = self._sql(prepared, spine, keep_unmatched=False)
        raw = self.service.warehouse.query(sql, uploads={SPINE: spine.keyed})
        sids = raw.pop(SID).to_numpy()
        as_of = spine_times(spine, sids, raw.index)  # `self.as_of`: each row's own spine time
        runner = self.service.runner
        if state is None:
            state = runner.fit(etl_id, code, code_sha256, raw, as_of)
        features = self.service._run_etl(etl_id, code, code_sha256, raw, state, as_of)
        if not features.index.isin(raw.index).all():
            raise EtlFailed("point-in-time training needs an ETL that keeps its input's row index (one output row "
                            "per input row, as a row-wise transform does), so each row maps back to its spine row",
                            {"rows_in": len(raw), "rows_out": len(features)})
        violations = check_expectations(features, expectations)
        if violations:
            raise ExpectationsFailed(f"the training output breaks {len(violations)} expectation(s) of the ETL",
                                     {"stage": "train", "violations": violations})
        positions = np.asarray(features.index, dtype=np.int64)
        answer = _with_spine(spine, sids[positions], features.reset_index(drop=True), fill_unmatched=True)
        return answer, features, state

    # -- shared --------------------------------------------------------------------------------------

    def _sql(self, prepared: PreparedQuery, spine: Spine, keep_unmatched: bool) -> tuple[str, list[str]]:
        """The rewritten statement and the query's output columns, the key's first (never the spine's)."""
        cuts = self.cuts(prepared)
        names = output_names(prepared, cuts)
        clashes = sorted(set(spine.table.column_names) & set(names) - {spine.index_key})
        if clashes:
            raise InvalidInput(f"spine column(s) {clashes} have the names of query columns; rename them",
                               {"columns": clashes}, code="spine_column_clash")
        sql = point_in_time_sql(prepared, spine.index_key, cuts, self.service.warehouse.dialect,
                                as_of_now=spine.as_of_now, keep_unmatched=keep_unmatched)
        return sql, [spine.index_key, *[name for name in names if name != spine.index_key]]

    def cuts(self, prepared: PreparedQuery) -> dict[str, SourceCut]:
        """How each source the query reads is cut in time."""
        self.service._check_declared(prepared)
        cuts = {}
        for name in prepared.table_names():
            record = self.service.sources.get(name)
            cuts[name] = SourceCut(record.table, tuple(record.column_types()), record.event_time,
                                   record.hot_window_seconds,
                                   newest_only(record, quote_qualified(record.table), ROW_ALIAS))
        return cuts


def _joined(spine: Spine, batch: pa.RecordBatch | None, names: list[str]) -> pa.Table:
    """One result batch with the spine's columns for its rows in front (the query's key left out)."""
    if batch is None:
        return spine.table.slice(0, 0)
    sids = batch.column(SID)
    front = spine.table.take(sids)
    for name in names[1:]:
        front = front.append_column(name, batch.column(name))
    return front


def _nullable(frame: pd.DataFrame) -> pd.DataFrame:
    """`frame` with integer and boolean columns as pandas' nullable kinds, so null rows keep their type."""
    kinds = {name: "Int64" if pd.api.types.is_integer_dtype(dtype) else "boolean"
             for name, dtype in frame.dtypes.items()
             if pd.api.types.is_integer_dtype(dtype) or pd.api.types.is_bool_dtype(dtype)}
    return frame.astype(kinds) if kinds else frame


def _with_spine(spine: Spine, sids: np.ndarray, rows: pd.DataFrame, fill_unmatched: bool = False) -> pd.DataFrame:
    """`rows` (one per entry of `sids`) behind their spine rows' columns; with `fill_unmatched`, spine rows
    with no entry get one row of nulls; ordered by spine row (stable)."""
    rows = rows.drop(columns=[spine.index_key], errors="ignore").reset_index(drop=True)
    if fill_unmatched:
        missing = np.setdiff1d(np.arange(spine.rows, dtype=np.int64), sids, assume_unique=False)
        if len(missing):  # null rows of the features' own types (integers and booleans as nullable kinds)
            typed = _nullable(rows)
            rows = pd.concat([typed, typed.iloc[:0].reindex(range(len(missing)))], ignore_index=True)
            sids = np.concatenate([sids, missing])
        order = np.argsort(sids, kind="stable")
        sids, rows = sids[order], rows.iloc[order].reset_index(drop=True)
    front = spine.table.take(pa.array(sids, pa.int64())).to_pandas()
    answer = pd.concat([front, rows], axis=1)
    answer.attrs["spine_columns"] = spine.table.column_names
    return answer


def spine_times(spine: Spine, sids: np.ndarray, index: pd.Index) -> pd.Series:
    """The as-of time (UTC) of the spine row each query row answers, aligned with the rows' `index`."""
    times = spine.keyed.column(AS_OF).to_pandas().to_numpy()[sids]
    return pd.Series(pd.to_datetime(times, utc=True), index=index)
