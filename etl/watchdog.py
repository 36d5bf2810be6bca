"""Time limits for ETL calls made on the caller's own thread.

A call that runs on the caller's thread (`EtlRunner` does so for small inputs of an ETL that has
proven fast) skips the hand-off to a time-limit thread and back, two waits for the GIL that cost
most under concurrent requests. Its limit is kept by one daemon thread that checks the armed
deadlines every `POLL_SECONDS` and, once a deadline has passed, raises `EtlInterrupted` in that
thread (CPython's ``PyThreadState_SetAsyncExc``: the exception arrives at the thread's next Python
bytecode, as Ctrl-C does). Native code that runs long (a sleep, one large pandas operation) is
interrupted only when it returns to Python; an ETL that catches BaseException is not stopped at
all, and its call fails once it returns. Each deadline fires once.
"""
from __future__ import annotations

import ctypes
import itertools
import threading
import time

POLL_SECONDS = 0.02


class EtlInterrupted(BaseException):
    """Raised inside an ETL call past its time limit (a BaseException: ``except Exception`` lets it by)."""


def _raise_in(thread_id: int, exception: type[BaseException] | None) -> None:
    """Schedule `exception` in the thread (None: cancel what is scheduled and not yet raised)."""
    ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(thread_id),
                                               ctypes.py_object(exception) if exception else None)


class Watchdog:
    """Deadlines of calls running on callers' threads; `arm` before the call, `disarm` after it."""

    def __init__(self, poll_seconds: float = POLL_SECONDS):
        self.poll_seconds = poll_seconds
        self._lock = threading.Lock()
        self._armed: dict[int, list] = {}  # token -> [thread id, deadline, fired]
        self._tokens = itertools.count()
        self._thread: threading.Thread | None = None

    def arm(self, seconds: float) -> int:
        """A token for the calling thread's deadline, `seconds` from now."""
        token = next(self._tokens)
        with self._lock:
            self._armed[token] = [threading.get_ident(), time.monotonic() + seconds, False]
            if self._thread is None:
                self._thread = threading.Thread(target=self._watch, name="etl-watchdog", daemon=True)
                self._thread.start()
        return token

    def disarm(self, token: int) -> bool:
        """Forget the deadline; True when it had fired (an interruption not yet raised is cancelled)."""
        with self._lock:
            entry = self._armed.pop(token, None)
            if entry is None or not entry[2]:
                return False
            _raise_in(entry[0], None)
            return True

    def _watch(self) -> None:
        while True:
            time.sleep(self.poll_seconds)
            now = time.monotonic()
            with self._lock:
                for entry in self._armed.values():
                    if not entry[2] and now >= entry[1]:
                        entry[2] = True
                        _raise_in(entry[0], EtlInterrupted)


WATCHDOG = Watchdog()
