"""REPLICA_OF=<writer URL>: read replicas on other machines, behind a load balancer.

The writer is an ordinary instance (`python -m app`, a PostgreSQL catalog and warehouse, FEED_URL on
Redis): it takes every write. A replica is a separately started process sharing those three: it fills
its own in-memory realtime store from the warehouse (hydration), then tails the feed, and answers
realtime requests and catalog reads itself. Every other request (ingests, declarations, training,
publishing, a realtime request that logs its rows) is forwarded to the writer (`Router`, as the
serving processes of WORKERS>1 forward to their primary), so a client may send anything to any
replica; the answer of a write carries its feed position, which `min_position` on any replica waits for.

No gap, no duplicate: which feed entries does a hydrated store still need? The writer commits an
ingest to the warehouse first, then appends it to the feed (`SourceService._to_realtime`). So a
replica that reads the feed's newest position P and only then starts hydrating has every entry at
or before P in what it reads (no gap if it tails from P). The entries after P are the question: an
ingest can commit before the hydration's snapshot and reach the feed after P (it was between its
commit and its append), and its rows would then be applied twice. Positions cannot tell those
apart, so the writer ties each entry to its warehouse write instead: the ingest's transaction reads
its own id (``pg_current_xact_id()``, `WriteReceipt`) and the feed entry carries it (``fs_xid`` in
the rows' metadata). The replica hydrates every source inside one REPEATABLE READ transaction and
keeps that transaction's snapshot (``pg_current_snapshot()``: xmin, xmax and the ids in progress,
`WarehouseSnapshot`). An entry after P whose transaction the snapshot sees is already in the store
and is skipped; every other one is applied (`HydrationFilter`). Exactly once per row, with no lock
between writer and replicas and no extra round trip on the write path beyond reading the id. The
catalog is read after the snapshot is taken, so the source (and version) of every ingest the snapshot
sees is known to the hydration: a source is declared before its rows are ingested.

An entry without a transaction id is a declaration's (a new source version, with the rows an adopted
table or a longer hot window brings into the realtime store; rows already in the warehouse). It is
skipped when the replica hydrated that source at that version or later (its hydration read those
rows), applied otherwise. Caveat, at the edge of a window only: a declaration that lengthens a hot
window brings in the rows between the new and the old cutoff as of its own clock, and a store's rows
near the old cutoff (kept until evicted, or hydrated a moment earlier or later) can meet them twice or
miss a few seconds of them; that holds for every process that applies the feed, not only replicas.

A replica whose writer is gone keeps serving what it holds; what it would forward answers 503
(`BackendUnavailable`, the one error shape). What a replica does not see: rows a writer committed to the warehouse and then died before appending
to the feed (they answered 503) reach a replica at its next start, as for the serving processes of
WORKERS>1. TLS to the writer is not spoken (REPLICA_OF is http://…, inside the deployment's network).
WAREHOUSE_URL must reach the server the writer commits to, not a streaming standby: a standby may not
have replayed a commit whose entry is already at or before P, which would be a gap.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Mapping
from urllib.parse import urlsplit

from catalog.base import Catalog
from common.errors import BackendUnavailable, InvalidInput
from feed import ChangeFeed, FeedEntry, FeedTailer
from realtime.base import RealtimeStore
from warehouse import Warehouse, WarehouseSnapshot

log = logging.getLogger("featurestore")


def writer_address(url: str) -> tuple[str, int]:
    """(host, port) of REPLICA_OF, which must be http://host[:port] with nothing after it."""
    parts = urlsplit(url)
    try:
        port = parts.port or 80
    except ValueError:
        port = None
    if parts.scheme != "http" or not parts.hostname or port is None or parts.path.strip("/") or parts.query:
        raise InvalidInput(f"REPLICA_OF: expected the writer's http://host:port, not {url!r}")
    return parts.hostname, port


def check_replica_shape(settings: Mapping[str, Any]) -> None:
    """Refuse backends a replica on another machine cannot share with its writer."""
    writer_address(settings["REPLICA_OF"])
    for name in ("CATALOG_URL", "WAREHOUSE_URL"):
        if not settings[name].startswith("postgres"):
            raise InvalidInput(f"REPLICA_OF: a replica shares its writer's {name}, a PostgreSQL server "
                               f"(postgresql://…), not {settings[name].split(':', 1)[0]}")
    if not settings["FEED_URL"].startswith(("redis://", "rediss://")):
        raise InvalidInput("REPLICA_OF: a replica tails its writer's change feed on a server: FEED_URL=redis://…")


class HydrationFilter:
    """Which feed entries after the hydration's start position the hydrated store already holds."""

    def __init__(self, snapshot: WarehouseSnapshot, versions: Mapping[str, int]):
        self.snapshot, self.versions = snapshot, dict(versions)

    def __call__(self, entry: FeedEntry) -> bool:
        """True: skip `entry` (an ingest the snapshot sees, or a declaration at a version hydrated)."""
        metadata = entry.rows.schema.metadata or {}
        if b"fs_xid" in metadata:
            return self.snapshot.sees(int(metadata[b"fs_xid"]))
        return self.versions.get(entry.source, 0) >= int(metadata.get(b"fs_version", 0))


def replica_sources(catalog: Catalog, warehouse: Warehouse, realtime: RealtimeStore, feed: ChangeFeed,
                    settings: Mapping[str, Any]) -> Any:
    """A replica's sources: hydrated from one warehouse snapshot, caught up from the feed (skipping what
    the snapshot held) and tailing it; no feed writes (writes go to the writer)."""
    from app import catch_up_or_exit, exit_on_feed_gap
    from app.sources import SourceService

    sources = SourceService(catalog, warehouse, realtime, load_dir=Path(settings["LOAD_DIR"]))
    start = feed.last_position()  # before the snapshot: every entry up to here is in it
    with warehouse.consistent_snapshot() as snapshot:
        if not sources.load():
            raise BackendUnavailable("catalog", "a replica needs the sources' definitions to start")
        hydrated = sources.hydrate()
    sources.tailer = FeedTailer(feed, sources.apply_feed, start=start,
                                skip=HydrationFilter(snapshot, sources.versions()), on_gap=exit_on_feed_gap)
    catch_up_or_exit(sources.tailer)
    log.info("replica %s: hydrated %s from the warehouse (feed position %s), caught up to %s", os.getpid(),
             hydrated, start, sources.tailer.applied)
    return sources


def serve_replica(settings: dict[str, Any]) -> int:
    """Run a replica: hydrate, tail the feed, serve HOST:PORT, forward writes to REPLICA_OF."""
    from app import close_app, create_app
    from app.server import serve_forever
    from app.workers import Router, ServedBy, stop_on_sigterm

    check_replica_shape(settings)
    host, port = writer_address(settings["REPLICA_OF"])
    stop_on_sigterm()
    app = create_app()
    app.wsgi_app = ServedBy(Router(app.wsgi_app, port, host, writer="writer"))
    log.info("replica %s of %s: serving on http://%s:%s", os.getpid(), settings["REPLICA_OF"], settings["HOST"],
             settings["PORT"])
    try:
        serve_forever(app, settings)
    except KeyboardInterrupt:
        pass
    finally:
        close_app(app)
    return 0
