"""The change feed: rows acknowledged by an ingest, in order, for every serving process to apply.

A URL picks the backend; only the embedded one exists so far (``sqlite:///<file>``, an append-only
table under DATA_DIR that every process on one machine can tail). See feed/base.py for the contract.
"""
from __future__ import annotations

from typing import Any

from common.urls import backend_registry
from feed.base import AppliedPosition, ChangeFeed, FeedEntry, FeedTailer

__all__ = ["AppliedPosition", "ChangeFeed", "FeedEntry", "FeedTailer", "open_feed"]


def _sqlite(url: str, **options: Any) -> ChangeFeed:
    from common.errors import InvalidInput
    from feed.sqlite_feed import SqliteFeed

    path = url.split("sqlite:///", 1)[1] if url.startswith("sqlite:///") else ""
    if not path or path.startswith(":memory:"):
        raise InvalidInput(f"FEED_URL: the embedded feed is a file every process opens (sqlite:///<file>), "
                           f"not {url!r}")
    return SqliteFeed(path, **options)


open_feed = backend_registry("FEED_URL", {"sqlite": _sqlite})
