"""ETL time limits in both modes, and the isolated mode's worker processes.

One parametrized `runner` fixture runs the contract in process and in a shared pool
of two workers; the pool's own limits (memory, network, dying workers) follow. Every
worker the module starts is checked to be gone at the end.
"""
from __future__ import annotations

import hashlib
import os
import socket
import textwrap
import threading
import time
import traceback
from pathlib import Path
from typing import Iterator

import pandas as pd
import pytest

from common.errors import BackendUnavailable, EtlFailed, EtlTampered, InvalidEtl
from demo.flows import generate_flows
from etl.isolation import IsolatedEtlPool, RemoteTraceback, open_etl_runner
from etl.runner import EtlRunner
from tests.fixtures_git import BAD_RETURN_ETL, BROKEN_ETL, BROKEN_LINE, FEATURES_ETL, LEGACY_ETL
from tests.walkthrough import EXAMPLE_ETLS

LIMIT = 0.5  # seconds, for the runaway ETLs


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def etl(body: str) -> str:
    return textwrap.dedent(body).lstrip("\n")


def wait_until_gone(pids: list[int], seconds: float = 5.0) -> list[int]:
    """The pids still present (running, exiting or not yet reaped) after `seconds`."""
    deadline = time.monotonic() + seconds
    present = list(pids)
    while present and time.monotonic() < deadline:
        present = [pid for pid in present if os.path.exists(f"/proc/{pid}")]
        if present:
            time.sleep(0.02)
    return present


@pytest.fixture(scope="module")
def pool() -> Iterator[IsolatedEtlPool]:
    pool = IsolatedEtlPool(workers=2, memory_mb=1024)
    yield pool
    pool.close()
    started = pool.info()["started_pids"]
    assert started and wait_until_gone(started) == []


@pytest.fixture(params=["inprocess", "process"])
def mode(request: pytest.FixtureRequest) -> str:
    return request.param


def make_runner(mode: str, pool: IsolatedEtlPool, timeout: float) -> EtlRunner:
    return EtlRunner(timeout=timeout, isolation=pool if mode == "process" else None)


@pytest.fixture
def runner(mode: str, pool: IsolatedEtlPool) -> EtlRunner:
    """A runner of `mode` with a generous limit (the process runner shares the module's pool: not closed)."""
    return make_runner(mode, pool, timeout=20.0)


@pytest.fixture(scope="module")
def joined() -> pd.DataFrame:
    """The four-table join of the walkthrough (examples/four_table_join.sql), in pandas."""
    tables = generate_flows(60, seed=3)
    quotes = tables["quotes"]
    frame = (tables["users"].rename(columns={"creation_date": "user_created"})
             .merge(quotes, on="user_id")
             .merge(tables["transactions"][["ref_id", "successful", "card_type"]],
                    how="left", left_on="quote_id", right_on="ref_id")
             .merge(tables["policies"][["quote_id", "policy_type"]], how="left", on="quote_id"))
    frame["seconds_to_bind"] = frame["binding_date"] - frame["creation_date"]
    frame = frame.rename(columns={"successful": "payment_successful"})
    return frame[["user_id", "user_created", "quote_type", "quote_device", "is_binded", "is_paid",
                  "seconds_to_bind", "payment_successful", "card_type", "policy_type"]]


@pytest.fixture
def release(tmp_path: Path) -> Iterator[Path]:
    """A file whose creation ends the runaway ETLs still spinning in this process."""
    path = tmp_path / "release"
    yield path
    path.touch()


def runaway(release: Path) -> str:
    return etl(f"""
        import os
        from extraction.etl_contract import BaseEtl

        class Etl(BaseEtl):
            def transform(self, df):
                while not os.path.exists({str(release)!r}):
                    pass
                return df
    """)


# ---------------------------------------------------------------------- the same contract in both modes


@pytest.mark.parametrize("name", ["FEATURES_ETL", "LEGACY_ETL", "etls/quote_features.py", "etls/legacy_features.py"])
def test_results_match_the_plain_runner(runner, joined, name):
    code = {"FEATURES_ETL": FEATURES_ETL, "LEGACY_ETL": LEGACY_ETL}.get(name) or EXAMPLE_ETLS[name]
    frame = joined
    before = frame.copy(deep=True)
    expected = EtlRunner().run("k", code, sha256(code), frame)
    pd.testing.assert_frame_equal(runner.run("k", code, sha256(code), frame), expected)
    pd.testing.assert_frame_equal(runner.run("k", code, sha256(code), frame.iloc[[3]]), expected.iloc[[3]])
    pd.testing.assert_frame_equal(frame, before)


