"""Peer benchmark: Feast's HTTP feature server (`feast serve`) answering /get-online-features from SQLite.

    bash bench/install_feast.sh                              # once: feast in its own venv
    "${FEAST_VENV:-/tmp/feast-venv}/bin/python" bench/peer_feature_server.py \
        [--users 10000] [--seconds 20] [--clients 8] [--workers 1] [--max-requests 0]

Runs in the Feast venv only (imports nothing from this repository; it hands bench/wrk_bodies.lua, a
file beside it, to wrk, so both sides of a comparison are driven by the same load script).

Set up programmatically in a temp dir (not timed): feature_store.yaml with provider local, a SQLite
online store and the file offline store; an Entity `user` (join key user_id) and a FeatureView
`quote_features` with the features the example ETL serves (examples/etl_repo/etls/quote_features.py):
quote_type (String), is_mobile (Bool), minutes_to_bind (Float64), paid_by_amex (Bool), is_paid (Bool).
--users users with 32-character hex ids get seeded values of those types (a Parquet FileSource),
applied, then materialized into the online store: the peer serves PRECOMPUTED features, one row per
user, where our extract/realtime computes them per request from the raw rows (join + ETL).

Then `feast serve` (gunicorn + uvicorn workers, --no-access-log) on a free loopback port, waited for on
GET /health, and checked: --check random users must come back with exactly the generated values.
Measured:
  one_client    one keep-alive connection (http.client): 200 warm-up, then 2,000 timed POSTs of random
                users: p50/p95/p99, req/s;
  concurrent    wrk -t{min(clients, cores)} -c{clients} -d{seconds}s --latency over 5,000 random bodies:
                req/s, p50/p99, errors (non-2xx and socket errors), the server's CPU (cores, master and
                workers, from /proc) and the load average before and after.
The server is stopped by its PID (SIGTERM, gunicorn stops its workers). Feast's defaults are kept
except two, both in the peer's favour: the access log is off, and --max-requests is 0 (never restart
a worker). Feast's default, 1000, has gunicorn restart the worker after ~1,000 requests; with one
worker the server is gone while the new one imports Feast (seconds on a loaded machine): in a smoke
run (1 worker, 2,000 users, 10 s, load average ~5.4) it gave 172 req/s, p99 2,260 ms and 8 socket
errors, against 367 req/s, p99 71 ms, 0 errors with 0. The JSON says how many workers were restarted.

Prints one JSON line on stdout (Feast's own chatter goes to stderr or the server log).
"""
from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import logging
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import warnings
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pandas as pd

FEATURE_VIEW = "quote_features"
FEATURES = ["quote_type", "is_mobile", "minutes_to_bind", "paid_by_amex", "is_paid"]
QUOTE_TYPES = ["car", "home", "pet", "travel"]  # demo/flows.py's values
LUA = Path(__file__).resolve().parent / "wrk_bodies.lua"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def load_average() -> list[float]:
    return [float(value) for value in open("/proc/loadavg").read().split()[:3]]


def feature_rows(users: int, seed: int) -> pd.DataFrame:
    """One row per user: a 32-hex-digit user_id and seeded values of the example ETL's feature types."""
    rng = np.random.default_rng(seed)
    bound_seconds = rng.integers(60, 1800, size=users)
    return pd.DataFrame({
        "user_id": [rng.bytes(16).hex() for _ in range(users)],
        "quote_type": np.array(QUOTE_TYPES)[rng.integers(0, len(QUOTE_TYPES), size=users)],
        "is_mobile": rng.random(users) < 2 / 3,
        "minutes_to_bind": bound_seconds.astype("float64") / 60.0,
        "paid_by_amex": rng.random(users) < 1 / 3,
        "is_paid": rng.random(users) < 0.8,
        "event_timestamp": pd.Timestamp.now(tz="UTC").floor("s") - pd.to_timedelta(
            rng.integers(3600, 7 * 86400, size=users), unit="s"),
    })


def build_store(repo: Path, rows: pd.DataFrame) -> Any:
    """The Feast repo in `repo`: config, entity, feature view, applied and materialized into SQLite."""
    from feast import Entity, FeatureStore, FeatureView, Field, FileSource, ValueType
    from feast.types import Bool, Float64, String

    (repo / "feature_store.yaml").write_text(
        "project: peer_serving\n"
        f"registry: {repo / 'registry.db'}\n"
        "provider: local\n"
        "online_store:\n"
        "  type: sqlite\n"
        f"  path: {repo / 'online.db'}\n"
        "offline_store:\n"
        "  type: file\n"
        "entity_key_serialization_version: 3\n")
    source_path = repo / "quote_features.parquet"
    rows.to_parquet(source_path, index=False)
    user = Entity(name="user", join_keys=["user_id"], value_type=ValueType.STRING)
    source = FileSource(name="quote_features_source", path=str(source_path), timestamp_field="event_timestamp")
    view = FeatureView(name=FEATURE_VIEW, entities=[user], ttl=timedelta(days=30), source=source, online=True,
                       schema=[Field(name="user_id", dtype=String), Field(name="quote_type", dtype=String),
                               Field(name="is_mobile", dtype=Bool), Field(name="minutes_to_bind", dtype=Float64),
                               Field(name="paid_by_amex", dtype=Bool), Field(name="is_paid", dtype=Bool)])
    store = FeatureStore(repo_path=str(repo))
    store.apply([user, view])
    store.materialize(start_date=datetime.now(timezone.utc) - timedelta(days=8),
                      end_date=datetime.now(timezone.utc))
    return store


