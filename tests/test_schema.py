"""Logical column types and the train/serve schema comparison.

The trained side is `frame_schema` (a float64 column is "float", nulls or not); the served side is
`served_schema`, which marks a float column holding a null and otherwise whole values as possibly
null-widened integers ("widened": True), the one case where a served float may stand for a trained integer.
"""
from __future__ import annotations

import datetime as dt
from decimal import Decimal

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from checks.schema import (column_type, compare_schemas, compatible, frame_schema, logical_type,
                               served_schema, widened_integers)

S = pd.Series

LOGICAL_TYPES = [
    # numpy
    ("int8", S([1, -2], dtype="int8"), "integer"),
    ("int64", S([1, 2], dtype="int64"), "integer"),
    ("uint32", S([1, 2], dtype="uint32"), "integer"),
    ("float32", S([1.5, 2.0], dtype="float32"), "float"),
    ("float64", S([1.5, 2.0], dtype="float64"), "float"),
    ("float64 whole, no null", S([1.0, 2.0], dtype="float64"), "float"),
    ("float64 whole with NaN", S([1.0, np.nan], dtype="float64"), "float"),  # no null-widening guess here
    ("float64 fractional with NaN", S([1.5, np.nan], dtype="float64"), "float"),
    ("bool", S([True, False], dtype=bool), "boolean"),
    # pandas nullable
    ("Int64", S([1, None], dtype="Int64"), "integer"),
    ("UInt16", S([1, 2], dtype="UInt16"), "integer"),
    ("Float64", S([1.5, None], dtype="Float64"), "float"),
    ("boolean", S([True, None], dtype="boolean"), "boolean"),
    ("string", S(["a", None], dtype="string"), "string"),
    ("string[pyarrow]", S(["a", "b"], dtype="string[pyarrow]"), "string"),
    # strings as str / object
    ("default str", S(["a", "b"]), "string"),
    ("object str", S(["a", "b"], dtype=object), "string"),
    ("object str with None", S(["a", None], dtype=object), "string"),
    # time
    ("datetime64[ns]", S(pd.to_datetime(["2024-01-01", "2024-01-02"]).as_unit("ns")), "timestamp"),
    ("datetime64[s]", S(np.array(["2024-01-01"], dtype="datetime64[s]")), "timestamp"),
    ("datetime64 tz-aware", S(pd.to_datetime(["2024-01-01"]).tz_localize("Asia/Jerusalem")), "timestamp"),
    ("object datetime", S([dt.datetime(2024, 1, 1)], dtype=object), "timestamp"),
    ("object date", S([dt.date(2024, 1, 1)], dtype=object), "timestamp"),
    ("timedelta64", S(pd.to_timedelta(["1h", "2min"])), "interval"),
    ("object timedelta", S([dt.timedelta(days=1)], dtype=object), "interval"),
    # category: the type of its categories
    ("category of str", S(["a", "b", "a"], dtype="category"), "string"),
    ("category of int", S([1, 2], dtype="category"), "integer"),
    ("category without categories", S([], dtype="category"), "null"),
    # other objects
    ("bytes", S([b"a", b"b"]), "binary"),
    ("Decimal", S([Decimal("1.5"), Decimal("2.25")]), "float"),
    ("object int", S([1, 2], dtype=object), "integer"),
    ("object bool", S([True, False], dtype=object), "boolean"),
    ("object bool with None", S([True, None], dtype=object), "boolean"),
    # pyarrow-backed
    ("int64[pyarrow]", S([1, None], dtype="int64[pyarrow]"), "integer"),
    ("bool[pyarrow]", S([True, None], dtype="bool[pyarrow]"), "boolean"),
    ("double[pyarrow]", S([1.5], dtype="double[pyarrow]"), "float"),
    # nothing to judge
    ("all None", S([None, None], dtype=object), "null"),
    ("all NaN", S([np.nan, np.nan]), "null"),
    ("all pd.NA Int64", S([None], dtype="Int64"), "null"),
    ("all NaT", S([pd.NaT], dtype="datetime64[ns]"), "null"),
    ("empty float", S([], dtype=float), "null"),
    ("empty object", S([], dtype=object), "null"),
    # mixed
    ("int and str", S([1, "a"], dtype=object), "mixed"),
    ("str and bytes", S(["a", b"a"], dtype=object), "mixed"),
    ("bool and int", S([True, 1], dtype=object), "mixed"),
]


