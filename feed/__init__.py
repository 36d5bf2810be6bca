"""The change feed: rows acknowledged by an ingest, in order, for every serving process to apply.

A URL picks the backend; only the embedded one exists so far (``sqlite:///<file>``, an append-only
table under DATA_DIR that every process on one machine can tail). See feed/base.py for the contract.
"""
from __future__ import annotations

from feed.base import ChangeFeed, FeedEntry, FeedTailer

__all__ = ["ChangeFeed", "FeedEntry", "FeedTailer", "open_feed"]


def open_feed(url: str) -> ChangeFeed:
    """The feed at `url`; an unknown scheme is an error that lists the known ones."""
    scheme = url.split(":", 1)[0].split("+", 1)[0]
    if scheme == "sqlite":
        from feed.sqlite_feed import SqliteFeed
        return SqliteFeed(url.split("sqlite:///", 1)[1])
    raise ValueError(f"unknown feed URL scheme {scheme!r}; known: sqlite")
