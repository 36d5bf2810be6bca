"""EtlRunner: hash check, loading, running, errors with line numbers, the bounded cache."""
from __future__ import annotations

import hashlib
import textwrap
import threading
import traceback

import pandas as pd
import pytest

from common.errors import EtlFailed, FeatureStoreError, InvalidEtl
from etl.runner import EtlRunner
from etl.source import EtlFetcher
from tests.fixtures_git import (
    BAD_RETURN_ETL,
    BROKEN_ETL,
    BROKEN_LINE,
    FEATURES_COLUMNS,
    FEATURES_ETL,
    LEGACY_COLUMNS,
    LEGACY_ETL,
)


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def etl(body: str) -> str:
    return textwrap.dedent(body).lstrip("\n")


@pytest.fixture
def runner() -> EtlRunner:
    return EtlRunner()


def run(runner: EtlRunner, code: str, frame: pd.DataFrame, key: str = "etl-1") -> pd.DataFrame:
    return runner.run(key, code, sha256(code), frame)


# ---------------------------------------------------------------------- running


def test_new_style_etl(runner, quotes_frame):
    result = run(runner, FEATURES_ETL, quotes_frame)
    assert list(result.columns) == FEATURES_COLUMNS
    assert result["is_mobile"].tolist() == [True, False, True, False]
    assert result["is_paid_binded"].tolist() == [True, False, False, True]


def test_legacy_etl_runs_unchanged_and_leaves_the_callers_frame_alone(runner, quotes_frame):
    before = quotes_frame.copy(deep=True)
    result = run(runner, LEGACY_ETL, quotes_frame)
    assert list(result.columns) == LEGACY_COLUMNS
    assert result["quote_type"].tolist() == ["AUTO", "HOME", "AUTO", "LIFE"]
    pd.testing.assert_frame_equal(quotes_frame, before)  # no new column, no upper-cased values


def test_in_place_mutations_do_not_reach_the_caller(runner, quotes_frame):
    code = etl("""
        from extraction.etl_contract import BaseEtl

        class Etl(BaseEtl):
            def transform(self, df):
                df.loc[0, "is_paid"] = 99
                df.iloc[1, 0] = -1
                df["quote_type"] = "x"
                df.insert(0, "new", 1)
                del df["is_binded"]
                df.columns = [name.upper() for name in df.columns]
                df.index = df.index + 10
                df.attrs["touched"] = True
                return df
    """)
    before = quotes_frame.copy(deep=True)
    result = run(runner, code, quotes_frame)
    assert result["IS_PAID"].max() == 99
    pd.testing.assert_frame_equal(quotes_frame, before)


def test_fetched_legacy_etl_runs(tmp_path, etl_repo, quotes_frame, runner):
    fetched = EtlFetcher(tmp_path / "cache").fetch(etl_repo.git_url("etls/legacy.py", "v1"))
    result = runner.run("legacy", fetched.code, fetched.code_sha256, quotes_frame)
    assert list(result.columns) == LEGACY_COLUMNS


def test_etl_may_define_dataclasses_and_helpers(runner, quotes_frame):
    code = etl("""
        from __future__ import annotations
        from dataclasses import dataclass
        import pandas as pd
        from extraction.etl_contract import BaseEtl

        @dataclass(frozen=True)
        class Threshold:
            user_id: int = 2

        class Etl(BaseEtl):
            def transform(self, df: pd.DataFrame) -> pd.DataFrame:
                return df[df["user_id"] > Threshold().user_id][["user_id"]]
    """)
    assert run(runner, code, quotes_frame)["user_id"].tolist() == [3, 4]


# ---------------------------------------------------------------------- ETL failures (422)


def test_exception_is_422_with_the_etl_line(runner, quotes_frame):
    with pytest.raises(EtlFailed) as caught:
        run(runner, BROKEN_ETL, quotes_frame, key="broken")
    error = caught.value
    assert error.status == 422 and error.code == "etl_failed"
    assert error.message == "ValueError: no quotes to score"
    assert error.details["exception"] == "ValueError"
    assert error.details["line"] == BROKEN_LINE
    assert isinstance(error.__cause__, ValueError)
    formatted = "".join(traceback.format_exception(error.__cause__))
    assert f'File "<etl broken>", line {BROKEN_LINE}' in formatted
    assert 'raise ValueError("no quotes to score")' in formatted  # source shown via linecache


