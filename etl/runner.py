"""Load ETL code stored in the catalog and run it on a DataFrame, with a time limit.

The code is compiled as a fresh module named ``<etl KEY>`` (so tracebacks name
the ETL), but only after its sha256 matches the one recorded with it. Loaded
classes are kept in a bounded, thread-safe LRU keyed by (key, sha256). Every
failure is a `FeatureStoreError`: unloadable code is `InvalidEtl` (400), an ETL
that raises or returns something other than a DataFrame is `EtlFailed` (422),
an ETL that runs past the time limit is `EtlFailed` with code ``etl_timeout``
(422), and code that no longer matches its recorded hash is ``etl_tampered`` (500).

Two modes behind one interface. In process (the default, fastest) the ETL runs in
the service process; with a `timeout` each call runs on one of a few dedicated
threads while the caller waits at most `timeout` seconds. A Python thread cannot
be killed: an ETL that never returns keeps its thread (and its CPU share) until it
ends. The damage is bounded: runaway calls occupy only this runner's `threads`, never
the server's, and once every one of them is stuck new ETL calls fail at once with
``backend_unavailable`` (503) instead of queueing. Without a timeout the ETL runs
directly on the caller's thread (the hop to an ETL thread costs about 50-80 µs at
the median on the one-row example, `python -m bench.etl_isolation`, and more under
concurrent requests: two waits for the GIL). So does a `run` of at most `INLINE_MAX_ROWS`
rows of an ETL whose last small runs (at least `INLINE_AFTER_RUNS`, on the threads) each
took under `INLINE_FRACTION` of the limit, a served entity's: there the limit is kept by
etl/watchdog.py, which interrupts the ETL's Python code at its deadline. An inline run that
reaches the limit sends that ETL back to the threads for good.

Isolated, with ``isolation=IsolatedEtlPool(...)`` (etl/isolation.py), the
same calls run in warm worker processes that are killed and replaced past the time
limit, with a memory limit and no network.
"""
from __future__ import annotations

import functools
import hashlib
import itertools
import linecache
import queue
import sys
import threading
import time
import types
from collections import OrderedDict
from typing import TYPE_CHECKING, Any, Callable, TypeVar

import pandas as pd

from common.errors import BackendUnavailable, EtlFailed, EtlTampered, FeatureStoreError, InvalidEtl
from common.jsonsafe import json_safe
from etl.contract import BaseEtl, install_compat_module
from etl.output import captured
from etl.watchdog import WATCHDOG, EtlInterrupted

if TYPE_CHECKING:
    from etl.isolation import IsolatedEtlPool

T = TypeVar("T")


