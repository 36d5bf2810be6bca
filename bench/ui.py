"""Web UI page times on the demo data: p50/p95 per page over N loads, measured over HTTP against a live server.

`python -m bench.ui --loads 50` starts `python -m app` (authentication on) on a free loopback port, registers
the demo (100 flows, two ETLs, a feature set of two versions, skewed serving) and the shop example through
the API, logs in through the UI's form and loads each page N times with the session cookie. The target is
< 300 ms per page (issue 13). Each page is a client of the API, so its time includes the API calls it makes.
"""
from __future__ import annotations

import argparse
import re
import tempfile
import time
from pathlib import Path

import requests

from bench.realtime_engines import percentiles
from tests.server_process import live_process
from tests.ui_demo import http_call, populate_demo, populate_shop

ADMIN_KEY = "bench-ui-admin-key-0123456789"
TARGET_MS = 300.0


def logged_in(base: str) -> requests.Session:
    """A session holding the UI's cookie for the admin key."""
    session = requests.Session()
    token = re.search(r'name="csrf" value="([^"]+)"', session.get(base + "/ui/login").text).group(1)
    answer = session.post(base + "/ui/login", data={"key": ADMIN_KEY, "csrf": token}, allow_redirects=False)
    assert answer.status_code == 302, answer.text
    return session


def pages(demo: dict, shop: dict) -> list[str]:
    """Every kind of page, on both domains."""
    return ["/ui/", "/ui/?q=minutes", "/ui/sources", "/ui/sources/users", "/ui/sources/page_views", "/ui/queries",
            f"/ui/queries/{demo['query_id']}", "/ui/etls", f"/ui/etls/{demo['etl_ids']['quote_features']}",
            f"/ui/etls/{shop['etl_id']}", "/ui/feature-sets", "/ui/feature-sets/conversion?a=1&b=2",
            "/ui/lineage", "/ui/keys"]


def time_page(session: requests.Session, url: str, loads: int) -> dict[int, float]:
    """Percentiles (ms) of `loads` sequential loads of one page (after one warm-up load)."""
    assert session.get(url, timeout=30).status_code == 200, url
    samples = []
    for _ in range(loads):
        started = time.perf_counter()
        answer = session.get(url, timeout=30)
        samples.append(time.perf_counter() - started)
        assert answer.status_code == 200 and "The API refused" not in answer.text, url
    return percentiles(samples)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--loads", type=int, default=50, help="loads per page")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder, \
            live_process(Path(folder) / "data", AUTH="on", ADMIN_KEY=ADMIN_KEY,
                         MAX_BODY_BYTES=str(8 * 1024 * 1024)) as live:
        call = http_call(live.base, {"Authorization": f"Bearer {ADMIN_KEY}"})
        demo, shop = populate_demo(call, Path(folder) / "demo-repo"), populate_shop(call, Path(folder) / "shop-repo")
        session = logged_in(live.base)
        print(f"| page | p50 ms | p95 ms | < {TARGET_MS:.0f} ms |")
        print("|---|---|---|---|")
        for path in pages(demo, shop):
            p = time_page(session, live.base + path, args.loads)
            print(f"| `{path}` | {p[50]:.1f} | {p[95]:.1f} | {'yes' if p[95] < TARGET_MS else 'NO'} |", flush=True)


if __name__ == "__main__":
    main()
