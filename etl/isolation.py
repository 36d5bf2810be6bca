"""Run ETL code in warm worker processes, with a time limit, a memory limit and no network.

`IsolatedEtlPool` keeps `workers` processes started from multiprocessing's forkserver
(a clean interpreter that has imported pandas once; never a fork of the threaded
server), so a new or replacement worker is ready in tens of milliseconds. Each worker,
before it runs any ETL code:

- caps its address space with ``RLIMIT_AS`` (soft and hard), so an ETL that allocates
  past `memory_mb` gets a MemoryError, reported as 422 like any other exception;
- blocks networking for Python code (`block_network`): `socket.socket`,
  `socket.create_connection`, `socket.getaddrinfo` and friends raise PermissionError.
  This is a Python-level block, not a kernel sandbox: ctypes, ``_socket`` internals
  or a subprocess get around it. Where ETL authors are not trusted, also run the
  service (or the workers) in a network namespace without interfaces, a container
  with ``--network none``, or under a seccomp filter that denies ``socket(2)``;
- keeps only an allow-list of its environment (`scrub_environment`: paths, locale, time
  zone, temporary folders, thread counts), so ETL code and the processes it starts see no
  credentials the server's environment holds. The kernel's copy of the environment a
  process started with (``/proc/self/environ``) is the fork server's: started after the
  service removed its own secrets (`app.settings.remove_secrets_from_environ`), it has
  none of them, but it keeps any other variable the server was started with;
- ignores SIGINT (the server handles shutdown) and exits when the server does.

A worker keeps its own LRU of loaded classes, keyed by (key, sha256) and checked
against the hash itself, and runs the same `EtlRunner` code as the in-process mode,
so results, fitted state and errors (message, exception, line) are identical. Frames
travel as pickle protocol 5 (measured faster than Arrow IPC for both one-row and
100,000-row frames). The parent waits at most `timeout` seconds for a reply; past it,
the worker is killed (SIGKILL) and replaced, and the call fails with 422
``etl_timeout``. A worker that dies during a call (segfault, ``os._exit``, a kill, the
OOM killer) fails that call with 422 ``etl_worker_died`` and is replaced. Workers
wait in a stack of idle ones, so any number of threads may call at once; a call that
finds no idle worker waits for one (at most `timeout` + 5 s, then 503).

Isolation is per process, not per call: ETLs that share a worker share its globals.
"""
from __future__ import annotations

import errno
import multiprocessing
import os
import pickle
import resource
import signal
import socket
import threading
import time
import traceback
from multiprocessing.connection import Connection, wait
from typing import Any, Callable, NoReturn

import common.errors
from common.errors import BackendUnavailable, EtlFailed, FeatureStoreError
from etl.output import collected, log_output
from etl.runner import EtlRunner, timeout_error, verify_sha256

MODES = ("inprocess", "process")
_PROTOCOL = 5
_START_SECONDS = 60.0  # a worker must say it is ready within this (an import, not ETL code)
_REPLACEMENT_SECONDS = 5.0  # allowance, when waiting for a worker, for a replacement to start
_HEADROOM = 128 * 1024 * 1024  # address space a worker needs beyond its start-up size to run anything