class EtlRunner:
    """Compiles, caches and runs ETL classes; at most `cache_size` are kept (0 disables the cache).

    `timeout` (seconds, None for no limit) bounds every call that runs ETL code: loading
    (module code runs), ``declarations``, ``fit`` and ``run``. Without `isolation` the calls
    run in this process on at most `threads` dedicated threads; with an `IsolatedEtlPool`
    they run in its worker processes and this runner only checks hashes and forwards.
    The runner owns the pool: `close` stops its workers.
    """

    def __init__(self, cache_size: int = 256, timeout: float | None = None,
                 isolation: IsolatedEtlPool | None = None, threads: int = 8, inline: bool = True):
        if cache_size < 0:
            raise ValueError("cache_size must be >= 0")
        if timeout is not None and not timeout > 0:
            raise ValueError("timeout must be None or > 0 seconds")
        if threads < 1:
            raise ValueError("threads must be >= 1")
        self.cache_size = cache_size
        self.timeout = timeout
        self.isolation = isolation
        self._cache: OrderedDict[tuple[str, str], type] = OrderedDict()
        self._lock = threading.Lock()
        self._hits = 0
        self._misses = 0
        self._threads = _EtlThreads(threads) if timeout is not None and isolation is None else None
        self._inline = _InlineRecord() if inline and self._threads is not None else None

    @property
    def mode(self) -> str:
        """``"process"`` when ETLs run in worker processes, else ``"inprocess"``."""
        return "inprocess" if self.isolation is None else "process"

    def load(self, etl_key: str, code: str, code_sha256: str) -> type | None:
        """The ``Etl`` class defined by `code`, after checking `code` against `code_sha256`.

        Isolated, the class lives in a worker: it is loaded there (errors are raised here
        all the same) and None is returned.
        """
        verify_sha256(etl_key, code, code_sha256)
        if self.isolation is not None:
            return self.isolation.call("load", etl_key, code, code_sha256, timeout=self.timeout)
        return self._limited(etl_key, lambda: self._load(etl_key, code, code_sha256))

    def fit(self, etl_key: str, code: str, code_sha256: str, frame: pd.DataFrame,
            as_of: pd.Timestamp | None = None) -> dict[str, Any]:
        """``Etl(frame).fit(frame)`` on a copy of `frame` with ``self.as_of`` set: the fitted state, made
        JSON-safe ({} without fit)."""
        verify_sha256(etl_key, code, code_sha256)
        if self.isolation is not None:
            return self.isolation.call("fit", etl_key, code, code_sha256, frame, as_of, timeout=self.timeout)
        return self._limited(etl_key, lambda: self._fit(etl_key, code, code_sha256, frame, as_of))

    def run(self, etl_key: str, code: str, code_sha256: str, frame: pd.DataFrame,
            state: dict[str, Any] | None = None, as_of: pd.Timestamp | None = None) -> pd.DataFrame:
        """``Etl(frame).extract()`` on a copy of `frame`, with ``self.state`` and ``self.as_of`` set (the time
        the features are computed as of: the training run's time, or the request's); the result must be a
        DataFrame."""
        verify_sha256(etl_key, code, code_sha256)
        if self.isolation is not None:
            return self.isolation.call("run", etl_key, code, code_sha256, frame, state, as_of, timeout=self.timeout)
        call = lambda: self._run(etl_key, code, code_sha256, frame, state, as_of)  # noqa: E731
        if self._inline is not None and len(frame) <= INLINE_MAX_ROWS:
            return self._small_run(etl_key, code_sha256, call)
        return self._limited(etl_key, call)

    def run_each(self, etl_key: str, code: str, code_sha256: str, frames: list[pd.DataFrame],
                 state: dict[str, Any] | None = None, as_of: pd.Timestamp | None = None
                 ) -> list[pd.DataFrame | FeatureStoreError]:
        """`run` on each frame in turn: its result, or the FeatureStoreError `run` would raise. In process,
        the frames go to one ETL thread in one hand-off (not one each: under load, waking a thread per
        one-row frame costs as much as the ETL), each still under the time limit, counted from its own start."""
        verify_sha256(etl_key, code, code_sha256)
        if self.isolation is not None or self._threads is None:
            return [_outcome(lambda frame=frame: self.run(etl_key, code, code_sha256, frame, state, as_of))
                    for frame in frames]
        calls = [functools.partial(captured, etl_key, functools.partial(
            self._run, etl_key, code, code_sha256, frame, state, as_of)) for frame in frames]
        return self._threads.call_each(etl_key, calls, self.timeout)

    def declarations(self, etl_key: str, code: str, code_sha256: str) -> tuple[dict[str, Any], str]:
        """The ETL class's `expectations` and `serving_violations` policy, validated."""
        verify_sha256(etl_key, code, code_sha256)
        if self.isolation is not None:
            return self.isolation.call("declarations", etl_key, code, code_sha256, timeout=self.timeout)
        return self._limited(etl_key, lambda: self._declarations(etl_key, code, code_sha256))

    def batching(self, etl_key: str, code: str, code_sha256: str) -> dict[str, bool]:
        """How training may run the ETL: ``batchable`` (it declares ``batchable = True``: a row-wise
        transform) and ``fits`` (it overrides ``fit``, so its state needs the whole training set)."""
        verify_sha256(etl_key, code, code_sha256)
        if self.isolation is not None:
            return self.isolation.call("batching", etl_key, code, code_sha256, timeout=self.timeout)
        return self._limited(etl_key, lambda: _batching(self._load(etl_key, code, code_sha256)))

    def check(self, code: str, etl_key: str = "check") -> None:
        """Raise InvalidEtl unless `code` compiles, imports and defines an ``Etl`` class (nothing is cached)."""
        if self.isolation is not None:
            sha = hashlib.sha256(code.encode("utf-8")).hexdigest()
            self.isolation.call("check", etl_key, code, sha, timeout=self.timeout)
            return
        self._limited(etl_key, lambda: _load_class(etl_key, code))

    def cache_info(self) -> dict[str, int]:
        """Cache counters of this process: size, max_size, hits, misses (isolated, workers keep their own)."""
        with self._lock:
            return {"size": len(self._cache), "max_size": self.cache_size, "hits": self._hits, "misses": self._misses}

    def status(self) -> dict[str, Any]:
        """Mode and limits, plus stuck threads (in process) or live and replaced workers (isolated)."""
        status: dict[str, Any] = {"mode": self.mode, "timeout_seconds": self.timeout}
        if self.isolation is not None:
            info = self.isolation.info()
            status.update(workers=info["workers"], live_workers=info["live"], replaced_workers=info["replaced"],
                          memory_mb=info["memory_mb"])
        elif self._threads is not None:
            status.update(threads=self._threads.size, stuck_threads=self._threads.stuck)
        return status

    def clear(self) -> None:
        """Forget every loaded class."""
        with self._lock:
            self._cache.clear()

    def close(self) -> None:
        """Stop the worker processes (isolated) or the idle ETL threads; a stuck thread ends when its ETL does."""
        if self.isolation is not None:
            self.isolation.close()
        if self._threads is not None:
            self._threads.close()

    # -- in this process -------------------------------------------------------------------------

    def _limited(self, etl_key: str, call: Callable[[], T]) -> T:
        """`call()` under the time limit, its printed output captured and capped (etl/output.py) on the
        thread that runs it."""
        def run() -> T:
            return captured(etl_key, call)

        if self._threads is None:
            return run()
        return self._threads.call(etl_key, run, self.timeout)

    def _small_run(self, etl_key: str, code_sha256: str, call: Callable[[], T]) -> T:
        """A run of few rows: on this thread under the watchdog once the ETL has proven fast, else on the
        time-limit threads; either way its duration is recorded."""
        assert self._inline is not None and self.timeout is not None
        key, fast = (etl_key, code_sha256), self.timeout * INLINE_FRACTION
        started = time.monotonic()
        if not self._inline.proven(key):
            result = self._limited(etl_key, call)
            self._inline.record(key, time.monotonic() - started <= fast)
            return result
        token = WATCHDOG.arm(self.timeout)
        try:
            try:
                result = captured(etl_key, call)
            finally:
                fired = WATCHDOG.disarm(token)
        except EtlInterrupted:
            WATCHDOG.disarm(token)
            fired = True
        self._inline.record(key, not fired and time.monotonic() - started <= fast)
        if fired:
            raise timeout_error(etl_key, self.timeout)
        return result

    def _load(self, etl_key: str, code: str, code_sha256: str) -> type:
        key = (etl_key, code_sha256)
        with self._lock:
            cls = self._cache.get(key)
            if cls is not None:
                self._cache.move_to_end(key)
                self._hits += 1
                return cls
            self._misses += 1
        cls = _load_class(etl_key, code)  # outside the lock: module code may be slow
        if self.cache_size:
            with self._lock:
                self._cache[key] = cls
                self._cache.move_to_end(key)
                while len(self._cache) > self.cache_size:
                    (evicted_key, _), _ = self._cache.popitem(last=False)
                    if not any(k == evicted_key for k, _ in self._cache):
                        linecache.cache.pop(_filename(evicted_key), None)
        return cls

    def _fit(self, etl_key: str, code: str, code_sha256: str, frame: pd.DataFrame,
             as_of: pd.Timestamp | None = None) -> dict[str, Any]:
        cls = self._load(etl_key, code, code_sha256)
        etl = cls(frame.copy(deep=False))
        etl.as_of = as_of
        fit = getattr(etl, "fit", None)
        if not callable(fit):
            return {}
        state = _guarded(etl_key, lambda: fit(etl.df))
        if state is None:
            return {}
        if not isinstance(state, dict):
            raise EtlFailed(f"ETL {etl_key}: fit() returned {type(state).__name__}, not a mapping",
                            {"etl_key": etl_key, "returned": type(state).__name__})
        try:
            return json_safe(state)
        except TypeError as error:
            raise EtlFailed(f"ETL {etl_key}: fit() returned a state that is not JSON-serializable: {error}",
                            {"etl_key": etl_key}) from None

    def _run(self, etl_key: str, code: str, code_sha256: str, frame: pd.DataFrame,
             state: dict[str, Any] | None, as_of: pd.Timestamp | None = None) -> pd.DataFrame:
        cls = self._load(etl_key, code, code_sha256)
        # Under pandas' copy-on-write a shallow copy is a separate object whose data is
        # copied only if written to, so the ETL cannot touch the caller's frame (and
        # copying costs microseconds instead of a full deep copy).
        etl = cls(frame.copy(deep=False))
        etl.state = dict(state or {})
        etl.as_of = as_of
        result = _guarded(etl_key, etl.extract)
        if not isinstance(result, pd.DataFrame):
            returned = type(result).__module__ + "." + type(result).__qualname__
            if type(result).__module__ == "builtins":
                returned = type(result).__qualname__
            raise EtlFailed(
                f"ETL {etl_key} returned {returned}, not a pandas DataFrame",
                {"etl_key": etl_key, "returned": returned},
            )
        return result

    def _declarations(self, etl_key: str, code: str, code_sha256: str) -> tuple[dict[str, Any], str]:
        cls = self._load(etl_key, code, code_sha256)
        expectations = getattr(cls, "expectations", None) or {}
        policy = getattr(cls, "serving_violations", "reject")
        if policy not in ("reject", "warn"):
            raise InvalidEtl(f"ETL {etl_key}: serving_violations must be 'reject' or 'warn', not {policy!r}",
                             {"etl_key": etl_key})
        try:
            return json_safe(dict(expectations)), policy
        except (TypeError, ValueError) as error:
            raise InvalidEtl(f"ETL {etl_key}: expectations must be a JSON-serializable mapping: {error}",
                             {"etl_key": etl_key}) from None