@pytest.mark.parametrize("series, expected", [(s, e) for _, s, e in LOGICAL_TYPES],
                         ids=[name for name, _, _ in LOGICAL_TYPES])
def test_logical_type(series: pd.Series, expected: str) -> None:
    assert logical_type(series) == expected


def test_frame_schema_keeps_column_order_and_names() -> None:
    frame = pd.DataFrame({"b": [1], "a": ["x"], 3: [True]})
    assert frame_schema(frame) == [{"name": "b", "type": "integer"}, {"name": "a", "type": "string"},
                                   {"name": "3", "type": "boolean"}]


def test_frame_schema_with_duplicate_column_names() -> None:
    """pd.read_sql of 'SELECT 1 AS a, 2 AS a' on PostgreSQL gives repeated names; each is typed by position."""
    frame = pd.DataFrame([[1, "x", 2.5]], columns=["a", "a", "b"])
    assert frame_schema(frame) == [{"name": "a", "type": "integer"}, {"name": "a", "type": "string"},
                                   {"name": "b", "type": "float"}]
    served = pd.DataFrame([[1.0, None], [np.nan, "y"]], columns=["a", "a"])
    assert served_schema(served) == [{"name": "a", "type": "float", "widened": True},
                                     {"name": "a", "type": "string"}]


# -- the served side: possibly null-widened integers ------------------------------------------------------

COLUMN_TYPES = [
    ("float64 whole with NaN", S([1.0, np.nan, 3.0]), {"type": "float", "widened": True}),
    ("float64 negative whole with NaN", S([-4.0, np.nan]), {"type": "float", "widened": True}),
    ("float32 whole with NaN", S([1.0, np.nan], dtype="float32"), {"type": "float", "widened": True}),
    ("Float64 whole with NA", S([2.0, None], dtype="Float64"), {"type": "float", "widened": True}),
    ("float64 whole, no null", S([1.0, 2.0]), {"type": "float"}),
    ("float64 fractional with NaN", S([1.5, np.nan]), {"type": "float"}),
    ("float64 one fraction among wholes", S([1.0, np.nan, 2.5]), {"type": "float"}),
    ("float64 inf with NaN", S([np.inf, np.nan]), {"type": "float"}),
    ("all NaN", S([np.nan, np.nan]), {"type": "null"}),
    ("int64", S([1, 2]), {"type": "integer"}),
    ("Int64 with NA", S([1, None], dtype="Int64"), {"type": "integer"}),
    ("object int with None", S([1, None], dtype=object), {"type": "integer"}),
    ("object bool with None", S([True, None], dtype=object), {"type": "boolean"}),
    ("string with None", S(["a", None], dtype="string"), {"type": "string"}),
]


@pytest.mark.parametrize("series, expected", [(s, e) for _, s, e in COLUMN_TYPES],
                         ids=[name for name, _, _ in COLUMN_TYPES])
def test_column_type_marks_only_floats_that_may_be_widened_integers(series: pd.Series, expected: dict) -> None:
    assert column_type(series) == expected
    assert column_type(series)["type"] == logical_type(series)  # the mark never changes the type itself


def test_widened_integers_needs_a_null_and_whole_values() -> None:
    assert widened_integers(S([1.0, np.nan]))
    assert not widened_integers(S([1.0, 2.0]))
    assert not widened_integers(S([1.25, np.nan]))
    assert not widened_integers(S([1, 2], dtype="int64"))
    assert widened_integers(S([1.0, None], dtype=object))
    assert not widened_integers(S([1.5, None], dtype=object))


