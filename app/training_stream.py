"""Training sets batch by batch: the ETL's ``transform`` once per Arrow record batch, streamed as it runs.

An unsaved training set asked for as Arrow (``?format=arrow``) or as an export is computed this way
when it is safe, else as before on the whole frame (`FeatureService.train_etl`):

- the ETL declares ``batchable = True`` (its transform is row-wise, see `etl.contract`), and has no
  ``unique`` expectation (a rule over the whole output);
- the warehouse is DuckDB and every column of the query's result has a type whose Arrow batches turn
  into exactly the pandas columns the whole frame has (integers, floats, booleans, strings,
  timestamps); no spine (point-in-time training keeps the whole frame).

Same input as the whole frame. DuckDB hands the ETL an integer or boolean column as pandas' nullable
``Int64``/``boolean`` when it holds a null anywhere in the result, else as numpy ``int64``/``bool``; a
batch gets the whole result's dtype, never its own rows': from the registered ETL's recorded training
input dtypes (what serving casts to, checks/consistency.py), else from a first pass over the result
(``bool_or(column IS NULL)``, one more statement). Each batch's index is its rows' positions in the
whole result.

Fitted state. A registered ETL runs with its stored state. An unregistered ETL that overrides ``fit``
is fitted on the whole result first (held as one frame, as before); then ``transform`` runs on its
slices, so the features and their Arrow copy are never whole. Without ``fit`` nothing is held.

Errors. The first batch is computed before the response starts, so an ETL, expectation or query
error there is the usual JSON error with its status. A later batch that fails ends the Arrow stream
with the error marker (app/arrowio.py) and an export job fails without leaving a file; nothing is
saved either way. Expectations are checked batch by batch (``failed_rows`` counts that batch's rows).
A time limit of the ETL runner applies to each batch's call.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Collection, Iterable, Iterator

import numpy as np
import pandas as pd
import pyarrow as pa

from app.arrowio import BATCH_ROWS, empty_batch
from checks.expectations import check_expectations
from common.errors import EtlFailed, ExpectationsFailed
from sql.duckdb_engine import quote_identifier

if TYPE_CHECKING:
    from app.service import FeatureService, TrainingEtl

Batches = tuple[pa.Schema, Iterator[pa.RecordBatch]]
NULLABLE_KINDS = {"int8": "Int8", "int16": "Int16", "int32": "Int32", "int64": "Int64", "uint8": "UInt8",
                  "uint16": "UInt16", "uint32": "UInt32", "uint64": "UInt64", "bool": "boolean"}
_ARROW_NULLABLE = {pa.int8(): pd.Int8Dtype(), pa.int16(): pd.Int16Dtype(), pa.int32(): pd.Int32Dtype(),
                   pa.int64(): pd.Int64Dtype(), pa.uint8(): pd.UInt8Dtype(), pa.uint16(): pd.UInt16Dtype(),
                   pa.uint32(): pd.UInt32Dtype(), pa.uint64(): pd.UInt64Dtype(), pa.bool_(): pd.BooleanDtype()}


def null_dependent(field: pa.Field) -> bool:
    """Whether the pandas dtype of this column depends on its nulls (integers and booleans)."""
    return pa.types.is_integer(field.type) or pa.types.is_boolean(field.type)


def is_text(field: pa.Field) -> bool:
    """Whether the column is text (``object`` in DuckDB's frame when it holds no value at all)."""
    return pa.types.is_string(field.type) or pa.types.is_large_string(field.type)


def convertible(schema: pa.Schema) -> bool:
    """Whether batches of `schema` convert to the pandas columns DuckDB's whole frame has (names unique;
    integers, floats, booleans, strings, microsecond timestamps; not dates, decimals, nested types)."""
    if len(set(schema.names)) != len(schema.names):
        return False
    for field in schema:
        kind = field.type
        if not (null_dependent(field) or is_text(field) or pa.types.is_floating(kind)
                or (pa.types.is_timestamp(kind) and kind.unit == "us")):
            return False
    return True


def whole_frame_kinds(schema: pa.Schema, with_nulls: Collection[str], without_values: Collection[str]
                      ) -> dict[str, str]:
    """The columns whose dtype in DuckDB's whole frame is not what Arrow converts a batch to, and that
    dtype: an integer or boolean column holding a null anywhere (`with_nulls`) is a nullable kind, a
    text column with no value at all (`without_values`, or no rows) is ``object``."""
    plain = _plain_dtypes(schema)
    kinds = {}
    for field in schema:
        if null_dependent(field) and field.name in with_nulls:
            kinds[field.name] = NULLABLE_KINDS[plain[field.name]]
        elif is_text(field) and field.name in without_values:
            kinds[field.name] = "object"
    return kinds


def kinds_from_dtypes(schema: pa.Schema, dtypes: dict[str, str] | None) -> dict[str, str] | None:
    """`whole_frame_kinds` as recorded in `dtypes` (a training input's dtype names), or None when those
    dtypes do not describe this result (other columns, other types)."""
    if not dtypes or list(dtypes) != schema.names:
        return None
    plain = _plain_dtypes(schema)
    kinds = {}
    for field in schema:
        recorded = dtypes[field.name]
        if (null_dependent(field) and recorded == NULLABLE_KINDS.get(plain[field.name])) or \
                (is_text(field) and recorded == "object"):
            kinds[field.name] = recorded
        elif recorded != plain[field.name]:
            return None
    return kinds


def _plain_dtypes(schema: pa.Schema) -> dict[str, str]:
    """The dtype name Arrow converts each column to when it holds values and no null."""
    return {name: str(dtype) for name, dtype in schema.empty_table().to_pandas().dtypes.items()}


def batch_frame(batch: pa.RecordBatch | pa.Table, kinds: dict[str, str], start: int = 0) -> pd.DataFrame:
    """`batch` as the rows `start`… of the whole result's frame: the columns in `kinds` (see
    `whole_frame_kinds`) of that dtype, an integer or boolean column holding a null here a nullable kind
    all the same (a registered ETL's recorded dtypes may predate that null), the others as Arrow has them."""
    frame = batch.to_pandas()
    for position, field in enumerate(batch.schema):
        column = batch.column(position)
        if null_dependent(field) and (field.name in kinds or column.null_count):
            frame[field.name] = column.to_pandas(types_mapper=_ARROW_NULLABLE.get).array
        elif field.name in kinds and column.null_count == len(column):
            frame[field.name] = np.full(len(column), None, dtype=object)
    frame.index = pd.RangeIndex(start, start + len(frame))
    return frame


def frames(schema: pa.Schema, batches: Iterable[pa.RecordBatch], kinds: dict[str, str]) -> Iterator[pd.DataFrame]:
    """The result's frame batch by batch (one empty frame when it has no rows, as the whole frame is)."""
    start, seen = 0, False
    for batch in batches:
        if batch.num_rows:
            yield batch_frame(batch, kinds, start)
            start, seen = start + batch.num_rows, True
    if not seen:
        yield batch_frame(schema.empty_table(), kinds)


def slices(frame: pd.DataFrame, rows: int = BATCH_ROWS) -> Iterator[pd.DataFrame]:
    """`frame` `rows` rows at a time (itself when empty)."""
    yield from (frame.iloc[start:start + rows] for start in range(0, max(len(frame), 1), rows))


@dataclass(frozen=True)
class BatchedRun:
    """What every batch of one training run shares."""

    etl: TrainingEtl
    state: dict[str, Any]
    as_of: pd.Timestamp


class BatchedTraining:
    """Unsaved training sets of batchable ETLs as streams of Arrow batches, over the service's parts."""

    def __init__(self, service: FeatureService, batch_rows: int = BATCH_ROWS):
        self.service = service
        self.batch_rows = batch_rows

    def batches(self, etl: TrainingEtl, hot_window: bool = False) -> Batches | None:
        """The training set as (schema, batches), its first batch already computed; None when the ETL must
        run on the whole frame (see the module's docstring)."""
        service = self.service
        if service.warehouse.dialect != "duckdb" or any("unique" in rules for rules in etl.expectations.values()):
            return None
        batching = service.runner.batching(etl.etl_id, etl.code, etl.code_sha256)
        if not batching["batchable"]:
            return None
        sql = service._training_sql(etl.prepared, hot_window)
        schema, raw = service.warehouse.query_batches(sql, rows=self.batch_rows)
        try:
            if not convertible(schema):
                raw.close()
                return None
            as_of = pd.Timestamp.now(tz="UTC")
            if etl.registered is None and batching["fits"]:
                inputs, state = self._fitted(etl, schema, raw, as_of)
            else:
                recorded = etl.registered.extra.get("input_dtypes") if etl.registered and etl.registered.extra else None
                kinds = kinds_from_dtypes(schema, recorded)
                if kinds is None:
                    kinds = self._kinds(sql, schema)
                inputs = frames(schema, raw, kinds)
                state = etl.registered.state if etl.registered else {}
            features = self._features(BatchedRun(etl, state, as_of), inputs)
            first = next(features)
        except BaseException:
            raw.close()
            raise

        def stream() -> Iterator[pa.RecordBatch]:
            try:
                yield first
                yield from features
            finally:
                features.close()
                raw.close()  # a client that went away stops the warehouse's query now

        return first.schema, stream()

    def _fitted(self, etl: TrainingEtl, schema: pa.Schema, raw: Iterator[pa.RecordBatch], as_of: pd.Timestamp
                ) -> tuple[Iterator[pd.DataFrame], dict[str, Any]]:
        """The whole result fitted on (one frame, as the unbatched path has it), then its slices."""
        table = pa.Table.from_batches(list(raw), schema=schema)
        counts = {name: table.column(name).null_count for name in schema.names}
        frame = batch_frame(table, whole_frame_kinds(schema, {name for name, count in counts.items() if count},
                                                     {name for name, count in counts.items()
                                                      if count == table.num_rows}))
        del table
        state = self.service.runner.fit(etl.etl_id, etl.code, etl.code_sha256, frame, as_of)
        return slices(frame, self.batch_rows), state

    def _kinds(self, sql: str, schema: pa.Schema) -> dict[str, str]:
        """`whole_frame_kinds` of the result, from one pass over it: which integer and boolean columns hold
        a null, which text columns hold a value."""
        nulls = [field.name for field in schema if null_dependent(field)]
        texts = [field.name for field in schema if is_text(field)]
        if not nulls and not texts:
            return {}
        checks = [f"bool_or({quote_identifier(name)} IS NULL)" for name in nulls] + \
            [f"bool_or({quote_identifier(name)} IS NOT NULL)" for name in texts]
        row = self.service.warehouse.query(f"SELECT {', '.join(checks)} FROM ({sql}) AS _fs_nulls").iloc[0].tolist()
        found = [bool(value) if pd.notna(value) else False for value in row]  # bool_or of no rows is NULL
        with_nulls = {name for name, seen in zip(nulls, found) if seen}
        without_values = {name for name, seen in zip(texts, found[len(nulls):]) if not seen}
        return whole_frame_kinds(schema, with_nulls, without_values)

    def _features(self, run: BatchedRun, inputs: Iterator[pd.DataFrame]) -> Iterator[pa.RecordBatch]:
        """The ETL's features of each input frame, checked, as Arrow batches of the first one's schema."""
        from app.distributed_transform import transformed
        etl, schema = run.etl, None
        try:
            for frame, features in transformed(self.service, run, inputs):  # here, or on TRAINING_ENGINE_URL
                violations = check_expectations(features, etl.expectations)
                if violations:
                    raise ExpectationsFailed(
                        f"the training output breaks {len(violations)} expectation(s) of the ETL (in the batch of "
                        f"rows {frame.index.start}…{frame.index.start + len(frame) - 1})",
                        {"stage": "train", "violations": violations, "first_row": frame.index.start})
                table = self._arrow(features, schema, frame.index.start)
                schema = table.schema
                yield from table.to_batches(max_chunksize=self.batch_rows) or [empty_batch(schema)]
        finally:
            close = getattr(inputs, "close", None)
            if close is not None:
                close()

    @staticmethod
    def _arrow(features: pd.DataFrame, schema: pa.Schema | None, first_row: int) -> pa.Table:
        """One batch's features in Arrow, in the stream's schema (the first batch's) after the first."""
        try:
            return pa.Table.from_pandas(features, schema=schema, preserve_index=False)
        except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError, ValueError, KeyError) as error:
            raise EtlFailed(f"the ETL's features of the batch from row {first_row} do not have the columns and "
                            f"types of its first batch ({error}); an ETL whose output types depend on the rows "
                            "it is given is not batchable", {"first_row": first_row}) from None
