"""Cheap reads of a DataFrame's layout, for the per-request path (a served frame has one or a few rows,
where pandas' public accessors cost more than the work they describe)."""
from __future__ import annotations

from typing import Any

import pandas as pd


def column_dtypes(frame: pd.DataFrame) -> list[Any]:
    """``list(frame.dtypes)`` without building a Series (about 8 µs instead of 70 on a one-row frame)."""
    manager = getattr(frame, "_mgr", None)
    get_dtypes = getattr(manager, "get_dtypes", None)
    if get_dtypes is None:  # another pandas: the public accessor
        return list(frame.dtypes)
    return list(get_dtypes())


def column_names(frame: pd.DataFrame) -> list[Any]:
    """The column labels as a list."""
    return frame.columns.tolist()


def unique_names(names: list[Any]) -> bool:
    """No label repeated (a set of a short list instead of pandas' hash engine)."""
    return len(set(names)) == len(names)
