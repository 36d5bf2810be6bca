"""Incoming rows, JSON or Arrow, checked against a source and turned into one typed Arrow table.

Nothing is written until every row has passed: a wrong type, an unknown column, a
missing or null key, event time or other required column, NaN or infinity, or a
timestamp without a zone offset is InvalidInput naming the row and the column.
Columns are converted by Arrow in C; Python only looks at the set of value types
in each column (and, on failure, walks it once to name the first bad row).
"""
from __future__ import annotations

import math
from typing import Any, Iterable, Iterator

import pyarrow as pa
import pyarrow.compute as pc

from catalog.base import SourceRecord
from common.errors import InvalidInput
from sql.types import ARROW

# JSON value types each logical type accepts (timestamps are ISO-8601 text with a zone offset)
_JSON_TYPES: dict[str, tuple[type, ...]] = {"integer": (int,), "float": (int, float), "boolean": (bool,),
                                            "string": (str,), "timestamp": (str,)}


def arrow_schema(source: SourceRecord) -> pa.Schema:
    """The Arrow schema rows of `source` are written with."""
    return pa.schema([pa.field(c["name"], ARROW[c["type"]], nullable=c.get("nullable", True))
                      for c in source.columns])


def rows_from_json(source: SourceRecord, rows: Any) -> pa.Table:
    """JSON rows (a list of objects) as a table of the source's columns."""
    if not isinstance(rows, list) or not all(isinstance(row, dict) for row in rows):
        raise InvalidInput("rows must be a list of JSON objects", {"field": "rows"})
    declared = {c["name"]: c for c in source.columns}
    unknown = set().union(*rows) - set(declared) if rows else set()
    if unknown:
        name = sorted(unknown)[0]
        row = next(i for i, r in enumerate(rows) if name in r)
        raise InvalidInput(f"row {row}: the source {source.name!r} has no column {name!r}",
                           {"row": row, "column": name, "unknown_columns": sorted(unknown)})
    arrays = [_json_column(source, declared[name], [row.get(name) for row in rows]) for name in declared]
    return checked_table(source, pa.Table.from_arrays(arrays, schema=arrow_schema(source)))


def _json_column(source: SourceRecord, column: dict[str, Any], values: list[Any]) -> pa.Array:
    name, logical = column["name"], column["type"]
    allowed = _JSON_TYPES[logical]
    kinds = {type(value) for value in values}
    kinds.discard(type(None))
    if not kinds <= set(allowed):
        row = next(i for i, v in enumerate(values) if v is not None and type(v) not in allowed)
        raise _bad_value(source, row, name, logical, values[row])
    try:
        if logical == "timestamp":
            return pc.cast(pa.array(values, pa.string()), ARROW["timestamp"])
        return pa.array(values, ARROW[logical])
    except (pa.ArrowInvalid, OverflowError, pa.ArrowTypeError):
        row = _first_unconvertible(values, logical)
        raise _bad_value(source, row, name, logical, values[row]) from None


def _first_unconvertible(values: list[Any], logical: str) -> int:
    for i, value in enumerate(values):
        try:
            if logical == "timestamp":
                pc.cast(pa.array([value], pa.string()), ARROW["timestamp"])
            else:
                pa.array([value], ARROW[logical])
        except (pa.ArrowInvalid, OverflowError, pa.ArrowTypeError):
            return i
    return 0


def _bad_value(source: SourceRecord, row: int, column: str, logical: str, value: Any) -> InvalidInput:
    shown = value if not isinstance(value, str) or len(value) <= 80 else value[:80] + "…"
    hint = " (ISO-8601 with a zone offset, e.g. 2024-05-01T12:00:00Z)" if logical == "timestamp" else ""
    return InvalidInput(f"row {row}: column {column!r} of source {source.name!r} takes {logical} values{hint}, "
                        f"not {shown!r}", {"row": row, "column": column, "expected_type": logical})


def stored_rows(source: SourceRecord, rows: Any) -> pa.Table:
    """Rows read back from the warehouse (Arrow or pandas) as the source's declared columns and Arrow types
    (a DECIMAL becomes float64, a narrower integer int64); InvalidInput naming a column that does not fit
    (an unsigned value past int64, say). Unlike ingestion, nulls are kept as the warehouse holds them."""
    table = rows if isinstance(rows, pa.Table) else pa.Table.from_pandas(rows, preserve_index=False)
    schema = arrow_schema(source)
    arrays = []
    for field in schema:
        try:
            arrays.append(pc.cast(table.column(field.name), field.type, safe=True))
        except (KeyError, pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError) as error:
            raise InvalidInput(f"column {field.name!r} of the warehouse table {source.table!r} does not fit the "
                               f"source's type {field.type}: {error}", {"column": field.name}) from None
    return pa.Table.from_arrays(arrays, schema=pa.schema([f.with_nullable(True) for f in schema]))


def rows_from_arrow(source: SourceRecord, batches: Iterable[pa.RecordBatch]) -> pa.Table:
    """Arrow record batches (from an IPC stream or a file) as a table of the source's columns.

    Each batch is cast to the declared types (int32 to int64, string to large_string, a timestamp
    of any unit and zone to microseconds in UTC); a cast that would lose information, a naive
    timestamp or an unknown column is refused.
    """
    schema = arrow_schema(source)
    tables, offset = [], 0
    for batch in batches:
        tables.append(_cast_batch(source, schema, batch, offset))
        offset += batch.num_rows
    table = pa.Table.from_batches([], schema=schema) if not tables else pa.concat_tables(tables)
    return checked_table(source, table)


