"""Load ETL code stored in the catalog and run it on a DataFrame.

The code is compiled as a fresh module named ``<etl KEY>`` (so tracebacks name
the ETL), but only after its sha256 matches the one recorded with it. Loaded
classes are kept in a bounded, thread-safe LRU keyed by (key, sha256). Every
failure is a `FeatureStoreError`: unloadable code is `InvalidEtl` (400), an ETL
that raises or returns something other than a DataFrame is `EtlFailed` (422),
and code that no longer matches its recorded hash is ``etl_tampered`` (500).
"""
from __future__ import annotations

import hashlib
import itertools
import linecache
import sys
import threading
import types
from collections import OrderedDict
from typing import Any, Callable

import pandas as pd

from common.errors import EtlFailed, EtlTampered, InvalidEtl
from common.jsonsafe import json_safe
from extraction.etl_contract import install_compat_module


class EtlRunner:
    """Compiles, caches and runs ETL classes; at most `cache_size` are kept (0 disables the cache)."""

    def __init__(self, cache_size: int = 256):
        if cache_size < 0:
            raise ValueError("cache_size must be >= 0")
        self.cache_size = cache_size
        self._cache: OrderedDict[tuple[str, str], type] = OrderedDict()
        self._lock = threading.Lock()
        self._hits = 0
        self._misses = 0

    def load(self, etl_key: str, code: str, code_sha256: str) -> type:
        """The ``Etl`` class defined by `code`, after checking `code` against `code_sha256`."""
        actual = hashlib.sha256(code.encode("utf-8")).hexdigest()
        if actual != code_sha256:
            raise EtlTampered(f"ETL {etl_key} does not match its recorded sha256; refusing to run it",
                              {"etl_key": etl_key, "expected_sha256": code_sha256, "actual_sha256": actual})
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

    def fit(self, etl_key: str, code: str, code_sha256: str, frame: pd.DataFrame) -> dict[str, Any]:
        """``Etl(frame).fit(frame)`` on a copy of `frame`: the fitted state, made JSON-safe ({} without fit)."""
        cls = self.load(etl_key, code, code_sha256)
        etl = cls(frame.copy(deep=False))
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

    def run(self, etl_key: str, code: str, code_sha256: str, frame: pd.DataFrame,
            state: dict[str, Any] | None = None) -> pd.DataFrame:
        """``Etl(frame).extract()`` on a copy of `frame`, with ``self.state`` set; the result must be a DataFrame."""
        cls = self.load(etl_key, code, code_sha256)
        # Under pandas' copy-on-write a shallow copy is a separate object whose data is
        # copied only if written to, so the ETL cannot touch the caller's frame (and
        # copying costs microseconds instead of a full deep copy).
        etl = cls(frame.copy(deep=False))
        etl.state = dict(state or {})
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

    def declarations(self, etl_key: str, code: str, code_sha256: str) -> tuple[dict[str, Any], str]:
        """The ETL class's `expectations` and `serving_violations` policy, validated."""
        cls = self.load(etl_key, code, code_sha256)
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

    def check(self, code: str, etl_key: str = "check") -> None:
        """Raise InvalidEtl unless `code` compiles, imports and defines an ``Etl`` class (nothing is cached)."""
        _load_class(etl_key, code)

    def cache_info(self) -> dict[str, int]:
        """Cache counters: size, max_size, hits, misses."""
        with self._lock:
            return {"size": len(self._cache), "max_size": self.cache_size, "hits": self._hits, "misses": self._misses}

    def clear(self) -> None:
        """Forget every loaded class."""
        with self._lock:
            self._cache.clear()


_module_numbers = itertools.count(1)


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
