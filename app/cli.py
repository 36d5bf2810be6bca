"""One command line for the service: ``python -m app [serve|keys|publish|reset|plan|apply|export] …``.

With no subcommand it serves (so ``python -m app`` runs the service). Every
subcommand reads the same settings (environment variables) as the server.
"""
from __future__ import annotations

import argparse
import json
import logging
import shutil
import sys
from pathlib import Path
from typing import Any, Callable

from app.settings import SETTINGS, load_settings


def _settings_help() -> str:
    return "settings (environment variables):\n" + "\n".join(
        f"  {s.name:<26} {s.help} (default: {s.default if s.default not in (None, ()) else 'derived'})"
        for s in SETTINGS)


def serve(args: argparse.Namespace) -> int:
    """Run the API on waitress, a production WSGI server (guarded: app/server.py)."""
    from app import close_app, create_app
    from app.server import serve_forever

    from app import workers

    settings = load_settings()
    if workers.serving_role() == "serving":
        return workers.serve_worker(settings)
    if settings["REPLICA_OF"]:
        from app.replicas import serve_replica
        return serve_replica(settings)
    if settings["WORKERS"] > 1:
        return workers.serve_primary(settings)
    app = create_app()
    log = logging.getLogger("featurestore")
    log.info("catalog %s | warehouse %s | realtime %s", _redacted(settings["CATALOG_URL"]),
             _redacted(settings["WAREHOUSE_URL"]), settings["REALTIME_URL"])
    log.info("serving on http://%s:%s (API docs at /v1.0/docs)", settings["HOST"], settings["PORT"])
    try:
        serve_forever(app, settings)
    finally:
        close_app(app)
    return 0


def keys(args: argparse.Namespace) -> int:
    """Create, list or revoke API keys directly in the catalog."""
    from app.auth import create_key
    from catalog import open_catalog
    from catalog.base import utc_now

    catalog = open_catalog(load_settings()["CATALOG_URL"])
    try:
        if args.action == "create":
            record, token = create_key(catalog, args.name, args.role)
            print(f"created {record.role} key {record.key_id} ({record.name}). The key, shown only now:")
            print(token)
        elif args.action == "list":
            for record in catalog.list_api_keys():
                state = f"revoked {record.revoked_at}" if record.revoked_at else "active"
                print(f"{record.key_id}  {record.role:<9}  {state:<40}  {record.name}")
        else:
            record = catalog.revoke_api_key(args.key_id, utc_now())
            print(f"revoked key {record.key_id} ({record.name}) at {record.revoked_at}")
    finally:
        catalog.close()
    return 0


def publish(args: argparse.Namespace) -> int:
    """Generate demo flows into the warehouse and the realtime store of the configured backends."""
    from app import build_service

    settings = load_settings()
    service = build_service(settings)
    try:
        done = 0
        while done < args.n_flows:
            batch = min(args.batch, args.n_flows - done)
            seed = None if args.seed is None else args.seed + done
            service.publish(batch, seed)
            done += batch
            print(f"\rpublished {done}/{args.n_flows} flows", end="", file=sys.stderr, flush=True)
        print(file=sys.stderr)
    finally:
        service.close()
    return 0


def reset(args: argparse.Namespace) -> int:
    """Delete the embedded stores' files under DATA_DIR (catalog, warehouse, feed, git cache), the service
    stopped.

    Server backends (PostgreSQL, MongoDB) are left alone; the load directory (your input files) is kept."""
    settings = load_settings()
    files = _embedded_files(settings)
    for url in (settings["CATALOG_URL"], settings["WAREHOUSE_URL"]):
        if not url.startswith(("sqlite:///", "duckdb:///")):
            print(f"not embedded, left alone (drop its database yourself): {_redacted(url)}", file=sys.stderr)
    present = [path for path in files if path.exists()]
    if not present:
        print(f"nothing to reset under {settings['DATA_DIR']}", file=sys.stderr)
        return 0
    locked = _locked_warehouse(settings["WAREHOUSE_URL"])
    if locked:
        print(f"error: {locked} is in use: stop the service first, then run reset again", file=sys.stderr)
        return 1
    if not args.yes:
        print("would delete:\n" + "\n".join(f"  {path}" for path in present) + "\nrun again with --yes to "
              "delete them", file=sys.stderr)
        return 1
    for path in present:
        shutil.rmtree(path) if path.is_dir() else path.unlink()
        print(f"deleted {path}", file=sys.stderr)
    return 0


def _embedded_files(settings: dict[str, Any]) -> list[Path]:
    """The files the embedded catalog, warehouse and change feed keep (with their journals), the realtime
    snapshot and the git cache."""
    files = [Path(settings["DATA_DIR"]) / "git-cache", Path(settings["DATA_DIR"]) / "realtime-snapshot.db"]
    for url, suffixes in ((settings["CATALOG_URL"], ("", "-wal", "-shm", "-journal")),
                          (settings["WAREHOUSE_URL"], ("", ".wal")),
                          (settings["FEED_URL"], ("", "-wal", "-shm"))):
        scheme, _, path = url.partition(":///")
        if scheme in ("sqlite", "duckdb") and path and not path.startswith(":memory:"):
            files += [Path(path + suffix) for suffix in suffixes]
    return files


