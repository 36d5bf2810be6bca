"""Bounded mixed load: N concurrent clients for T seconds against a live server; zero errors is the bar.

    .venv/bin/python -m bench.load --clients 8 --seconds 30
    .venv/bin/python -m bench.load --url http://127.0.0.1:8080 --api-key "$ADMIN_KEY" --clients 16 --seconds 60

Without --url it starts its own `python -m app` (waitress, AUTH=on with a generated ADMIN_KEY,
a temporary DATA_DIR) on a free loopback port and stops it by PID at the end. It then publishes
--flows demo flows, saves the walkthrough's four-table join, registers the example ETL (a fresh git
copy of examples/etl_repo), and with AUTH on creates a serving and a scientist key, so each kind
of request goes out with the least role that may send it.

Every client is a process with one keep-alive connection that, until the time is up, picks:
realtime (extract/realtime and query/realtime for recent known users, serving key), catalog
reads (query and ETL lists and records, the skew report, health; scientist key) or a publish of
--publish-flows flows (admin key), by the --mix weights. It reports requests, errors and latency
percentiles per kind, and exits 1 if any request failed (a non-2xx status or a connection
error), if the server died, or if it stopped answering /health afterwards.
"""
from __future__ import annotations

import argparse
import http.client
import json
import multiprocessing
import random
import secrets
import sys
import tempfile
import time
import urllib.parse
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
QUERY = (ROOT / "examples" / "four_table_join.sql").read_text()
KINDS = ("realtime", "catalog", "publish")


class Client:
    """One keep-alive connection to the server; reconnects after a connection error."""

    def __init__(self, host: str, port: int, timeout: float = 60.0):
        self.host, self.port, self.timeout = host, port, timeout
        self.connection = http.client.HTTPConnection(host, port, timeout=timeout)

    def call(self, method: str, path: str, body: Any = None, key: str | None = None) -> tuple[int, bytes]:
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        try:
            self.connection.request(method, path, body=data, headers=headers)
            response = self.connection.getresponse()
            return response.status, response.read()
        except (OSError, http.client.HTTPException) as error:
            self.connection.close()
            self.connection = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
            return 0, f"{type(error).__name__}: {error}".encode()

    def json(self, method: str, path: str, body: Any = None, key: str | None = None) -> Any:
        status, data = self.call(method, path, body, key)
        if not 200 <= status < 300:
            raise RuntimeError(f"{method} {path} → {status}: {data[:500].decode(errors='replace')}")
        return json.loads(data)

    def close(self) -> None:
        self.connection.close()


def prepare(client: Client, admin_key: str | None, flows: int, etl_path: str, auth: bool) -> dict[str, Any]:
    """Data, the saved query, the registered ETL, keys per role, and recent users to ask for."""
    if flows:
        client.json("PUT", f"/v1.0/publish?n_flows={flows}&seed={random.randrange(2**31)}", key=admin_key)
    query = client.json("POST", "/v1.0/query/train?save=true&include_data=false",
                        {"query": QUERY, "query_name": "quote_join"}, key=admin_key)
    etl = client.json("POST", "/v1.0/extract/train?save=true&include_data=false",
                      {"query_id": query["query_id"], "etl_path": etl_path}, key=admin_key)
    recent = client.json("POST", "/v1.0/query/train",
                         {"query": "SELECT user_id FROM users ORDER BY creation_date DESC LIMIT 2000"}, key=admin_key)
    users = [row["user_id"] for row in recent["data"]]
    if not users:
        raise RuntimeError("the warehouse has no users: publish some (--flows)")
    keys = {"admin": admin_key, "serving": admin_key, "scientist": admin_key}
    if auth:
        for role in ("serving", "scientist"):
            keys[role] = client.json("POST", "/v1.0/keys", {"name": f"bench.load {role}", "role": role},
                                     key=admin_key)["key"]
    return {"query_id": query["query_id"], "etl_id": etl["etl_id"], "users": users, "keys": keys}


