"""Training spines: the (entity key, as-of time) rows a point-in-time training set is answered for.

A spine comes inline (`rows`), as an uploaded Arrow table (`spine_id`, see `SpineUploads`) or as a
read-only query over the sources (`query`). Its key column is cast to the query's key type and its
time column to UTC microseconds; a spine without a time column is "as of now" (batch scoring).
Every other column is carried through to the answer untouched.
"""
from __future__ import annotations

import os
import re
import secrets
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from common.errors import InvalidInput, NotFound
from sql import types as logical_types
from sql.point_in_time import AS_OF, AS_OF_EPOCH, KEY, SID

SPEC_FIELDS = {"index_key", "time", "time_zone", "rows", "query", "spine_id"}
SPINE_ID = re.compile(r"^sp_[0-9a-f]{24}$")
_ZONED = r"(Z|z|[+-]\d{2}(:?\d{2})?)$"  # an ISO-8601 time that says its offset


@dataclass(frozen=True)
class SpineSpec:
    """A request's spine: where its rows are, which column is the key and which the as-of time."""

    index_key: str
    time: str | None = None
    time_zone: str | None = None
    rows: list[Any] | None = None
    query: str | None = None
    spine_id: str | None = None


@dataclass(frozen=True)
class Spine:
    """The caller's columns (`table`) and, row for row, the id, key and as-of times the SQL joins on."""

    table: pa.Table
    keyed: pa.Table  # SID, KEY, AS_OF (timestamp, UTC), AS_OF_EPOCH (seconds)
    index_key: str
    as_of_now: bool

    @property
    def rows(self) -> int:
        return self.table.num_rows


def parse_spec(body: Any) -> SpineSpec:
    """The `spine` object of a training request, checked (400 for anything malformed)."""
    if not isinstance(body, dict):
        raise InvalidInput("spine must be an object {index_key, time?, rows | query | spine_id}")
    unknown = sorted(set(body) - SPEC_FIELDS)
    if unknown:
        raise InvalidInput(f"spine has unknown field(s) {unknown}", {"allowed": sorted(SPEC_FIELDS)})
    given = [name for name in ("rows", "query", "spine_id") if body.get(name) is not None]
    if len(given) != 1:
        raise InvalidInput("spine needs exactly one of rows, query or spine_id", {"given": given})
    for name in ("index_key", "time", "time_zone", "query", "spine_id"):
        value = body.get(name)
        if value is not None and (not isinstance(value, str) or not value or len(value) > 100_000):
            raise InvalidInput(f"spine.{name} must be a non-empty string", {"field": name})
    if body.get("index_key") is None:
        raise InvalidInput("spine.index_key is required: the spine column (and query output column) of the key")
    if body.get("rows") is not None and not isinstance(body["rows"], list):
        raise InvalidInput("spine.rows must be a list of objects")
    if body.get("spine_id") is not None and not SPINE_ID.fullmatch(body["spine_id"]):
        raise InvalidInput(f"{body['spine_id'][:80]!r} is not a spine id", {"spine_id": body["spine_id"][:80]})
    if body.get("time_zone") is not None:
        _check_zone(body["time_zone"])
    return SpineSpec(**{name: body.get(name) for name in SPEC_FIELDS})


def rows_table(rows: list[Any]) -> pa.Table:
    """Inline JSON rows as an Arrow table (each row an object of the same columns)."""
    if not all(isinstance(row, dict) for row in rows):
        raise InvalidInput("spine.rows must be a list of objects")
    try:
        return pa.Table.from_pylist(rows)
    except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError) as error:
        raise InvalidInput(f"spine.rows mix types within a column: {str(error)[:200]}") from None


def build_spine(table: pa.Table, spec: SpineSpec, key_type: str, max_rows: int, now: float | None = None) -> Spine:
    """The spine of `table`: its key cast to `key_type`, its times to UTC, or `now` for every row
    without a time column. 400 for a missing or null key or time, a naive time without `time_zone`,
    a reserved column name, or more than `max_rows` rows."""
    if table.num_rows > max_rows:
        raise InvalidInput(f"the spine has {table.num_rows} rows; at most {max_rows}",
                           {"rows": table.num_rows, "max_rows": max_rows}, code="spine_too_large")
    names = table.column_names
    reserved = [name for name in names if name.startswith("_fs_") or not name]
    if reserved or len(set(names)) != len(names):
        raise InvalidInput("spine column names must be distinct, non-empty and not start with _fs_",
                           {"columns": names[:50]})
    for role, name in (("index_key", spec.index_key), ("time", spec.time)):
        if name is not None and name not in names:
            raise InvalidInput(f"spine.{role} {name!r} is not a column of the spine", {role: name, "columns": names[:50]})
    key = _key_column(table.column(spec.index_key), key_type, spec.index_key)
    if spec.time is None:
        stamp = int((time.time() if now is None else now) * 1_000_000)
        as_of = pa.array([stamp] * table.num_rows, pa.int64()).cast(logical_types.ARROW["timestamp"])
    else:
        as_of = time_column(table.column(spec.time), spec.time, spec.time_zone)
    epoch = pc.divide(pc.cast(pc.cast(as_of, pa.int64()), pa.float64()), 1_000_000.0)
    keyed = pa.table({SID: pa.array(range(table.num_rows), pa.int64()), KEY: key, AS_OF: as_of, AS_OF_EPOCH: epoch})
    return Spine(table, keyed, spec.index_key, spec.time is None)


