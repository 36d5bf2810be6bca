"""Settings as one table: name, default, help. The README table and `--help` come from here.

Precedence: defaults, then environment variables, then the mapping given to
`create_app` (tests). URL defaults derive from `DATA_DIR` when left unset.

Secrets (`SECRET_SETTINGS`: the admin key and the backend URLs, which may carry
passwords) can instead be read from a file named by ``<NAME>_FILE`` (a Docker secret,
say), so they are in no process environment at all; `remove_secrets_from_environ`
takes them (and the ``_FILE`` names) out of ``os.environ`` once read, so ETL code and
any process the service starts do not inherit them.
"""
from __future__ import annotations

import ctypes
import os
import re
from dataclasses import dataclass
from typing import Any, Callable, Mapping, MutableMapping


@dataclass(frozen=True)
class Setting:
    name: str
    default: Any
    help: str
    parse: Callable[[str], Any] = str


def _flag(text: str) -> bool:
    return text.strip().lower() in ("1", "true", "yes", "on")


def _positive_seconds(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise ValueError(f"must be more than 0 seconds, not {text!r}")
    return value


def _count(text: str) -> int:
    value = int(text)
    if value < 0:
        raise ValueError(f"must be 0 or more, not {text!r}")
    return value


MEMORY_UNITS = {"kb": 1e3, "mb": 1e6, "gb": 1e9, "tb": 1e12, "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}
MEMORY_LIMIT_MIN = 32 * 2**20  # far below this DuckDB fails to allocate even for a small query


def _memory_size(text: str) -> str:
    """A size as DuckDB reads it: a number and a unit (512MB, 1.5GB, 2GiB), at least MEMORY_LIMIT_MIN."""
    match = re.fullmatch(r"([0-9]+(?:\.[0-9]+)?)\s*([KMGT]i?B)", text.strip(), re.IGNORECASE)
    if not match:
        raise ValueError(f"must be a size such as 512MB or 2GB, not {text!r}")
    if float(match.group(1)) * MEMORY_UNITS[match.group(2).lower()] < MEMORY_LIMIT_MIN:
        raise ValueError(f"must be at least 32MiB, not {text!r}")
    return text.strip()


def _names(text: str) -> tuple[str, ...]:
    return tuple(item.strip() for item in text.split(",") if item.strip())


SETTINGS: tuple[Setting, ...] = (
    Setting("DATA_DIR", "./data", "Folder for the embedded catalog, warehouse and git cache."),
    Setting("CATALOG_URL", None, "Catalog backend: sqlite:///…, postgresql://… or mongodb://…. "
            "Default: sqlite:///$DATA_DIR/catalog.db. Or CATALOG_URL_FILE: a file holding it."),
    Setting("WAREHOUSE_URL", None, "Warehouse: duckdb:///… or any SQLAlchemy URL (postgresql://…). "
            "Default: duckdb:///$DATA_DIR/warehouse.duckdb. Or WAREHOUSE_URL_FILE: a file holding it."),
    Setting("WAREHOUSE_MEMORY_LIMIT", None, "DuckDB warehouse only: the most memory its queries hold (DuckDB's form: "
            "512MB, 2GB; at least 32MiB); past it joins and aggregations spill to disk, slower (into "
            "<warehouse file>.tmp; for duckdb:///:memory:, .tmp in the working directory). Default: DuckDB's own, "
            "80% of RAM.", _memory_size),
    Setting("WAREHOUSE_READ_URL", None, "PostgreSQL warehouse only: the URL user SQL (queries, training sets) "
            "connects with, as a role that may only SELECT the sources' tables (docker-compose.yml makes one). "
            "Default: WAREHOUSE_URL. Or WAREHOUSE_READ_URL_FILE: a file holding it."),
    Setting("FEED_URL", None, "Change feed every serving process tails (the rows each ingest acknowledged): "
            "sqlite:///<file> (one machine) or Redis Streams, redis://host:port/<db>?prefix=<name> (stream "
            "<name>:feed, default prefix featurestore). Default: sqlite:///$DATA_DIR/feed.db."),
    Setting("FEED_RETAIN_ENTRIES", 100_000, "The writer keeps the newest this many change-feed entries (one per "
            "source an ingest touched) and deletes older ones every EVICT_INTERVAL_SECONDS (so never when that is "
            "0); 0 keeps every entry. A process or replica that falls further behind, or needs longer to hydrate, "
            "stops (exit code 75) and starts again from a fresh snapshot.", _count),
    Setting("REALTIME_URL", "sqlite:///:memory:", "Realtime store: in-memory SQLite (sqlite:///:memory:, fastest "
            "point lookups) or DuckDB (duckdb:///:memory:, runs every DuckDB query)."),
    Setting("DEMO_SOURCES", False, "Declare the demo's four sources (users, quotes, transactions, policies) at "
            "start; otherwise the first publish declares them.", _flag),
    Setting("LOAD_DIR", None, "Folder whose Parquet and CSV files POST /sources/<name>/load may read (nothing "
            "outside it). Default: $DATA_DIR/load."),
    Setting("EVICT_INTERVAL_SECONDS", 60.0, "How often rows past their source's hot window are deleted from the "
            "realtime store (they are never served in between), and the change feed trimmed to FEED_RETAIN_ENTRIES; "
            "0 never deletes either.", float),
    Setting("MAX_INGEST_BYTES", 1_073_741_824, "Largest body of POST /sources/<name>/rows and one Arrow upload; "
            "larger gets 413.", int),
    Setting("EXPORT_DIR", None, "Folder point-in-time training sets are exported to as Parquet (nothing outside "
            "it). Default: $DATA_DIR/exports."),
    Setting("MAX_SPINE_ROWS", 10_000_000, "Most rows one training spine may have.", int),
    Setting("SPINE_TTL_SECONDS", 3600.0, "How long an uploaded spine (POST /spines) is kept.", float),
    Setting("UI_SECRET_KEY", None, "Signs the web UI's session cookie; unset: a new random secret per process "
            "(logins last until a restart). Set it when several processes serve one port."),
    Setting("HOST", "127.0.0.1", "Address the server listens on."),
    Setting("PORT", 8080, "Port the server listens on.", int),
    Setting("WORKERS", None, "Serving processes on PORT (one of them the primary, which owns the warehouse and "
            "every write; the others serve realtime requests and catalog reads and forward the rest to it). "
            "Default: the number of cores; 1 is one process.", int),
    Setting("REPLICA_OF", None, "Run as a read replica of the writer at this URL (http://host:port): hydrate from "
            "the shared PostgreSQL warehouse, tail FEED_URL, serve realtime requests and catalog reads, forward "
            "every other request to the writer (app/replicas.py). Needs a PostgreSQL catalog and warehouse and a "
            "Redis FEED_URL; one process (WORKERS is not read). Default: unset, this process writes."),
    Setting("MIN_POSITION_WAIT_SECONDS", 1.0, "Longest a realtime request with min_position waits for its "
            "process to apply that change-feed position; past it 503.", float),
    Setting("THREADS", 8, "Worker threads of the WSGI server (of the primary, with WORKERS>1).", int),
    Setting("SERVING_THREADS", 2, "Worker threads of each serving process of WORKERS>1. Few: threads of one process "
            "contend for its GIL (8 clients on WORKERS=2: 300 req/s with 1 thread, 280 with 2, 190 with 8); two, so "
            "that a request forwarded to the primary (a training set) leaves one free.", int),
    Setting("GIL_SWITCH_SECONDS", 0.005, "How long a thread may hold Python's GIL while another waits for it "
            "(sys.setswitchinterval): shorter lets the server's I/O thread answer sooner under load.", _positive_seconds),
    Setting("CONNECTION_LIMIT", 1000, "Most open client connections; at the limit, those idle longest with no "
            "request being served are closed to make room.", int),
    Setting("HEADER_TIMEOUT_SECONDS", 10.0, "Time a connection has to send a request's line and headers, from "
            "its first byte (or from connecting); past it the connection is closed.", float),
    Setting("CHANNEL_TIMEOUT_SECONDS", 30, "A connection with no request in progress that sends nothing for this "
            "long (idle keep-alive, a stalled body) is closed.", int),
    Setting("AUTH", "on", "API-key authentication: 'on', or 'off' for local development only (announced "
            "loudly at start).", lambda text: "off" if text.strip().lower() in ("off", "0", "false", "no") else "on"),
    Setting("ADMIN_KEY", None, "With AUTH on: an admin API key to create (by its hash) at start, so a "
            "deployment needs no interactive step. Or ADMIN_KEY_FILE: a file holding it (e.g. a Docker secret)."),
    Setting("QUERY_TIMEOUT_SECONDS", 30.0, "Time limit of one SQL statement on the warehouse (and the most "
            "LOOKUP_TIMEOUT_SECONDS can be); past it the request gets 400 query_timeout.", float),
    Setting("LOOKUP_TIMEOUT_SECONDS", 1.0, "Time limit of one statement on the realtime store (a point lookup); "
            "past it the request gets 400 query_timeout. Never longer than QUERY_TIMEOUT_SECONDS.", float),
    Setting("ETL_TIMEOUT_SECONDS", 30.0, "Time limit of one ETL run (fit or transform); past it 422.", float),
    Setting("ETL_ISOLATION", "inprocess", "Where ETL code runs: 'inprocess' (fastest) or 'process' (warm worker "
            "processes with time and memory limits and no network)."),
    Setting("ETL_INLINE", True, "In process, let a proven-fast ETL's served runs (a few rows) run on the request's own "
            "thread under a watchdog that interrupts them at ETL_TIMEOUT_SECONDS, instead of on a time-limit thread.",
            _flag),
    Setting("TRAINING_ENGINE_URL", "local", "Where a batchable ETL's transform runs for batched training sets "
            "(app/distributed_transform.py): 'local' (in this process), 'dask://host:port' (an existing Dask "
            "scheduler whose workers run this project's code) or 'dask+local://?workers=N' (a Dask LocalCluster "
            "of N processes, started and closed with the service)."),
    Setting("ETL_WORKERS", 2, "Worker processes for ETL_ISOLATION=process.", int),
    Setting("ETL_WORKER_MEMORY_MB", 2048, "Address-space limit of each ETL worker process.", int),
    Setting("MAX_QUERY_TOKENS", 20_000, "Most SQL tokens a query may have (checked before it is parsed); more "
            "gets 400.", int),
    Setting("MAX_QUERY_SET_OPERATIONS", 100, "Most UNION/INTERSECT/EXCEPT operations in a query (their parsing "
            "and typing cost grows faster than linearly); more gets 400.", int),
    Setting("MAX_QUERY_DEPTH", 64, "Deepest nesting of parentheses in a query; deeper gets 400.", int),
    Setting("MAX_RESPONSE_ROWS", 100_000, "Most rows a JSON response may carry; longer results get 400.", int),
    Setting("MAX_RESPONSE_BYTES", 134_217_728, "Largest JSON response body, checked while it is encoded; "
            "larger gets 400 result_too_large (stream training sets as Arrow instead).", int),
    Setting("MAX_PUBLISH_FLOWS", 100_000, "Most flows one publish call may generate.", int),
    Setting("MAX_BODY_BYTES", 1_048_576, "Largest request body accepted (POST /sources/<name>/rows: "
            "MAX_INGEST_BYTES); larger gets 413 from its Content-Length, before it is read.", int),
    Setting("ETL_ALLOWED_REMOTES", (), "Comma-separated URL prefixes of git/HTTP remotes ETLs may come from; "
            "local paths and file:// are always allowed.", _names),
    Setting("REMOTE_TIMEOUT_SECONDS", 30.0, "Time limit for fetching ETL code from a remote.", float),
    Setting("SERVING_STATS_WINDOW", 1000, "Served values kept per feature for the skew report (a ring buffer).",
            int),
    Setting("STATS_FLUSH_SECONDS", 60.0, "How often serving statistics are saved to the catalog (and on "
            "shutdown).", float),
    Setting("CONSISTENCY_REPLAY_ENTITIES", 200, "Training entities a registration (extract/train?save=true) "
            "replays through the serving path and compares with their training rows; 0 turns the replay off.", int),
    Setting("CONSISTENCY_REPEAT_GAP_SECONDS", 1.0, "The replay serves some entities a second time at least this "
            "long after the training run began, to catch features from the wall clock or randomness.", float),
    Setting("SKEW_MIN_SAMPLES", 50, "Served rows needed before a feature can be flagged as skewed.", int),
    Setting("SKEW_PSI_THRESHOLD", 0.2, "Population stability index above which a feature is flagged (plus 3x "
            "the PSI a stable sample of that size shows, see checks/skew.py).", float),
    Setting("SKEW_MEAN_SHIFT_THRESHOLD", 0.5, "Shift of the serving mean, in training standard deviations, "
            "above which a feature is flagged (plus 3x its sampling noise).", float),
    Setting("SKEW_NULL_RATE_THRESHOLD", 0.1, "Change of the null rate above which a feature is flagged (plus 3x "
            "its sampling noise).", float),
)


SECRET_SETTINGS = ("ADMIN_KEY", "UI_SECRET_KEY", "CATALOG_URL", "WAREHOUSE_URL", "WAREHOUSE_READ_URL", "REALTIME_URL")


def load_settings(overrides: Mapping[str, Any] | None = None,
                  environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Resolve every setting: defaults, then `environ` (``<NAME>_FILE`` for secrets), then `overrides`;
    fill derived URLs."""
    environ = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    for setting in SETTINGS:
        value = setting.default
        raw = _secret_from_file(setting.name, environ) if setting.name in SECRET_SETTINGS else None
        if raw is None and environ.get(setting.name, "") != "":
            raw = environ[setting.name]
        if raw is not None:
            try:
                value = setting.parse(raw)
            except ValueError:
                raise ValueError(f"setting {setting.name}: cannot read {raw!r}") from None
        values[setting.name] = value
    values.update(overrides or {})
    data_dir = os.path.abspath(values["DATA_DIR"])
    values["DATA_DIR"] = data_dir
    values["CATALOG_URL"] = values["CATALOG_URL"] or f"sqlite:///{data_dir}/catalog.db"
    values["WAREHOUSE_URL"] = values["WAREHOUSE_URL"] or f"duckdb:///{data_dir}/warehouse.duckdb"
    values["FEED_URL"] = values["FEED_URL"] or f"sqlite:///{data_dir}/feed.db"
    values["WORKERS"] = values["WORKERS"] or os.cpu_count() or 1
    values["LOAD_DIR"] = os.path.abspath(values["LOAD_DIR"] or os.path.join(data_dir, "load"))
    values["EXPORT_DIR"] = os.path.abspath(values["EXPORT_DIR"] or os.path.join(data_dir, "exports"))
    return values


def _secret_from_file(name: str, environ: Mapping[str, str]) -> str | None:
    """The content of the file ``<name>_FILE`` names (one trailing newline dropped), or None if unset."""
    path = environ.get(f"{name}_FILE", "")
    if not path:
        return None
    if environ.get(name, ""):
        raise ValueError(f"setting {name}: give either {name} or {name}_FILE, not both")
    try:
        with open(path, encoding="utf-8") as handle:
            text = handle.read().removesuffix("\n").removesuffix("\r")
    except (OSError, UnicodeDecodeError) as error:
        raise ValueError(f"setting {name}_FILE: cannot read {path!r}: {error}") from None
    if not text.strip():
        raise ValueError(f"setting {name}_FILE: {path!r} is empty")
    return text


def remove_secrets_from_environ(environ: MutableMapping[str, str] | None = None) -> list[str]:
    """Delete every secret setting and its ``_FILE`` name from `environ` (default ``os.environ``: also
    unset for child processes, and wiped from the kernel's copy of this process's starting environment,
    see `_wipe_starting_environment`); the names removed."""
    wipe = environ is None
    environ = os.environ if environ is None else environ
    names = [name for secret in SECRET_SETTINGS for name in (secret, f"{secret}_FILE") if name in environ]
    for name in names:
        del environ[name]
    if wipe and names:
        _wipe_starting_environment(names)
    return names


def _wipe_starting_environment(names: list[str]) -> None:
    """Zero the ``NAME=value`` strings of `names` where the kernel placed this process's starting
    environment: Linux serves ``/proc/<pid>/environ`` from that memory, which unsetting a variable does
    not change. Only for names already unset (nothing points at their strings any more); a no-op where
    /proc is missing."""
    try:
        with open("/proc/self/stat", "rb") as handle:
            fields = handle.read().rsplit(b")", 1)[1].split()
        start, end = int(fields[47]), int(fields[48])  # env_start, env_end: fields 50 and 51 of proc(5)
    except (OSError, IndexError, ValueError):
        return
    if not 0 < start < end:
        return
    keys = tuple(name.encode() + b"=" for name in names)
    offset = 0
    for entry in ctypes.string_at(start, end - start).split(b"\0"):
        if entry.startswith(keys):
            ctypes.memset(start + offset, 0, len(entry))
        offset += len(entry) + 1


def settings_table() -> str:
    """The settings as a markdown table (for the README and `--help`)."""
    rows = ["| variable | default | meaning |", "|---|---|---|"]
    for s in SETTINGS:
        default = (", ".join(s.default) or "(none)") if isinstance(s.default, tuple) else s.default
        rows.append(f"| `{s.name}` | `{default if default not in (None, '') else '(derived)'}` | {s.help} |")
    return "\n".join(rows)
