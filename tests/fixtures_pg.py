"""PostgreSQL fixtures: a throwaway database per test on the local server.

Tests that need PostgreSQL skip when no server answers at 127.0.0.1:5432,
except under ``CI=true``, where a missing server fails the run instead.
"""
from __future__ import annotations

import contextlib
import uuid
from typing import Iterator

import psycopg
import pytest
from psycopg import sql

from tests.required import missing

PG_SERVER_URL = "postgresql://postgres@127.0.0.1:5432"
ADMIN_DATABASE = "test"


def admin_connection(server_url: str) -> psycopg.Connection:
    """An autocommit connection to the server's admin database, for CREATE/DROP DATABASE."""
    return psycopg.connect(f"{server_url}/{ADMIN_DATABASE}", connect_timeout=3, autocommit=True)


@pytest.fixture(scope="session")
def pg_server_url() -> str:
    """The server URL (no database) if PostgreSQL answers; else skip, or fail under CI."""
    try:
        admin_connection(PG_SERVER_URL).close()
    except psycopg.Error as err:
        missing("a PostgreSQL server", f"PostgreSQL not reachable at {PG_SERVER_URL}/{ADMIN_DATABASE}: {err}")
    return PG_SERVER_URL


@contextlib.contextmanager
def throwaway_database(server_url: str) -> Iterator[str]:
    """A fresh, uniquely named database's URL, dropped (even with open connections) at the end."""
    name = f"fs_test_{uuid.uuid4().hex}"
    with admin_connection(server_url) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {} TEMPLATE template0").format(sql.Identifier(name)))
    try:
        yield f"{server_url}/{name}"
    finally:
        with admin_connection(server_url) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


@pytest.fixture
def pg_database_url(pg_server_url: str) -> Iterator[str]:
    """A fresh database for one test (`throwaway_database`)."""
    with throwaway_database(pg_server_url) as url:
        yield url
