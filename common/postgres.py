"""Client-side deadlines for PostgreSQL engines (psycopg 3), so a frozen server fails a call instead of hanging it.

A server that accepts TCP but never answers (SIGSTOP, a hung host) is not bounded by `connect_timeout`
once a pooled connection exists, nor by the server's own `statement_timeout`. Every psycopg call on a
connection waits through `Connection.wait`; `DeadlineConnection` gives each wait a time limit and
closes the connection when it passes, so SQLAlchemy sees a disconnect (the pool replaces it) and the
store answers 503. The pool's pre-ping gets a short limit of its own. TCP keepalives and
`tcp_user_timeout` also drop a connection whose peer vanished (packets unanswered), which a live but
frozen server's kernel would still acknowledge.
"""
from __future__ import annotations

from typing import Any

import psycopg
import sqlalchemy as sa
from psycopg import errors as pg_errors

PING_DEADLINE_S = 2.0  # the pool's pre-ping: a `;` answers in milliseconds on a live server
GRACE_S = 5.0  # past the server's statement_timeout before the client gives up on its answer
KEEPALIVE_ARGS = {"keepalives": 1, "keepalives_idle": 10, "keepalives_interval": 5, "keepalives_count": 3,
                  "tcp_user_timeout": 30_000}
_WAIT_TIMEOUT = getattr(pg_errors, "_WaitTimeout", psycopg.OperationalError)  # psycopg >= 3.2


class DeadlineConnection(psycopg.Connection):
    """A psycopg connection whose every wait on the server ends after `deadline` seconds (None: no limit);
    past it the connection is closed and the call raises `psycopg.OperationalError`."""

    deadline: float | None = None

    def wait(self, gen: Any, interval: float = 0.1, timeout: float | None = None) -> Any:
        limit = self.deadline if timeout is None else timeout
        try:
            return super().wait(gen, interval=interval, timeout=limit)
        except _WAIT_TIMEOUT:
            if timeout is not None:  # psycopg's own limit (a cancel, notifies): its error, its handling
                raise
            self.pgconn.finish()  # the connection's state is unknown: never reuse it
            raise psycopg.OperationalError(f"the PostgreSQL server did not answer within {limit:g} s "
                                           "(client-side deadline; the connection was closed)") from None


def with_deadlines(engine: sa.Engine, deadline: float | None) -> sa.Engine:
    """Make `engine` (postgresql+psycopg) open `DeadlineConnection`s bounded by `deadline` seconds per wait,
    with PING_DEADLINE_S for the pool's pre-ping. Other dialects are returned unchanged."""
    if engine.dialect.name != "postgresql" or engine.dialect.driver != "psycopg":
        return engine

    @sa.event.listens_for(engine, "do_connect")
    def connect(dialect: Any, record: Any, cargs: Any, cparams: dict[str, Any]) -> DeadlineConnection:
        connection = DeadlineConnection.connect(*cargs, **cparams)
        connection.deadline = deadline
        return connection

    ping = engine.dialect.do_ping

    def bounded_ping(dbapi_connection: Any) -> bool:
        saved = getattr(dbapi_connection, "deadline", None)
        if isinstance(dbapi_connection, DeadlineConnection):
            dbapi_connection.deadline = PING_DEADLINE_S if saved is None else min(saved, PING_DEADLINE_S)
        try:
            return ping(dbapi_connection)
        finally:
            if isinstance(dbapi_connection, DeadlineConnection) and not dbapi_connection.closed:
                dbapi_connection.deadline = saved

    engine.dialect.do_ping = bounded_ping  # type: ignore[method-assign]
    return engine


def connect_args(url: sa.URL, **extra: Any) -> dict[str, Any]:
    """libpq keepalive and TCP user-timeout arguments (unless the URL sets them), plus `extra`."""
    return {**{name: value for name, value in KEEPALIVE_ARGS.items() if name not in url.query}, **extra}
