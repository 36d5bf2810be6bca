"""The comparison core of the train/serve replay: what counts as the same feature row."""
import numpy as np
import pandas as pd
import pytest

from checks.consistency import ReplayReport, compare_entity, rows_digest, values_equal
from client.errors import error_class
from common.errors import TrainServeMismatch


@pytest.mark.parametrize("a,b,equal", [
    (None, np.nan, True), (pd.NA, None, True), (1.0, 1.0 + 1e-13, True), (1796233177.0, 1796233178.0, False), (1.0, 1.1, False),
    (None, 0, False), ("a", "a", True), ("a", "A", False), (3, 3.0, True), (True, 1, True),
])
def test_values_equal(a, b, equal):
    assert values_equal(a, b) is equal


def test_frame_mean_centring_is_named_by_column():
    trained = pd.DataFrame({"user_id": ["u1"], "age_c": [-4.5], "n": [2]})
    served = pd.DataFrame({"user_id": ["u1"], "age_c": [0.0], "n": [2]})
    report = ReplayReport(columns=list(trained.columns))
    report.add("u1", trained, served)
    report.add("u2", trained, trained.copy())
    out = report.to_dict()
    assert not out["consistent"] and out["mismatched_columns"] == ["age_c"]
    assert out["mismatch_rate"] == {"user_id": 0.0, "age_c": 0.5, "n": 0.0}
    assert out["examples"] == [{"stage": "features", "entity": "u1", "column": "age_c", "row": 0,
                                "trained": -4.5, "served": 0.0}]


def test_stages_are_counted_apart_and_rows_compared_in_canonical_order():
    trained = pd.DataFrame({"k": ["a", "a"], "x": [1, 2]})
    report = ReplayReport(columns=["k", "x"], query_columns=["k", "x"])
    assert report.add("a", trained, trained.iloc[::-1])  # another row order is not a difference
    assert not report.add("a", trained, trained.assign(x=[1, 3]), stage="query")
    assert not report.add("a", trained, trained.assign(x=[5, 6]), stage="repeat")
    report.skip("input_differs")
    out = report.to_dict()
    assert not out["consistent"] and out["mismatched_columns"] == []
    assert out["query_mismatched_columns"] == ["x"] and out["nondeterministic_columns"] == ["x"]
    assert out["skipped"] == {"input_differs": 1} and out["entities_checked"] == 1


def test_rows_digest_ignores_row_order_and_sees_values():
    frame = pd.DataFrame({"k": ["a", "a"], "x": [1.5, None]})
    assert rows_digest(frame) == rows_digest(frame.iloc[::-1])
    assert rows_digest(frame) != rows_digest(frame.assign(x=[1.5, 2.0]))
    assert rows_digest(frame) != rows_digest(frame.rename(columns={"x": "y"}))


def test_order_rows_and_types_are_compared():
    trained = pd.DataFrame({"k": ["a", "a"], "x": [1, 2]})
    assert compare_entity(trained, trained[["x", "k"]])["columns"] == {"trained": ["k", "x"], "served": ["x", "k"]}
    assert "x" in compare_entity(trained, trained.iloc[:1])["values"]
    assert "x" in compare_entity(trained, trained.assign(x=["1", "2"]))["values"]
    assert compare_entity(trained, trained.copy()) == {"columns": None, "values": {}}


def test_client_rebuilds_train_serve_mismatch():
    assert error_class("train_serve_mismatch") is TrainServeMismatch and TrainServeMismatch.status == 409