def test_error_inside_pandas_points_at_the_etl_line(runner, quotes_frame):
    code = etl("""
        from extraction.etl_contract import BaseEtl

        class Etl(BaseEtl):
            def transform(self, df):
                out = df.copy()
                return out[["user_id", "no_such_column"]]
    """)
    with pytest.raises(EtlFailed, match="KeyError") as caught:
        run(runner, code, quotes_frame)
    assert caught.value.details == {"etl_key": "etl-1", "exception": "KeyError", "line": 6}


def test_error_outside_etl_code_has_no_line(runner, quotes_frame):
    code = "from extraction.etl_contract import BaseEtl\n\nclass Etl(BaseEtl):\n    pass\n"
    with pytest.raises(EtlFailed, match="must override transform") as caught:
        run(runner, code, quotes_frame)
    assert caught.value.details["line"] is None


def test_sys_exit_in_an_etl_is_contained(runner, quotes_frame):
    code = etl("""
        import sys
        from extraction.etl_contract import BaseEtl

        class Etl(BaseEtl):
            def transform(self, df):
                sys.exit(3)
    """)
    with pytest.raises(EtlFailed) as caught:
        run(runner, code, quotes_frame)
    assert caught.value.details["exception"] == "SystemExit"


@pytest.mark.parametrize(
    "code, returned",
    [
        (BAD_RETURN_ETL, "list"),
        ("from extraction.etl_contract import BaseEtl\nclass Etl(BaseEtl):\n    def transform(self, df):\n        pass\n",
         "NoneType"),
        ("from extraction.etl_contract import BaseEtl\nclass Etl(BaseEtl):\n"
         "    def transform(self, df):\n        return df['user_id']\n", "pandas.Series"),
    ],
)
def test_wrong_return_type_is_422(runner, quotes_frame, code, returned):
    with pytest.raises(EtlFailed, match=f"returned {returned}, not a pandas DataFrame") as caught:
        run(runner, code, quotes_frame)
    assert caught.value.status == 422
    assert caught.value.details["returned"] == returned


# ---------------------------------------------------------------------- loading (400) and tampering (500)


def test_tampered_code_is_refused(runner, quotes_frame):
    with pytest.raises(FeatureStoreError) as caught:
        runner.run("etl-1", FEATURES_ETL + "\nimport os\n", sha256(FEATURES_ETL), quotes_frame)
    error = caught.value
    assert (error.code, error.status) == ("etl_tampered", 500)
    assert not isinstance(error, (InvalidEtl, EtlFailed))
    assert error.details["expected_sha256"] == sha256(FEATURES_ETL)


def test_tampering_is_caught_even_when_the_class_is_cached(runner, quotes_frame):
    runner.load("etl-1", FEATURES_ETL, sha256(FEATURES_ETL))
    with pytest.raises(FeatureStoreError, match="does not match its recorded sha256"):
        runner.load("etl-1", BROKEN_ETL, sha256(FEATURES_ETL))


@pytest.mark.parametrize(
    "code, message, line",
    [
        ("class Etl:\n    def extract(self)\n        return 1\n", "syntax error", 2),
        ("import os\nimport no_such_module_for_etl_tests\n", "ModuleNotFoundError", 2),
        ("x = 1\n\nraise RuntimeError('at import')\n", "RuntimeError: at import", 3),
        ("import sys\nsys.exit(1)\n", "SystemExit", 2),
        ("x = 1\n", "must define a class named Etl \\(found nothing\\)", None),
        ("Etl = 3\n", "must define a class named Etl \\(found int\\)", None),
        ("class Etl:\n    pass\n", "no extract\\(\\) method", None),
        ("x = 1\x00\n", "null bytes", None),
    ],
    ids=["syntax", "import", "raises", "sys-exit", "no-etl", "not-a-class", "no-extract", "null-byte"],
)
def test_unloadable_code_is_400(runner, code, message, line):
    with pytest.raises(InvalidEtl, match=message) as caught:
        runner.load("bad", code, sha256(code))
    assert caught.value.status == 400
    if line is not None:
        assert caught.value.details["line"] == line
    with pytest.raises(InvalidEtl):
        runner.check(code)


