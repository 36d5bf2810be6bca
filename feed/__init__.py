"""The change feed: rows acknowledged by an ingest, in order, for every serving process to apply.

A URL picks the backend: the embedded one (``sqlite:///<file>``, a table under DATA_DIR that
every process on one machine can tail) or Redis Streams (``redis://host:port/db?prefix=<name>``, one
stream ``<name>:feed`` that processes on many machines can tail; ``rediss://`` for TLS). See feed/base.py
for the contract.
"""
from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit, urlunsplit

from common.errors import InvalidInput
from common.urls import backend_registry
from feed.base import AppliedPosition, ChangeFeed, FeedEntry, FeedGap, FeedTailer

__all__ = ["AppliedPosition", "ChangeFeed", "FeedEntry", "FeedGap", "FeedTailer", "open_feed"]

DEFAULT_REDIS_PREFIX = "featurestore"
REDIS_TIMEOUT_SECONDS = 5.0
REDIS_TIMEOUTS = {"socket_timeout": REDIS_TIMEOUT_SECONDS, "socket_connect_timeout": REDIS_TIMEOUT_SECONDS}


def _sqlite(url: str, **options: Any) -> ChangeFeed:
    from feed.sqlite_feed import SqliteFeed

    path = url.split("sqlite:///", 1)[1] if url.startswith("sqlite:///") else ""
    if not path or path.startswith(":memory:"):
        raise InvalidInput(f"FEED_URL: the embedded feed is a file every process opens (sqlite:///<file>), "
                           f"not {url!r}")
    return SqliteFeed(path, **options)


def _redis(url: str, **options: Any) -> ChangeFeed:
    """``redis://[user:password@]host:port/db?prefix=<name>`` (default prefix ``featurestore``); the other
    query parameters are redis-py's (``socket_timeout=2``, …). Without them a call waits at most
    REDIS_TIMEOUT_SECONDS for the server, so an ingest answers 503 instead of hanging on a lost Redis."""
    import redis

    from feed.redis_feed import RedisFeed

    client_url, prefix = _redis_url(url)
    try:
        client = redis.Redis.from_url(client_url, **{**REDIS_TIMEOUTS, **options})
    except (ValueError, TypeError) as error:
        raise InvalidInput(f"FEED_URL: not a Redis URL redis-py reads ({error}): {url!r}") from None
    return RedisFeed(client, prefix)


def _redis_url(url: str) -> tuple[str, str]:
    """redis-py's URL (without ``prefix``) and the key prefix; InvalidInput for a database that is not a
    number or a parameter redis-py does not read from a URL (it would fail only at the first call)."""
    from redis.connection import URL_QUERY_ARGUMENT_PARSERS

    parts = urlsplit(url)
    query = parse_qs(parts.query, keep_blank_values=True)
    prefix = query.pop("prefix", [DEFAULT_REDIS_PREFIX])[-1]
    unknown = sorted(set(query) - set(URL_QUERY_ARGUMENT_PARSERS))
    database = parts.path.strip("/")
    if not prefix or unknown or (database and not database.isdigit()):
        raise InvalidInput(f"FEED_URL: expected redis://host:port/<database number>?prefix=<name> (plus "
                           f"redis-py's own parameters), not {url!r}", {"unknown_parameters": unknown})
    return urlunsplit(parts._replace(query=urlencode(query, doseq=True))), prefix


open_feed = backend_registry("FEED_URL", {"sqlite": _sqlite, "redis": _redis, "rediss": _redis})