def _batching(cls: type) -> dict[str, bool]:
    return {"batchable": getattr(cls, "batchable", False) is True,
            "fits": getattr(cls, "fit", BaseEtl.fit) is not BaseEtl.fit}


def named_features(features: pd.DataFrame) -> pd.DataFrame:
    """An ETL's features with string column names; EtlFailed if two columns have the same name."""
    names = [str(column) for column in features.columns]
    duplicated = sorted({name for name in names if names.count(name) > 1})
    if duplicated:
        raise EtlFailed("the ETL returned duplicate column names", {"columns": duplicated})
    if any(not isinstance(column, str) for column in features.columns):
        features = features.rename(columns=str)
    return features


def verify_sha256(etl_key: str, code: str, code_sha256: str) -> None:
    """Raise EtlTampered (500) unless `code` hashes to `code_sha256`."""
    actual = hashlib.sha256(code.encode("utf-8")).hexdigest()
    if actual != code_sha256:
        raise EtlTampered(f"ETL {etl_key} does not match its recorded sha256; refusing to run it",
                          {"etl_key": etl_key, "expected_sha256": code_sha256, "actual_sha256": actual})


def timeout_error(etl_key: str, timeout: float) -> EtlFailed:
    """The 422 ``etl_timeout`` error, the same in both modes."""
    return EtlFailed(f"ETL {etl_key} exceeded the time limit of {timeout:g} s",
                     {"etl_key": etl_key, "timeout_seconds": timeout}, code="etl_timeout")


