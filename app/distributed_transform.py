"""A batchable ETL's training ``transform`` on a Dask cluster, for training sets past one machine.

`TRAINING_ENGINE_URL` chooses where the per-batch ``transform`` of a batched training set
(app/training_stream.py) runs:

- ``local`` (or empty, the default): in this process, through the service's ETL runner, as before;
- ``dask://host:port``: on an existing Dask scheduler's workers (``?timeout=`` seconds to connect,
  default 10). The workers must run this project's code (the same image or checkout: they import
  ``etl.runner``) and reach the service over the network only as Dask clients do;
- ``dask+local://?workers=N``: a Dask LocalCluster of N worker processes (one thread each) on
  loopback, started with the service and closed with it (for trying the path on one machine).

Per job (one training set) the ETL's code, sha256, fitted state and as-of time are scattered to every
worker once; each worker verifies the sha256 and loads the class with its own `EtlRunner` (cached by
sha256, with the service's ETL time limit per call). Each input batch travels as an Arrow table with
the dtypes the in-process path hands the ETL (`kinds_from_dtypes`), rebuilt on the worker by the same
`batch_frame`, so the ETL sees the same frame. At most two batches per worker are in flight; the
features come back in the batches' order and are checked and streamed as the in-process ones are.
A batch whose ETL fails raises the same error (class, message, details) as in process; a cluster that
fails (a worker lost, the scheduler gone) is ``backend_unavailable`` (503).

At start every worker imports what a batch needs; an unknown URL, a scheduler that does not answer, or
workers that cannot import this project's code stop the service with a ValueError saying so.

Only ``transform`` of batchable ETLs goes to the cluster: ``fit``, frame-wide ETLs and every other
ETL call stay in this process. ETL_ISOLATION does not apply on the workers: there the ETL runs in the
Dask worker process itself.
"""
from __future__ import annotations

import collections
import contextlib
import os
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Iterator
from urllib.parse import parse_qs, urlsplit

import pandas as pd
import pyarrow as pa

from app.training_stream import batch_frame, kinds_from_dtypes
from checks.consistency import dtype_names
from common.errors import BackendUnavailable, FeatureStoreError

if TYPE_CHECKING:
    from app.service import FeatureService
    from app.training_stream import BatchedRun

ENGINE_URL_FORMS = "'local' (in this process), 'dask://host:port' or 'dask+local://?workers=N'"
IN_FLIGHT_PER_WORKER = 2
CONNECT_TIMEOUT_SECONDS = 10.0
# A LocalCluster on free loopback ports only: no dashboard, and the scheduler's HTTP routes (health,
# metrics), which it always serves, not on port 8787 of every interface.
LOOPBACK_CLUSTER = {"host": "127.0.0.1", "scheduler_port": 0, "dashboard_address": None,
                    "scheduler_kwargs": {"dashboard": False, "dashboard_address": "127.0.0.1:0"}}


@dataclass(frozen=True)
class TransformJob:
    """What every batch of one training job shares, sent to each worker once."""

    etl_key: str
    code: str
    code_sha256: str
    state: dict[str, Any]
    as_of: pd.Timestamp
    timeout: float | None