def _locked_warehouse(url: str) -> str | None:
    """The DuckDB warehouse file if a running service holds it (DuckDB locks it), else None."""
    scheme, _, path = url.partition(":///")
    if scheme != "duckdb" or not Path(path).is_file():
        return None
    import duckdb

    try:
        duckdb.connect(path).close()
    except duckdb.IOException:
        return path
    return None


def plan(args: argparse.Namespace) -> int:
    """Show what `apply` would change in the catalog for a feature repo (featurerepo/)."""
    run_plan = _repo_command("run_plan")
    return run_plan(args) if run_plan else 1


def apply(args: argparse.Namespace) -> int:
    """Register a feature repo in the catalog through the service's API (featurerepo/)."""
    run_apply = _repo_command("run_apply")
    return run_apply(args) if run_apply else 1


def export(args: argparse.Namespace) -> int:
    """Write a point-in-time training set to Parquet under the service's EXPORT_DIR (or a warehouse table)
    through the API, showing rows written as it goes."""
    import os

    import pyarrow.csv as pa_csv
    import pyarrow.parquet as pq

    from client import FeatureStore

    spine = None if args.spine is None else pq.read_table(args.spine) if args.spine.endswith(".parquet") \
        else pa_csv.read_csv(args.spine)
    url = args.url or os.environ.get("FEATURESTORE_URL", "http://127.0.0.1:8080")
    target = {"path": args.path} if args.path else {"table": args.table}
    query = open(args.query_file, encoding="utf-8").read() if args.query_file else None
    with FeatureStore(url, args.api_key or os.environ.get("FEATURESTORE_API_KEY"), timeout=args.timeout) as store:
        job = store.training_set(spine, args.index_key, args.time, spine_query=args.spine_query, query=query,
                                 query_id=args.query_id,
                                 etl_path=args.etl_path, feature_set=args.feature_set, time_zone=args.time_zone,
                                 export={**target, "overwrite": args.overwrite}, progress=True)
    result = job["result"]
    print(f"exported {result['rows']} rows to {result.get('path') or result.get('table')} in {result['seconds']} s")
    return 0


def _repo_command(name: str) -> Callable[[argparse.Namespace], int] | None:
    """A runner of featurerepo.cli, imported only when used: the service image needs neither it nor the
    client (and pandas-free imports keep `serve` and `keys` quick)."""
    try:
        from featurerepo import cli, service_client  # noqa: F401 - the client comes with service_client
    except ModuleNotFoundError as exc:
        print(f"error: plan and apply need the featurerepo and client packages of the project ({exc})",
              file=sys.stderr)
        return None
    return getattr(cli, name)


REPO_EPILOG = """a feature repo is a folder inside a git repository:
  featurestore.toml        [service] url; [etls.<name>] query = "<query>"; [feature_sets.<name>]
                           etl, features, index_key, description, tags, stage; optional
                           [queries.<name>] file and [git] url, ref (register ETLs from a remote)
  queries/<name>.sql       one query per file, saved under its file name
  etls/<name>.py           ETL scripts; the service reads them at the committed HEAD and
                           refuses uncommitted changes
  (example: examples/feature_repo)

lines: + create   ~ change (new id or version, or a stage)   = unchanged   ! error   ? not checked

service: --url, else $FEATURESTORE_URL, else [service] url, else http://127.0.0.1:8080
API key: --api-key, else $FEATURESTORE_API_KEY (never from the file)
"""
PLAN_EXIT = """
exit status: 0 the plan succeeded (changes or not), 1 an error,
             2 with --detailed-exitcode when the plan has changes
"""
APPLY_EXIT = """
exit status: 0 applied (or nothing to do), 1 an error (nothing is applied when the plan has
errors; after a failed step, what was done before it stays and `apply` again continues)
"""


