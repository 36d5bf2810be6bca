"""JSON out: DataFrames as JSON-safe records, encoded with orjson.

Timestamps become ISO-8601 strings, NaN/NaT/NA become null, numpy scalars
become plain numbers and booleans.
"""
from __future__ import annotations

import base64
import datetime as dt
import decimal
from typing import Any

import numpy as np
import orjson
import pandas as pd

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


def dumps(payload: Any) -> bytes:
    """Encode `payload` as JSON bytes."""
    return orjson.dumps(payload, default=_default, option=_OPTIONS)


def frame_records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """The rows of `frame` as dicts that `dumps` encodes (NaN → null by orjson; NA, NaT by `_default`)."""
    if frame.empty:
        return []
    names = [str(name) for name in frame.columns]
    columns = [column.tolist() for _, column in frame.items()]
    return [dict(zip(names, row)) for row in zip(*columns)]
