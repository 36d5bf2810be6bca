"""SQL engines behind the warehouse and the realtime store.

`DuckDBEngine` serves both the default warehouse (a file) and the realtime
store (in memory): one connection, a cursor per thread, writes serialized and
each batch in one transaction, so a reader never sees half a batch. External
access (files, URLs, extensions) is switched off and the configuration locked
before any user SQL runs. `SqlAlchemyEngine` serves any SQLAlchemy warehouse
URL; user queries run in read-only transactions.

With a `statement_timeout`, one shared watchdog thread interrupts a user
statement still running at its deadline; the caller gets InvalidQuery with code
``query_timeout`` and the thread's cursor is replaced. The service's own writes
and bulk reads (append, hydration) run without a limit.
"""
from __future__ import annotations

import contextlib
import hashlib
import heapq
import itertools
import json
import math
import threading
import time
from typing import Any, Callable, Iterator, Sequence

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa

from common.errors import BackendUnavailable, InvalidQuery, ResultTooLarge
from sql.guards import is_refused, refused_message

_DUCKDB_BAD_QUERY = (
    duckdb.ParserException, duckdb.BinderException, duckdb.CatalogException, duckdb.ConversionException,
    duckdb.InvalidInputException, duckdb.PermissionException, duckdb.OutOfRangeException,
    duckdb.NotImplementedException, duckdb.TypeMismatchException, duckdb.ConstraintException,
    duckdb.SyntaxException, duckdb.DataError, duckdb.ProgrammingError,
)
# What a user's SELECT can fail with that is the server's trouble, not the query's (503; the rest is 400).
_DUCKDB_SERVER_SIDE = (
    duckdb.IOException, duckdb.ConnectionException, duckdb.FatalException, duckdb.InternalException,
    duckdb.OutOfMemoryException, duckdb.InterruptException,
)


def quote_identifier(name: str) -> str:
    """A SQL identifier in double quotes, inner quotes doubled: the one way names enter SQL text."""
    return '"' + name.replace('"', '""') + '"'


def quote_qualified(table: str) -> str:
    """``schema.table`` or ``table`` for SQL text, each part quoted by `quote_identifier`."""
    return ".".join(quote_identifier(part) for part in table.split("."))


def checked_timeout(seconds: float | None) -> float | None:
    """A statement time limit in seconds: None (no limit) or a positive finite number."""
    if seconds is None:
        return None
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or not 0 < seconds < math.inf:
        raise ValueError(f"statement_timeout must be a positive number of seconds or None, not {seconds!r}")
    return float(seconds)


def query_timeout(role: str, seconds: float) -> InvalidQuery:
    """The error of a statement stopped at its time limit (400 ``query_timeout``)."""
    return InvalidQuery(f"the {role} stopped the query at its time limit of {seconds:g} s",
                        {"timeout_seconds": seconds}, code="query_timeout")


def python_columns(frame: Any, names: list[Any]) -> list[list[Any]]:
    """The columns of a DataFrame or Arrow table as lists of plain Python values, None for missing (bulk writes).

    Arrow converts whole columns in C (pandas' own Arrow-backed strings without a copy); numpy
    integers and booleans without missing values take numpy's faster `tolist`.
    """
    if hasattr(frame, "to_pydict"):  # Arrow
        return [frame.column(name).to_pylist() for name in names]
    columns = []
    for name in names:
        series = frame[name]
        if isinstance(series.dtype, np.dtype) and series.dtype.kind in "biu":
            columns.append(series.to_numpy().tolist())
        else:  # NaN, None, pd.NA and NaT all become None
            try:
                columns.append(pa.array(series, from_pandas=True).to_pylist())
            except (pa.ArrowInvalid, pa.ArrowTypeError):  # mixed Python objects: one by one
                columns.append(series.astype(object).where(series.notna(), None).tolist())
    return columns


