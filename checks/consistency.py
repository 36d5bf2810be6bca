"""Value-level train/serve consistency: compare an entity's served feature rows with its training rows.

`compare_entity` is the pure core of the registration replay (issue 11): columns, their order, logical
types and values, floats within a relative/absolute tolerance and nulls equal to nulls. `ReplayReport`
folds many entities into the report stored with an ETL: entities checked, per-column mismatch rate and
a few examples with both values.
"""
from __future__ import annotations

import functools
import hashlib
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson
import pandas as pd
from pandas.api.types import pandas_dtype

from checks.schema import dtype_kinds, logical_type
from common.frames import column_dtypes, column_names, unique_names
from common.jsonsafe import json_safe

MAX_EXAMPLES = 5


def _is_null(value: Any) -> bool:
    try:
        return value is None or bool(pd.isna(value))
    except (TypeError, ValueError):  # arrays and other non-scalars are never "null"
        return False


def values_equal(trained: Any, served: Any, rel_tol: float = 1e-12, abs_tol: float = 1e-12) -> bool:
    """Equal as features: null equals null, floats within a tolerance, anything else by ``==``."""
    if _is_null(trained) or _is_null(served):
        return _is_null(trained) and _is_null(served)
    if isinstance(trained, float) or isinstance(served, float):
        try:
            return math.isclose(float(trained), float(served), rel_tol=rel_tol, abs_tol=abs_tol)
        except (TypeError, ValueError):
            return False
    try:
        return bool(trained == served)
    except (TypeError, ValueError):
        return False


def compare_entity(trained: pd.DataFrame, served: pd.DataFrame) -> dict[str, Any]:
    """How one entity's served rows differ from its training rows: ``{"columns": ..., "values": {col: [...]}}``.

    ``columns`` is None when names and order match; ``values`` maps each column whose logical type,
    row count or any value differs to up to `MAX_EXAMPLES` ``{"row", "trained", "served"}`` examples.
    Rows are compared by position. (Read as whole arrays, not column by column: a replay compares
    hundreds of entities.)
    """
    trained_names, served_names = [str(c) for c in trained.columns], [str(c) for c in served.columns]
    columns = None if trained_names == served_names else {"trained": trained_names, "served": served_names}
    position = {name: i for i, name in enumerate(served_names)}
    left_cells, right_cells = _cells(trained), _cells(served)
    left_types = [_dtype_name(d) for d in column_dtypes(trained)]
    right_types = [_dtype_name(d) for d in column_dtypes(served)]
    values: dict[str, list[dict[str, Any]]] = {}
    for i, name in enumerate(trained_names):
        j = position.get(name)
        if j is None:
            values[name] = [{"row": None, "trained": "<column>", "served": "<missing>"}]
            continue
        examples: list[dict[str, Any]] = []
        if len(trained) != len(served):
            examples.append({"row": None, "trained": f"{len(trained)} rows", "served": f"{len(served)} rows"})
        elif (left_types[i] != right_types[j] or left_types[i] in JUDGED_BY_VALUES) and \
                _types_differ(trained.iloc[:, i], served.iloc[:, j]):
            examples.append({"row": None, "trained": logical_type(trained.iloc[:, i]),
                             "served": logical_type(served.iloc[:, j])})
        for row, (a, b) in enumerate(zip(left_cells[i], right_cells[j])):
            if len(examples) >= MAX_EXAMPLES:
                break
            if not values_equal(a, b):
                examples.append({"row": row, "trained": a, "served": b})
        if examples:
            values[name] = examples
    return {"columns": columns, "values": values}


JUDGED_BY_VALUES = ("object", "category")  # dtype names that do not fix a column's logical type