def _repo_parser(commands: Any, name: str, summary: str, exits: str) -> argparse.ArgumentParser:
    """`plan` or `apply`: the arguments they share."""
    sub = commands.add_parser(name, help=summary, description=summary[0].upper() + summary[1:] + ".",
                              epilog=REPO_EPILOG + exits, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub.add_argument("repo_dir", nargs="?", default=".", metavar="REPO_DIR",
                     help="the feature repo folder, holding featurestore.toml (default: .)")
    sub.add_argument("--url", help="the service's base URL (overrides $FEATURESTORE_URL and the file)")
    sub.add_argument("--api-key", metavar="KEY", help="API key (default: $FEATURESTORE_API_KEY)")
    sub.add_argument("--git-ref", metavar="REF", help="with [git] url: register ETLs at this branch, tag or "
                                                      "commit (overrides [git] ref)")
    sub.add_argument("--timeout", type=float, default=600.0, metavar="SECONDS",
                     help="seconds to wait for each call; registering an ETL runs it (default: 600)")
    return sub


def _redacted(url: str) -> str:
    """A URL with any password replaced, for logs."""
    scheme, sep, rest = url.partition("://")
    if not sep or "@" not in rest.split("/", 1)[0]:
        return url
    credentials, at, host = rest.partition("@")
    return f"{scheme}://{credentials.split(':', 1)[0]}:***@{host}"


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(prog="python -m app", description="The feature store service.",
                                   epilog=_settings_help(), formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = root.add_subparsers(dest="command", metavar="{serve,keys,publish,reset,plan,apply,export}")
    commands.add_parser("serve", help="run the service (the default)", epilog=_settings_help(),
                        formatter_class=argparse.RawDescriptionHelpFormatter)
    key_parser = commands.add_parser("keys", help="create, list or revoke API keys")
    key_actions = key_parser.add_subparsers(dest="action", required=True)
    create = key_actions.add_parser("create", help="create a key and print it once")
    create.add_argument("--name", required=True, help="who or what uses the key")
    create.add_argument("--role", required=True, choices=["admin", "scientist", "serving"])
    key_actions.add_parser("list", help="list keys (never their secrets)")
    revoke = key_actions.add_parser("revoke", help="revoke a key; it stops working at once")
    revoke.add_argument("key_id")
    pub = commands.add_parser("publish", help="generate demo flows into the configured stores")
    pub.add_argument("n_flows", type=int)
    pub.add_argument("--seed", type=int)
    pub.add_argument("--batch", type=int, default=50_000, help="flows per transaction")
    wipe = commands.add_parser("reset", help="delete the embedded catalog, warehouse and git cache under "
                               "DATA_DIR (stop the service first; the load directory is kept)")
    wipe.add_argument("--yes", action="store_true", help="really delete (without it: list what would go)")
    repo_plan = _repo_parser(commands, "plan", "show what `apply` would change in the catalog for a feature "
                             "repo (changes nothing)", PLAN_EXIT)
    repo_plan.add_argument("--detailed-exitcode", action="store_true",
                           help="exit 2 (not 0) when the plan has changes, as terraform does")
    _repo_parser(commands, "apply", "register a feature repo's queries, ETLs and feature sets in the catalog "
                 "(idempotent)", APPLY_EXIT)
    _export_parser(commands)
    return root


def _export_parser(commands: Any) -> None:
    sub = commands.add_parser("export", help="export a point-in-time training set through a running service")
    what = sub.add_mutually_exclusive_group(required=True)
    what.add_argument("--query-file", metavar="SQL_FILE", help="a query's SQL")
    what.add_argument("--query-id", help="a saved query (with --etl-path: its ETL's features)")
    what.add_argument("--feature-set", metavar="NAME", help="a feature set's features")
    sub.add_argument("--etl-path", help="with --query-id: the ETL (as extract/train takes it)")
    rows = sub.add_mutually_exclusive_group(required=True)
    rows.add_argument("--spine", metavar="FILE", help="Parquet or CSV: key, as-of time, labels")
    rows.add_argument("--spine-query", metavar="SQL", help="read-only SQL over the sources selecting the spine")
    sub.add_argument("--index-key", required=True, help="the spine's key column (a query output column)")
    sub.add_argument("--time", help="the spine's as-of time column (none: as of now)")
    sub.add_argument("--time-zone", help="the zone of naive spine times")
    where = sub.add_mutually_exclusive_group(required=True)
    where.add_argument("--path", help="a .parquet path under the service's EXPORT_DIR")
    where.add_argument("--table", help="a new warehouse table")
    sub.add_argument("--overwrite", action="store_true", help="replace an existing file or table")
    sub.add_argument("--url", help="the service's base URL (default: $FEATURESTORE_URL, else http://127.0.0.1:8080)")
    sub.add_argument("--api-key", metavar="KEY", help="API key (default: $FEATURESTORE_API_KEY)")
    sub.add_argument("--timeout", type=float, default=600.0, metavar="SECONDS", help="seconds per call")


COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {"serve": serve, "keys": keys, "publish": publish,
                                                            "reset": reset, "plan": plan, "apply": apply,
                                                            "export": export}


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from common.errors import FeatureStoreError

    try:
        return COMMANDS[args.command or "serve"](args)
    except FeatureStoreError as error:
        details = f"\n  details: {json.dumps(error.details, default=str)}" if error.details else ""
        print(f"error: {error.code}: {error.message}{details}", file=sys.stderr)
        return 2


def run(argv: Any = None) -> None:
    sys.exit(main(argv))
