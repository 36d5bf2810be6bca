"""The lean request path gives what the plain one gave: the lookup frame's dtypes, the schema verdict
(a plan cached per column layout never lets through what the full comparison refuses), the serving
window's values and the JSON records."""
from __future__ import annotations

from collections import deque

import numpy as np
import pandas as pd
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app.jsonio import frame_records
from checks.schema import compare_schemas, dtype_kinds, plan_allows, schema_plan, served_schema
from checks.stats import ServingWindow
from realtime.sqlite_store import _typed_column, typed_frame

LOGICAL = ["string", "integer", "float", "boolean", None]  # timestamps: unchanged, and text must be ISO
TRAINED = ["string", "integer", "float", "boolean", "timestamp", "mixed", "null", "interval"]
CELLS = st.one_of(st.none(), st.booleans(), st.integers(-5, 5), st.floats(-3, 3, allow_nan=False),
                  st.sampled_from(["a", "b", "2024-01-02T03:04:05+00:00"]))
COLUMNS = {
    "int64": lambda n, draw: np.array(draw(st.lists(st.integers(-9, 9), min_size=n, max_size=n)), dtype=np.int64),
    "bool": lambda n, draw: np.array(draw(st.lists(st.booleans(), min_size=n, max_size=n)), dtype=bool),
    "float64": lambda n, draw: np.array(draw(st.lists(st.one_of(st.just(np.nan), st.integers(-3, 3),
                                                                st.floats(-3, 3, allow_nan=False)),
                                                      min_size=n, max_size=n)), dtype=np.float64),
    "str": lambda n, draw: pd.array(draw(st.lists(st.one_of(st.none(), st.just("x")), min_size=n, max_size=n)),
                                    dtype="str"),
    "Int64": lambda n, draw: pd.array(draw(st.lists(st.one_of(st.none(), st.integers(-3, 3)), min_size=n,
                                                    max_size=n)), dtype="Int64"),
    "boolean": lambda n, draw: pd.array(draw(st.lists(st.one_of(st.none(), st.booleans()), min_size=n,
                                                      max_size=n)), dtype="boolean"),
    "object": lambda n, draw: np.array(draw(st.lists(CELLS, min_size=n, max_size=n)) + [object()], dtype=object)[:n],
}


def _dict_frame(names: list[str], rows: list[tuple], types: dict[str, str | None]) -> pd.DataFrame:
    """The lookup frame as it was built before: through DataFrame(dict), strings as object arrays."""
    columns = list(zip(*rows)) if rows else [()] * len(names)
    arrays = [np.array(values, dtype=object) if types.get(name) == "string" and values else
              _typed_column(values, types.get(name)) for name, values in zip(names, columns)]
    return pd.DataFrame(dict(zip(names, arrays)), columns=names, copy=False)


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_the_lookup_frame_has_the_dtypes_and_values_of_the_dict_construction(data: st.DataObject) -> None:
    names = data.draw(st.lists(st.sampled_from("abcdef"), min_size=1, max_size=6))
    types = {name: data.draw(st.sampled_from(LOGICAL)) for name in names}
    rows = data.draw(st.lists(st.tuples(*[CELLS] * len(names)), max_size=3))
    fast, plain = typed_frame(names, rows, types), _dict_frame(names, rows, types)
    assert list(fast.dtypes.astype(str)) == list(plain.dtypes.astype(str))
    pd.testing.assert_frame_equal(fast, plain)


@st.composite
def frames(draw: st.DrawFn) -> pd.DataFrame:
    rows = draw(st.integers(1, 3))
    kinds = draw(st.lists(st.sampled_from(sorted(COLUMNS)), min_size=1, max_size=5))
    return pd.DataFrame({f"c{i}": COLUMNS[kind](rows, draw) for i, kind in enumerate(kinds)})


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(frames(), st.data())
def test_the_plan_allows_only_what_the_full_comparison_allows(frame: pd.DataFrame, data: st.DataObject) -> None:
    names = list(frame.columns) + data.draw(st.lists(st.just("missing"), max_size=1))
    trained = [{"name": name, "type": data.draw(st.sampled_from(TRAINED))} for name in names]
    plan = schema_plan(trained, list(zip(frame.columns, frame.dtypes)))
    diff = compare_schemas(trained, served_schema(frame))
    assert plan_allows(plan, trained, frame) == diff.ok


def test_one_plan_gives_each_frame_of_its_layout_its_own_verdict() -> None:
    trained = [{"name": "n", "type": "integer"}, {"name": "s", "type": "string"}]
    widened = pd.DataFrame({"n": [1.0, np.nan], "s": pd.array(["a", None], dtype="str")})
    fractional = pd.DataFrame({"n": [1.5, np.nan], "s": pd.array(["a", "b"], dtype="str")})
    plan = schema_plan(trained, list(zip(widened.columns, widened.dtypes)))
    assert plan.value_columns == ("n",)  # the string column is judged by its dtype alone
    assert plan_allows(plan, trained, widened)
    assert not plan_allows(plan, trained, fractional)
    assert not compare_schemas(trained, served_schema(fractional)).ok


def test_numpy_bools_and_ints_are_typed_by_their_dtype_and_objects_by_their_values() -> None:
    assert dtype_kinds(np.dtype(bool)) == {"boolean"} and dtype_kinds(np.dtype("int32")) == {"integer"}
    assert dtype_kinds(pd.StringDtype()) == {"string", "null"}
    assert dtype_kinds(np.dtype(object)) is None and dtype_kinds(pd.CategoricalDtype(["a"])) is None


def _eager_values(frames_: list[pd.DataFrame], size: int) -> dict[str, list]:
    """What the window held when every record converted its values at once."""
    values: dict[str, deque] = {}
    for frame in frames_:
        for column in frame.columns:
            values.setdefault(str(column), deque(maxlen=size)).extend(
                None if pd.isna(v) else v for v in frame[column].tolist())
    return {name: list(buffer) for name, buffer in values.items()}


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(frames(), min_size=1, max_size=12), st.integers(1, 5))
def test_the_serving_window_holds_what_eager_recording_held(served: list[pd.DataFrame], size: int) -> None:
    window = ServingWindow(size)
    for frame in served:
        window.record(frame, key="c0")
    expected = _eager_values(served, size)
    assert {name: series.tolist() for name, series in window.series().items()} == expected
    assert window.to_dict()["values"].keys() == expected.keys()
    assert window.outcomes["served"] == len(served)


def test_the_window_counts_an_empty_served_frame_as_no_row() -> None:
    window = ServingWindow(3)
    window.record(pd.DataFrame({"a": pd.Series([], dtype="int64")}))
    assert window.outcomes["no_row"] == 1 and window.series()["a"].tolist() == []


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(frames())
def test_few_row_records_are_those_of_the_column_by_column_path(frame: pd.DataFrame) -> None:
    columns = [column.tolist() for _, column in frame.items()]
    expected = [dict(zip(map(str, frame.columns), row)) for row in zip(*columns)]
    got = frame_records(frame)
    assert [list(map(type, row.values())) for row in got] == [list(map(type, row.values())) for row in expected]
    assert repr(got) == repr(expected)