def _request(kind: str, rng: random.Random, setup: dict[str, Any], publish_flows: int
             ) -> tuple[str, str, Any, str | None, str]:
    """(method, path, body, key, label) of one request of `kind`."""
    keys, query_id, etl_id = setup["keys"], setup["query_id"], setup["etl_id"]
    if kind == "realtime":
        user = rng.choice(setup["users"])
        if rng.random() < 0.75:
            return ("POST", "/v1.0/extract/realtime", {"query_id": query_id, "etl_id": etl_id,
                                                       "index_key": "user_id", "index_value": user},
                    keys["serving"], "POST /extract/realtime")
        return ("POST", "/v1.0/query/realtime", {"query_id": query_id, "index_key": "user_id", "index_value": user},
                keys["serving"], "POST /query/realtime")
    if kind == "catalog":
        return rng.choice([
            ("GET", "/v1.0/queries?limit=50", None, keys["scientist"], "GET /queries"),
            ("GET", f"/v1.0/etls?limit=50&query_id={query_id}", None, keys["scientist"], "GET /etls"),
            ("GET", f"/v1.0/queries/{query_id}", None, keys["scientist"], "GET /queries/<id>"),
            ("GET", f"/v1.0/etls/{etl_id}", None, keys["scientist"], "GET /etls/<id>"),
            ("GET", f"/v1.0/etls/{etl_id}/skew", None, keys["scientist"], "GET /etls/<id>/skew"),
            ("GET", "/v1.0/health", None, None, "GET /health"),
        ])
    return ("PUT", f"/v1.0/publish?n_flows={publish_flows}&seed={rng.randrange(2**31)}", None, keys["admin"],
            "PUT /publish")


def _client_process(job: tuple) -> dict[str, Any]:
    host, port, setup, mix, seconds, publish_flows, seed = job
    rng = random.Random(seed)
    client = Client(host, port)
    kinds, weights = zip(*mix.items())
    latencies: dict[str, list[float]] = defaultdict(list)
    labels: dict[str, str] = {}
    errors: dict[str, int] = defaultdict(int)
    samples: list[str] = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        kind = rng.choices(kinds, weights)[0]
        method, path, body, key, label = _request(kind, rng, setup, publish_flows)
        started = time.perf_counter()
        status, data = client.call(method, path, body, key)
        latencies[label].append(time.perf_counter() - started)
        labels[label] = kind
        if not 200 <= status < 300:
            errors[label] += 1
            if len(samples) < 5:
                samples.append(f"{label} → {status}: {data[:300].decode(errors='replace')}")
    client.close()
    return {"latencies": dict(latencies), "labels": labels, "errors": dict(errors), "samples": samples}


def _summary(latencies: list[float], errors: int, seconds: float) -> dict[str, Any]:
    ms = np.asarray(latencies) * 1000
    p50, p95, p99 = np.percentile(ms, [50, 95, 99]) if len(ms) else (float("nan"),) * 3
    return {"requests": len(ms), "errors": errors, "per_second": round(len(ms) / seconds, 1),
            "p50_ms": round(float(p50), 2), "p95_ms": round(float(p95), 2), "p99_ms": round(float(p99), 2),
            "max_ms": round(float(ms.max()), 2) if len(ms) else float("nan")}


def run_load(host: str, port: int, setup: dict[str, Any], clients: int, seconds: float, mix: dict[str, float],
             publish_flows: int) -> dict[str, Any]:
    jobs = [(host, port, setup, mix, seconds, publish_flows, seed) for seed in range(clients)]
    with multiprocessing.get_context("fork").Pool(clients) as pool:
        started = time.monotonic()
        parts = pool.map(_client_process, jobs)
        wall = time.monotonic() - started
    by_label: dict[str, list[float]] = defaultdict(list)
    errors: dict[str, int] = defaultdict(int)
    kind_of: dict[str, str] = {}
    samples: list[str] = []
    for part in parts:
        for label, values in part["latencies"].items():
            by_label[label].extend(values)
        for label, count in part["errors"].items():
            errors[label] += count
        kind_of.update(part["labels"])
        samples.extend(part["samples"])
    rows = {label: {"kind": kind_of[label], **_summary(values, errors[label], wall)}
            for label, values in sorted(by_label.items(), key=lambda item: (KINDS.index(kind_of[item[0]]), item[0]))}
    everything = [v for values in by_label.values() for v in values]
    return {"clients": clients, "seconds": round(wall, 2), "mix": mix, "by_request": rows,
            "total": _summary(everything, sum(errors.values()), wall), "error_samples": samples[:10]}