def equal_pairs(pairs: list[tuple[pd.DataFrame, pd.DataFrame]], rel_tol: float = 1e-12,
                abs_tol: float = 1e-12) -> list[bool]:
    """For each (trained, served) pair, True when `same_rows` surely holds: same column names in the same
    order, dtypes of one logical type (none whose values decide it), as many rows and, in canonical row
    order, every value equal as `values_equal` has it. Decided for all pairs at once, a few frame operations per group
    of pairs alike in layout instead of hundreds of per-entity comparisons; False means "compare this
    pair in full" (`compare_entity`), not that it differs."""
    verdicts = [False] * len(pairs)
    groups: dict[tuple, list[int]] = {}
    for number, (trained, served) in enumerate(pairs):
        names = [str(c) for c in column_names(trained)]
        if names != [str(c) for c in column_names(served)] or len(trained) != len(served) or \
                not unique_names(names):
            continue
        left, right = column_dtypes(trained), column_dtypes(served)
        types = ([_dtype_name(d) for d in left], [_dtype_name(d) for d in right])
        if all(_same_kind(a, b, x, y) for a, b, x, y in zip(*types, left, right)):
            groups.setdefault((tuple(names), tuple(types[0]), tuple(types[1]), len(trained)), []).append(number)
    for (names, _, _, rows), numbers in groups.items():
        if rows == 0:
            for number in numbers:
                verdicts[number] = True
            continue
        left = pd.concat([canonical_rows(pairs[n][0]) for n in numbers], ignore_index=True)
        right = pd.concat([canonical_rows(pairs[n][1]) for n in numbers], ignore_index=True)
        left.columns = right.columns = list(names)
        try:
            equal = np.logical_and.reduce([_equal_cells(left.iloc[:, i], right.iloc[:, i], rel_tol, abs_tol)
                                           for i in range(len(names))]) if names else np.ones(len(left), bool)
        except (TypeError, ValueError):  # values that do not compare as columns: leave them to compare_entity
            continue
        for number, same in zip(numbers, equal.reshape(len(numbers), rows).all(axis=1)):
            verdicts[number] = bool(same)
    return verdicts


def _same_kind(left_name: str, right_name: str, left: Any, right: Any) -> bool:
    """True when columns of these dtypes surely have one logical type (or one of them holds only nulls):
    `compare_entity` then finds no type difference; False for dtypes whose values decide the type."""
    if left_name in JUDGED_BY_VALUES or right_name in JUDGED_BY_VALUES:
        return False
    return left_name == right_name or _value_kind(left_name, left) == _value_kind(right_name, right) is not None


def _value_kind(name: str, dtype: Any) -> str | None:
    """The one logical type a column of `dtype` has unless all null (None: its values decide)."""
    if name not in _VALUE_KINDS:
        kinds = dtype_kinds(dtype)
        rest = None if kinds is None else kinds - {"null"}
        _VALUE_KINDS[name] = next(iter(rest)) if rest and len(rest) == 1 else None
    return _VALUE_KINDS[name]


_VALUE_KINDS: dict[str, str | None] = {}


def _equal_cells(left: pd.Series, right: pd.Series, rel_tol: float, abs_tol: float) -> np.ndarray:
    """Cell by cell, `values_equal` of two columns of one dtype: nulls equal nulls, floats within the
    tolerance (as `math.isclose`), anything else by ``==``."""
    left_null, right_null = left.isna().to_numpy(dtype=bool), right.isna().to_numpy(dtype=bool)
    if pd.api.types.is_float_dtype(left.dtype):
        a = left.to_numpy(dtype="float64", na_value=np.nan)
        b = right.to_numpy(dtype="float64", na_value=np.nan)
        with np.errstate(invalid="ignore", over="ignore"):
            close = (a == b) | (np.isfinite(a) & np.isfinite(b) &
                                (np.abs(a - b) <= np.maximum(rel_tol * np.maximum(np.abs(a), np.abs(b)), abs_tol)))
    else:
        same = left == right
        close = same.to_numpy(dtype=bool, na_value=False) if isinstance(same, pd.Series) else np.asarray(same, bool)
    return np.where(left_null | right_null, left_null & right_null, close)


def _cells(frame: pd.DataFrame) -> list[list[Any]]:
    """A frame's values column by column, as Python lists (one conversion for the whole frame)."""
    if not len(frame.columns):
        return []
    return frame.to_numpy(dtype=object).T.tolist() if len(frame) else [[] for _ in frame.columns]


def _types_differ(left: pd.Series, right: pd.Series) -> bool:
    """Other logical types (a column of nulls only has no type to differ by)."""
    if logical_type(left) == logical_type(right):
        return False
    return not (left.isna().all() or right.isna().all())


def plain_value(value: Any) -> Any:
    """A JSON value for a cell: nulls as None, numpy/pandas scalars as plain ones, anything else as text."""
    if _is_null(value):
        return None
    try:
        return json_safe(value)
    except TypeError:
        return repr(value)