def test_fit_state_declarations_and_served_row_match(runner, joined):
    code = EXAMPLE_ETLS["etls/fitted_features.py"]
    plain = EtlRunner()
    state = runner.fit("fitted", code, sha256(code), joined)
    assert state == plain.fit("fitted", code, sha256(code), joined)
    assert set(state) == {"minutes_mean", "minutes_std", "quote_types"}
    assert runner.declarations("fitted", code, sha256(code)) == plain.declarations("fitted", code, sha256(code))
    row = joined.iloc[[5]]
    pd.testing.assert_frame_equal(runner.run("fitted", code, sha256(code), row, state),
                                  plain.run("fitted", code, sha256(code), row, state))


def test_exception_is_422_with_the_etl_line(runner, mode, joined):
    with pytest.raises(EtlFailed) as caught:
        runner.run("broken", BROKEN_ETL, sha256(BROKEN_ETL), joined)
    error = caught.value
    assert (error.status, error.code, error.message) == (422, "etl_failed", "ValueError: no quotes to score")
    assert error.details == {"etl_key": "broken", "exception": "ValueError", "line": BROKEN_LINE}
    formatted = "".join(traceback.format_exception(error))
    assert f'File "<etl broken>", line {BROKEN_LINE}' in formatted
    assert 'raise ValueError("no quotes to score")' in formatted
    if mode == "process":
        assert isinstance(error.__cause__, RemoteTraceback)


@pytest.mark.parametrize("code, returned", [
    (BAD_RETURN_ETL, "list"),
    ("from extraction.etl_contract import BaseEtl\nclass Etl(BaseEtl):\n"
     "    def transform(self, df):\n        return df['user_id']\n", "pandas.Series"),
])
def test_wrong_return_type_is_422(runner, joined, code, returned):
    with pytest.raises(EtlFailed, match=f"returned {returned}, not a pandas DataFrame") as caught:
        runner.run("bad", code, sha256(code), joined)
    assert caught.value.status == 422 and caught.value.details["returned"] == returned


@pytest.mark.parametrize("code, message", [
    ("class Etl:\n    def extract(self)\n        return 1\n", "syntax error"),
    ("x = 1\n\nraise RuntimeError('at import')\n", "RuntimeError: at import"),
    ("class Etl:\n    serving_violations = 'sometimes'\n\n    def extract(self):\n        return None\n",
     "serving_violations must be"),
])
def test_unloadable_code_is_400(runner, code, message):
    with pytest.raises(InvalidEtl, match=message) as caught:
        runner.declarations("bad", code, sha256(code))
    assert caught.value.status == 400


def test_check_and_load(runner, mode):
    runner.check(FEATURES_ETL)
    with pytest.raises(InvalidEtl, match="must define a class named Etl"):
        runner.check("x = 1\n")
    loaded = runner.load("k", FEATURES_ETL, sha256(FEATURES_ETL))
    assert (loaded is None) if mode == "process" else callable(loaded.extract)


def test_tampered_code_is_refused(runner, joined):
    with pytest.raises(EtlTampered) as caught:
        runner.run("k", FEATURES_ETL + "\nimport os\n", sha256(FEATURES_ETL), joined)
    assert (caught.value.status, caught.value.code) == (500, "etl_tampered")


def test_a_worker_checks_the_hash_itself(pool, joined):
    with pytest.raises(EtlTampered, match="does not match its recorded sha256"):
        pool.call("run", "k", FEATURES_ETL + "\n# changed\n", sha256(FEATURES_ETL), joined, None, timeout=10)


# ---------------------------------------------------------------------- time limit


def test_runaway_etl_times_out_and_the_runner_keeps_working(mode, pool, joined, release):
    runner = make_runner(mode, pool, timeout=LIMIT)
    replaced, live = pool.info()["replaced"], set(pool.pids())
    start = time.monotonic()
    with pytest.raises(EtlFailed) as caught:
        runner.run("loop", runaway(release), sha256(runaway(release)), joined)
    assert time.monotonic() - start < LIMIT + 1.0
    error = caught.value
    assert (error.status, error.code) == (422, "etl_timeout")
    assert error.message == f"ETL loop exceeded the time limit of {LIMIT:g} s"
    assert error.details == {"etl_key": "loop", "timeout_seconds": LIMIT}
    assert list(runner.run("k", FEATURES_ETL, sha256(FEATURES_ETL), joined.iloc[:2]).columns)[0] == "user_id"
    if mode == "process":
        assert pool.info()["replaced"] == replaced + 1
        killed = live - set(pool.pids())
        assert len(killed) == 1 and wait_until_gone(list(killed)) == []
        assert len(pool.pids()) == 2


def test_module_code_is_under_the_time_limit_too(mode, pool, release):
    runner = make_runner(mode, pool, timeout=LIMIT)
    code = f"import os\nwhile not os.path.exists({str(release)!r}):\n    pass\nclass Etl:\n    pass\n"
    with pytest.raises(EtlFailed, match="exceeded the time limit"):
        runner.declarations("slow-import", code, sha256(code))


