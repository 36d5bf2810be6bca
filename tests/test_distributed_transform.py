"""A batchable ETL's training transform on a real Dask cluster (app/distributed_transform.py).

One LocalCluster of two worker processes (one thread each, loopback) serves the module as an existing
scheduler (``TRAINING_ENGINE_URL=dask://…``); the same service with its engine removed is the in-process
path. The Dask path gives exactly its Arrow training set (rows, types, the dtypes each batch is handed,
the rows' order), with and without fitted state; a failing ETL the same error; a frame-wide ETL stays
in this process; a bad URL is refused at start; ``dask+local://`` starts its cluster with the service
and stops it with the service.
"""
from __future__ import annotations

import contextlib
import os
import socket
import textwrap
import time
from typing import Iterator

import pyarrow as pa
import pytest
from distributed import Client, LocalCluster

from app import close_app, create_app
from app.distributed_transform import LOOPBACK_CLUSTER, DaskEngine, arrow_batch, open_training_engine
from client import transport
from common.errors import EtlFailed
from etl.runner import timeout_error
from tests.conftest import JsonClient, app_config
from tests.fixtures_git import make_etl_repo
from tests.test_training_batches import ETLS, STEPS, _in_process, _random_etl, _same_rows
from tests.walkthrough import FOUR_TABLE_QUERY

ARROW = "application/vnd.apache.arrow.stream"
BATCH_ROWS = 25  # a training set of some 400 rows in over a dozen batches
# Where each batch ran, and its rows' positions: batchable, or (without the declaration) frame-wide.
WHERE = textwrap.dedent('''\
    import os
    import pandas as pd
    from extraction.etl_contract import BaseEtl


    class Etl(BaseEtl):
        batchable = True

        def transform(self, df):
            return pd.DataFrame({"user_id": df["user_id"], "pid": os.getpid(), "row": df.index})
''')
# The second batch takes longer than the time limit the test sets.
SLOW_SECOND_BATCH = textwrap.dedent(f'''\
    import time
    import pandas as pd
    from extraction.etl_contract import BaseEtl


    class Etl(BaseEtl):
        batchable = True

        def transform(self, df):
            if len(df) and df.index[0] == {BATCH_ROWS}:
                time.sleep(3)
            return pd.DataFrame({{"user_id": df["user_id"]}})
''')
DASK_ETLS = {**ETLS, "etls/where.py": WHERE, "etls/where_whole.py": WHERE.replace("batchable = True", "pass"),
             "etls/slow_second_batch.py": SLOW_SECOND_BATCH}


@pytest.fixture(scope="module")
def cluster() -> Iterator[LocalCluster]:
    """Two worker processes on loopback, closed at the end of the module."""
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, **LOOPBACK_CLUSTER) as local:
        yield local


@pytest.fixture(scope="module")
def trained(tmp_path_factory, cluster):
    """An app whose training engine is the module's cluster, with the demo's data, the saved four-table
    join, the ETL repository and tiny training batches (one for the module: tests register nothing but
    the fitted ETL, which only the test that registers it reads back)."""
    folder = tmp_path_factory.mktemp("dask")
    url = cluster.scheduler_address.replace("tcp://", "dask://")
    app = create_app(app_config(folder / "data", MAX_RESPONSE_ROWS=100_000, TRAINING_ENGINE_URL=url,
                                CONSISTENCY_REPLAY_ENTITIES=20))
    try:
        api = JsonClient(app.test_client())
        api.put("/v1.0/publish?n_flows=300&seed=11")
        query_id = api.post("/v1.0/query/train?save=true&include_data=false",
                            {"query": FOUR_TABLE_QUERY})["query_id"]
        service = app.extensions["feature_service"]
        service.batched_training.batch_rows = BATCH_ROWS
        assert isinstance(service.training_engine, DaskEngine)
        yield {"api": api, "query_id": query_id, "repo": make_etl_repo(folder / "repo", DASK_ETLS),
               "service": service}
    finally:
        close_app(app)


@contextlib.contextmanager
def in_process(service) -> Iterator[None]:
    """The same service with no training engine: every batch's transform in this process."""
    engine, service.training_engine = service.training_engine, None
    try:
        yield
    finally:
        service.training_engine = engine


def _post(trained, etl: str, flags: str = ""):
    body = {"query_id": trained["query_id"], "etl_path": str(trained["repo"].file(etl))}
    response = trained["api"].client.post(f"/v1.0/extract/train?format=arrow{flags}", json=body)
    response.get_data()  # read whole now: a streamed answer holds its request context until it ends
    return response


def _arrow(trained, etl: str) -> tuple[pa.Table, int]:
    """The Arrow training set over HTTP, whole (end marker checked), and how many batches it came in."""
    response = _post(trained, etl)
    assert response.status_code == 200 and response.mimetype == ARROW, response.get_data(as_text=True)[:500]
    return transport.read_arrow_stream(response.get_data()), len(list(pa.ipc.open_stream(response.get_data())))


