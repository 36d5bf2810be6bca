"""The Flask application factory: settings, stores built once, the API, one error shape."""
from __future__ import annotations

import contextlib
import logging
import os
import socket
from pathlib import Path
from typing import Any, Mapping

from flask import Flask, redirect
from flask.json.provider import JSONProvider
from werkzeug.exceptions import HTTPException

from app import jsonio
from app.settings import load_settings, remove_secrets_from_environ

log = logging.getLogger("featurestore")


class OrjsonProvider(JSONProvider):
    """Flask's JSON through orjson, strict on input (see `jsonio.strict_loads`)."""

    def dumps(self, obj: Any, **kwargs: Any) -> str:
        return jsonio.dumps(obj).decode()

    def loads(self, s: str | bytes, **kwargs: Any) -> Any:
        return jsonio.strict_loads(s)


def build_service(settings: Mapping[str, Any], serving: Mapping[str, Any] | None = None):  # noqa: ANN201
    """Open every backend named by the settings (failing fast) and hydrate the realtime store: a
    FeatureService. `serving` (a serving process of WORKERS>1: primary_port, dialect, snapshot) restores
    the realtime store from the primary's snapshot and tails the feed instead, with no warehouse."""
    from app.distributed_transform import open_training_engine
    from app.replay import ReplayOptions
    from app.service import FeatureService, ServiceOptions
    from app.serving_stats import ServingStats
    from app.sources import SourceService
    from app.spine import SpineUploads
    from catalog import open_catalog
    from etl.isolation import open_etl_runner
    from etl.source import EtlFetcher
    from feed import open_feed
    from realtime import open_realtime_store
    from warehouse import open_warehouse

    from sql.prepared import QueryLimits, set_query_limits

    set_query_limits(QueryLimits.from_settings(settings))
    timeout = settings["QUERY_TIMEOUT_SECONDS"] or None
    with contextlib.ExitStack() as opened:  # a failed step closes what the earlier ones opened
        catalog = open_catalog(settings["CATALOG_URL"])
        opened.callback(catalog.close)
        realtime = open_realtime_store(settings["REALTIME_URL"], statement_timeout=lookup_timeout(settings))
        opened.callback(realtime.close)
        feed = open_feed(settings["FEED_URL"])
        opened.callback(feed.close)
        replica = bool(settings.get("REPLICA_OF"))
        if serving is not None:
            sources = _serving_sources(catalog, realtime, feed, settings, serving)
            warehouse = sources.warehouse
        else:
            options = {name: settings[setting] for name, setting in (("read_url", "WAREHOUSE_READ_URL"),
                                                                      ("memory_limit", "WAREHOUSE_MEMORY_LIMIT"))
                       if settings.get(setting)}
            warehouse = open_warehouse(settings["WAREHOUSE_URL"], statement_timeout=timeout, **options)
            opened.callback(warehouse.close)
            if replica:  # hydrated now, from one snapshot, and tailing the writer's feed (app/replicas.py)
                from app.replicas import replica_sources
                sources = replica_sources(catalog, warehouse, realtime, feed, settings)
            else:
                sources = SourceService(catalog, warehouse, realtime, load_dir=Path(settings["LOAD_DIR"]), feed=feed)
        # Load and hydrate every source once; if the catalog or the warehouse is down, that happens on first use
        # instead (the service starts, /health says what is down).
        if settings["DEMO_SOURCES"] and serving is None and not replica:
            _declare_demo_sources(sources)
        fetcher = EtlFetcher(Path(settings["DATA_DIR"]) / "git-cache", settings["ETL_ALLOWED_REMOTES"],
                             settings["REMOTE_TIMEOUT_SECONDS"])
        runner = open_etl_runner(settings["ETL_ISOLATION"], timeout=settings["ETL_TIMEOUT_SECONDS"],
                                 workers=settings["ETL_WORKERS"], memory_mb=settings["ETL_WORKER_MEMORY_MB"],
                                 threads=settings["THREADS"], inline=settings["ETL_INLINE"])
        # Training runs on the primary only: a serving process forwards it there.
        engine = None if serving is not None else \
            open_training_engine(settings["TRAINING_ENGINE_URL"], etl_time_limit(settings))
        if engine is not None:
            opened.callback(engine.close)
        stats = ServingStats(catalog, settings["SERVING_STATS_WINDOW"], settings["STATS_FLUSH_SECONDS"],
                             **stats_slots(settings, serving, replica))
        stats.start()
        uploads = SpineUploads(Path(settings["DATA_DIR"]) / "spines", settings["SPINE_TTL_SECONDS"])
        service = FeatureService(catalog, warehouse, realtime, sources, fetcher, runner, stats,
                                 ServiceOptions.from_settings(settings), uploads,
                                 ReplayOptions(entities=settings["CONSISTENCY_REPLAY_ENTITIES"],
                                               repeat_gap_seconds=settings["CONSISTENCY_REPEAT_GAP_SECONDS"]),
                                 engine)
        service.index_saved_queries()
        sources.start_evictor(settings["EVICT_INTERVAL_SECONDS"], settings["FEED_RETAIN_ENTRIES"])
        opened.pop_all()
    return service