def request_body(user_id: str) -> str:
    """The documented /get-online-features body (feast/feature_server.py GetOnlineFeaturesRequest)."""
    return json.dumps({"features": [f"{FEATURE_VIEW}:{name}" for name in FEATURES],
                       "entities": {"user_id": [user_id]}})


def post(connection: http.client.HTTPConnection, body: str) -> tuple[int, bytes]:
    connection.request("POST", "/get-online-features", body=body, headers={"Content-Type": "application/json"})
    response = connection.getresponse()
    return response.status, response.read()


@contextlib.contextmanager
def feature_server(repo: Path, port: int, workers: int, max_requests: int) -> Iterator[subprocess.Popen]:
    """`feast serve` on 127.0.0.1:`port`, healthy on GET /health; stopped by its PID on the way out."""
    feast = Path(sys.executable).parent / "feast"
    command = [str(feast), "-c", str(repo), "serve", "-h", "127.0.0.1", "-p", str(port), "--no-access-log",
               "-w", str(workers), "--max-requests", str(max_requests)]
    log = open(repo / "server.log", "wb")
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, cwd=repo)
    try:
        deadline = time.monotonic() + 120
        while not healthy(port):
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"feast serve did not become healthy:\n{tail(repo / 'server.log')}")
            time.sleep(0.2)
        yield process
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        log.close()


def healthy(port: int) -> bool:
    with contextlib.suppress(OSError, http.client.HTTPException):
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
        try:
            connection.request("GET", "/health")
            return connection.getresponse().status == 200
        finally:
            connection.close()
    return False


def tail(path: Path, lines: int = 40) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


def check_answers(port: int, rows: pd.DataFrame, count: int, seed: int) -> int:
    """Ask for `count` random users; raise unless every answer holds exactly the generated values."""
    picked = rows.sample(n=min(count, len(rows)), random_state=seed)
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        for row in picked.itertuples(index=False):
            status, data = post(connection, request_body(row.user_id))
            if status != 200:
                raise RuntimeError(f"/get-online-features → {status}: {data[:300]!r}")
            answer = json.loads(data)
            names = answer["metadata"]["feature_names"]
            got = {name: result["values"][0] for name, result in zip(names, answer["results"])}
            expected = {"user_id": row.user_id, **{name: getattr(row, name) for name in FEATURES}}
            expected = {name: value.item() if hasattr(value, "item") else value for name, value in expected.items()}
            if got != expected:
                raise RuntimeError(f"feast answered {got} for {expected}")
    finally:
        connection.close()
    return len(picked)


def percentiles_ms(seconds: list[float], points: tuple[int, ...] = (50, 95, 99)) -> dict[str, float]:
    values = np.percentile(np.asarray(seconds) * 1000, points)
    return {f"p{point}_ms": round(float(value), 3) for point, value in zip(points, values)}


def one_client(port: int, bodies: list[str], requests: int, warmup: int, seed: int) -> dict[str, Any]:
    """`warmup` then `requests` timed POSTs one after the other on one keep-alive connection."""
    rng = random.Random(seed)
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    latencies, errors = [], 0
    try:
        for index in range(warmup + requests):
            body = rng.choice(bodies)
            started = time.perf_counter()
            try:
                status, _ = post(connection, body)
            except (OSError, http.client.HTTPException):  # a worker restarted (--max-requests)
                connection.close()
                connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
                status = 0
            elapsed = time.perf_counter() - started
            if index >= warmup:
                latencies.append(elapsed)
                errors += status != 200
    finally:
        connection.close()
    return {"requests": requests, "errors": errors, "requests_per_second": round(requests / sum(latencies), 1),
            "mean_ms": round(float(np.mean(latencies)) * 1000, 3), **percentiles_ms(latencies)}


def cpu_seconds(pid: int) -> float:
    """CPU seconds of `pid`, its reaped children and its live children (gunicorn's master and workers)."""
    def own(target: int, with_reaped: bool) -> float:
        try:
            fields = Path(f"/proc/{target}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            return 0.0
        ticks = int(fields[11]) + int(fields[12]) + ((int(fields[13]) + int(fields[14])) if with_reaped else 0)
        return ticks / CLOCK_TICKS

    total = own(pid, True)
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, IndexError):
                if int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1]) == pid:
                    total += own(int(entry.name), False)
    return total


_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1000.0, "m": 60_000.0}


def wrk_ms(text: str) -> float:
    number, unit = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text).groups()
    return float(number) * _UNITS[unit]