class IsolatedEtlPool:
    """`workers` warm ETL worker processes, each limited to `memory_mb` MiB of address space.

    `call` is thread-safe. `close` kills every worker; a pool is also a context manager.
    """

    def __init__(self, workers: int = 2, memory_mb: int | None = 2048, cache_size: int = 256,
                 start_method: str = "forkserver"):
        if workers < 1:
            raise ValueError("workers must be >= 1")
        if memory_mb is not None and memory_mb < 64:
            raise ValueError("memory_mb must be None or at least 64")
        self.workers = workers
        self.memory_mb = memory_mb
        self.cache_size = cache_size
        self._context = multiprocessing.get_context(start_method)
        if start_method == "forkserver":
            # Import pandas and the runner once in the fork server, not in every worker. Ignored
            # if the process already started a fork server without it (workers then import them).
            self._context.set_forkserver_preload(["etl.isolation"])
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)  # an idle worker, a vacancy or closing
        # A stack: under light load one worker stays hot (scheduled, caches warm).
        self._idle: list[_Worker] = []
        self._vacant = 0  # slots whose worker died and could not be replaced yet
        self._live: set[_Worker] = set()
        self._closed = False
        self._started: list[int] = []
        self._replaced = 0
        try:
            started = [self._start() for _ in range(workers)]
            for worker in started:
                worker.wait_ready()
                self._release(worker)
        except BaseException:
            self.close()
            raise

    def call(self, op: str, etl_key: str, code: str, code_sha256: str, *args: Any,
             timeout: float | None = None) -> Any:
        """Run ``EtlRunner.<op>(etl_key, code, code_sha256, *args)`` in a worker; its errors are raised here.

        `op` is one of ``load``, ``check``, ``declarations``, ``batching``, ``fit``, ``run``.
        """
        if op not in _OPS:
            raise ValueError(f"unknown ETL operation {op!r}; known: {', '.join(sorted(_OPS))}")
        request = pickle.dumps((op, etl_key, code, code_sha256, args), protocol=_PROTOCOL)
        for _ in range(self.workers + 1):
            worker = self._acquire(timeout)
            try:
                reply = worker.request(request, timeout)
                break
            except _NotDelivered:  # died while idle, unnoticed: the ETL never ran, so try another
                self._replace(worker)
                continue
            except BaseException as error:
                self._fail(worker, error, etl_key, timeout)
        else:
            raise BackendUnavailable("etl runner", "no ETL worker could take the call")
        self._release(worker)
        try:
            status, value, output = pickle.loads(reply)
        except Exception as error:  # noqa: BLE001 - e.g. a result holding a class only the worker has
            raise EtlFailed(f"ETL {etl_key}: its result could not be read back from the worker: "
                            f"{type(error).__name__}: {error}", {"etl_key": etl_key}) from error
        for record in output:  # what the ETL printed in the worker, capped there
            log_output(*record)
        if status == "ok":
            return value
        raise _rebuild_error(*value)

    def _fail(self, worker: _Worker, error: BaseException, etl_key: str, timeout: float | None) -> NoReturn:
        """Replace `worker` (timed out, died, or interrupted mid-call: its state is unknown) and raise."""
        self._replace(worker)
        if isinstance(error, _Timeout):
            raise timeout_error(etl_key, timeout) from None
        if isinstance(error, _Died):
            if self._closed:
                raise BackendUnavailable("etl runner", "the ETL worker pool was closed") from None
            raise EtlFailed(f"ETL {etl_key}: the ETL worker died ({error.how}); a new worker was started",
                            {"etl_key": etl_key, "exit_code": error.exit_code}, code="etl_worker_died") from None
        raise error

    def pids(self) -> list[int]:
        """Process ids of the live workers."""
        with self._lock:
            return sorted(worker.pid for worker in self._live)

    def info(self) -> dict[str, Any]:
        """Workers, memory limit, every pid ever started and how many workers were replaced."""
        with self._lock:
            return {"workers": self.workers, "memory_mb": self.memory_mb, "live": len(self._live),
                    "started_pids": list(self._started), "replaced": self._replaced, "closed": self._closed}

    def close(self) -> None:
        """Kill every worker (a call in flight fails with 503); safe to call twice."""
        with self._changed:
            self._closed = True
            workers, self._live, self._idle = list(self._live), set(), []
            self._changed.notify_all()  # callers waiting for a worker fail with 503
        for worker in workers:
            worker.kill()

    def __enter__(self) -> IsolatedEtlPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- workers ---------------------------------------------------------------------------------

    def _start(self) -> _Worker:
        worker = _Worker(self._context, self.memory_mb, self.cache_size)
        with self._lock:
            closed = self._closed
            if not closed:
                self._live.add(worker)
                self._started.append(worker.pid)
        if closed:
            worker.kill()
            raise BackendUnavailable("etl runner", "the ETL worker pool was closed")
        return worker

    def _acquire(self, timeout: float | None) -> _Worker:
        """An idle worker, else a new one in a vacant slot, else wait, then 503.

        Any busy worker is free or replaced within `timeout`, so the wait is bounded by that
        plus the start of a replacement; it does not count against the ETL's own limit.
        """
        wait_at_most = None if timeout is None else timeout + _REPLACEMENT_SECONDS
        deadline = None if wait_at_most is None else time.monotonic() + wait_at_most
        dead: list[_Worker] = []
        try:
            with self._changed:
                while True:
                    if self._closed:
                        raise BackendUnavailable("etl runner", "the ETL worker pool was closed")
                    while self._idle:
                        worker = self._idle.pop()
                        if worker.alive():
                            return worker
                        dead.append(worker)  # died while idle: it never ran this call
                        self._live.discard(worker)
                        self._vacant += 1
                        self._replaced += 1
                    if self._vacant:
                        self._vacant -= 1
                        break
                    remaining = None if deadline is None else deadline - time.monotonic()
                    if remaining is not None and remaining <= 0:
                        raise BackendUnavailable("etl runner", f"no ETL worker became free within {wait_at_most:g} s "
                                                 f"({self.workers} workers)")
                    self._changed.wait(remaining)
        finally:
            for worker in dead:
                worker.kill()
        try:
            return self._start()
        except BaseException:
            self._vacate()
            raise

    def _release(self, worker: _Worker) -> None:
        with self._changed:
            if not self._closed:
                self._idle.append(worker)
                self._changed.notify()
                return
        self._forget(worker)

    def _replace(self, worker: _Worker) -> None:
        """Kill `worker` and put a fresh one in its place (or leave the slot vacant for the next caller)."""
        self._forget(worker)
        if self._closed:
            return
        with self._lock:
            self._replaced += 1
        try:
            fresh = self._start()
        except Exception:  # noqa: BLE001 - the next caller tries again
            self._vacate()
        else:
            self._release(fresh)

    def _vacate(self) -> None:
        with self._changed:
            self._vacant += 1
            self._changed.notify()

    def _forget(self, worker: _Worker) -> None:
        with self._lock:
            self._live.discard(worker)
        worker.kill()