def _serving_sources(catalog: Any, realtime: Any, feed: Any, settings: Mapping[str, Any],
                     serving: Mapping[str, Any]) -> Any:
    """A serving process's sources: the realtime store restored from the primary's snapshot, caught up
    from the feed and tailing it; no warehouse (`PrimaryWarehouse`) and no feed writes."""
    from app.sources import SourceService
    from app.workers import PrimaryWarehouse, snapshot_position
    from feed import FeedTailer

    warehouse = PrimaryWarehouse(serving["dialect"], serving["primary_port"])
    sources = SourceService(catalog, warehouse, realtime, load_dir=Path(settings["LOAD_DIR"]))
    position = snapshot_position(serving["snapshot"])
    sources.restore_snapshot(str(serving["snapshot"]))
    sources.tailer = FeedTailer(feed, sources.apply_feed, start=position, on_gap=exit_on_feed_gap)
    catch_up_or_exit(sources.tailer)
    log.info("serving process %s: restored the snapshot at feed position %s, caught up to %s", os.getpid(),
             position, sources.tailer.applied)
    return sources


EXIT_FEED_GAP = 75  # a serving process or replica that missed trimmed feed entries (EX_TEMPFAIL: start again)


def exit_on_feed_gap(gap: Exception) -> None:
    """A tailing process's answer to a FeedGap: its store lacks rows it can no longer get from the feed, so it
    stops at once rather than serve without them; the primary (or the replica's supervisor) starts it again
    from a fresh snapshot."""
    log.critical("process %s stops: %s", os.getpid(), gap)
    logging.shutdown()
    os._exit(EXIT_FEED_GAP)


def catch_up_or_exit(tailer: Any) -> None:
    """Apply what the feed holds, then tail it; a feed trimmed past the tailer's start exits as
    `exit_on_feed_gap` does (the snapshot or hydration it started from is too old)."""
    from feed import FeedGap

    try:
        tailer.catch_up()
    except FeedGap as gap:
        exit_on_feed_gap(gap)
    tailer.start()


def stats_slots(settings: Mapping[str, Any], serving: Mapping[str, Any] | None, replica: bool) -> dict[str, Any]:
    """Under which slot this process saves its serving statistics, and whose it merges into skew reports:
    the primary (slot "") merges its serving processes' (1 … WORKERS-1); a replica keeps its own slot."""
    if serving is not None:
        return {"slot": str(serving.get("slot") or os.getpid())}
    if replica:
        return {"slot": f"replica-{socket.gethostname()}-{settings['PORT']}"}
    return {"peer_slots": tuple(str(index) for index in range(1, int(settings["WORKERS"])))}


def etl_time_limit(settings: Mapping[str, Any]) -> float | None:
    """ETL_TIMEOUT_SECONDS as a limit (None: 0 or less, no limit), as `open_etl_runner` reads it."""
    seconds = settings["ETL_TIMEOUT_SECONDS"]
    return seconds if seconds is not None and seconds > 0 else None