class DuckDBEngine:
    """A DuckDB database shared by threads: `path` is a file or ``:memory:``.

    `statement_timeout` (seconds, None for no limit) bounds each `query`; `memory_limit` (DuckDB's form, e.g.
    ``"512MB"``; None: DuckDB's default, 80% of RAM) bounds what its operators hold, the rest spilling to disk.
    """

    def __init__(self, path: str, role: str, statement_timeout: float | None = None,
                 memory_limit: str | None = None):
        self.role = role
        self.statement_timeout = checked_timeout(statement_timeout)
        self._write_lock = threading.Lock()
        self._local = threading.local()
        self._write_cursor: duckdb.DuckDBPyConnection | None = None
        config = {"enable_external_access": False, "autoinstall_known_extensions": False,
                  "autoload_known_extensions": False}
        if memory_limit:
            config["memory_limit"] = memory_limit
        try:
            self._connection = duckdb.connect(path, config=config)
            self._connection.execute("SET TimeZone = 'UTC'")  # timestamps reach pandas as UTC, whatever the host's zone
            self._connection.execute("SET lock_configuration = true")
        except duckdb.Error as error:
            raise BackendUnavailable(role, error) from None

    def _writer(self) -> duckdb.DuckDBPyConnection:
        """The one cursor the service's own writes use (under the write lock), apart from readers' cursors,
        so a write never meets a reader's unfinished stream on the same thread."""
        if self._write_cursor is None:
            self._write_cursor = self._connection.cursor()
        return self._write_cursor

    def _cursor(self) -> duckdb.DuckDBPyConnection:
        cursor = getattr(self._local, "cursor", None)
        if cursor is None:
            cursor = self._local.cursor = self._connection.cursor()
        return cursor

    def create_function(self, name: str, function: Any, parameters: list[str], returns: str) -> None:
        """Register a Python scalar function (volatile: evaluated at every call, never folded)."""
        self._connection.create_function(name, function, parameters, returns, side_effects=True)

    def execute_ddl(self, statements: list[str]) -> None:
        """Run the service's own schema statements (CREATE, ALTER), serialized with writes."""
        with self._write_lock, self._translated():
            cursor = self._writer()
            for statement in statements:
                cursor.execute(statement)

    @contextlib.contextmanager
    def transaction(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """A cursor inside one write transaction: committed if the block returns, else rolled back."""
        with self._write_lock, self._translated():
            cursor = self._writer()
            cursor.execute("BEGIN TRANSACTION")
            try:
                yield cursor
            except BaseException:
                cursor.execute("ROLLBACK")
                raise
            cursor.execute("COMMIT")

    def append(self, frames: dict[str, Any], abort_if: Callable[[Any], bool] | None = None) -> dict[str, int] | None:
        """Insert DataFrames or Arrow tables by column name, all tables in one transaction; rows per table.

        `abort_if(cursor)`, if given, runs first inside the transaction: if it returns true, nothing
        is written and the result is None.
        """
        views = {table: f"_fs_incoming_{i}" for i, table in enumerate(frames)}
        with self._write_lock, self._translated():
            cursor = self._writer()
            try:
                for table, view in views.items():
                    cursor.register(view, frames[table])
                cursor.execute("BEGIN TRANSACTION")
                try:
                    if abort_if is not None and abort_if(cursor):
                        cursor.execute("ROLLBACK")
                        return None
                    for table, view in views.items():
                        cursor.execute(f"INSERT INTO {quote_qualified(table)} BY NAME SELECT * FROM {view}")
                    cursor.execute("COMMIT")
                except BaseException:
                    cursor.execute("ROLLBACK")
                    raise
            finally:  # after COMMIT/ROLLBACK: unregistering inside an aborted transaction would fail
                for view in views.values():
                    cursor.unregister(view)
        return {table: len(frame) for table, frame in frames.items()}

    def query(self, sql: str, params: Sequence[Any] = (), max_rows: int | None = None,
              staged: dict[str, Any] | None = None, relations: dict[str, Any] | None = None) -> pd.DataFrame:
        """Run one SELECT statement (DuckDB's own parser checks it too); with `max_rows`, refuse longer results.

        It runs in a transaction that is always rolled back, so even a write that slipped past
        both parsers (DuckDB runs a DELETE inside a CTE) leaves nothing behind. `staged` rows
        (table -> Arrow table) are inserted first in that transaction: only this statement sees them.
        `relations` (name -> Arrow table) are readable by that name during this statement only.
        """
        with self._translated(user_sql=True), _registered(self._cursor(), relations):
            cursor = self._checked_select(sql)
            cursor.execute("BEGIN TRANSACTION")
            try:
                for i, (table, rows) in enumerate((staged or {}).items()):
                    view = f"_fs_staged_{i}"
                    cursor.register(view, rows)
                    cursor.execute(f"INSERT INTO {quote_qualified(table)} BY NAME SELECT * FROM {view}")
                    cursor.unregister(view)
                with self._time_limit(cursor):
                    result = cursor.execute(sql, list(params))
                    if max_rows is None:
                        return result.df()
                    return _bounded_frame(_duckdb_chunks(result), max_rows)
            finally:
                _rollback(cursor)

    def _checked_select(self, sql: str) -> duckdb.DuckDBPyConnection:
        """This thread's cursor, once DuckDB's own parser agrees `sql` is exactly one SELECT that
        names no function or system view `sql.guards` refuses."""
        cursor = self._cursor()
        statements = cursor.extract_statements(sql)
        if len(statements) != 1 or statements[0].type != duckdb.StatementType.SELECT:
            kinds = [statement.type.name for statement in statements]
            raise InvalidQuery(f"the {self.role} runs exactly one SELECT statement, not {kinds}")
        refused = _refused_name(sql)
        if refused is not None:
            raise InvalidQuery(refused_message(refused), {"function": refused})
        return cursor

    def arrow(self, sql: str, params: Sequence[Any] = ()) -> Any:
        """Run one statement and return an Arrow table (for bulk copies)."""
        with self._translated():
            # a cursor of its own: nothing is left pending on the thread's cursor, and no extra copy of the rows
            cursor = self._connection.cursor()
            try:
                return cursor.sql(sql, params=list(params) or None).to_arrow_table()
            finally:
                cursor.close()

    def ping(self) -> None:
        with self._translated():
            self._cursor().execute("SELECT 1").fetchall()  # fetchall: nothing left pending on the cursor

    def close(self) -> None:
        self._connection.close()

    def _translated(self, user_sql: bool = False) -> "_DuckDBErrors":
        return _DuckDBErrors(self.role, user_sql)

    def _time_limit(self, cursor: duckdb.DuckDBPyConnection) -> "_TimeLimit":
        return _TimeLimit(self, cursor)

    def _replace_cursor(self, cursor: duckdb.DuckDBPyConnection) -> None:
        """Drop this thread's cursor (after an interrupt); the next statement gets a fresh one."""
        if getattr(self._local, "cursor", None) is cursor:
            self._local.cursor = None
        try:
            cursor.close()
        except duckdb.Error:
            pass


class _TimeLimit:
    """Run one statement under the engine's time limit; an interrupt by the watchdog is query_timeout."""

    __slots__ = ("engine", "cursor", "watch")

    def __init__(self, engine: DuckDBEngine, cursor: duckdb.DuckDBPyConnection):
        self.engine, self.cursor, self.watch = engine, cursor, None

    def __enter__(self) -> None:
        if self.engine.statement_timeout is not None:
            self.watch = _WATCHDOG.start(self.cursor, self.engine.statement_timeout)

    def __exit__(self, kind: type | None, error: BaseException | None, _tb: Any) -> bool:
        if self.watch is None or not _WATCHDOG.finish(self.watch):
            return False
        self.engine._replace_cursor(self.cursor)  # interrupted: a fresh cursor for the next statement
        if isinstance(error, duckdb.InterruptException):
            raise query_timeout(self.engine.role, self.engine.statement_timeout) from None
        return False  # it finished just before the interrupt landed, or failed for another reason


class _Watch:
    """One statement under watch: its cursor, and whether the watchdog interrupted it."""

    __slots__ = ("cursor", "running", "fired")

    def __init__(self, cursor: duckdb.DuckDBPyConnection):
        self.cursor: duckdb.DuckDBPyConnection | None = cursor
        self.running, self.fired = True, False


class _Watchdog:
    """One daemon thread for the process that interrupts DuckDB statements still running at their deadline.

    Starting and finishing a watch costs a lock and a heap push; finished watches are dropped when
    their deadline passes. The thread wakes at most every `GRANULARITY` seconds, so a statement may
    run that much past its limit.
    """

    GRANULARITY = 0.01

    def __init__(self) -> None:
        self._condition = threading.Condition(threading.Lock())
        self._deadlines: list[tuple[float, int, _Watch]] = []
        self._order = itertools.count()
        self._thread: threading.Thread | None = None

    def start(self, cursor: duckdb.DuckDBPyConnection, seconds: float) -> _Watch:
        watch = _Watch(cursor)
        deadline = time.monotonic() + seconds
        with self._condition:
            first = not self._deadlines or deadline < self._deadlines[0][0]
            heapq.heappush(self._deadlines, (deadline, next(self._order), watch))
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="duckdb-statement-watchdog", daemon=True)
                self._thread.start()
            elif first:
                self._condition.notify()
        return watch

    def finish(self, watch: _Watch) -> bool:
        """Stop watching; True if the statement was interrupted."""
        with self._condition:
            watch.running, watch.cursor = False, None  # the heap keeps the entry until its deadline, not the cursor
            return watch.fired

    def _run(self) -> None:
        with self._condition:
            while True:
                now = time.monotonic()
                while self._deadlines and self._deadlines[0][0] <= now:
                    watch = heapq.heappop(self._deadlines)[2]
                    if watch.running and watch.cursor is not None:
                        watch.fired = True
                        watch.cursor.interrupt()
                if self._deadlines:
                    self._condition.wait(max(self._deadlines[0][0] - now, self.GRANULARITY))
                else:
                    self._condition.wait()


