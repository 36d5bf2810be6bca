"""The SQLite realtime store's database and its connections: one writer, a pool of readers.

The database is a file in memory-backed storage (``/dev/shm`` when it has room, else the temporary
folder), in WAL mode with no syncing: readers never wait for one another nor for the writer, each
statement sees the last committed transaction (never half a batch), and a slow statement holds only
its own connection. The file lives as long as the store; files left by a process that died are
removed when the next store starts.
"""
from __future__ import annotations

import contextlib
import math
import os
import sqlite3
import tempfile
import threading
import time
import uuid
from typing import Any, Callable, Iterator

SHARED_MEMORY = "/dev/shm"
SHARED_MEMORY_MIN_FREE = 1 << 30  # bytes; a smaller /dev/shm (Docker's default is 64 MiB) is not used
FILE_PREFIX = "featurestore-realtime-"
PROGRESS_STEPS = 1000  # virtual-machine steps between deadline checks (a few microseconds of work)
WAL_LIMIT_BYTES = 64 << 20  # the WAL shrinks back to this after a large batch is checkpointed
MMAP_BYTES = 1 << 40  # readers map the file instead of copying pages into a cache of their own
READ_ONLY_ACTIONS = {sqlite3.SQLITE_SELECT, sqlite3.SQLITE_READ, sqlite3.SQLITE_FUNCTION,
                      getattr(sqlite3, "SQLITE_RECURSIVE", 33)}


def database_path() -> str:
    """A new database file name in memory-backed storage (orphans of dead processes removed first)."""
    folder = SHARED_MEMORY if _has_room(SHARED_MEMORY) else tempfile.gettempdir()
    _remove_orphans(folder)
    return os.path.join(folder, f"{FILE_PREFIX}{os.getpid()}-{uuid.uuid4().hex}.db")


def remove_database(path: str) -> None:
    """Delete the database file and its WAL files."""
    for suffix in ("", "-wal", "-shm"):
        with contextlib.suppress(FileNotFoundError):
            os.remove(path + suffix)


def _has_room(folder: str) -> bool:
    try:
        stats = os.statvfs(folder)
    except OSError:
        return False
    return os.access(folder, os.W_OK) and stats.f_bavail * stats.f_frsize >= SHARED_MEMORY_MIN_FREE


def _remove_orphans(folder: str) -> None:
    with contextlib.suppress(OSError):
        for name in os.listdir(folder):
            pid = name[len(FILE_PREFIX):].split("-", 1)[0]
            if name.startswith(FILE_PREFIX) and pid.isdigit() and not _alive(int(pid)):
                with contextlib.suppress(OSError):
                    os.remove(os.path.join(folder, name))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def connect(path: str, configure: Callable[[sqlite3.Connection], None], page_size: int | None = None
            ) -> sqlite3.Connection:
    """A connection to the store's database in WAL mode, then `configure`d (functions, authorizer);
    `page_size` (the writer's, before any table exists) first."""
    connection = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
    if page_size:
        connection.execute(f"PRAGMA page_size = {page_size}")
    connection.execute("PRAGMA journal_mode = WAL")
    connection.execute("PRAGMA synchronous = OFF")  # nothing is kept across restarts: never wait for a disk
    connection.execute(f"PRAGMA journal_size_limit = {WAL_LIMIT_BYTES}")
    connection.execute(f"PRAGMA mmap_size = {MMAP_BYTES}")
    connection.execute("PRAGMA temp_store = MEMORY")
    # LIKE is case-sensitive in the warehouse engines (DuckDB, PostgreSQL); SQLite's default folds ASCII case.
    connection.execute("PRAGMA case_sensitive_like = ON")
    add_parity_functions(connection)
    configure(connection)
    return connection


def add_parity_functions(connection: sqlite3.Connection) -> None:
    """Functions that make SQLite compute what the warehouse engines compute: Unicode `upper`/`lower` (SQLite's
    own change ASCII letters only) and `fs_fmod`, the remainder of a float (SQLite's ``%`` truncates to integers)."""
    connection.create_function("upper", 1, _case_mapping(str.upper), deterministic=True)
    connection.create_function("lower", 1, _case_mapping(str.lower), deterministic=True)
    connection.create_function("fs_fmod", 2, _fmod, deterministic=True)


def _case_mapping(convert: Callable[[str], str]) -> Callable[[Any], Any]:
    """`convert` one character at a time, keeping a character whose mapping is several (ß, İ): DuckDB's
    mapping, which is one character to one (so no final-sigma rule either)."""
    def mapped(value: Any) -> Any:
        if value is None or isinstance(value, bytes):
            return value
        text = value if isinstance(value, str) else str(value)
        if text.isascii():
            return convert(text)
        return "".join(new if len(new := convert(char)) == 1 else char for char in text)
    return mapped


def _fmod(left: Any, right: Any) -> float | None:
    """``left % right`` as DuckDB computes it for floats: the sign of `left`; NULL (DuckDB: NaN, which reaches
    pandas alike) when `right` is 0, and for a NULL."""
    if left is None or right is None or right == 0:
        return None
    return math.fmod(left, right)


class Reader:
    """One read connection: only reads, except the store's own staging of request rows (`writing`), and
    each statement stopped at its `deadline` (monotonic seconds) when the pool has a time limit."""

    def __init__(self, connection: sqlite3.Connection, timed: bool):
        self.connection = connection
        self.deadline = math.inf
        self.writing = False
        self.staged: dict[str, Any] = {}  # request source -> the definition its temp table was made for
        # Set once: toggling them per query costs a statement re-prepare (~70 µs).
        connection.set_authorizer(self._authorize)
        if timed:
            connection.set_progress_handler(self._past_deadline, PROGRESS_STEPS)

    def _authorize(self, action: int, *_: Any) -> int:
        return sqlite3.SQLITE_OK if self.writing or action in READ_ONLY_ACTIONS else sqlite3.SQLITE_DENY

    def _past_deadline(self) -> bool:
        """The progress handler: a true value makes SQLite stop the statement ("interrupted")."""
        return time.monotonic() > self.deadline


class ReaderPool:
    """Read connections handed to one thread at a time; a new one is opened when none is free, so no
    reader waits for another (there are at most as many as threads reading at once)."""

    def __init__(self, open_reader: Callable[[], Reader]):
        self._open = open_reader
        self._idle: list[Reader] = []
        self._lock = threading.Lock()
        self.closed = False
        self.opened = 0  # readers opened so far (each is kept until the pool closes)

    @contextlib.contextmanager
    def reader(self) -> Iterator[Reader]:
        """A free reader for the block (ValueError once the pool is closed)."""
        with self._lock:
            if self.closed:
                raise ValueError("the pool is closed")
            reader = self._idle.pop() if self._idle else None
        if reader is None:
            reader = self._open()
            with self._lock:
                self.opened += 1
        try:
            yield reader
        finally:
            reader.deadline, reader.writing = math.inf, False
            with self._lock:
                if self.closed:
                    reader.connection.close()
                else:
                    self._idle.append(reader)

    def close(self) -> None:
        """Close the idle readers now and the busy ones when they are handed back."""
        with self._lock:
            self.closed = True
            idle, self._idle = self._idle, []
        for reader in idle:
            reader.connection.close()