def concurrent(port: int, body_file: Path, clients: int, seconds: float, server_pid: int) -> dict[str, Any]:
    """wrk with bench/wrk_bodies.lua: `clients` connections for `seconds`, random bodies from `body_file`."""
    if shutil.which("wrk") is None:
        raise RuntimeError("wrk is not installed (bench/install_wrk.sh)")
    threads = min(clients, os.cpu_count() or 1)
    command = ["wrk", f"-t{threads}", f"-c{clients}", f"-d{seconds:g}s", "--latency", "--timeout", "30s",
               "-s", str(LUA), f"http://127.0.0.1:{port}/get-online-features"]
    load_before, cpu_before, started = load_average(), cpu_seconds(server_pid), time.perf_counter()
    out = subprocess.run(command, capture_output=True, text=True, timeout=seconds + 120,
                         env={**os.environ, "WRK_BODIES": str(body_file)})
    wall, cpu = time.perf_counter() - started, cpu_seconds(server_pid) - cpu_before
    if out.returncode != 0:
        raise RuntimeError(f"wrk failed ({out.returncode}): {out.stderr or out.stdout}")
    text = out.stdout
    result: dict[str, Any] = {"tool": f"wrk -t{threads} -c{clients} -d{seconds:g}s"}
    result["requests"] = int(re.search(r"(\d+) requests in", text).group(1))
    result["requests_per_second"] = float(re.search(r"Requests/sec:\s+([\d.]+)", text).group(1))
    for point, value in re.findall(r"^\s+(\d+)%\s+([\d.]+(?:us|ms|s|m))\s*$", text, re.M):
        result[f"p{point}_ms"] = round(wrk_ms(value), 3)
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    sockets = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    result["non_2xx"] = int(non_2xx.group(1)) if non_2xx else 0
    result["socket_errors"] = sum(map(int, sockets.groups())) if sockets else 0
    result["errors"] = result["non_2xx"] + result["socket_errors"]
    counters = re.search(r"^WRKJSON (\{.*\})$", text, re.M)
    if counters:
        result["p95_ms"] = round(json.loads(counters.group(1))["p95_us"] / 1000, 3)
    result["server_cpu_cores"] = round(cpu / wall, 2)
    result["load_average_before"], result["load_average_after"] = load_before, load_average()
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", type=int, default=10_000, help="users in the online store (default 10,000)")
    parser.add_argument("--seconds", type=float, default=20.0, help="wrk duration (default 20)")
    parser.add_argument("--clients", type=int, default=8, help="wrk connections (default 8)")
    parser.add_argument("--requests", type=int, default=2000, help="one-client timed requests (default 2,000)")
    parser.add_argument("--warmup", type=int, default=200, help="one-client warm-up requests (default 200)")
    parser.add_argument("--workers", type=int, default=1, help="feast serve -w (Feast's default: 1)")
    parser.add_argument("--max-requests", type=int, default=0,
                        help="feast serve --max-requests: 0 (default here) never restarts a worker; Feast's "
                             "default, 1000, restarts one every ~1,000 requests (see the module docstring)")
    parser.add_argument("--check", type=int, default=50, help="users whose answers are compared with the data")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--workdir", type=Path, default=None, help="where to build the Feast repo (default: a temp dir)")
    args = parser.parse_args()

    warnings.filterwarnings("ignore")
    logging.getLogger("feast").setLevel(logging.ERROR)
    import feast

    real_stdout = sys.stdout
    with tempfile.TemporaryDirectory(prefix="peer-server-", dir=args.workdir) as folder, \
            contextlib.redirect_stdout(sys.stderr):
        repo = Path(folder)
        rows = feature_rows(args.users, args.seed)
        started = time.perf_counter()
        build_store(repo, rows)
        setup_seconds = time.perf_counter() - started
        rng = random.Random(args.seed)
        user_ids = rows["user_id"].tolist()
        bodies = [request_body(rng.choice(user_ids)) for _ in range(5000)]
        body_file = repo / "bodies.jsonl"
        body_file.write_text("\n".join(bodies) + "\n")
        port = free_port()
        started = time.perf_counter()
        with feature_server(repo, port, args.workers, args.max_requests) as server:
            ready_seconds = time.perf_counter() - started
            checked = check_answers(port, rows, args.check, args.seed)
            single = one_client(port, bodies, args.requests, args.warmup, args.seed)
            load = concurrent(port, body_file, args.clients, args.seconds, server.pid)
        booted = (repo / "server.log").read_text(errors="replace").count("Booting worker with pid")

    report = {
        "peer": "feast feature server", "version": feast.__version__, "endpoint": "POST /get-online-features",
        "online_store": "sqlite", "features": FEATURES, "users": args.users, "answers_checked": checked,
        "server": {"command": "feast serve --no-access-log", "workers": args.workers,
                   "max_requests": args.max_requests, "worker_restarts": booted - args.workers,
                   "setup_seconds": round(setup_seconds, 2), "ready_seconds": round(ready_seconds, 2)},
        "one_client": single, "concurrent": load, "cpus": os.cpu_count(),
    }
    print(json.dumps(report), file=real_stdout, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
