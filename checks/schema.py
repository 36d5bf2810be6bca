"""Logical column types and the train/serve schema comparison.

Engines and pandas spell types many ways (BIGINT, Int32, int64; bool, boolean,
0/1). Both sides of a comparison are reduced to one logical vocabulary:
integer, float, boolean, string, timestamp, interval, binary, null (no
values to judge) and mixed.

Missing values are no evidence: an all-null served column matches anything,
and a served float column whose values are whole numbers and which holds a
null may stand for a trained integer column (pandas widens integers to float
when a value is missing). Integers may stand for a trained float column (every
integer is a float). An integer column arriving for a boolean one (0/1 from
an engine without booleans) is a type change; so is a float with a fraction
where training had integers. A trained "mixed" column (objects of several
kinds, e.g. booleans and strings) may be served as any one of the kinds it can
mix, boolean, string, integer or float: one served row holds only one of them.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from pandas.api import types as ptypes

from catalog.base import Column

_INFERRED = {
    "string": "string", "unicode": "string", "boolean": "boolean", "integer": "integer",
    "floating": "float", "mixed-integer-float": "float", "decimal": "float", "datetime64": "timestamp",
    "datetime": "timestamp", "date": "timestamp", "timedelta64": "interval", "timedelta": "interval",
    "bytes": "binary", "empty": "null",
}


_BY_DTYPE = ((ptypes.is_bool_dtype, "boolean"), (ptypes.is_integer_dtype, "integer"), (ptypes.is_float_dtype, "float"),
             (ptypes.is_datetime64_any_dtype, "timestamp"), (ptypes.is_timedelta64_dtype, "interval"))


def dtype_kinds(dtype: Any) -> frozenset[str] | None:
    """The logical types a non-empty column of `dtype` can have, whatever its values: one for numpy bools
    and ints (they cannot hold a missing value), else the dtype's type or "null" (all missing); None when
    the values decide (objects, categoricals)."""
    if isinstance(dtype, np.dtype) and dtype.kind in "biu":
        return frozenset({"boolean" if dtype.kind == "b" else "integer"})
    if isinstance(dtype, pd.CategoricalDtype):
        return None
    for test, kind in _BY_DTYPE:
        if test(dtype):
            return frozenset({kind, "null"})
    if ptypes.is_string_dtype(dtype) and not ptypes.is_object_dtype(dtype):
        return frozenset({"string", "null"})
    return None


def logical_type(series: pd.Series) -> str:
    """The logical type of a column, judged from its dtype and, for objects, its values."""
    dtype = series.dtype
    if isinstance(dtype, np.dtype):  # fast paths for plain numpy columns (the serving path)
        if dtype.kind == "b":  # numpy bools and ints cannot hold a missing value: the dtype is the type
            return "boolean"
        if dtype.kind in "iu":
            return "integer"
        if dtype.kind == "f" and len(series):
            return "null" if np.isnan(series.to_numpy()).all() else "float"
    if isinstance(dtype, pd.CategoricalDtype):
        return logical_type(pd.Series(dtype.categories)) if len(dtype.categories) else "null"
    if series.isna().all():
        return "null"
    kinds = dtype_kinds(dtype)
    if kinds is not None:
        return next(iter(kinds - {"null"}))
    return _INFERRED.get(ptypes.infer_dtype(series, skipna=True), "mixed")


def widened_integers(series: pd.Series) -> bool:
    """A float column that holds a null and otherwise only whole numbers: integers a null widened."""
    if not (ptypes.is_float_dtype(series.dtype) or ptypes.is_object_dtype(series.dtype)):
        return False
    values = pd.to_numeric(series, errors="coerce").to_numpy(dtype="float64", na_value=np.nan)
    present = values[~np.isnan(values)]
    if not 0 < len(present) < len(values) or not np.all(np.isfinite(present)):
        return False
    return bool(np.all(np.mod(present, 1) == 0))


def column_type(series: pd.Series) -> Column:
    """{"type"} of a served column, with ``"widened": True`` where it may be null-widened integers."""
    kind = logical_type(series)
    return {"type": kind, "widened": True} if kind == "float" and widened_integers(series) else {"type": kind}


def frame_schema(frame: pd.DataFrame) -> list[Column]:
    """Column names and logical types of `frame`, in column order (repeated names each listed)."""
    return [{"name": str(name), "type": logical_type(column)} for name, column in frame.items()]


def served_schema(frame: pd.DataFrame) -> list[Column]:
    """Like `frame_schema`, marking float columns that may be null-widened integers.

    On the request path: numpy bool and integer columns are typed from their dtype alone.
    """
    schema = []
    unique = frame.columns.is_unique
    for position, (name, dtype) in enumerate(frame.dtypes.items()):
        if len(frame) and isinstance(dtype, np.dtype) and dtype.kind in "biu":
            schema.append({"name": str(name), "type": "boolean" if dtype.kind == "b" else "integer"})
        elif len(frame) and isinstance(dtype, pd.StringDtype):
            column = frame[name] if unique else frame.iloc[:, position]
            schema.append({"name": str(name), "type": "null" if column.isna().all() else "string"})
        else:
            schema.append({"name": str(name), **column_type(frame[name] if unique else frame.iloc[:, position])})
    return schema


@dataclass
class SchemaDiff:
    """How a serving output differs from the training schema."""

    missing: list[str] = field(default_factory=list)
    extra: list[str] = field(default_factory=list)
    type_changed: list[dict[str, str]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (self.missing or self.extra or self.type_changed)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


_MIXABLE = frozenset({"boolean", "string", "integer", "float"})


def compatible(trained: str, served: str, widened: bool = False) -> bool:
    """Whether a served logical type may stand for a trained one (see the module docstring)."""
    return (trained == served or "null" in (trained, served) or (trained, served) == ("float", "integer")
            or (widened and (trained, served) == ("integer", "float"))
            or (trained == "mixed" and served in _MIXABLE))


def compare_schemas(trained: list[Column], served: list[Column]) -> SchemaDiff:
    """Columns missing from, extra in, or of another logical type in the served output.

    `served` comes from `served_schema` (or `frame_schema`, without the widening allowance).
    """
    trained_types = {c["name"]: c["type"] for c in trained}
    served_by_name = {c["name"]: c for c in served}
    return SchemaDiff(
        missing=[name for name in trained_types if name not in served_by_name],
        extra=[name for name in served_by_name if name not in trained_types],
        type_changed=[
            {"name": name, "trained": trained_types[name], "served": served_by_name[name]["type"]}
            for name in trained_types
            if name in served_by_name and not compatible(trained_types[name], served_by_name[name]["type"],
                                                         bool(served_by_name[name].get("widened")))
        ],
    )


@dataclass(frozen=True)
class SchemaPlan:
    """What checking frames of one column layout against one training schema needs, computed once:
    ``exact`` when the names match and no column's type can disagree whatever its values, else the
    columns whose values decide (`compatible` for every dtype-only column)."""

    names_match: bool
    value_columns: tuple[str, ...]


def schema_plan(trained: list[Column], dtypes: list[tuple[str, Any]]) -> SchemaPlan:
    """The plan for a non-empty frame with these unique (name, dtype) columns (see `check_with_plan`)."""
    trained_types = {c["name"]: c["type"] for c in trained}
    names_match = set(trained_types) == {name for name, _ in dtypes}
    value_columns = []
    for name, dtype in dtypes:
        kinds = dtype_kinds(dtype)
        wanted = trained_types.get(name)
        if wanted is not None and (kinds is None or not all(compatible(wanted, kind) for kind in kinds)):
            value_columns.append(name)
    return SchemaPlan(names_match, tuple(value_columns))


def plan_allows(plan: SchemaPlan, trained: list[Column], frame: pd.DataFrame) -> bool:
    """True when `frame` (of the plan's layout) certainly matches `trained`: `compare_schemas` over
    `served_schema` would find no difference. False means: run the full comparison for the diff."""
    if not plan.names_match:
        return False
    trained_types = {c["name"]: c["type"] for c in trained} if plan.value_columns else {}
    for name in plan.value_columns:
        served = column_type(frame[name])
        if not compatible(trained_types[name], served["type"], bool(served.get("widened"))):
            return False
    return True