def _key_column(column: pa.ChunkedArray, key_type: str, name: str) -> pa.Array:
    nulls = pc.is_null(column)
    if pc.any(nulls).as_py():
        raise InvalidInput(f"spine row {_first(nulls)} has no {name!r}: every spine row needs a key",
                           {"row": _first(nulls), "column": name})
    target = logical_types.ARROW[key_type]
    if key_type == "string" and not (pa.types.is_string(column.type) or pa.types.is_large_string(column.type)):
        if not pa.types.is_integer(column.type):
            raise InvalidInput(f"spine column {name!r} holds {column.type}, the key is a string", {"column": name})
    try:
        return pc.cast(column, target).combine_chunks()
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        raise InvalidInput(f"spine column {name!r} ({column.type}) is not a valid {key_type} key",
                           {"column": name, "expected_type": key_type}) from None


def time_column(column: pa.ChunkedArray, name: str, zone: str | None = None) -> pa.Array:
    """A spine's as-of times as UTC timestamps: zoned timestamps or ISO-8601 text with an offset, epoch
    seconds, or naive times read in `zone`."""
    nulls = pc.is_null(column)
    if pc.any(nulls).as_py():
        raise InvalidInput(f"spine row {_first(nulls)} has no {name!r}: every spine row needs its as-of time",
                           {"row": _first(nulls), "column": name})
    kind = column.type
    target = logical_types.ARROW["timestamp"]
    if pa.types.is_timestamp(kind):
        if kind.tz is None:
            if zone is None:
                raise _naive(name)
            column = pc.assume_timezone(column, zone, ambiguous="raise", nonexistent="raise")
        return pc.cast(column, target).combine_chunks()
    if pa.types.is_integer(kind) or pa.types.is_floating(kind):
        micros = pc.multiply(pc.cast(column, pa.float64()), 1_000_000.0)
        if not pc.all(pc.is_finite(micros)).as_py():
            raise InvalidInput(f"spine column {name!r} has a non-finite time", {"column": name})
        return pc.cast(pc.round(micros), pa.int64()).cast(target).combine_chunks()
    if pa.types.is_string(kind) or pa.types.is_large_string(kind):
        return _parsed_times(column, name, zone)
    raise InvalidInput(f"spine column {name!r} ({kind}) is not a time: give ISO-8601 text with an offset, "
                       "zoned timestamps or epoch seconds", {"column": name})


def _parsed_times(column: pa.ChunkedArray, name: str, zone: str | None) -> pa.Array:
    zoned = pc.match_substring_regex(column, _ZONED)
    if zone is None and not pc.all(zoned).as_py():
        raise _naive(name, _first(pc.invert(zoned)))
    try:
        values = pd.Series(column.to_pandas(), copy=False)
        if zone is None:
            parsed = pd.to_datetime(values, format="ISO8601", utc=True)
        else:  # naive text is read in `zone`; text with its own offset keeps it
            parsed = values.map(lambda text: _one_time(text, zone))
            parsed = pd.to_datetime(parsed, utc=True)
    except (ValueError, TypeError, OverflowError) as error:
        raise InvalidInput(f"spine column {name!r} has a time that is not ISO-8601: {str(error)[:200]}",
                           {"column": name}) from None
    return pa.array(parsed.dt.as_unit("us"), logical_types.ARROW["timestamp"])


def _one_time(text: str, zone: str) -> pd.Timestamp:
    stamp = pd.Timestamp(text)
    return stamp.tz_localize(zone) if stamp.tzinfo is None else stamp


def _naive(name: str, row: int | None = None) -> InvalidInput:
    where = "" if row is None else f" (row {row})"
    return InvalidInput(f"spine column {name!r} has times without a time zone{where}: give an offset "
                        "(e.g. 2026-03-01T12:00:00Z) or declare spine.time_zone", {"column": name, "row": row},
                        code="naive_time")


def _check_zone(zone: str) -> None:
    try:
        pd.Timestamp("2000-01-01").tz_localize(zone)
    except Exception:  # noqa: BLE001 - pandas and zoneinfo raise several kinds for an unknown zone
        raise InvalidInput(f"spine.time_zone {zone[:80]!r} is not a time zone name", {"time_zone": zone[:80]}) from None


def _first(mask: Any) -> int:
    return int(pc.index(mask, True).as_py())


class SpineUploads:
    """Spines uploaded once (Arrow IPC) and named by id in later training requests; kept `ttl` seconds."""

    def __init__(self, directory: Path, ttl_seconds: float):
        self.directory = directory
        self.ttl = ttl_seconds

    def save(self, table: pa.Table) -> str:
        """Keep `table` and return its id (expired uploads are removed first)."""
        self.directory.mkdir(parents=True, exist_ok=True)
        self._expire()
        spine_id = "sp_" + secrets.token_hex(12)
        partial = self.directory / f".{spine_id}.partial"
        with pa.OSFile(str(partial), "wb") as sink, pa.ipc.new_file(sink, table.schema) as writer:
            writer.write_table(table)
        os.replace(partial, self._path(spine_id))  # never a half-written spine under its id
        return spine_id

    def load(self, spine_id: str) -> pa.Table:
        path = self._path(spine_id)
        try:  # the table's buffers keep the map open; it closes when they are released
            return pa.ipc.open_file(pa.memory_map(str(path))).read_all()
        except FileNotFoundError:
            raise NotFound(f"no uploaded spine {spine_id} (uploads are kept {int(self.ttl)} s)",
                           {"spine_id": spine_id}, code="spine_not_found") from None

    def _path(self, spine_id: str) -> Path:
        return self.directory / f"{spine_id}.arrow"

    def _expire(self) -> None:
        oldest = time.time() - self.ttl
        for path in self.directory.glob("*.arrow"):
            try:
                if path.stat().st_mtime < oldest:
                    path.unlink()
            except FileNotFoundError:
                pass