def test_check_accepts_the_fixture_etls(runner):
    for code in (FEATURES_ETL, LEGACY_ETL, BROKEN_ETL, BAD_RETURN_ETL):
        assert runner.check(code) is None
    assert runner.cache_info()["size"] == 0


def test_legacy_import_works_without_prior_setup(runner, monkeypatch):
    import sys

    monkeypatch.delitem(sys.modules, "etl_abc", raising=False)
    cls = runner.load("legacy", LEGACY_ETL, sha256(LEGACY_ETL))
    assert callable(cls.extract)


def test_each_load_is_a_fresh_module(quotes_frame):
    code = etl("""
        from extraction.etl_contract import BaseEtl
        calls = []

        class Etl(BaseEtl):
            def transform(self, df):
                calls.append(1)
                return df.assign(calls=len(calls))
    """)
    first = EtlRunner().run("k", code, sha256(code), quotes_frame)
    second = EtlRunner().run("k", code, sha256(code), quotes_frame)
    assert first["calls"].iloc[0] == second["calls"].iloc[0] == 1


# ---------------------------------------------------------------------- cache


def variant(n: int) -> str:
    return FEATURES_ETL + f"# variant {n}\n"


def test_cache_returns_the_same_class_and_is_bounded():
    runner = EtlRunner(cache_size=2)
    a = runner.load("a", variant(1), sha256(variant(1)))
    assert runner.load("a", variant(1), sha256(variant(1))) is a
    runner.load("b", variant(2), sha256(variant(2)))
    runner.load("a", variant(1), sha256(variant(1)))  # a is now the most recent
    runner.load("c", variant(3), sha256(variant(3)))  # evicts b
    assert runner.cache_info() == {"size": 2, "max_size": 2, "hits": 2, "misses": 3}
    assert runner.load("a", variant(1), sha256(variant(1))) is a
    runner.load("b", variant(2), sha256(variant(2)))
    assert runner.cache_info()["misses"] == 4


def test_evicted_etls_leave_no_source_in_linecache():
    import linecache

    runner = EtlRunner(cache_size=1)
    runner.load("first", variant(1), sha256(variant(1)))
    assert "<etl first>" in linecache.cache
    runner.load("second", variant(2), sha256(variant(2)))
    assert "<etl first>" not in linecache.cache
    assert "<etl second>" in linecache.cache


def test_same_key_different_code_are_separate_entries():
    runner = EtlRunner()
    one = runner.load("k", variant(1), sha256(variant(1)))
    two = runner.load("k", variant(2), sha256(variant(2)))
    assert one is not two
    assert runner.cache_info()["size"] == 2


def test_cache_can_be_disabled():
    runner = EtlRunner(cache_size=0)
    first = runner.load("a", variant(1), sha256(variant(1)))
    assert runner.load("a", variant(1), sha256(variant(1))) is not first
    assert runner.cache_info()["size"] == 0
    with pytest.raises(ValueError):
        EtlRunner(cache_size=-1)


def test_concurrent_runs_share_a_bounded_cache(quotes_frame):
    runner = EtlRunner(cache_size=3)
    codes = [variant(n) for n in range(8)]
    errors: list[BaseException] = []

    def work(offset: int) -> None:
        try:
            for i in range(40):
                code = codes[(i + offset) % len(codes)]
                result = runner.run(f"etl-{(i + offset) % len(codes)}", code, sha256(code), quotes_frame)
                assert list(result.columns) == FEATURES_COLUMNS
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    assert runner.cache_info()["size"] <= 3