_WATCHDOG = _Watchdog()


class _DuckDBErrors:
    """Turn DuckDB exceptions into the service's errors: bad SQL is 400, the rest 503.

    For a user's SELECT (`user_sql`) only errors of the server's own (I/O, connection, memory, a fatal or
    internal error) are 503: anything else, even an error class DuckDB leaves generic, came from the query
    and is 400, so that clients do not retry it as an outage."""

    def __init__(self, role: str, user_sql: bool = False):
        self.role, self.user_sql = role, user_sql

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: type | None, error: BaseException | None, _tb: Any) -> bool:
        if error is None or not isinstance(error, duckdb.Error):
            return False
        bad_query = not isinstance(error, _DUCKDB_SERVER_SIDE) if self.user_sql else isinstance(error, _DUCKDB_BAD_QUERY)
        if bad_query:
            raise InvalidQuery(f"the {self.role} rejected the query: {error}") from None
        raise BackendUnavailable(self.role, error) from None


@contextlib.contextmanager
def _registered(cursor: duckdb.DuckDBPyConnection, relations: dict[str, Any] | None) -> Iterator[None]:
    """`relations` (name -> Arrow table) readable on `cursor` by name inside the block."""
    for name, table in (relations or {}).items():
        cursor.register(name, table)
    try:
        yield
    finally:
        for name in relations or {}:
            try:
                cursor.unregister(name)
            except duckdb.Error:  # the cursor was interrupted and replaced by the time limit
                pass