class DaskEngine:
    """A Dask client (and the LocalCluster it started, if any) that runs batches of ``transform``."""

    def __init__(self, client: Any, cluster: Any = None, timeout: float | None = None):
        self.client = client
        self.cluster = cluster
        self.timeout = timeout

    @property
    def workers(self) -> int:
        """The cluster's workers now; BackendUnavailable when it has none (a batch would wait for one)."""
        with _cluster_errors():
            count = len(self.client.scheduler_info(n_workers=-1).get("workers", {}))
        if not count:
            raise BackendUnavailable("training engine", "the Dask scheduler has no workers to run training batches on")
        return count

    def transformed(self, run: BatchedRun, inputs: Iterator[pd.DataFrame]
                    ) -> Iterator[tuple[pd.DataFrame, pd.DataFrame]]:
        """(input frame, features) per input frame, in order, the features computed on the workers."""
        etl, limit = run.etl, IN_FLIGHT_PER_WORKER * self.workers
        with _cluster_errors():
            job = self.client.scatter(TransformJob(etl.etl_id, etl.code, etl.code_sha256, dict(run.state),
                                                   run.as_of, self.timeout), broadcast=True, hash=False)
        pending: collections.deque[tuple[pd.DataFrame, Any]] = collections.deque()
        try:
            for frame in inputs:
                pending.append((frame, self._submit(job, frame)))
                if len(pending) >= limit:
                    yield self._result(*pending.popleft())
            while pending:
                yield self._result(*pending.popleft())
        finally:
            with contextlib.suppress(Exception):  # a closed client or a gone scheduler has nothing left to cancel
                self.client.cancel([job, *(future for _, future in pending)])

    def _submit(self, job: Any, frame: pd.DataFrame) -> Any:
        """One batch sent to the cluster as Arrow, with the dtypes the ETL must see."""
        data, kinds = arrow_batch(frame)
        with _cluster_errors():
            return self.client.submit(transform_batch, job, self.client.scatter(data, hash=False), kinds,
                                      frame.index.start, pure=False)

    @staticmethod
    def _result(frame: pd.DataFrame, future: Any) -> tuple[pd.DataFrame, pd.DataFrame]:
        with _cluster_errors():
            outcome = future.result()
        if isinstance(outcome, FeatureStoreError):
            raise outcome from None
        return frame, outcome

    def close(self) -> None:
        """Close the client, and the LocalCluster if this engine started it."""
        self.client.close()
        if self.cluster is not None:
            self.cluster.close()


@contextlib.contextmanager
def _cluster_errors() -> Iterator[None]:
    """The cluster's own failures (a lost worker, the scheduler gone, whatever their class) as 503."""
    try:
        yield
    except Exception as error:  # noqa: BLE001
        raise BackendUnavailable("training engine", f"the Dask cluster failed to run a training batch: "
                                 f"{type(error).__name__}: {error}") from None


def transformed(service: FeatureService, run: BatchedRun, inputs: Iterator[pd.DataFrame]
                ) -> Iterator[tuple[pd.DataFrame, pd.DataFrame]]:
    """(input frame, the ETL's features of it) per input frame, in order: on the service's training engine
    when one is configured, else in this process (`FeatureService._run_etl`)."""
    if service.training_engine is not None:
        yield from service.training_engine.transformed(run, inputs)
        return
    etl = run.etl
    for frame in inputs:
        yield frame, service._run_etl(etl.etl_id, etl.code, etl.code_sha256, frame, run.state, run.as_of)


def open_training_engine(url: str | None, etl_timeout: float | None = None) -> DaskEngine | None:
    """The engine `url` names (None: in this process); ValueError naming the accepted forms for any other
    URL, or when the scheduler cannot be reached."""
    text = (url or "").strip()
    if text in ("", "local"):
        return None
    parts = urlsplit(text)
    try:
        query = {name: values[-1] for name, values in parse_qs(parts.query, strict_parsing=bool(parts.query)).items()}
    except ValueError:
        raise ValueError(f"TRAINING_ENGINE_URL {text!r}: cannot read its query; expected {ENGINE_URL_FORMS}") from None
    if parts.scheme == "dask+local" and not parts.netloc and parts.path in ("", "/") and set(query) <= {"workers"}:
        return _local_cluster(text, _positive_int(text, query.get("workers", "2")), etl_timeout)
    if parts.scheme == "dask" and parts.hostname and _port(parts) and not parts.path.strip("/") \
            and set(query) <= {"timeout"}:
        seconds = _positive_float(text, query.get("timeout", str(CONNECT_TIMEOUT_SECONDS)))
        return _connect(text, f"tcp://{parts.netloc}", seconds, etl_timeout)
    raise ValueError(f"TRAINING_ENGINE_URL {text!r} is not one of {ENGINE_URL_FORMS}")


def _port(parts: Any) -> int | None:
    try:
        return parts.port
    except ValueError:
        return None


