"""The replay's batched shortcuts agree with the exact per-entity paths they stand in for.

`equal_pairs` decides hundreds of (trained, served) pairs in a few frame operations; it may only say
"equal" where `same_rows` (the full comparison) says so too, and should say it for the ordinary equal
pairs a replay sees (else it saves nothing).
"""
from __future__ import annotations

import random
import time

import numpy as np
import pandas as pd
import pytest

from checks.consistency import equal_pairs, same_rows

COLUMNS = {
    "int": lambda r, n: pd.Series([r.randint(-3, 3) for _ in range(n)], dtype="int64"),
    "nullable_int": lambda r, n: pd.Series([r.choice([None, 1, 2]) for _ in range(n)], dtype="Int64"),
    "float": lambda r, n: pd.Series([r.choice([np.nan, 0.5, 1e300, np.inf, -np.inf, 1 / 3]) for _ in range(n)]),
    "bool": lambda r, n: pd.Series([r.random() < 0.5 for _ in range(n)], dtype=bool),
    "nullable_bool": lambda r, n: pd.Series([r.choice([None, True, False]) for _ in range(n)], dtype="boolean"),
    "string": lambda r, n: pd.Series([r.choice([None, "a", "straße", ""]) for _ in range(n)], dtype="str"),
    "object": lambda r, n: pd.Series([r.choice([None, "a", 1]) for _ in range(n)], dtype=object),
    "timestamp": lambda r, n: pd.Series(pd.to_datetime([r.choice([None, "2026-01-01", "2026-01-02 03:04:05"])
                                                        for _ in range(n)], utc=True, format="ISO8601")),
}


def changed(r: random.Random, frame: pd.DataFrame) -> pd.DataFrame:
    """`frame` with one kind of change (or none): a value, a tiny float shift, a dtype, the row order,
    a column dropped or reordered, a row more."""
    change = r.choice(["none", "none", "value", "tiny", "dtype", "order", "drop", "swap", "row", "null"])
    out = frame.copy()
    column = r.choice(list(out.columns))
    if change == "value" and len(out):
        out[column] = out[column].iloc[::-1].to_numpy() if len(out) > 1 else out[column]
        out.iloc[0, list(out.columns).index(column)] = frame[column].iloc[0] if r.random() < 0.3 else None
    elif change == "tiny" and pd.api.types.is_float_dtype(out[column]):
        out[column] = out[column] * (1 + r.choice([1e-13, 1e-9]))
    elif change == "dtype":
        out[column] = out[column].astype(r.choice(["object", "float64", "Int64", "boolean", "str"]), errors="ignore")
    elif change == "order":
        out = out.iloc[::-1].reset_index(drop=True)
    elif change == "drop" and len(out.columns) > 1:
        out = out.drop(columns=[column])
    elif change == "swap" and len(out.columns) > 1:
        out = out[list(out.columns)[::-1]]
    elif change == "row":
        out = pd.concat([out, out.iloc[:1]], ignore_index=True)
    elif change == "null" and len(out):
        out.iloc[0, list(out.columns).index(column)] = None
    return out


@pytest.mark.parametrize("seed", range(6))
def test_equal_pairs_says_equal_only_where_the_full_comparison_does(seed):
    r = random.Random(seed)
    pairs = []
    for _ in range(300):
        rows = r.choice([0, 1, 1, 1, 2, 3])
        kinds = r.sample(sorted(COLUMNS), r.randint(1, 4))
        trained = pd.DataFrame({kind: COLUMNS[kind](r, rows) for kind in kinds})
        try:
            served = changed(r, trained)
        except (TypeError, ValueError, OverflowError):  # a cast pandas refuses: keep the pair unchanged
            served = trained.copy()
        pairs.append((trained, served))
    fast = equal_pairs(pairs)
    exact = [same_rows(trained, served) for trained, served in pairs]
    wrong = [(t, s) for (t, s), f, e in zip(pairs, fast, exact) if f and not e]
    assert not wrong, wrong[:3]
    # it takes every equal pair it can judge by dtype: none with an object column, or a column of nulls only
    # (whose type the full comparison lets pass whatever its dtype)
    judged = [not any(pd.api.types.is_object_dtype(f[c]) or f[c].isna().all() for f in (t, s) for c in f.columns)
              for t, s in pairs]
    missed = [(t, s) for (t, s), f, e, j in zip(pairs, fast, exact, judged) if e and j and not f]
    assert not missed, missed[:3]
    assert sum(fast) > sum(exact) / 3