_PARSER_LOCK = threading.Lock()
_PARSER: list[duckdb.DuckDBPyConnection] = []  # one private in-memory connection, only for parsing
_CHECKED: dict[bytes, str | None] = {}  # digest of the SQL text -> `_refused_name`; never holds the text
_CHECKED_MAX = 4096


def _refused_name(sql: str) -> str | None:
    """The first function or table in DuckDB's own parse of `sql` that `sql.guards` refuses, else None.

    None too when DuckDB cannot serialize the parse: running the text then reports its own error.
    Remembered by a digest of the text, so a saved query's lookups parse it once."""
    key = hashlib.blake2b(sql.encode("utf-8", "surrogatepass"), digest_size=16).digest()
    if key in _CHECKED:
        return _CHECKED[key]
    with _PARSER_LOCK:
        if not _PARSER:
            _PARSER.append(duckdb.connect(":memory:", config={"enable_external_access": False}))
        text = _PARSER[0].execute("SELECT json_serialize_sql(?)", [sql]).fetchone()[0]
    try:
        tree = json.loads(text)
    except RecursionError:
        raise InvalidQuery("the query is nested too deeply to be checked") from None
    refused = None if tree.get("error") else _first_refused(tree)
    if len(_CHECKED) >= _CHECKED_MAX:
        _CHECKED.clear()
    _CHECKED[key] = refused
    return refused


def _first_refused(tree: Any) -> str | None:
    """A refused function name or system view in DuckDB's JSON parse tree (walked without recursion)."""
    pending = [tree]
    while pending:
        node = pending.pop()
        if isinstance(node, list):
            pending.extend(node)
        elif isinstance(node, dict):
            name, table = node.get("function_name"), node.get("table_name")
            if isinstance(name, str) and is_refused(name):
                return name
            if node.get("type") == "BASE_TABLE" and isinstance(table, str) and is_refused(table, table=True):
                return table
            pending.extend(node.values())
    return None


def _rollback(cursor: duckdb.DuckDBPyConnection) -> None:
    try:
        cursor.execute("ROLLBACK")
    except duckdb.Error:  # interrupted and replaced by the time limit, or no transaction left
        pass


def _duckdb_chunks(cursor: duckdb.DuckDBPyConnection) -> Iterator[pd.DataFrame]:
    """The result in chunks; the first is yielded even when empty, so columns survive."""
    chunk = cursor.fetch_df_chunk()
    yield chunk
    while not chunk.empty:
        chunk = cursor.fetch_df_chunk()
        if not chunk.empty:
            yield chunk


def _bounded_frame(chunks: Iterator[pd.DataFrame], max_rows: int) -> pd.DataFrame:
    """Concatenate chunks, raising ResultTooLarge as soon as they pass `max_rows`."""
    kept: list[pd.DataFrame] = []
    rows = 0
    for chunk in chunks:
        rows += len(chunk)
        if rows > max_rows:
            raise ResultTooLarge(f"the result has more than {max_rows} rows, the limit for a JSON response",
                                 {"max_rows": max_rows})
        kept.append(chunk)
    return pd.concat(kept, ignore_index=True) if len(kept) > 1 else kept[0]
