"""Redis fixtures: a uniquely named key prefix per test on the local server, its keys deleted at the end.

Tests that need Redis skip when no server answers at 127.0.0.1:6379, except under ``CI=true``, where a
missing server fails the run instead.
"""
from __future__ import annotations

import contextlib
import uuid
from typing import Iterator

import pytest
import redis

from tests.required import missing

REDIS_SERVER_URL = "redis://127.0.0.1:6379/0"


@pytest.fixture(scope="session")
def redis_server_url() -> str:
    """The server URL if Redis answers; else skip, or fail under CI."""
    try:
        with redis.Redis.from_url(REDIS_SERVER_URL, socket_connect_timeout=3) as client:
            client.ping()
    except redis.RedisError as err:
        missing("a Redis server", f"Redis not reachable at {REDIS_SERVER_URL}: {err}")
    return REDIS_SERVER_URL


@contextlib.contextmanager
def throwaway_prefix(server_url: str) -> Iterator[str]:
    """A fresh key prefix; every key under it is deleted at the end."""
    prefix = f"fs_test_{uuid.uuid4().hex}"
    try:
        yield prefix
    finally:
        with redis.Redis.from_url(server_url) as client:
            keys = list(client.scan_iter(match=f"{prefix}:*"))
            if keys:
                client.delete(*keys)


@pytest.fixture
def redis_prefix(redis_server_url: str) -> Iterator[str]:
    """A fresh key prefix for one test (`throwaway_prefix`)."""
    with throwaway_prefix(redis_server_url) as prefix:
        yield prefix