class _Call:
    """One ETL call handed to an `_EtlThreads` thread; its fields are guarded by the pool's lock."""

    __slots__ = ("function", "done", "started", "finished", "cancelled", "abandoned", "result", "error")

    def __init__(self, function: Callable[[], Any]):
        self.function = function
        self.done = threading.Event()
        self.started: float | None = None
        self.finished = self.cancelled = self.abandoned = False
        self.result: Any = None
        self.error: BaseException | None = None


INLINE_MAX_ROWS = 1000  # a run of at most this many rows may run on the caller's thread
INLINE_AFTER_RUNS = 3  # small runs on the threads before an ETL may run inline
INLINE_FRACTION = 0.05  # of the time limit: a small run that takes longer keeps the ETL on the threads


class _InlineRecord:
    """Per ETL (key, sha256): its small runs so far, and whether one was slow (then never inline)."""

    def __init__(self, max_etls: int = 4096):
        self.max_etls = max_etls
        self._lock = threading.Lock()
        self._runs: OrderedDict[tuple[str, str], int] = OrderedDict()  # -1: slow once

    def proven(self, key: tuple[str, str]) -> bool:
        return self._runs.get(key, 0) >= INLINE_AFTER_RUNS

    def record(self, key: tuple[str, str], fast: bool) -> None:
        with self._lock:
            runs = self._runs.get(key, 0)
            self._runs[key] = -1 if not fast or runs < 0 else runs + 1
            self._runs.move_to_end(key)
            while len(self._runs) > self.max_etls:
                self._runs.popitem(last=False)