def _both(trained, etl: str) -> tuple[pa.Table, pa.Table]:
    """(on Dask, in process) for `etl`; the Dask one arrived in many batches."""
    on_dask, batches = _arrow(trained, etl)
    assert batches > 10, batches
    with in_process(trained["service"]):
        here, _ = _arrow(trained, etl)
    return on_dask, here


@pytest.mark.parametrize("etl", ["etls/quote_batched.py", "etls/fitted.py"])
def test_dask_gives_the_in_process_training_set(trained, etl):
    on_dask, here = _both(trained, etl)
    _same_rows(on_dask, here)
    if etl == "etls/fitted.py":  # fitted here on every row; each batch handed the whole frame's dtypes
        assert on_dask.column("row").to_pylist() == list(range(on_dask.num_rows))  # in the rows' order
        assert len(set(on_dask.column("input_dtypes").to_pylist())) == 1


@pytest.mark.parametrize("fits, filters", [(True, True), (False, False)])
def test_every_row_wise_step_on_dask_equals_the_whole_frame(trained, fits, filters):
    """Every step of tests/test_training_batches.py's randomized ETLs at once (nulls, text, booleans,
    positions, the dtypes handed in), some rows dropped, with a fitted offset or without."""
    on_dask, whole = _in_process(trained["service"], trained["query_id"], _random_etl(sorted(STEPS), fits, filters))
    _same_rows(on_dask, whole)


def test_a_registered_etl_runs_with_its_stored_state_on_dask(trained):
    api = trained["api"]
    registered = api.post("/v1.0/extract/train?save=true&include_data=false&allow_mismatch=true",
                          {"query_id": trained["query_id"], "etl_path": str(trained["repo"].file("etls/fitted.py"))})
    assert api.get(f"/v1.0/etls/{registered['etl_id']}")["state"]["types"]
    on_dask, here = _both(trained, "etls/fitted.py")
    _same_rows(on_dask, here)
    assert on_dask.column("row").to_pylist() == list(range(on_dask.num_rows))


def test_batches_run_on_the_workers_in_order_and_frame_wide_etls_here(trained, cluster):
    with Client(cluster) as client:
        workers = set(client.run(os.getpid).values())
    on_dask, _ = _arrow(trained, "etls/where.py")
    assert set(on_dask.column("pid").to_pylist()) == workers  # both workers, never this process
    assert on_dask.column("row").to_pylist() == list(range(on_dask.num_rows))
    whole, batches = _arrow(trained, "etls/where_whole.py")
    assert batches <= 2 and set(whole.column("pid").to_pylist()) == {os.getpid()}


def test_a_failing_batch_is_the_same_error_as_in_process(trained):
    service = trained["service"]
    late = _post(trained, "etls/late_failure.py")
    with pytest.raises(EtlFailed) as on_dask:
        transport.read_arrow_stream(late.get_data())
    with in_process(service), pytest.raises(EtlFailed) as here:
        transport.read_arrow_stream(_post(trained, "etls/late_failure.py").get_data())
    assert on_dask.value.to_dict() == here.value.to_dict()
    assert "no features past the first batch" in on_dask.value.message and on_dask.value.details["line"]
    assert sum(batch.num_rows for batch in pa.ipc.open_stream(late.get_data())) == BATCH_ROWS
    early = _post(trained, "etls/early_failure.py")
    with in_process(service):
        early_here = _post(trained, "etls/early_failure.py")
    assert early.status_code == early_here.status_code == 422
    assert early.get_json() == early_here.get_json()
    violation = _post(trained, "etls/late_violation.py")
    with in_process(service):
        violation_here = _post(trained, "etls/late_violation.py")
    assert violation.get_data() == violation_here.get_data()  # the first batch, then the same error marker


def test_the_etl_time_limit_applies_to_each_batch_on_the_workers(trained):
    engine = trained["service"].training_engine
    engine.timeout = 0.5  # the service's ETL_TIMEOUT_SECONDS, lowered for this test
    try:
        response = _post(trained, "etls/slow_second_batch.py")
    finally:
        engine.timeout = 30.0
    with pytest.raises(EtlFailed) as raised:
        transport.read_arrow_stream(response.get_data())
    assert raised.value.to_dict() == timeout_error(raised.value.details["etl_key"], 0.5).to_dict()
    assert raised.value.code == "etl_timeout"


DTYPES_ETL = textwrap.dedent('''\
    import pandas as pd
    from extraction.etl_contract import BaseEtl


    class Etl(BaseEtl):
        batchable = True

        def transform(self, df):
            return pd.DataFrame({"dtypes": "|".join(f"{n}:{t}" for n, t in df.dtypes.items()), "row": df.index,
                                 "n_plus": df["n"] + 1})
''')