def render(result: dict[str, Any]) -> str:
    lines = [f"{result['clients']} clients for {result['seconds']:.1f} s, mix {result['mix']}", "",
             "| request | kind | requests | errors | req/s | p50 ms | p95 ms | p99 ms | max ms |",
             "|---|---|---|---|---|---|---|---|---|"]
    for label, row in {**result["by_request"], "total": {"kind": "", **result["total"]}}.items():
        lines.append(f"| {label} | {row['kind']} | {row['requests']:,} | {row['errors']} | {row['per_second']:,.1f} "
                     f"| {row['p50_ms']} | {row['p95_ms']} | {row['p99_ms']} | {row['max_ms']} |")
    if result["error_samples"]:
        lines += ["", "errors (first few):"] + [f"- {sample}" for sample in result["error_samples"]]
    return "\n".join(lines)


def _mix(text: str) -> dict[str, float]:
    mix = {}
    for part in text.split(","):
        name, _, weight = part.partition("=")
        if name.strip() not in KINDS:
            raise argparse.ArgumentTypeError(f"unknown kind {name!r}; known: {', '.join(KINDS)}")
        mix[name.strip()] = float(weight)
    return {k: w for k, w in mix.items() if w > 0}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--mix", type=_mix, default=_mix("realtime=80,catalog=15,publish=5"),
                        help="weights of realtime, catalog, publish (default: realtime=80,catalog=15,publish=5)")
    parser.add_argument("--flows", type=int, default=5000, help="flows to publish before the load (0: none)")
    parser.add_argument("--publish-flows", type=int, default=20, help="flows per publish during the load")
    parser.add_argument("--url", help="a running server (default: start one on a free loopback port)")
    parser.add_argument("--api-key", help="with --url and AUTH on: an admin key (default: $FEATURESTORE_API_KEY)")
    parser.add_argument("--auth", choices=["on", "off"], default="on", help="AUTH of the server started here")
    parser.add_argument("--threads", type=int, help="THREADS of the server started here")
    parser.add_argument("--json", type=Path, help="also write the result here as JSON")
    args = parser.parse_args(argv)

    import os

    from bench import live

    with tempfile.TemporaryDirectory(prefix="featurestore-load-") as tmp:
        tmp_path = Path(tmp)
        etl_file = live.make_etl_repo(tmp_path / "etl_repo")
        server = None
        if args.url:
            parsed = urllib.parse.urlsplit(args.url)
            host, port = parsed.hostname or "127.0.0.1", parsed.port or 80
            admin_key = args.api_key or os.environ.get("FEATURESTORE_API_KEY")
            auth = admin_key is not None
            context = None
        else:
            admin_key = "load-admin-" + secrets.token_hex(16) if args.auth == "on" else None
            auth = args.auth == "on"
            settings = {"AUTH": args.auth, **({"ADMIN_KEY": admin_key} if admin_key else {}),
                        **({"THREADS": str(args.threads)} if args.threads else {})}
            context = live.running_server(tmp_path / "data", ROOT / "bench" / "results" / "logs", **settings)
            server = context.__enter__()
            host, port = "127.0.0.1", server.port
        try:
            client = Client(host, port)
            try:
                setup = prepare(client, admin_key, args.flows, str(etl_file), auth)
            except RuntimeError as error:
                print(f"FAIL: setting up the load failed: {error}", file=sys.stderr)
                return 2
            finally:
                client.close()
            print(f"server http://{host}:{port} (AUTH {'on' if auth else 'off'}); {len(setup['users'])} recent users; "
                  f"query {setup['query_id']}, etl {setup['etl_id']}", file=sys.stderr)
            result = run_load(host, port, setup, args.clients, args.seconds, args.mix, args.publish_flows)
            health_client = Client(host, port)
            status, _ = health_client.call("GET", "/v1.0/health")
            health_client.close()
            result["health_after"] = status
            result["server_alive"] = server is None or server.process.poll() is None
            if server is not None:
                result["server_peak_rss"] = live.process_status(server.pid)["VmHWM"]
        finally:
            if context is not None:
                context.__exit__(None, None, None)
    print(render(result))
    print(f"\nhealth after the load: {result['health_after']}; server alive: {result['server_alive']}")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    failed = result["total"]["errors"] > 0 or result["health_after"] != 200 or not result["server_alive"]
    print("FAIL: " + ("errors" if result["total"]["errors"] else "the server is unhealthy") if failed
          else "OK: zero errors")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
