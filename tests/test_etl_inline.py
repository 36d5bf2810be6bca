"""Small ETL runs on the caller's thread once the ETL has proven fast, under the watchdog's time limit."""
from __future__ import annotations

import hashlib
import textwrap
import threading
import time

import pandas as pd
import pytest

from common.errors import EtlFailed
from etl import runner as runner_module
from etl.runner import INLINE_AFTER_RUNS, INLINE_MAX_ROWS, EtlRunner
from etl.watchdog import EtlInterrupted, Watchdog

LIMIT = 0.5
# the thread it ran on; loops in Python while the frame says "loop" (caught: "swallow")
CODE = textwrap.dedent("""
    import threading, time
    from extraction.etl_contract import BaseEtl

    class Etl(BaseEtl):
        def transform(self, df):
            mode = df["mode"].iloc[0]
            if mode == "loop":
                while True:
                    pass
            if mode == "swallow":
                deadline = time.monotonic() + 2
                while time.monotonic() < deadline:
                    try:
                        while time.monotonic() < deadline:
                            pass
                    except BaseException:
                        pass
            if mode == "slow":
                time.sleep(0.1)
            return df.assign(thread=threading.get_ident())[["thread"]]
""")
SHA = hashlib.sha256(CODE.encode()).hexdigest()


@pytest.fixture(autouse=True)
def generous_fast_runs(monkeypatch) -> None:
    """A small run counts as fast under half the limit: a loaded machine does not make these tests flaky."""
    monkeypatch.setattr(runner_module, "INLINE_FRACTION", 0.5)


def frame(mode: str = "fast", rows: int = 1) -> pd.DataFrame:
    return pd.DataFrame({"mode": [mode] * rows})


def ran_on(runner: EtlRunner, mode: str = "fast", rows: int = 1) -> int:
    return int(runner.run("k", CODE, SHA, frame(mode, rows))["thread"].iloc[0])


def proven(runner: EtlRunner) -> None:
    for _ in range(INLINE_AFTER_RUNS):
        assert ran_on(runner) != threading.get_ident()  # the first small runs: on the time-limit threads


def test_a_proven_fast_etl_runs_small_frames_on_the_callers_thread_and_large_ones_on_the_threads() -> None:
    runner = EtlRunner(timeout=LIMIT)
    proven(runner)
    assert ran_on(runner) == threading.get_ident()
    assert ran_on(runner, rows=INLINE_MAX_ROWS + 1) != threading.get_ident()
    assert ran_on(runner) == threading.get_ident()
    runner.close()


def test_an_inline_run_past_the_limit_is_interrupted_and_sends_the_etl_back_to_the_threads() -> None:
    runner = EtlRunner(timeout=LIMIT)
    proven(runner)
    started = time.monotonic()
    with pytest.raises(EtlFailed) as error:
        ran_on(runner, "loop")
    assert error.value.code == "etl_timeout" and error.value.details == {"etl_key": "k", "timeout_seconds": LIMIT}
    assert LIMIT <= time.monotonic() - started < LIMIT + 1.0  # the loop stopped near its deadline
    assert ran_on(runner) != threading.get_ident()  # slow once: on the threads from now on
    assert runner.status()["stuck_threads"] == 0  # nothing was abandoned: the loop was stopped
    runner.close()


def test_an_etl_that_swallows_the_interruption_still_fails_when_it_returns() -> None:
    runner = EtlRunner(timeout=LIMIT)
    proven(runner)
    with pytest.raises(EtlFailed) as error:
        ran_on(runner, "swallow")
    assert error.value.code == "etl_timeout"
    time.sleep(0.1)  # no interruption left over for the caller's own code
    assert ran_on(runner) != threading.get_ident()
    runner.close()


def test_a_slow_small_run_within_the_limit_keeps_the_etl_on_the_threads(monkeypatch) -> None:
    monkeypatch.setattr(runner_module, "INLINE_FRACTION", 0.1)  # 50 ms of the 0.5 s limit; "slow" sleeps 100 ms
    runner = EtlRunner(timeout=LIMIT)
    ran_on(runner, "slow")
    for _ in range(INLINE_AFTER_RUNS):
        ran_on(runner)
    assert ran_on(runner) != threading.get_ident()
    runner.close()


def test_without_inline_every_run_uses_the_threads() -> None:
    runner = EtlRunner(timeout=LIMIT, inline=False)
    for _ in range(INLINE_AFTER_RUNS + 2):
        assert ran_on(runner) != threading.get_ident()
    runner.close()


def test_a_disarmed_deadline_never_fires() -> None:
    watchdog = Watchdog(poll_seconds=0.01)
    token = watchdog.arm(0.05)
    assert watchdog.disarm(token) is False
    time.sleep(0.15)  # an interruption would arrive during this sleep's return
    fired = watchdog.arm(0.02)
    with pytest.raises(EtlInterrupted):
        deadline = time.monotonic() + 2
        while time.monotonic() < deadline:
            pass
    assert watchdog.disarm(fired) is True
