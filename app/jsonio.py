"""JSON out: DataFrames as JSON-safe records, encoded with orjson.

Timestamps become ISO-8601 strings, NaN/NaT/NA become null, numpy scalars
become plain numbers and booleans.
"""
from __future__ import annotations

import base64
import datetime as dt
import decimal
import json
from typing import Any

import numpy as np
import orjson
import pandas as pd

from common.errors import ResultTooLarge

_OPTIONS = orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS


def _default(value: Any) -> Any:
    if value is pd.NA or value is pd.NaT:  # NaT is a datetime too: test it first
        return None
    if isinstance(value, (pd.Timestamp, dt.datetime, dt.date, dt.time)):
        return value.isoformat()
    if isinstance(value, (pd.Timedelta, dt.timedelta)):
        return pd.Timedelta(value).isoformat()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, decimal.Decimal):
        return float(value)
    if isinstance(value, (bytes, bytearray, memoryview)):
        return base64.b64encode(bytes(value)).decode("ascii")
    return str(value)


def strict_loads(text: str | bytes) -> Any:
    """Parse a request body, refusing (ValueError) what JSON parsers disagree on.

    orjson first: it refuses NaN/Infinity, lone surrogates and nesting deeper than 1024
    without recursion. Then, for objects, a second pass refuses duplicate keys (which
    parsers resolve differently: the first, the last, or an error) and NUL characters.
    """
    value = orjson.loads(text)
    if isinstance(value, (dict, list)):
        json.loads(text, object_pairs_hook=_unique_keys)
    # JSON can carry a NUL only as the escape \u0000 (orjson refuses raw control characters), so a body
    # without that text has none; one with it is walked to tell a real NUL from an escaped backslash.
    raw = text.encode() if isinstance(text, str) else bytes(text)
    if isinstance(value, (dict, list, str)) and b"\\u0000" in raw:
        _refuse_nul(value)
    return value


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    unique = dict(pairs)  # one dict per object, the common case: no key list, no set
    if len(unique) != len(pairs):
        keys = [key for key, _ in pairs]
        raise ValueError(f"duplicate keys in a JSON object: {sorted({k for k in keys if keys.count(k) > 1})}")
    return unique


def _refuse_nul(value: Any) -> None:
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            if "\x00" in item:
                raise ValueError("NUL characters are not allowed in JSON strings")
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)


def dumps(payload: Any) -> bytes:
    """Encode `payload` as JSON bytes."""
    return orjson.dumps(payload, default=_default, option=_OPTIONS)


SLICE_BYTES = 1 << 20  # about this much of a long list is encoded at a time
_MAX_SLICE_ROWS = 4096


def dumps_bounded(payload: Any, max_bytes: int) -> bytes:
    """`dumps(payload)`, the same bytes, or ResultTooLarge as soon as the body passes `max_bytes`.

    The lists of a top-level object (the rows of ``data``) are encoded a slice at a time, slices sized
    to about `SLICE_BYTES` from the rows encoded so far, so a body past the limit is refused after
    encoding at most the limit plus one slice (or one row, if a single row is larger), never whole.
    """
    body = _BoundedBody(max_bytes)
    if isinstance(payload, dict) and all(isinstance(key, str) for key in payload):
        body.add(b"{")
        for i, (key, value) in enumerate(payload.items()):
            body.add((b"," if i else b"") + orjson.dumps(key) + b":")
            _add_value(body, value)
        body.add(b"}")
    else:
        _add_value(body, payload)
    return b"".join(body.parts)


class _BoundedBody:
    def __init__(self, max_bytes: int):
        self.max_bytes, self.size = max_bytes, 0
        self.parts: list[bytes] = []

    def add(self, part: bytes) -> None:
        self.size += len(part)
        if self.size > self.max_bytes:
            self.parts.clear()
            raise ResultTooLarge(f"the response is larger than MAX_RESPONSE_BYTES ({self.max_bytes} bytes): ask for "
                                 "fewer rows or columns, or stream a training set as Arrow (?format=arrow)",
                                 {"max_bytes": self.max_bytes})
        self.parts.append(part)


def _add_value(body: _BoundedBody, value: Any) -> None:
    if not isinstance(value, list) or len(value) < 2:
        body.add(dumps(value))
        return
    body.add(b"[")
    start, rows, encoded = 0, 1, 0
    while start < len(value):
        part = dumps(value[start:start + rows])  # "[a,b,…]": its inside joins the list
        body.add((b"," if start else b"") + part[1:-1])
        start, encoded = start + rows, encoded + len(part)
        rows = max(1, min(_MAX_SLICE_ROWS, SLICE_BYTES * start // max(encoded, 1)))
    body.add(b"]")


FEW_ROWS = 64  # up to this many rows (a served entity's), `frame_records` converts the frame at once


def frame_records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """The rows of `frame` as dicts that `dumps` encodes (NaN → null by orjson; NA, NaT by `_default`)."""
    if frame.empty:
        return []
    names = [str(name) for name in frame.columns]
    if len(frame) <= FEW_ROWS:  # one object array: the same values, without a Series per column
        return [dict(zip(names, row)) for row in frame.to_numpy(dtype=object).tolist()]
    columns = [column.tolist() for _, column in frame.items()]
    return [dict(zip(names, row)) for row in zip(*columns)]