def dtype_names(frame: pd.DataFrame) -> dict[str, str]:
    """The pandas dtype of each column, by name: what an ETL's input is handed in training."""
    return {str(name): str(dtype) for name, dtype in frame.dtypes.items()}


_DTYPE_NAMES: dict[int, tuple[Any, str]] = {}  # id(dtype) -> (the dtype, kept so its id is not reused; its name)


def _dtype_name(dtype: Any) -> str:
    """`str(dtype)`, once per dtype object. Cached by identity, not by hash: pandas' string dtype costs
    about 60 µs to hash, 70 µs to name and 110 µs to compare, per call."""
    found = _DTYPE_NAMES.get(id(dtype))
    if found is not None and found[0] is dtype:
        return found[1]
    name = str(dtype)
    if len(_DTYPE_NAMES) < 4096:  # dtype objects are few (module constants, numpy singletons)
        _DTYPE_NAMES[id(dtype)] = (dtype, name)
    return name


@functools.lru_cache(maxsize=256)
def _dtype(name: str) -> Any:
    """The dtype a name stands for, parsed once (parsing costs more than a one-row cast)."""
    return pandas_dtype(name)


def with_training_dtypes(frame: pd.DataFrame, dtypes: dict[str, str] | None) -> pd.DataFrame:
    """`frame` with each column cast to the dtype the ETL's training input had, where that loses nothing.

    A query's result gets its dtypes from its values: a column with a null anywhere in the training
    set is nullable ``boolean``/``Int64`` there (or ``object`` from PostgreSQL), while one entity's row
    without a null is numpy ``bool``/``int64``; an ETL comparing with missing values then computes other
    results online than offline. A cast that would change a value (a null into ``int64``) is not made.
    """
    if not dtypes:
        return frame
    casts = {}
    for name, dtype in zip(column_names(frame), column_dtypes(frame)):
        wanted = dtypes.get(str(name))
        if wanted is None or _dtype_name(dtype) == wanted:
            continue
        column = frame[name]
        try:
            cast = column.astype(_dtype(wanted))
        except (TypeError, ValueError, OverflowError):
            continue
        if wanted == "object":  # PostgreSQL's missing values are None, not pd.NA
            cast = cast.where(cast.notna(), None)
        lossless = (_dtype_name(dtype), wanted) in LOSSLESS
        if lossless or all(values_equal(a, b) for a, b in zip(column.tolist(), cast.tolist())):
            casts[name] = cast
    return frame.assign(**casts) if casts else frame


LOSSLESS = {("bool", "boolean"), ("int64", "Int64"), ("float64", "Float64")}  # the numpy dtype into its nullable one


def frame_rows(frame: pd.DataFrame) -> list[tuple]:
    """A frame's rows as tuples of Python values (faster than `itertuples` on small frames)."""
    return [tuple(row) for row in frame.to_numpy(dtype=object).tolist()] if len(frame.columns) else [()] * len(frame)


def canonical_rows(frame: pd.DataFrame) -> pd.DataFrame:
    """`frame` with its rows in an order that does not depend on the engine (a query without ORDER BY
    returns an entity's rows in any order): sorted by the text of their values."""
    if len(frame) < 2:
        return frame
    rows = frame_rows(frame)
    order = sorted(range(len(rows)), key=lambda i: [repr(v) for v in rows[i]])
    if order == list(range(len(rows))):
        return frame
    return frame.iloc[order].reset_index(drop=True)


def rows_digest(frame: pd.DataFrame) -> str:
    """A sha256 of a frame's column names and canonically ordered values (equal rows, equal digest)."""
    values = sorted(([plain_value(v) for v in row] for row in frame_rows(frame)), key=repr)
    payload = orjson.dumps({"columns": [str(c) for c in frame.columns], "rows": values})
    return hashlib.sha256(payload).hexdigest()


def same_rows(trained: pd.DataFrame, served: pd.DataFrame) -> bool:
    """True when two frames have the same columns and, in canonical row order, equal values and types."""
    if len(trained) != len(served) or list(trained.columns) != list(served.columns):
        return False
    diff = compare_entity(canonical_rows(trained), canonical_rows(served))
    return not diff["values"] and diff["columns"] is None


