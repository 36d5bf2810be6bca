"""An unreachable catalog raises BackendUnavailable quickly, on open and on every call."""
from __future__ import annotations

import socket
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import psycopg
import pytest

from catalog import Catalog, open_catalog
from common.errors import BackendUnavailable
from tests.fixtures_pg import admin_connection
from tests.test_catalog_contract import make_etl, make_query

QUICK_S = 4.0


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def assert_unavailable_quickly(call: Callable[[], Any]) -> None:
    started = time.monotonic()
    with pytest.raises(BackendUnavailable) as caught:
        call()
    assert time.monotonic() - started < QUICK_S
    assert caught.value.status == 503
    assert caught.value.details == {"backend": "catalog"}


def assert_every_call_unavailable(catalog: Catalog) -> None:
    assert_unavailable_quickly(catalog.ping)
    assert_unavailable_quickly(lambda: catalog.save_query(make_query(1)))
    assert_unavailable_quickly(lambda: catalog.save_etl(make_etl(1)))
    assert_unavailable_quickly(lambda: catalog.get_query("q0001"))
    assert_unavailable_quickly(lambda: catalog.list_etls(query_id="q0001"))


def open_quickly(url: str) -> Catalog:
    started = time.monotonic()
    catalog = open_catalog(url)
    assert time.monotonic() - started < QUICK_S
    return catalog


@pytest.mark.parametrize("url", [
    pytest.param(lambda tmp: f"sqlite:///{tmp}/a-file/catalog.db", id="sqlite-parent-is-a-file"),
    pytest.param(lambda tmp: f"postgresql://postgres@127.0.0.1:{closed_port()}/catalog", id="postgres-closed-port"),
    pytest.param(lambda tmp: f"mongodb://127.0.0.1:{closed_port()}/catalog?serverSelectionTimeoutMS=500",
                 id="mongodb-closed-port"),
])
def test_unreachable_backend(url: Callable[[Path], str], tmp_path: Path) -> None:
    (tmp_path / "a-file").write_text("not a directory")
    catalog = open_quickly(url(tmp_path))
    try:
        assert_every_call_unavailable(catalog)
    finally:
        catalog.close()


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A loopback port that accepts TCP connections and never answers: a hung server."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(64)
        yield sock.getsockname()[1]


@pytest.mark.parametrize("url", [
    pytest.param("postgresql://postgres@127.0.0.1:{port}/catalog?connect_timeout=2", id="postgres"),
    pytest.param("mongodb://127.0.0.1:{port}/catalog?serverSelectionTimeoutMS=500", id="mongodb"),
])
def test_silent_server_does_not_hang(url: str, silent_port: int) -> None:
    catalog = open_quickly(url.format(port=silent_port))
    try:
        assert_unavailable_quickly(catalog.ping)
    finally:
        catalog.close()


def test_sqlite_read_only_database(tmp_path: Path) -> None:
    path = tmp_path / "catalog.db"
    writable = open_catalog(f"sqlite:///{path}")
    writable.save_query(make_query(1))
    writable.close()

    read_only = open_catalog(f"sqlite:///file:{path}?mode=ro&uri=true")
    try:
        assert read_only.get_query("q0001") == make_query(1)
        assert_unavailable_quickly(lambda: read_only.save_query(make_query(2)))
    finally:
        read_only.close()


def test_sqlite_recovers_once_its_directory_can_be_made(tmp_path: Path) -> None:
    blocker = tmp_path / "data"
    blocker.write_text("in the way")
    catalog = open_quickly(f"sqlite:///{blocker}/catalog.db")
    try:
        assert_unavailable_quickly(lambda: catalog.save_query(make_query(1)))
        blocker.unlink()
        assert catalog.save_query(make_query(1)) == make_query(1)  # directory and tables made on use
        catalog.ping()
    finally:
        catalog.close()


def test_sqlite_missing_database_file(tmp_path: Path) -> None:
    catalog = open_quickly(f"sqlite:///file:{tmp_path}/missing.db?mode=rw&uri=true")
    try:
        assert_every_call_unavailable(catalog)
    finally:
        catalog.close()


@pytest.mark.postgres
def test_postgres_outage_after_open(pg_database_url: str, pg_server_url: str) -> None:
    catalog = open_catalog(pg_database_url)
    try:
        catalog.save_query(make_query(1))
        catalog.ping()
        name = pg_database_url.rsplit("/", 1)[1]
        with admin_connection(pg_server_url) as conn:
            conn.execute(psycopg.sql.SQL("DROP DATABASE {} WITH (FORCE)").format(psycopg.sql.Identifier(name)))
        assert_every_call_unavailable(catalog)
    finally:
        catalog.close()
