"""What ETL code prints: captured per call, capped, and logged as one record per call.

While a thread runs ETL code, its writes to ``sys.stdout`` and ``sys.stderr`` (``print``, tracebacks
printed by the ETL itself) go to a buffer of that call that keeps at most `MAX_OUTPUT_CHARS`
characters and counts the rest; when the call ends the kept text is logged under
``featurestore.etl`` with the number of characters dropped. Other threads write to the real
streams as before. In a worker process the records are handed back with the reply and logged by
the service (see `collected`). Writes that bypass Python's text streams (``sys.stdout.buffer``, C
code, a subprocess writing to file descriptor 1 or 2) are not captured.
"""
from __future__ import annotations

import contextlib
import logging
import sys
import threading
from typing import Any, Callable, Iterator, TypeVar

T = TypeVar("T")
MAX_OUTPUT_CHARS = 8192
log = logging.getLogger("featurestore.etl")
_local = threading.local()


class _Capture:
    """The first `limit` characters written during one ETL call, and how many more were dropped."""

    def __init__(self, limit: int):
        self.limit, self.kept, self.dropped = limit, 0, 0
        self.parts: list[str] = []

    def write(self, text: str) -> int:
        if not isinstance(text, str):
            raise TypeError(f"write() argument must be str, not {type(text).__name__}")
        piece = text[:max(0, self.limit - self.kept)]
        if piece:
            self.parts.append(piece)
            self.kept += len(piece)
        self.dropped += len(text) - len(piece)
        return len(text)


class _Router:
    """Stands in for sys.stdout / sys.stderr: a thread running ETL code writes to its capture, others to
    the stream this one replaced."""

    def __init__(self, stream: Any):
        self._stream = stream

    def write(self, text: str) -> int:
        capture = getattr(_local, "capture", None)
        return self._stream.write(text) if capture is None else capture.write(text)

    def flush(self) -> None:
        if getattr(_local, "capture", None) is None:
            self._stream.flush()

    def __getattr__(self, name: str) -> Any:  # encoding, fileno, isatty, … of the real stream
        return getattr(self._stream, name)


def _install() -> None:
    for name in ("stdout", "stderr"):
        stream = getattr(sys, name)
        if stream is not None and not isinstance(stream, _Router):
            setattr(sys, name, _Router(stream))


def captured(etl_key: str, call: Callable[[], T]) -> T:
    """`call()` with this thread's output captured, capped and logged (or collected) when it ends."""
    if getattr(_local, "capture", None) is not None:  # nested (a load inside a run): the outer call keeps it
        return call()
    _install()
    capture = _local.capture = _Capture(MAX_OUTPUT_CHARS)
    try:
        return call()
    finally:
        _local.capture = None
        if capture.kept or capture.dropped:
            record = (etl_key, "".join(capture.parts), capture.dropped)
            sink = getattr(_local, "collected", None)
            if sink is not None:
                sink.append(record)
            else:
                log_output(*record)


@contextlib.contextmanager
def collected() -> Iterator[list[tuple[str, str, int]]]:
    """Collect the output records of the ETL calls in this block instead of logging them (in a worker,
    whose records the service logs)."""
    records: list[tuple[str, str, int]] = []
    _local.collected = records
    try:
        yield records
    finally:
        _local.collected = None


def log_output(etl_key: str, text: str, dropped: int) -> None:
    """Log what one ETL call printed (already capped)."""
    more = f" ({dropped} more characters dropped)" if dropped else ""
    log.info("ETL %s printed%s:\n%s", etl_key, more, text.rstrip("\n"))