def shadow_mismatches(trained: dict[str, Any], served: pd.DataFrame) -> list[str]:
    """The columns whose served values differ from an entity's stored training rows
    (``{"columns", "rows"}`` of plain values), rows compared in canonical order."""
    names = [str(c) for c in served.columns]
    if names != trained["columns"] or len(served) != len(trained["rows"]):
        return list(trained["columns"])
    served_rows = sorted(([plain_value(v) for v in row] for row in frame_rows(served)), key=repr)
    trained_rows = sorted(trained["rows"], key=repr)
    return [name for i, name in enumerate(names)
            if any(not values_equal(a[i], b[i]) for a, b in zip(trained_rows, served_rows))]


STAGES = ("features", "query", "repeat")


@dataclass
class ReplayReport:
    """The consistency report of a replay, stage by stage: mismatch counts per column.

    ``features``: an entity's served features against its training rows; ``query``: the realtime
    engine's rows for the entity against the warehouse's (counted only when both stores hold the same
    source rows); ``repeat``: the served features of a second replay, some time later, against the first
    (the wall clock or randomness). ``skipped`` counts entities that could not be compared, by reason.
    """

    columns: list[str]
    query_columns: list[str] = field(default_factory=list)
    entities_checked: int = 0
    entities_repeated: int = 0
    column_order_mismatches: int = 0
    mismatched: dict[str, dict[str, int]] = field(default_factory=lambda: {stage: {} for stage in STAGES})
    skipped: dict[str, int] = field(default_factory=dict)
    examples: list[dict[str, Any]] = field(default_factory=list)

    def add(self, entity: Any, trained: pd.DataFrame, served: pd.DataFrame, stage: str = "features") -> bool:
        """Compare one entity at `stage` and count what differs; True when nothing did."""
        diff = compare_entity(canonical_rows(trained), canonical_rows(served))
        if stage == "features":
            self.entities_checked += 1
            if diff["columns"] is not None:
                self.column_order_mismatches += 1
        elif stage == "repeat":
            self.entities_repeated += 1
        for name, examples in diff["values"].items():
            counts = self.mismatched[stage]
            counts[name] = counts.get(name, 0) + 1
            if len(self.examples) < MAX_EXAMPLES:
                self.examples.append({"stage": stage, "entity": entity, "column": name, **examples[0]})
        return not diff["values"] and diff["columns"] is None

    def count_equal(self, stage: str = "features") -> None:
        """Count an entity found equal at `stage` without a full comparison (`equal_pairs`)."""
        if stage == "features":
            self.entities_checked += 1
        elif stage == "repeat":
            self.entities_repeated += 1

    def fail(self, entity: Any, error: str) -> None:
        """Count an entity whose serving run failed: every feature column differs from training."""
        self.entities_checked += 1
        counts = self.mismatched["features"]
        for name in self.columns:
            counts[name] = counts.get(name, 0) + 1
        if len(self.examples) < MAX_EXAMPLES:
            self.examples.append({"stage": "features", "entity": entity, "column": None, "row": None,
                                  "trained": "<row>", "served": f"<error> {error}"})

    def skip(self, reason: str) -> None:
        """Count an entity that was not compared, and why."""
        self.skipped[reason] = self.skipped.get(reason, 0) + 1

    @property
    def consistent(self) -> bool:
        """True when no entity differed at any stage, in any column or in the column order."""
        return not any(self.mismatched.values()) and not self.column_order_mismatches

    def to_dict(self) -> dict[str, Any]:
        """The JSON-ready report: per-column mismatch rates of each stage over the entities it compared."""
        checked, repeated = max(self.entities_checked, 1), max(self.entities_repeated, 1)
        mismatched = self.mismatched
        return {"entities_checked": self.entities_checked, "entities_repeated": self.entities_repeated,
                "consistent": self.consistent, "column_order_mismatches": self.column_order_mismatches,
                "mismatch_rate": {name: mismatched["features"].get(name, 0) / checked for name in self.columns},
                "mismatched_columns": sorted(mismatched["features"]),
                "query_mismatched_columns": sorted(mismatched["query"]),
                "query_mismatch_rate": {name: count / checked for name, count in mismatched["query"].items()},
                "nondeterministic_columns": sorted(mismatched["repeat"]),
                "skipped": dict(self.skipped),
                "examples": [{k: plain_value(v) for k, v in example.items()} for example in self.examples]}