class _EtlThreads:
    """At most `size` daemon threads that run ETL calls for callers waiting with a time limit.

    A call that outlives its limit is abandoned, not stopped (Python cannot kill a
    thread): it keeps its thread until the ETL returns, and counts as stuck meanwhile.
    When all `size` threads are stuck, `call` fails at once with BackendUnavailable.
    Daemon threads, so a stuck ETL never keeps the interpreter from exiting.
    """

    def __init__(self, size: int):
        self.size = size
        self._tasks: queue.SimpleQueue[_Call | None] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._threads = 0
        self._free = 0  # threads neither running nor promised to a queued call (negative: a backlog)
        self._stuck = 0

    @property
    def stuck(self) -> int:
        """Threads still running a call whose caller gave up on it."""
        with self._lock:
            return self._stuck

    def call(self, etl_key: str, function: Callable[[], T], timeout: float) -> T:
        """`function()` on a pool thread; EtlFailed ``etl_timeout`` if it runs longer than `timeout` seconds."""
        task = self._submit(function)
        if not task.done.wait(timeout):
            with self._lock:
                if task.started is None:  # every thread busy the whole time: it never ran
                    task.cancelled = True
                    raise self._no_thread(timeout)
                remaining = task.started + timeout - time.monotonic()
            if remaining <= 0 or not task.done.wait(remaining):
                with self._lock:
                    if not task.finished:
                        task.abandoned = True
                        self._stuck += 1
                        raise timeout_error(etl_key, timeout)
        if task.error is not None:
            error, task.error = task.error, None
            raise error
        return task.result

    def call_each(self, etl_key: str, functions: list[Callable[[], Any]], timeout: float) -> list[Any]:
        """Each of `functions` in turn on one pool thread, handed over once: per function its result or the
        FeatureStoreError it raised. Each has `timeout` seconds from its own start, as with `call`; past it
        that one is EtlFailed ``etl_timeout``, the thread is abandoned (stuck until the ETL returns) and the
        functions after it go through `call` one by one."""
        outcomes: list[Any] = []
        progress = threading.Condition()
        current: list[float] = []  # when the function running now started
        given_up: list[bool] = []  # set (under `progress`) when the caller abandons the rest

        def run_all() -> None:
            for function in functions:
                with progress:
                    if given_up:
                        return
                    current[:] = [time.monotonic()]
                outcome = _outcome(function)
                with progress:
                    outcomes.append(outcome)
                    current[:] = [time.monotonic()]  # the next one's limit counts from here at the earliest
                    progress.notify_all()

        task = self._submit(run_all)
        submitted = time.monotonic()
        with progress:
            while len(outcomes) < len(functions) and not (task.done.is_set() and task.error is not None):
                since = current[0] if current else submitted
                remaining = since + timeout - time.monotonic()
                if remaining > 0:
                    progress.wait(min(remaining, 0.05))  # 0.05: also notice the task ending with an error
                    continue
                with self._lock:
                    if task.started is None:
                        task.cancelled = True
                        raise self._no_thread(timeout)
                    if task.finished:
                        continue
                    task.abandoned = True
                    self._stuck += 1
                given_up.append(True)
                outcomes.append(timeout_error(etl_key, timeout))
                break
            done = list(outcomes)
        if task.error is not None:  # not a FeatureStoreError (those are outcomes): as `call` would raise it
            error, task.error = task.error, None
            raise error
        return done + [_outcome(lambda function=function: self.call(etl_key, function, timeout))
                       for function in functions[len(done):]]

    def _no_thread(self, timeout: float) -> BackendUnavailable:
        """Called with the lock held."""
        return BackendUnavailable("etl runner", f"no ETL thread became free within {timeout:g} s "
                                  f"({self._stuck} of {self.size} stuck past their time limit)")

    def _submit(self, function: Callable[[], Any]) -> _Call:
        """Queue `function` for a pool thread (starting one if none is free); BackendUnavailable when every
        thread is stuck."""
        task = _Call(function)
        with self._lock:
            if self._stuck >= self.size:
                raise BackendUnavailable("etl runner", f"all {self.size} ETL threads are still running ETL calls "
                                         "that exceeded their time limit; they end only when those ETLs return")
            if self._free <= 0 and self._threads < self.size:
                self._threads += 1
                self._free += 1
                threading.Thread(target=self._work, name=f"etl-{self._threads}", daemon=True).start()
            self._free -= 1
        self._tasks.put(task)
        return task

    def close(self) -> None:
        """Let the idle threads end (stuck ones end with their ETL)."""
        with self._lock:
            count = self._threads
        for _ in range(count):
            self._tasks.put(None)

    def _work(self) -> None:
        while True:
            task = self._tasks.get()
            if task is None:
                with self._lock:
                    self._threads -= 1
                    self._free -= 1
                return
            with self._lock:
                if task.cancelled:
                    self._free += 1
                    continue
                task.started = time.monotonic()
            try:
                task.result = task.function()
            except BaseException as exc:  # noqa: BLE001 - handed to the caller
                task.error = exc
            with self._lock:
                task.finished = True
                self._free += 1
                if task.abandoned:
                    self._stuck -= 1
                    task.error = task.result = None
            task.done.set()