def lookup_timeout(settings: Mapping[str, Any]) -> float | None:
    """The realtime store's statement limit: LOOKUP_TIMEOUT_SECONDS, never past QUERY_TIMEOUT_SECONDS (0: none)."""
    limits = [seconds for seconds in (settings["LOOKUP_TIMEOUT_SECONDS"], settings["QUERY_TIMEOUT_SECONDS"]) if seconds]
    return min(limits) if limits else None


def _declare_demo_sources(sources: Any) -> None:
    """DEMO_SOURCES at start; with the catalog or warehouse down, the first publish declares them instead."""
    from common.errors import BackendUnavailable
    from demo.publishing import declare_demo_sources

    try:
        if sources.ensure_loaded():
            declare_demo_sources(sources)
            return
    except BackendUnavailable as error:
        log.warning("demo sources not declared at start (%s)", error.message)
    log.warning("the demo's sources are declared by the first publish: the stores are not ready yet")


def create_app(config: Mapping[str, Any] | None = None, serving: Mapping[str, Any] | None = None) -> Flask:
    """Build the app: defaults, then the environment, then `config` (which wins); `serving`: as a serving
    process of WORKERS>1 (see `build_service`)."""
    from app.api import API_PREFIX, build_blueprint
    from app.api.common import error_body

    settings = load_settings(config)
    # Read once: ETL code (in this process or a worker) and every child process see none of them.
    remove_secrets_from_environ()
    app = Flask(__name__)
    app.config.update({**settings, "ADMIN_KEY": None})  # registered by its hash below, not kept
    app.config.update(MAX_CONTENT_LENGTH=settings["MAX_BODY_BYTES"], RESTX_ERROR_404_HELP=False,
                      ERROR_INCLUDE_MESSAGE=False, RESTX_MASK_SWAGGER=False)
    app.json = OrjsonProvider(app)
    from app.exports import ExportJobs
    from app.feature_sets import FeatureSets

    service = app.extensions["feature_service"] = build_service(settings, serving)
    app.extensions["feature_sets"] = FeatureSets(service)
    app.extensions["export_jobs"] = ExportJobs(Path(settings["EXPORT_DIR"]), service.warehouse,
                                               lambda: set(service.sources.warehouse_tables().values()))
    try:
        _set_up_auth(settings, service.catalog)
    except BaseException:  # e.g. an ADMIN_KEY too short: nothing stays open behind the error
        service.close()
        raise
    app.register_blueprint(build_blueprint())
    from ui import install_ui

    install_ui(app)  # the web UI at /ui, a client of the API above
    from app.body_guard import BodyGuard, BodyPolicy

    app.wsgi_app = BodyGuard(app.wsgi_app, BodyPolicy.from_settings(settings))  # before any key lookup

    @app.errorhandler(HTTPException)
    def http_error(error: HTTPException):  # noqa: ANN202 - errors outside the API blueprint
        body, status = error_body(error)
        return app.response_class(jsonio.dumps(body), status=status, mimetype="application/json")

    @app.get("/docs")
    def docs():  # noqa: ANN202
        return redirect(f"{API_PREFIX}/docs")

    return app


def _set_up_auth(settings: Mapping[str, Any], catalog: Any) -> None:
    """Register ADMIN_KEY, or say loudly that nothing is protected."""
    from app.auth import ensure_admin_key

    if settings["AUTH"] == "off":
        log.warning("AUTH=off: every endpoint is open to anyone who can reach %s:%s. For local development only.",
                    settings["HOST"], settings["PORT"])
    elif settings["ADMIN_KEY"]:
        record = ensure_admin_key(catalog, settings["ADMIN_KEY"])
        log.info("ADMIN_KEY registered as admin key %s%s", record.key_id,
                 " (revoked: it will not work)" if record.revoked_at else "")


def close_app(app: Flask) -> None:
    """Release every backend the app opened."""
    jobs = app.extensions.get("export_jobs")
    if jobs is not None:
        jobs.close()
    service = app.extensions.get("feature_service")
    if service is not None:
        service.close()