def _batches() -> list:
    """Batches as the whole frame's dtypes make them: nullable kinds with no null in this batch, text
    with no value (object), a tz-aware timestamp; and one whose object text holds values."""
    import pandas as pd

    whole = pd.DataFrame({"n": pd.array([1, 2, None, 4], dtype="Int64"),
                          "b": pd.array([True, False, None, True], dtype="boolean"),
                          "s": ["a", None, "c", None], "t": pd.to_datetime(["2026-01-01", None, None, None], utc=True),
                          "empty": [None] * 4, "x": [0.5, None, 1.5, 2.0]})
    whole["empty"] = whole["empty"].astype(object)
    texts = whole.iloc[2:4].assign(s=lambda f: f["s"].astype(object))  # object text with values
    return [whole.iloc[0:2], whole.iloc[2:3], texts]


def test_batches_reach_the_etl_on_a_worker_with_their_dtypes(cluster):
    import types

    import pandas as pd

    from app.distributed_transform import transformed
    from app.training_stream import BatchedRun, batch_frame
    from etl.runner import EtlRunner
    from etl.source import code_sha256

    for batch in _batches()[:2]:  # what arrow_batch sends is rebuilt into the same frame
        data, kinds = arrow_batch(batch)
        assert isinstance(data, pa.Table)
        pd.testing.assert_frame_equal(batch_frame(data, kinds, batch.index.start), batch)
    texts = _batches()[2]
    assert arrow_batch(texts)[0] is texts  # Arrow would hand it back as str: it travels as the frame
    etl = types.SimpleNamespace(etl_id="e_dtypes", code=DTYPES_ETL, code_sha256=code_sha256(DTYPES_ETL))
    run = BatchedRun(etl, {}, pd.Timestamp("2026-01-01", tz="UTC"))
    local = types.SimpleNamespace(training_engine=None, _run_etl=lambda key, code, sha, frame, state, as_of:
                                  EtlRunner().run(key, code, sha, frame, state, as_of))
    here = [features for _, features in transformed(local, run, iter(_batches()))]
    with Client(cluster, set_as_default=False) as client:
        engine = DaskEngine(client, timeout=30.0)
        on_dask = [features for _, features in engine.transformed(run, iter(_batches()))]
    assert len(on_dask) == len(here) == 3
    for remote, expected in zip(on_dask, here):
        pd.testing.assert_frame_equal(remote, expected)
    assert "n:Int64|b:boolean|s:str|t:datetime64[us, UTC]|empty:object|x:float64" == here[0]["dtypes"][0]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.mark.parametrize("url, message", [
    ("spark://127.0.0.1:7077", "is not one of 'local'"),
    ("dask://127.0.0.1", "is not one of 'local'"),
    ("dask+local://?workers=0", "workers must be a whole number >= 1"),
    ("dask+local://?threads=2", "is not one of 'local'"),
    ("dask://127.0.0.1:{port}?timeout=1", "no Dask scheduler answered at tcp://127.0.0.1:{port} within 1 s"),
])
def test_a_bad_engine_url_is_refused_at_start(tmp_path, url, message):
    port = _free_port()
    with pytest.raises(ValueError, match="TRAINING_ENGINE_URL .*" + message.format(port=port).replace("?", r"\?")):
        create_app(app_config(tmp_path / "data", TRAINING_ENGINE_URL=url.format(port=port)))
    assert open_training_engine("local") is None and open_training_engine("") is None


def test_workers_without_this_projects_code_are_refused_at_start(tmp_path):
    """A scheduler whose one worker runs outside the checkout (cannot import etl.runner)."""
    import subprocess
    import sys

    with LocalCluster(n_workers=0, processes=True, **LOOPBACK_CLUSTER) as bare, Client(bare) as client:
        worker = subprocess.Popen([sys.executable, "-m", "distributed.cli.dask_worker", bare.scheduler_address,
                                   "--nthreads", "1", "--no-nanny", "--no-dashboard", "--host", "127.0.0.1"],
                                  cwd=tmp_path, env={"PATH": os.environ.get("PATH", ""), "PYTHONPATH": ""},
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            client.wait_for_workers(1, timeout=30)
            url = bare.scheduler_address.replace("tcp://", "dask://")
            with pytest.raises(ValueError, match="the Dask workers cannot run this project's code"):
                create_app(app_config(tmp_path / "data", TRAINING_ENGINE_URL=url))
        finally:
            worker.terminate()
            worker.wait(30)


def test_a_local_cluster_starts_and_stops_with_the_service(tmp_path):
    app = create_app(app_config(tmp_path / "data", TRAINING_ENGINE_URL="dask+local://?workers=1"))
    try:
        engine = app.extensions["feature_service"].training_engine
        pids = list(engine.client.run(os.getpid).values())
        assert len(pids) == 1 and pids[0] != os.getpid()
    finally:
        close_app(app)
    deadline = time.monotonic() + 10
    while _alive(pids[0]) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(pids[0])


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True