def test_served_schema_is_frame_schema_plus_the_widened_mark() -> None:
    frame = pd.DataFrame({"b": [1.0, np.nan], "a": ["x", "y"], 3: [0.5, np.nan]})
    assert served_schema(frame) == [{"name": "b", "type": "float", "widened": True},
                                    {"name": "a", "type": "string"}, {"name": "3", "type": "float"}]
    assert [{k: c[k] for k in ("name", "type")} for c in served_schema(frame)] == frame_schema(frame)


# -- comparison ----------------------------------------------------------------------------------------

def _schema(**types: str) -> list[dict[str, str]]:
    return [{"name": name, "type": kind} for name, kind in types.items()]


TRAINED = pd.DataFrame({"user_id": ["u1", "u2"], "n_quotes": np.array([3, 4], dtype="int64"),
                        "mean_amount": [1.5, 2.25], "is_paid": [True, False]})


def _changes(trained: pd.DataFrame, served: pd.DataFrame) -> list[dict[str, str]]:
    diff = compare_schemas(frame_schema(trained), served_schema(served))
    assert not diff.missing and not diff.extra, diff
    return diff.type_changed


@pytest.mark.parametrize("missing, dtype", [
    (np.nan, "float64"), (None, "float64"), (pd.NA, "Int64"), (None, "Int64"), (np.nan, "object"),
    (None, "object"), (pd.NA, "object"),
])
def test_one_serving_row_with_a_missing_integer_is_compatible(missing: object, dtype: str) -> None:
    served = TRAINED.head(1).assign(n_quotes=pd.Series([missing], dtype=dtype))
    assert served_schema(served)[1]["type"] == "null"
    assert _changes(TRAINED, served) == []


def test_several_serving_rows_with_a_null_widened_integer_are_compatible() -> None:
    served = pd.DataFrame({"user_id": ["u1", "u2"], "n_quotes": [3.0, np.nan],
                           "mean_amount": [1.5, np.nan], "is_paid": [True, None]})
    assert served_schema(served)[1] == {"name": "n_quotes", "type": "float", "widened": True}
    assert _changes(TRAINED, served) == []
    # Without the served side's mark the same column is a change: the allowance is what makes it pass.
    assert compare_schemas(frame_schema(TRAINED), frame_schema(served)).type_changed == [
        {"name": "n_quotes", "trained": "integer", "served": "float"}]


def test_integer_trained_fractional_float_served_is_a_type_change() -> None:
    served = TRAINED.assign(n_quotes=[3.5, np.nan])
    assert _changes(TRAINED, served) == [{"name": "n_quotes", "trained": "integer", "served": "float"}]


def test_integer_trained_whole_float_without_null_served_is_a_type_change() -> None:
    served = TRAINED.assign(n_quotes=[3.0, 4.0])  # no null: nothing widened it, the column really is float
    assert _changes(TRAINED, served) == [{"name": "n_quotes", "trained": "integer", "served": "float"}]


def test_whole_float_column_without_nulls_stays_float() -> None:
    served = TRAINED.head(2).assign(mean_amount=[2.0, 3.0])
    assert logical_type(served["mean_amount"]) == "float"
    assert column_type(served["mean_amount"]) == {"type": "float"}
    assert _changes(TRAINED, served) == []


def test_float_trained_integer_served_is_compatible() -> None:
    """Every integer is a float: by design, not a change (an engine may return whole sums as BIGINT)."""
    served = TRAINED.assign(mean_amount=np.array([2, 3], dtype="int64"))
    assert served_schema(served)[2] == {"name": "mean_amount", "type": "integer"}
    assert _changes(TRAINED, served) == []


@pytest.mark.parametrize("served_values, served_type", [
    (np.array([1, 0], dtype="int64"), "integer"),
    (pd.array([1, None], dtype="Int64"), "integer"),
    (np.array([1.0, np.nan]), "float"),
    (np.array([1.0, 0.0]), "float"),
], ids=["int64", "Int64 with NA", "float 0/1 with NaN", "float 0/1"])
def test_boolean_as_zero_one_is_a_type_change(served_values: object, served_type: str) -> None:
    served = TRAINED.assign(is_paid=served_values)
    diff = compare_schemas(frame_schema(TRAINED), served_schema(served))
    assert diff.type_changed == [{"name": "is_paid", "trained": "boolean", "served": served_type}]
    assert not diff.ok and not diff.missing and not diff.extra


