"""Settings as one table: name, default, help. The README table and `--help` come from here.

Precedence: defaults, then environment variables, then the mapping given to
`create_app` (tests). URL defaults derive from `DATA_DIR` when left unset.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Callable, Mapping


@dataclass(frozen=True)
class Setting:
    name: str
    default: Any
    help: str
    parse: Callable[[str], Any] = str


def _flag(text: str) -> bool:
    return text.strip().lower() in ("1", "true", "yes", "on")


def _names(text: str) -> tuple[str, ...]:
    return tuple(item.strip() for item in text.split(",") if item.strip())


SETTINGS: tuple[Setting, ...] = (
    Setting("DATA_DIR", "./data", "Folder for the embedded catalog, warehouse and git cache."),
    Setting("CATALOG_URL", None, "Catalog backend: sqlite:///…, postgresql://… or mongodb://…. "
            "Default: sqlite:///$DATA_DIR/catalog.db."),
    Setting("WAREHOUSE_URL", None, "Warehouse: duckdb:///… or any SQLAlchemy URL (postgresql://…). "
            "Default: duckdb:///$DATA_DIR/warehouse.duckdb."),
    Setting("WAREHOUSE_READ_URL", None, "PostgreSQL warehouse only: the URL user SQL (queries, training sets) "
            "connects with, as a role that may only SELECT the sources' tables (docker-compose.yml makes one). "
            "Default: WAREHOUSE_URL."),
    Setting("REALTIME_URL", "sqlite:///:memory:", "Realtime store: in-memory SQLite (sqlite:///:memory:, fastest "
            "point lookups) or DuckDB (duckdb:///:memory:, runs every DuckDB query)."),
    Setting("DEMO_SOURCES", False, "Declare the demo's four sources (users, quotes, transactions, policies) at "
            "start; otherwise the first publish declares them.", _flag),
    Setting("LOAD_DIR", None, "Folder whose Parquet and CSV files POST /sources/<name>/load may read (nothing "
            "outside it). Default: $DATA_DIR/load."),
    Setting("EVICT_INTERVAL_SECONDS", 60.0, "How often rows past their source's hot window are deleted from the "
            "realtime store (they are never served in between); 0 never deletes.", float),
    Setting("MAX_INGEST_BYTES", 1_073_741_824, "Largest body of POST /sources/<name>/rows and one Arrow upload; "
            "larger gets 413.", int),
    Setting("HOST", "127.0.0.1", "Address the server listens on."),
    Setting("PORT", 8080, "Port the server listens on.", int),
    Setting("THREADS", 8, "Worker threads of the WSGI server.", int),
    Setting("AUTH", "on", "API-key authentication: 'on', or 'off' for local development only (announced "
            "loudly at start).", lambda text: "off" if text.strip().lower() in ("off", "0", "false", "no") else "on"),
    Setting("ADMIN_KEY", None, "With AUTH on: an admin API key to create (by its hash) at start, so a "
            "deployment needs no interactive step."),
    Setting("QUERY_TIMEOUT_SECONDS", 30.0, "Time limit of one SQL statement on the warehouse or realtime store; "
            "past it the request gets 400 query_timeout.", float),
    Setting("ETL_TIMEOUT_SECONDS", 30.0, "Time limit of one ETL run (fit or transform); past it 422.", float),
    Setting("ETL_ISOLATION", "inprocess", "Where ETL code runs: 'inprocess' (fastest) or 'process' (warm worker "
            "processes with time and memory limits and no network)."),
    Setting("ETL_WORKERS", 2, "Worker processes for ETL_ISOLATION=process.", int),
    Setting("ETL_WORKER_MEMORY_MB", 2048, "Address-space limit of each ETL worker process.", int),
    Setting("MAX_RESPONSE_ROWS", 100_000, "Most rows a JSON response may carry; longer results get 400.", int),
    Setting("MAX_PUBLISH_FLOWS", 100_000, "Most flows one publish call may generate.", int),
    Setting("MAX_BODY_BYTES", 1_048_576, "Largest request body accepted; larger gets 413.", int),
    Setting("ETL_ALLOWED_REMOTES", (), "Comma-separated URL prefixes of git/HTTP remotes ETLs may come from; "
            "local paths and file:// are always allowed.", _names),
    Setting("REMOTE_TIMEOUT_SECONDS", 30.0, "Time limit for fetching ETL code from a remote.", float),
    Setting("SERVING_STATS_WINDOW", 1000, "Served values kept per feature for the skew report (a ring buffer).",
            int),
    Setting("STATS_FLUSH_SECONDS", 60.0, "How often serving statistics are saved to the catalog (and on "
            "shutdown).", float),
    Setting("SKEW_MIN_SAMPLES", 50, "Served rows needed before a feature can be flagged as skewed.", int),
    Setting("SKEW_PSI_THRESHOLD", 0.2, "Population stability index at which a feature is flagged.", float),
    Setting("SKEW_MEAN_SHIFT_THRESHOLD", 0.5, "Shift of the serving mean, in training standard deviations, "
            "at which a feature is flagged.", float),
    Setting("SKEW_NULL_RATE_THRESHOLD", 0.1, "Change of the null rate at which a feature is flagged.", float),
)


def load_settings(overrides: Mapping[str, Any] | None = None,
                  environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Resolve every setting: defaults, then `environ`, then `overrides`; fill derived URLs."""
    environ = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    for setting in SETTINGS:
        value = setting.default
        if setting.name in environ and environ[setting.name] != "":
            raw = environ[setting.name]
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
    values["LOAD_DIR"] = os.path.abspath(values["LOAD_DIR"] or os.path.join(data_dir, "load"))
    return values


def settings_table() -> str:
    """The settings as a markdown table (for the README and `--help`)."""
    rows = ["| variable | default | meaning |", "|---|---|---|"]
    for s in SETTINGS:
        default = (", ".join(s.default) or "(none)") if isinstance(s.default, tuple) else s.default
        rows.append(f"| `{s.name}` | `{default if default not in (None, '') else '(derived)'}` | {s.help} |")
    return "\n".join(rows)