def _positive_int(url: str, text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise ValueError(f"TRAINING_ENGINE_URL {url!r}: workers must be a whole number >= 1, not {text!r}")
    return int(text)


def _positive_float(url: str, text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not value > 0:
        raise ValueError(f"TRAINING_ENGINE_URL {url!r}: timeout must be a number of seconds > 0, not {text!r}")
    return value


def _connect(url: str, address: str, seconds: float, etl_timeout: float | None) -> DaskEngine:
    from distributed import Client

    try:
        client = Client(address, timeout=seconds, set_as_default=False)
    except (OSError, TimeoutError) as error:
        raise ValueError(f"TRAINING_ENGINE_URL {url!r}: no Dask scheduler answered at {address} within "
                         f"{seconds:g} s ({type(error).__name__}: {error})") from None
    return _ready(url, DaskEngine(client, timeout=etl_timeout))


def _ready(url: str, engine: DaskEngine) -> DaskEngine:
    """`engine` once every worker has imported what a batch needs (so the first training set does not wait
    for it); ValueError, the engine closed, when a worker cannot (it does not run this project's code)."""
    try:
        engine.client.run(_worker_ready)
    except Exception as error:  # noqa: BLE001 - whatever the worker raised
        engine.close()
        raise ValueError(f"TRAINING_ENGINE_URL {url!r}: the Dask workers cannot run this project's code "
                         f"({type(error).__name__}: {error}); start them from the service's image or checkout"
                         ) from None
    return engine


def _local_cluster(url: str, workers: int, etl_timeout: float | None) -> DaskEngine:
    from distributed import Client, LocalCluster

    cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, **LOOPBACK_CLUSTER)
    try:
        client = Client(cluster, set_as_default=False)
    except BaseException:
        cluster.close()
        raise
    return _ready(url, DaskEngine(client, cluster, etl_timeout))


# -- on the workers ------------------------------------------------------------------------------

_runners: dict[float | None, Any] = {}
_runners_lock = threading.Lock()


def _worker_ready() -> int:
    """On a worker: import what `transform_batch` needs; the worker's process id."""
    import etl.runner  # noqa: F401

    return os.getpid()


def _worker_runner(timeout: float | None) -> Any:
    """This worker process's ETL runner for `timeout` (its loaded classes are cached by sha256)."""
    from etl.runner import EtlRunner

    with _runners_lock:
        runner = _runners.get(timeout)
        if runner is None:
            runner = _runners[timeout] = EtlRunner(timeout=timeout, threads=1)
        return runner


def arrow_batch(frame: pd.DataFrame) -> tuple[pa.Table | pd.DataFrame, dict[str, str]]:
    """`frame` as an Arrow table and the `kinds` that `batch_frame` turns it back into `frame` with (its
    dtypes); the frame itself when Arrow cannot say its dtypes (then it travels pickled)."""
    # without pandas' metadata: rebuilt by the kinds alone, as a batch from the warehouse is
    table = pa.Table.from_pandas(frame, preserve_index=False).replace_schema_metadata(None)
    kinds = kinds_from_dtypes(table.schema, dtype_names(frame))
    if kinds is None or any(kind == "object" and table.column(name).null_count < table.num_rows
                            for name, kind in kinds.items()):  # batch_frame keeps only empty text as object
        return frame, {}
    return table, kinds


def transform_batch(job: TransformJob, data: pa.Table | pd.DataFrame, kinds: dict[str, str], start: int
                    ) -> pd.DataFrame | FeatureStoreError:
    """On a worker: the ETL's features of the batch of rows `start`… (`data` and `kinds` from
    `arrow_batch`), or the error it raised (returned, so it reaches the service as it is, without the
    ETL's own exception classes behind it)."""
    from etl.runner import named_features

    frame = data if isinstance(data, pd.DataFrame) else batch_frame(data, kinds, start)
    try:
        features = _worker_runner(job.timeout).run(job.etl_key, job.code, job.code_sha256, frame, job.state,
                                                   job.as_of)
        return named_features(features)
    except FeatureStoreError as error:
        error.__cause__ = error.__context__ = error.__traceback__ = None
        return error