def test_missing_and_extra_columns_are_reported() -> None:
    trained = _schema(a="integer", b="string", c="float")
    served = _schema(a="integer", d="string", c="float", e="boolean")
    diff = compare_schemas(trained, served)
    assert (diff.missing, diff.extra, diff.type_changed) == (["b"], ["d", "e"], [])
    assert not diff.ok
    assert diff.to_dict() == {"missing": ["b"], "extra": ["d", "e"], "type_changed": []}


def test_column_order_is_irrelevant() -> None:
    trained = _schema(a="integer", b="string", c="boolean")
    assert compare_schemas(trained, list(reversed(trained))).ok
    reordered = TRAINED[list(reversed(TRAINED.columns))]
    assert compare_schemas(frame_schema(TRAINED), served_schema(reordered)).ok


def test_type_changes_name_both_sides() -> None:
    diff = compare_schemas(_schema(a="integer", b="string"), _schema(b="integer", a="integer"))
    assert diff.type_changed == [{"name": "b", "trained": "string", "served": "integer"}]


def test_compare_schemas_honours_the_widened_mark() -> None:
    trained = _schema(n="integer")
    assert compare_schemas(trained, [{"name": "n", "type": "float", "widened": True}]).ok
    assert not compare_schemas(trained, [{"name": "n", "type": "float"}]).ok
    assert not compare_schemas(trained, [{"name": "n", "type": "float", "widened": False}]).ok
    assert not compare_schemas(_schema(n="boolean"), [{"name": "n", "type": "float", "widened": True}]).ok


@pytest.mark.parametrize("trained, served, widened, expected", [
    ("integer", "integer", False, True), ("integer", "null", False, True), ("null", "boolean", False, True),
    ("null", "null", False, True), ("float", "integer", False, True), ("float", "integer", True, True),
    ("integer", "float", True, True),
    ("integer", "float", False, False), ("boolean", "integer", False, False), ("boolean", "float", True, False),
    ("string", "float", True, False), ("timestamp", "float", True, False), ("float", "boolean", False, False),
    ("integer", "boolean", False, False), ("string", "mixed", False, False), ("timestamp", "integer", False, False),
    ("string", "binary", False, False), ("float", "string", False, False),
])
def test_compatible(trained: str, served: str, widened: bool, expected: bool) -> None:
    assert compatible(trained, served, widened) is expected


def test_compatible_defaults_to_not_widened() -> None:
    assert compatible("integer", "float") is False


# -- what the null-widening guess used to get wrong ------------------------------------------------------

def test_whole_valued_float_column_with_nulls_in_training_then_a_full_serving_row() -> None:
    trained = pd.DataFrame({"amount": [10.0, np.nan, 30.0]})   # a DOUBLE column, whole dollars
    served = pd.DataFrame({"amount": [12.5]})
    assert frame_schema(trained) == [{"name": "amount", "type": "float"}]
    assert compare_schemas(frame_schema(trained), served_schema(served)).ok


def test_fractional_float_column_then_whole_values_with_a_null_when_serving() -> None:
    trained = pd.DataFrame({"amount": [10.5, np.nan, 30.25]})
    served = pd.DataFrame({"amount": [12.0, np.nan]})
    assert served_schema(served) == [{"name": "amount", "type": "float", "widened": True}]
    assert compare_schemas(frame_schema(trained), served_schema(served)).ok


# -- properties ------------------------------------------------------------------------------------------

PROPERTY_SETTINGS = settings(max_examples=200, deadline=None, derandomize=True, database=None,
                             suppress_health_check=[HealthCheck.too_slow])
LOGICAL = ["integer", "float", "string", "boolean", "timestamp", "interval", "binary", "null", "mixed"]