def _cast_batch(source: SourceRecord, schema: pa.Schema, batch: pa.RecordBatch, offset: int) -> pa.Table:
    unknown = [name for name in batch.schema.names if name not in schema.names]
    if unknown:
        raise InvalidInput(f"the source {source.name!r} has no column(s) {unknown}", {"unknown_columns": unknown})
    if len(set(batch.schema.names)) != len(batch.schema.names):
        raise InvalidInput("the Arrow stream names a column twice", {"columns": batch.schema.names})
    arrays = []
    for field in schema:
        if field.name not in batch.schema.names:
            arrays.append(pa.nulls(batch.num_rows, field.type))
            continue
        arrays.append(_cast_array(source, batch.column(field.name), field, offset))
    return pa.Table.from_arrays(arrays, schema=schema)


def _cast_array(source: SourceRecord, array: pa.Array, field: pa.Field, offset: int) -> pa.Array:
    given = array.type
    if pa.types.is_timestamp(field.type):
        if not pa.types.is_timestamp(given) or given.tz is None:
            raise InvalidInput(f"column {field.name!r} of source {source.name!r} takes timestamps with a time "
                               f"zone, not {given}", {"column": field.name, "given_type": str(given)})
    elif pa.types.is_boolean(field.type) != pa.types.is_boolean(given) or (
            pa.types.is_integer(field.type) and not pa.types.is_integer(given)) or (
            pa.types.is_floating(field.type) and not (pa.types.is_floating(given) or pa.types.is_integer(given))) or (
            pa.types.is_large_string(field.type) and not (pa.types.is_string(given)
                                                          or pa.types.is_large_string(given))):
        if not pa.types.is_null(given):
            raise InvalidInput(f"column {field.name!r} of source {source.name!r} takes {field.type} values, not "
                               f"{given}", {"column": field.name, "given_type": str(given)})
    try:
        return pc.cast(array, field.type, safe=True)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as error:
        raise InvalidInput(f"column {field.name!r} of source {source.name!r}: {error}",
                           {"column": field.name, "first_row": offset}) from None


# Timestamps the engines and Python all represent: years 1 to 9999, in microseconds since the epoch.
_FIRST_US, _LAST_US = -62135596800 * 10**6, 253402300799999999


def checked_table(source: SourceRecord, table: pa.Table) -> pa.Table:
    """`table` if its required columns have no nulls, its floats are finite, its timestamps lie in years
    1 to 9999 and its strings hold no NUL character; else InvalidInput naming the first bad row."""
    for column in source.columns:
        values, name = table.column(column["name"]), column["name"]
        if not len(values):
            continue
        if not column.get("nullable", True) and values.null_count:
            role = ("entity key" if name in source.entity_keys else
                    "event time" if name == source.event_time else "required column")
            _refuse(source, name, pc.is_null(values), f"the {role} is missing or null")
        if column["type"] == "float":
            _refuse(source, name, pc.invert(pc.fill_null(pc.is_finite(values), True)),
                    "is NaN or infinite; send null for a missing value")
        elif column["type"] == "timestamp":
            micros = pc.cast(values, pa.int64())
            _refuse(source, name, pc.fill_null(pc.or_(pc.less(micros, _FIRST_US), pc.greater(micros, _LAST_US)),
                                               False), "is outside the years 1 to 9999")
        elif column["type"] == "string":
            _refuse(source, name, pc.fill_null(pc.match_substring(values, "\x00"), False),
                    "contains a NUL character")
    return table


def _refuse(source: SourceRecord, column: str, bad: Any, problem: str) -> None:
    """InvalidInput for the first row where `bad` (a boolean array) is true; nothing when none is."""
    if pc.any(bad).as_py():
        row = _first_row(bad)
        raise InvalidInput(f"row {row}: column {column!r} of source {source.name!r} {problem}",
                           {"row": row, "column": column})


def _first_row(mask: Any) -> int:
    index = pc.index(mask, True).as_py()
    return 0 if index is None or index < 0 else index


def event_time_range(source: SourceRecord, table: pa.Table) -> dict[str, Any]:
    """The oldest and newest event time in `table`, as JSON values (ISO-8601 text or epoch seconds)."""
    if not table.num_rows:
        return {"min_event_time": None, "max_event_time": None}
    bounds = pc.min_max(table.column(source.event_time)).as_py()
    return {"min_event_time": json_time(bounds["min"]), "max_event_time": json_time(bounds["max"])}


def json_time(value: Any) -> Any:
    """An event time as JSON: a datetime as ISO-8601 (UTC, ``Z``), a number as it is."""
    if hasattr(value, "isoformat"):
        return value.isoformat().replace("+00:00", "Z")
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def ipc_batches(stream: Any, max_bytes: int | None = None) -> Iterator[pa.RecordBatch]:
    """Record batches from an Arrow IPC stream (a file-like object), as InvalidInput when it is not one, or
    when its batches decode to more than `max_bytes` (a few compressed bytes can decode to gigabytes)."""
    decoded = 0
    try:
        reader = pa.ipc.open_stream(stream)
        for batch in reader:
            decoded += batch.nbytes
            if max_bytes is not None and decoded > max_bytes:
                raise InvalidInput(f"the Arrow stream decodes to more than {max_bytes} bytes (MAX_INGEST_BYTES); "
                                   "send it in smaller calls", {"max_bytes": max_bytes}, code="ingest_too_large")
            yield batch
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, OSError) as error:
        raise InvalidInput(f"the body is not a valid Arrow IPC stream: {error}") from None
