"""Response rows to pandas: JSON records, typed by the service's logical schema.

The service sends rows as JSON records (timestamps as ISO-8601, missing values
as null) and, for training, a schema of ``{name, type}`` in logical types. A
column is given the dtype the service's own training frames use: int64 and
bool, or nullable Int64 and boolean when it holds a null; float64; str;
datetime64 for timestamps; timedelta64 for intervals; bytes for binary. Other
types (null, mixed) stay as parsed. The schema also fixes the column order,
and an empty result still has its columns.
"""
from __future__ import annotations

import base64
from typing import Any, Callable

import pandas as pd

Column = dict[str, str]


def _integer(values: pd.Series) -> pd.Series:
    return values.astype("Int64" if values.isna().any() else "int64")


def _boolean(values: pd.Series) -> pd.Series:
    return values.astype("boolean" if values.isna().any() else "bool")


def _timestamp(values: pd.Series) -> pd.Series:
    try:
        return pd.to_datetime(values, format="ISO8601")
    except (ValueError, TypeError):  # mixed offsets: one UTC column
        return pd.to_datetime(values, format="ISO8601", utc=True)


def _binary(values: pd.Series) -> pd.Series:
    return values.map(lambda text: None if text is None else base64.b64decode(text), na_action="ignore")


_CONVERTERS: dict[str, Callable[[pd.Series], pd.Series]] = {
    "integer": _integer,
    "boolean": _boolean,
    "float": lambda values: values.astype("float64"),
    "string": lambda values: values.astype("str"),
    "timestamp": _timestamp,
    "interval": pd.to_timedelta,
    "binary": _binary,
}


def records_frame(records: list[dict[str, Any]] | None, schema: list[Column] | None = None) -> pd.DataFrame:
    """A DataFrame of `records`; with `schema`, typed and ordered by it (extra columns kept, at the end)."""
    raw = pd.DataFrame.from_records(records or [])
    if not schema:
        return raw
    columns = {}
    for column in schema:
        values = raw[column["name"]] if column["name"] in raw else pd.Series([None] * len(raw), dtype=object)
        convert = _CONVERTERS.get(column["type"])
        columns[column["name"]] = convert(values.astype(object)) if convert else values
    for name in raw.columns:
        if name not in columns:
            columns[name] = raw[name]
    return pd.DataFrame(columns)