class _Timeout(Exception):
    pass


class _NotDelivered(Exception):
    pass


class _Died(Exception):
    def __init__(self, how: str, exit_code: int | None):
        super().__init__(how)
        self.how, self.exit_code = how, exit_code


class _Worker:
    """One worker process and the parent's end of its pipe."""

    def __init__(self, context: Any, memory_mb: int | None, cache_size: int):
        self.conn, child_conn = context.Pipe(duplex=True)
        memory_bytes = None if memory_mb is None else memory_mb * 1024 * 1024
        self.process = context.Process(target=_serve, args=(child_conn, memory_bytes, cache_size),
                                       name="etl-worker", daemon=True)
        self.process.start()
        child_conn.close()
        self.pid: int = self.process.pid
        self._ready = False

    def wait_ready(self) -> None:
        """Read the worker's hello (sent once its limits are in place)."""
        if self._ready:
            return
        try:
            message = self._receive(_START_SECONDS)
        except (_Timeout, _Died) as error:
            raise BackendUnavailable("etl runner", f"an ETL worker failed to start: {error}") from None
        status, value = pickle.loads(message)
        if status != "ready":
            raise BackendUnavailable("etl runner", f"an ETL worker failed to start: {value}")
        self._ready = True

    def request(self, request: bytes, timeout: float | None) -> bytes:
        self.wait_ready()
        try:
            self.conn.send_bytes(request)
        except OSError:
            raise _NotDelivered() from None
        return self._receive(timeout)

    def _receive(self, timeout: float | None) -> bytes:
        # The process sentinel too: a grandchild holding the pipe open must not hide a death.
        if not wait([self.conn, self.process.sentinel], timeout):
            raise _Timeout(f"no reply within {timeout} s")
        try:
            return self.conn.recv_bytes()
        except (EOFError, OSError):
            raise self._died() from None

    def _died(self) -> _Died:
        self.process.join(1.0)
        code = self.process.exitcode
        if code is None:
            return _Died("it closed its pipe", None)
        if code < 0:
            try:
                return _Died(f"killed by {signal.Signals(-code).name}", code)
            except ValueError:
                return _Died(f"killed by signal {-code}", code)
        return _Died(f"exit code {code}", code)

    def alive(self) -> bool:
        return self.process.is_alive()

    def kill(self) -> None:
        try:
            self.process.kill()
            self.process.join(5.0)
            self.conn.close()
            self.process.close()
        except (ValueError, OSError):  # already closed
            pass


class RemoteTraceback(Exception):
    """The traceback of an ETL error in a worker, shown as the cause of the error raised here."""

    def __str__(self) -> str:
        return self.args[0]


def _rebuild_error(name: str, message: str, details: dict[str, Any], code: str,
                   remote_traceback: str | None) -> FeatureStoreError:
    cls = getattr(common.errors, name, None)
    if not (isinstance(cls, type) and issubclass(cls, FeatureStoreError)):
        cls = EtlFailed
    error = cls.__new__(cls)
    FeatureStoreError.__init__(error, message, details, code)
    if remote_traceback:
        error.__cause__ = RemoteTraceback(remote_traceback)
    return error


# -- inside a worker -----------------------------------------------------------------------------

def _load(runner: EtlRunner, key: str, code: str, sha: str) -> None:
    runner.load(key, code, sha)  # the class stays in the worker's cache


_OPS: dict[str, Callable[..., Any]] = {
    "load": _load,
    "check": lambda runner, key, code, sha: runner.check(code, key),
    "declarations": EtlRunner.declarations,
    "batching": EtlRunner.batching,
    "fit": EtlRunner.fit,
    "run": EtlRunner.run,
}