_module_numbers = itertools.count(1)


def _outcome(call: Callable[[], T]) -> T | FeatureStoreError:
    """`call()`, or the FeatureStoreError it raised (any other exception propagates)."""
    try:
        return call()
    except FeatureStoreError as error:
        return error


def _guarded(etl_key: str, call: Callable[[], Any]) -> Any:
    """Run ETL code; any exception becomes EtlFailed with the ETL's message and line."""
    try:
        return call()
    except (Exception, SystemExit) as exc:
        line = _etl_line(exc.__traceback__, _filename(etl_key))
        where = f" (line {line})" if line is not None else ""
        exc.add_note(f"raised by ETL {etl_key}{where}")
        raise EtlFailed(
            f"{type(exc).__name__}: {exc}",
            {"etl_key": etl_key, "exception": type(exc).__name__, "line": line},
        ) from exc




def _filename(etl_key: str) -> str:
    return f"<etl {etl_key}>"


def _load_class(etl_key: str, code: str) -> type:
    """Compile and execute `code` as a fresh module and return its ``Etl`` class, or InvalidEtl."""
    filename = _filename(etl_key)
    try:
        compiled = compile(code, filename, "exec", dont_inherit=True)
    except SyntaxError as exc:
        raise InvalidEtl(
            f"ETL {etl_key} has a syntax error: {exc.msg} (line {exc.lineno})",
            {"etl_key": etl_key, "line": exc.lineno, "offset": exc.offset, "text": (exc.text or "").rstrip("\n")},
        ) from None
    except ValueError as exc:  # e.g. null bytes on older Pythons
        raise InvalidEtl(f"ETL {etl_key} cannot be compiled: {exc}", {"etl_key": etl_key, "line": None}) from None
    install_compat_module()
    module_name = f"etl_{hashlib.sha256(etl_key.encode('utf-8')).hexdigest()[:12]}_{next(_module_numbers)}"
    module = types.ModuleType(module_name)
    module.__file__ = filename
    # Lets tracebacks and inspect show the source; mtime None keeps checkcache from dropping it.
    linecache.cache[filename] = (len(code), None, code.splitlines(True), filename)
    # Registered while it runs so decorators that look the module up (dataclasses, typing) work.
    sys.modules[module_name] = module
    try:
        exec(compiled, module.__dict__)
    except (Exception, SystemExit) as exc:
        line = _etl_line(exc.__traceback__, filename)
        where = f" (line {line})" if line is not None else ""
        raise InvalidEtl(
            f"ETL {etl_key} failed to load{where}: {type(exc).__name__}: {exc}",
            {"etl_key": etl_key, "exception": type(exc).__name__, "line": line},
        ) from None
    finally:
        sys.modules.pop(module_name, None)
    cls = module.__dict__.get("Etl")
    if not isinstance(cls, type):
        found = "nothing" if cls is None else type(cls).__name__
        raise InvalidEtl(
            f"ETL {etl_key} must define a class named Etl (found {found})",
            {"etl_key": etl_key, "line": None},
        )
    if not callable(getattr(cls, "extract", None)):
        raise InvalidEtl(f"ETL {etl_key}: class Etl has no extract() method", {"etl_key": etl_key, "line": None})
    return cls


def _etl_line(tb: types.TracebackType | None, filename: str) -> int | None:
    """The line of the innermost traceback frame that runs the ETL's own code."""
    line = None
    while tb is not None:
        if tb.tb_frame.f_code.co_filename == filename:
            line = tb.tb_lineno
        tb = tb.tb_next
    return line
