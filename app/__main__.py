"""`python -m app`: serve the API on waitress, a production WSGI server, with the configured settings."""
from __future__ import annotations

import argparse
import logging
import sys

from app.settings import SETTINGS, load_settings


def main(argv: list[str] | None = None) -> int:
    epilog = "settings (environment variables):\n" + "\n".join(
        f"  {s.name:<24} {s.help} (default: {s.default if s.default not in (None, ()) else 'derived'})"
        for s in SETTINGS)
    parser = argparse.ArgumentParser(prog="python -m app", description="Run the feature store service.",
                                     epilog=epilog, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    import waitress

    from app import close_app, create_app

    settings = load_settings()
    app = create_app()
    log = logging.getLogger("featurestore")
    log.info("catalog %s | warehouse %s | realtime %s", settings["CATALOG_URL"], settings["WAREHOUSE_URL"],
             settings["REALTIME_URL"])
    log.info("serving on http://%s:%s (API docs at /v1.0/docs)", settings["HOST"], settings["PORT"])
    try:
        waitress.serve(app, host=settings["HOST"], port=settings["PORT"], threads=settings["THREADS"],
                       ident="featurestore")
    finally:
        close_app(app)
    return 0


if __name__ == "__main__":
    sys.exit(main())