@PROPERTY_SETTINGS
@given(st.lists(st.tuples(st.text(min_size=1, max_size=8), st.sampled_from(LOGICAL)), max_size=10,
                unique_by=lambda c: c[0]))
def test_a_schema_is_compatible_with_itself(columns: list[tuple[str, str]]) -> None:
    schema = [{"name": name, "type": kind} for name, kind in columns]
    assert compare_schemas(schema, schema).ok
    assert compare_schemas(schema, list(reversed(schema))).ok


_KINDS = ["int64", "Int64", "float64", "string", "bool", "boolean"]
_NULLABLE = {"Int64", "float64", "string", "boolean"}


@st.composite
def _engine_like_frames(draw: st.DrawFn) -> pd.DataFrame:
    """Frames as an engine returns them: int64/bool without nulls, float64 (NaN) and nullable dtypes with them.

    float64 columns may hold NaN and whole values: frame_schema types them "float" all the same.
    """
    n = draw(st.integers(1, 6))
    kinds = draw(st.lists(st.sampled_from(_KINDS), min_size=1, max_size=6))
    frame = {}
    for i, kind in enumerate(kinds):
        if kind in ("int64", "Int64"):
            values = draw(st.lists(st.integers(-10**12, 10**12), min_size=n, max_size=n))
        elif kind == "float64":
            values = draw(st.lists(st.one_of(st.floats(-1e9, 1e9, allow_nan=False),
                                             st.integers(-10**6, 10**6).map(float)), min_size=n, max_size=n))
        elif kind == "string":
            values = draw(st.lists(st.text(max_size=5), min_size=n, max_size=n))
        else:
            values = draw(st.lists(st.booleans(), min_size=n, max_size=n))
        if kind in _NULLABLE:
            nulls = draw(st.lists(st.booleans(), min_size=n, max_size=n))
            values = [None if null else v for v, null in zip(values, nulls)]
        frame[f"c{i}_{kind}"] = pd.Series(values, dtype=kind)
    return pd.DataFrame(frame)


def _with_missing(column: pd.Series, missing: list[bool]) -> pd.Series:
    """The serving column with the flagged values missing, spelled the worst way pandas may give them.

    An int64 column with a null becomes float64 NaN with the rest whole floats (pandas' widening; DuckDB
    2.0 itself gives Int64), a bool column becomes object with None; nullable dtypes keep their dtype.
    """
    if not any(missing):
        return column
    values = [None if gone else value for value, gone in zip(column.tolist(), missing)]
    if str(column.dtype) in ("int64", "float64"):
        return pd.Series(values, dtype="float64", index=column.index)
    if str(column.dtype) == "bool":
        return pd.Series(values, dtype=object, index=column.index)
    return pd.Series(values, dtype=column.dtype, index=column.index)


@PROPERTY_SETTINGS
@given(frame=_engine_like_frames(), data=st.data())
def test_missing_values_in_serving_rows_are_never_a_type_change(frame: pd.DataFrame, data: st.DataObject) -> None:
    rows = data.draw(st.integers(1, len(frame)), label="serving rows")
    served = frame.head(rows).copy()
    for name in served.columns:
        missing = data.draw(st.lists(st.booleans(), min_size=rows, max_size=rows), label=f"missing {name}")
        served[name] = _with_missing(served[name], missing)
    diff = compare_schemas(frame_schema(frame), served_schema(served))
    assert diff.ok, (diff, frame.dtypes.to_dict(), served.to_dict("records"))


@PROPERTY_SETTINGS
@given(frame=_engine_like_frames(), data=st.data())
def test_a_missing_value_in_one_serving_row_is_never_a_type_change(frame: pd.DataFrame, data: st.DataObject) -> None:
    served = frame.head(1).copy()
    for name in served.columns:
        served[name] = _with_missing(served[name], [data.draw(st.booleans(), label=f"missing {name}")])
    diff = compare_schemas(frame_schema(frame), served_schema(served))
    assert diff.ok, (diff, frame.dtypes.to_dict(), served.to_dict("records"))