def test_stuck_threads_make_new_calls_fail_fast_until_they_end(joined, release):
    runner = EtlRunner(timeout=0.3, threads=1)
    code = runaway(release)
    with pytest.raises(EtlFailed, match="time limit"):
        runner.run("loop", code, sha256(code), joined)
    start = time.monotonic()
    with pytest.raises(BackendUnavailable, match="all 1 ETL threads are still running") as caught:
        runner.run("k", FEATURES_ETL, sha256(FEATURES_ETL), joined)
    assert caught.value.status == 503 and time.monotonic() - start < 0.1
    assert runner.status() == {"mode": "inprocess", "timeout_seconds": 0.3, "threads": 1, "stuck_threads": 1}
    release.touch()
    deadline = time.monotonic() + 5
    while True:
        try:
            runner.run("k", FEATURES_ETL, sha256(FEATURES_ETL), joined)
            break
        except BackendUnavailable:
            assert time.monotonic() < deadline
            time.sleep(0.01)
    runner.close()


def test_no_timeout_runs_on_the_callers_thread(joined):
    code = etl("""
        import threading
        from extraction.etl_contract import BaseEtl

        class Etl(BaseEtl):
            def transform(self, df):
                return df.assign(thread=threading.current_thread().name)[["thread"]]
    """)
    here = threading.current_thread().name
    assert EtlRunner().run("k", code, sha256(code), joined)["thread"].iloc[0] == here
    assert EtlRunner(timeout=5).run("k", code, sha256(code), joined)["thread"].iloc[0] != here


# ---------------------------------------------------------------------- the process mode's limits


def test_memory_beyond_the_limit_is_a_422_memory_error(pool, joined):
    code = etl("""
        from extraction.etl_contract import BaseEtl

        class Etl(BaseEtl):
            def transform(self, df):
                ballast = bytearray(1100 * 1024 * 1024)
                return df
    """)
    runner = EtlRunner(timeout=20, isolation=pool)
    pids = pool.pids()
    with pytest.raises(EtlFailed) as caught:
        runner.run("hog", code, sha256(code), joined)
    assert caught.value.status == 422 and caught.value.message.startswith("MemoryError")
    assert caught.value.details == {"etl_key": "hog", "exception": "MemoryError", "line": 5}
    assert pool.pids() == pids  # the worker survived it
    assert len(runner.run("k", FEATURES_ETL, sha256(FEATURES_ETL), joined)) == len(joined)


@pytest.fixture
def listener() -> Iterator[int]:
    server = socket.create_server(("127.0.0.1", 0), backlog=8)
    yield server.getsockname()[1]
    server.close()


def test_network_is_blocked_in_workers_only(mode, runner, joined, listener):
    code = etl(f"""
        import socket
        import pandas as pd
        from extraction.etl_contract import BaseEtl

        class Etl(BaseEtl):
            def transform(self, df):
                with socket.create_connection(("127.0.0.1", {listener}), timeout=5):
                    return pd.DataFrame({{"connected": [True]}})
    """)
    if mode == "inprocess":
        assert runner.run("net", code, sha256(code), joined)["connected"].tolist() == [True]
        return
    with pytest.raises(EtlFailed) as caught:
        runner.run("net", code, sha256(code), joined)
    assert caught.value.status == 422
    assert caught.value.message == "PermissionError: [Errno 13] network access is disabled in ETL workers"
    assert caught.value.details == {"etl_key": "net", "exception": "PermissionError", "line": 7}


def test_other_socket_entry_points_are_blocked(pool, joined):
    code = etl("""
        import socket
        import pandas as pd
        from extraction.etl_contract import BaseEtl

        def refused(call):
            try:
                call()
            except PermissionError:
                return True
            return False

        class Etl(BaseEtl):
            def transform(self, df):
                return pd.DataFrame({"refused": [
                    refused(lambda: socket.socket(socket.AF_INET, socket.SOCK_STREAM)),
                    refused(lambda: socket.getaddrinfo("localhost", 80)),
                    refused(lambda: socket.socketpair()),
                ]})
    """)
    result = EtlRunner(timeout=20, isolation=pool).run("net", code, sha256(code), joined)
    assert result["refused"].tolist() == [True, True, True]