def test_equal_pairs_takes_the_replay_s_usual_pairs():
    """One-row entities whose served dtype is the numpy one of the training's nullable dtype."""
    trained = pd.DataFrame({"user_id": pd.Series(["u1"], dtype="str"), "paid": pd.array([True], dtype="boolean"),
                            "n": pd.array([3], dtype="Int64"), "x": [0.1 + 0.2]})
    served = pd.DataFrame({"user_id": pd.Series(["u1"], dtype="str"), "paid": [True], "n": [3], "x": [0.3]})
    assert equal_pairs([(trained, served), (trained, served.assign(x=[0.31])), (trained, served.assign(n=[None]))]) \
        == [True, False, False]
    assert same_rows(trained, served)


def test_infinities_and_nulls_compare_as_values_equal_has_them():
    left = pd.DataFrame({"x": [np.inf, -np.inf, np.nan, 1e308, 0.0]})
    pairs = [(left.iloc[[i]], right.iloc[[i]]) for right in (left, pd.DataFrame({"x": [np.inf, np.inf, None, np.inf,
                                                                                        1e-13]}))
             for i in range(len(left))]
    assert equal_pairs(pairs) == [True] * 5 + [True, False, True, False, True]
    assert [same_rows(t, s) for t, s in pairs] == [True] * 5 + [True, False, True, False, True]


# -- EtlRunner.run_each: the replay's ETL runs, handed to the ETL thread at once -----------------------

def _code(body: str) -> tuple[str, str]:
    import hashlib
    import textwrap

    code = "import os\nimport time\nimport pandas as pd\nfrom extraction.etl_contract import BaseEtl\n\n\n" \
           "class Etl(BaseEtl):\n    def transform(self, df):\n" + textwrap.indent(textwrap.dedent(body), "        ")
    return code, hashlib.sha256(code.encode()).hexdigest()


FRAMES = [pd.DataFrame({"user_id": [i], "x": [float(i)]}) for i in range(6)]


@pytest.mark.parametrize("timeout", [None, 5.0])
def test_run_each_answers_as_run_does_frame_by_frame(timeout):
    """Results equal `run`'s on each frame (each its own one-entity frame: len(df) is 1), errors returned
    in place, not raised."""
    from common.errors import EtlFailed
    from etl.runner import EtlRunner

    code, sha = _code('if df["user_id"].iloc[0] == 3:\n    raise ValueError("three")\n'
                      'return df.assign(rows=len(df), y=df["x"] * self.state["k"])\n')
    runner = EtlRunner(timeout=timeout)
    try:
        each = runner.run_each("k", code, sha, FRAMES, {"k": 2})
        for frame, outcome in zip(FRAMES, each):
            if frame["user_id"].iloc[0] == 3:
                assert isinstance(outcome, EtlFailed) and "three" in outcome.message
                with pytest.raises(EtlFailed, match="three"):
                    runner.run("k", code, sha, frame, {"k": 2})
            else:
                pd.testing.assert_frame_equal(outcome, runner.run("k", code, sha, frame, {"k": 2}))
                assert outcome["rows"].tolist() == [1]
    finally:
        runner.close()


def test_run_each_limits_each_run_from_its_own_start(tmp_path):
    """Six runs of 0.15 s under a 0.4 s limit all answer (0.9 s in all); a run stuck past the limit is
    etl_timeout, its thread counted as stuck until it ends, and the runs after it still answer."""
    from etl.runner import EtlRunner

    release = tmp_path / "release"
    code, sha = _code(f'if df["user_id"].iloc[0] == 2:\n    while not os.path.exists({str(release)!r}):\n'
                      '        time.sleep(0.01)\nelse:\n    time.sleep(0.15)\nreturn df\n')
    runner = EtlRunner(timeout=0.4, threads=2)
    try:
        slow, slow_sha = _code("time.sleep(0.15)\nreturn df\n")
        assert all(isinstance(out, pd.DataFrame) for out in runner.run_each("s", slow, slow_sha, FRAMES))
        each = runner.run_each("k", code, sha, FRAMES)
        assert [type(out).__name__ for out in each] == ["DataFrame"] * 2 + ["EtlFailed"] + ["DataFrame"] * 3
        assert each[2].code == "etl_timeout" and runner.status()["stuck_threads"] == 1
        release.touch()
        deadline = time.monotonic() + 5
        while runner.status()["stuck_threads"] and time.monotonic() < deadline:
            time.sleep(0.01)
        assert runner.status()["stuck_threads"] == 0
    finally:
        release.touch()
        runner.close()