def block_network() -> None:
    """Make Python-level networking raise PermissionError in this process (not a kernel sandbox)."""
    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise PermissionError(errno.EACCES, "network access is disabled in ETL workers")

    class NoSocket(socket.socket):  # a class, so modules that subclass socket.socket still import
        def __init__(self, *args: Any, **kwargs: Any):
            refuse()

    socket.socket = NoSocket  # type: ignore[misc]
    for name in ("create_connection", "create_server", "getaddrinfo", "gethostbyname", "gethostbyname_ex",
                 "gethostbyaddr", "socketpair", "fromfd"):
        setattr(socket, name, refuse)


_KEPT_ENVIRONMENT = frozenset({"PATH", "HOME", "USER", "LOGNAME", "LANG", "LANGUAGE", "TZ", "TMPDIR", "TEMP", "TMP",
                                "PYTHONHASHSEED", "PYTHONIOENCODING", "PYTHONUTF8", "PYTHONDONTWRITEBYTECODE"})
_KEPT_PREFIXES = ("LC_", "OMP_", "MKL_", "OPENBLAS_", "NUMEXPR_")


def scrub_environment() -> None:
    """Delete every environment variable of this process but `_KEPT_ENVIRONMENT` and `_KEPT_PREFIXES`."""
    for name in list(os.environ):
        if name not in _KEPT_ENVIRONMENT and not name.startswith(_KEPT_PREFIXES):
            del os.environ[name]


def _serve(conn: Connection, memory_bytes: int | None, cache_size: int) -> None:
    """A worker's life: set the limits, say ready, then answer requests until the pipe closes."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _exit_with_parent()
    try:
        scrub_environment()
        if memory_bytes is not None:
            in_use = _address_space()
            if in_use is not None and in_use + _HEADROOM > memory_bytes:
                raise MemoryError(f"memory_mb={memory_bytes >> 20} leaves no room: a worker already maps "
                                  f"{in_use >> 20} MiB before running any ETL")
            resource.setrlimit(resource.RLIMIT_AS, (memory_bytes, memory_bytes))
        block_network()
        runner = EtlRunner(cache_size=cache_size)
    except BaseException as exc:  # noqa: BLE001 - reported to the parent
        conn.send_bytes(pickle.dumps(("failed", f"{type(exc).__name__}: {exc}")))
        return
    conn.send_bytes(pickle.dumps(("ready", os.getpid())))
    while True:
        try:
            request = conn.recv_bytes()
        except (EOFError, OSError):
            return
        conn.send_bytes(_answer(runner, request))


def _answer(runner: EtlRunner, request: bytes) -> bytes:
    """The pickled reply: (status, value, what the ETL printed: records the service logs)."""
    key, output = None, []
    try:
        op, key, code, sha, args = pickle.loads(request)
        verify_sha256(key, code, sha)  # the worker trusts no one's hash check but its own
        with collected() as output:
            value = _OPS[op](runner, key, code, sha, *args)
        return pickle.dumps(("ok", value, output), protocol=_PROTOCOL)
    except FeatureStoreError as error:
        cause = error.__cause__
        remote = "".join(traceback.format_exception(cause)) if cause is not None else None
        reply = (type(error).__name__, error.message, error.details, error.code, remote)
    except BaseException as exc:  # noqa: BLE001 - e.g. MemoryError pickling the result
        reply = ("EtlFailed", f"{type(exc).__name__}: {exc}",
                 {"etl_key": key, "exception": type(exc).__name__, "line": None}, "etl_failed",
                 "".join(traceback.format_exception(exc)))
    return pickle.dumps(("error", reply, output), protocol=_PROTOCOL)


def _address_space() -> int | None:
    """Bytes of address space this process maps now (VmSize), or None where /proc is missing."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmSize:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def _exit_with_parent() -> None:
    """End this worker when the server ends, even in the middle of a runaway ETL."""
    parent = multiprocessing.parent_process()
    if parent is None:
        return

    def watch() -> None:
        wait([parent.sentinel])
        os._exit(0)

    threading.Thread(target=watch, name="etl-worker-watchdog", daemon=True).start()


def open_etl_runner(mode: str = "inprocess", timeout: float | None = 30.0, workers: int = 2,
                    memory_mb: int | None = 2048, threads: int = 8, cache_size: int = 256, inline: bool = True
                    ) -> EtlRunner:
    """An `EtlRunner` for `mode` (``inprocess`` or ``process``); `timeout` None or <= 0 means no limit."""
    if mode not in MODES:
        raise ValueError(f"unknown ETL isolation mode {mode!r}; known: {', '.join(MODES)}")
    limit = timeout if timeout is not None and timeout > 0 else None
    pool = IsolatedEtlPool(workers, memory_mb, cache_size) if mode == "process" else None
    return EtlRunner(cache_size=cache_size, timeout=limit, isolation=pool, threads=threads, inline=inline)
