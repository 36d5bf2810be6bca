"""One command line for the service: ``python -m app [serve|keys|publish] …``.

With no subcommand it serves (so ``python -m app`` runs the service). Every
subcommand reads the same settings (environment variables) as the server.
"""
from __future__ import annotations

import argparse
import logging
import sys
from typing import Any, Callable

from app.settings import SETTINGS, load_settings


def _settings_help() -> str:
    return "settings (environment variables):\n" + "\n".join(
        f"  {s.name:<26} {s.help} (default: {s.default if s.default not in (None, ()) else 'derived'})"
        for s in SETTINGS)


def serve(args: argparse.Namespace) -> int:
    """Run the API on waitress, a production WSGI server."""
    import waitress

    from app import close_app, create_app

    settings = load_settings()
    app = create_app()
    log = logging.getLogger("featurestore")
    log.info("catalog %s | warehouse %s | realtime %s", _redacted(settings["CATALOG_URL"]),
             _redacted(settings["WAREHOUSE_URL"]), settings["REALTIME_URL"])
    log.info("serving on http://%s:%s (API docs at /v1.0/docs)", settings["HOST"], settings["PORT"])
    try:
        waitress.serve(app, host=settings["HOST"], port=settings["PORT"], threads=settings["THREADS"],
                       ident="featurestore")
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
        service.stats.stop()
        for backend in (service.catalog, service.warehouse, service.realtime):
            backend.close()
    return 0


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
    commands = root.add_subparsers(dest="command", metavar="{serve,keys,publish}")
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
    return root


COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {"serve": serve, "keys": keys, "publish": publish}


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from common.errors import FeatureStoreError

    try:
        return COMMANDS[args.command or "serve"](args)
    except FeatureStoreError as error:
        print(f"error: {error.message}", file=sys.stderr)
        return 2


def run(argv: Any = None) -> None:
    sys.exit(main(argv))
