"""Catalog fixtures: one `catalog` per backend, opened through `open_catalog`.

SQLite and mongomock always run; PostgreSQL joins through `pg_database_url`
(skipped without a server, a failure under ``CI=true``).
"""
from __future__ import annotations

import sys
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable, Iterator, TypeVar

import pytest

from catalog import Catalog, open_catalog

R = TypeVar("R")

BACKENDS = ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres), "mongomock"]
DURABLE_BACKENDS = ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]


def catalog_url(backend: str, request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh catalog URL for `backend`; the same URL reopens the same data (mongomock excepted)."""
    if backend == "sqlite":
        return f"sqlite:///{tmp_path}/nested/dir/catalog.db"
    if backend == "postgresql":
        return request.getfixturevalue("pg_database_url")
    return f"mongomock://local/fs_test_{uuid.uuid4().hex}"


@pytest.fixture(params=BACKENDS)
def catalog(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Catalog]:
    opened = open_catalog(catalog_url(request.param, request, tmp_path))
    yield opened
    opened.close()


def race(threads: int, work: Callable[[int], R]) -> list[R]:
    """`work(i)` for i in range(threads), all released at once with frequent thread switches,
    so a check-then-write race would show; the results in thread order."""
    barrier = threading.Barrier(threads)

    def released(i: int) -> R:
        barrier.wait(timeout=10)
        return work(i)

    switch_interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        with ThreadPoolExecutor(threads) as pool:
            return list(pool.map(released, range(threads)))
    finally:
        sys.setswitchinterval(switch_interval)