def test_a_worker_that_dies_is_a_422_and_is_replaced(pool, joined):
    code = etl("""
        import os
        from extraction.etl_contract import BaseEtl

        class Etl(BaseEtl):
            def transform(self, df):
                os.kill(os.getpid(), 9)
    """)
    runner = EtlRunner(timeout=20, isolation=pool)
    before = set(pool.pids())
    with pytest.raises(EtlFailed) as caught:
        runner.run("suicide", code, sha256(code), joined)
    error = caught.value
    assert (error.status, error.code) == (422, "etl_worker_died")
    assert error.message == "ETL suicide: the ETL worker died (killed by SIGKILL); a new worker was started"
    assert error.details == {"etl_key": "suicide", "exit_code": -9}
    after = set(pool.pids())
    assert len(after) == 2 and len(before - after) == 1
    for _ in range(4):  # both workers serve again
        assert len(runner.run("k", FEATURES_ETL, sha256(FEATURES_ETL), joined)) == len(joined)


@pytest.mark.parametrize("noticed", [True, False], ids=["seen-dead", "found-at-send"])
def test_a_worker_killed_while_idle_is_replaced_without_failing_a_call(joined, monkeypatch, noticed):
    with IsolatedEtlPool(workers=1, memory_mb=1024) as pool:
        runner = EtlRunner(timeout=20, isolation=pool)
        [pid] = pool.pids()
        os.kill(pid, 9)
        assert wait_until_gone([pid]) == []
        if not noticed:  # the pool takes it for alive; sending the request is what fails
            monkeypatch.setattr("etl.isolation._Worker.alive", lambda worker: True)
        assert len(runner.run("k", FEATURES_ETL, sha256(FEATURES_ETL), joined)) == len(joined)
        assert pool.pids() != [pid] and len(pool.pids()) == 1 and pool.info()["replaced"] == 1
    assert wait_until_gone(pool.info()["started_pids"]) == []


def test_a_call_waits_for_the_worker_a_runaway_etl_holds(joined, release):
    with IsolatedEtlPool(workers=1, memory_mb=1024) as pool:
        runner = EtlRunner(timeout=LIMIT * 2, isolation=pool)
        outcome: list[BaseException] = []

        def spin() -> None:
            try:
                runner.run("loop", runaway(release), sha256(runaway(release)), joined)
            except EtlFailed as error:
                outcome.append(error)

        spinning = threading.Thread(target=spin)
        spinning.start()
        time.sleep(0.2)  # the loop has the only worker
        assert len(runner.run("k", FEATURES_ETL, sha256(FEATURES_ETL), joined)) == len(joined)
        spinning.join()
        assert [error.code for error in outcome] == ["etl_timeout"]
    assert wait_until_gone(pool.info()["started_pids"]) == []


def test_many_threads_share_two_workers(mode, runner, joined):
    codes = [FEATURES_ETL + f"# variant {n}\n" for n in range(3)] + [LEGACY_ETL, BROKEN_ETL]
    frame = joined
    expected = {code: EtlRunner().run("k", code, sha256(code), frame.iloc[:n + 1])
                for n, code in enumerate(codes[:-1])}
    errors: list[BaseException] = []

    def work(offset: int) -> None:
        try:
            for i in range(20):
                n = (i + offset) % len(codes)
                code = codes[n]
                if code is BROKEN_ETL:
                    with pytest.raises(EtlFailed, match="no quotes to score"):
                        runner.run("k", code, sha256(code), frame)
                    continue
                pd.testing.assert_frame_equal(runner.run("k", code, sha256(code), frame.iloc[:n + 1]),
                                              expected[code])
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, errors[0]


# ---------------------------------------------------------------------- starting and stopping


def test_close_stops_every_worker_and_later_calls_are_503(joined):
    runner = open_etl_runner("process", timeout=10, workers=1, memory_mb=1024)
    pids = runner.isolation.pids()
    assert len(pids) == 1 and runner.mode == "process"
    assert runner.status() == {"mode": "process", "timeout_seconds": 10, "workers": 1, "live_workers": 1,
                               "replaced_workers": 0, "memory_mb": 1024}
    runner.close()
    assert wait_until_gone(pids) == [] and runner.isolation.pids() == []
    with pytest.raises(BackendUnavailable, match="closed") as caught:
        runner.run("k", FEATURES_ETL, sha256(FEATURES_ETL), joined)
    assert caught.value.status == 503
    runner.close()


def test_a_memory_limit_below_the_workers_size_fails_at_start():
    with pytest.raises(BackendUnavailable, match="memory_mb=100 leaves no room"):
        IsolatedEtlPool(workers=1, memory_mb=100)


def test_open_etl_runner_modes():
    runner = open_etl_runner("inprocess", timeout=0)
    assert (runner.mode, runner.timeout, runner.isolation) == ("inprocess", None, None)
    assert open_etl_runner("inprocess", timeout=3).timeout == 3
    with pytest.raises(ValueError, match="known: inprocess, process"):
        open_etl_runner("thread")
    with pytest.raises(ValueError, match="timeout"):
        EtlRunner(timeout=0)
