"""One process against WORKERS=2 on this machine, alternating in one run: extract/realtime at N clients,
freshness between processes, memory per process.

    .venv/bin/python -m bench.workers --flows 10000 --seconds 20 --clients 8

For each shape (WORKERS=1, WORKERS=2, … repeated --rounds times, alternating) it starts `python -m app`
on a fresh DATA_DIR, publishes --flows demo flows, saves the walkthrough's four-table join and registers
the example ETL (bench/load.py's `prepare`), waits until every process serves the publish (min_position),
then drives POST /v1.0/extract/realtime for random known users at --clients connections for --seconds
after a 3 s warm-up (wrk if installed, else bench/loadgen.py's Python clients). With WORKERS>1 it also measures freshness:
--fresh ingests of one new user each (on a fresh connection), each followed by lookups on fresh
connections until a process other than the primary serves the row; the delay is from the ingest's
answer to that lookup's. Memory is each process's resident set after the load (/proc).
"""
from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench import loadgen, peer_serving
from bench.live import (Server, free_port, make_etl_repo, process_status, running_server, stop,
                        wait_until_healthy)
from bench.load import Client, prepare


WARMUP_SECONDS = 3.0


def children(pid: int) -> list[int]:
    """The PIDs whose parent is `pid` (a primary's serving processes)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(stat[1]) == pid:
                found.append(int(entry.name))
    return found


def served_by(server: Server, method: str, path: str, body: Any = None) -> tuple[int, str, bytes]:
    """One request on a fresh connection: (status, the answering PID, body)."""
    status, headers, data = server.request(method, path, body, timeout=30)
    return status, headers.get("x-served-by", str(server.pid)), data


def wait_all_serve(server: Server, workers: int, query_id: str, user: str, position: int) -> None:
    """Until every process has answered a lookup of `user` at `position` (fresh connections)."""
    seen: set[str] = set()
    deadline = time.monotonic() + 120
    while len(seen) < workers:
        if time.monotonic() > deadline:
            raise RuntimeError(f"only processes {sorted(seen)} answered")
        status, pid, data = served_by(server, "POST", f"/v1.0/query/realtime?min_position={position}",
                                      {"query_id": query_id, "index_key": "user_id", "index_value": user})
        if status != 200:
            raise RuntimeError(f"lookup → {status}: {data[:300]!r}")
        seen.add(pid)


def freshness(server: Server, count: int) -> dict[str, Any]:
    """Delay from an ingest's answer until a process other than the primary serves the row."""
    query_id = server.json("POST", "/v1.0/query/train?save=true&include_data=false",
                           {"query": "SELECT user_id, name FROM users"})["query_id"]
    delays, primary = [], str(server.pid)
    for index in range(count):
        user = f"fresh-{index}-{random.randrange(2**31)}"
        server.json("POST", "/v1.0/sources/users/rows", {"rows": [
            {"user_id": user, "name": "fresh", "address": "x", "creation_date": int(time.time())}]})
        acknowledged = time.perf_counter()
        while True:
            status, pid, _ = served_by(server, "POST", "/v1.0/query/realtime",
                                       {"query_id": query_id, "index_key": "user_id", "index_value": user})
            if status == 200 and pid != primary:
                delays.append(time.perf_counter() - acknowledged)
                break
            if time.perf_counter() - acknowledged > 10:
                raise RuntimeError(f"user {user} not served by another process within 10 s")
    return {"ingests": count, **loadgen.percentiles_ms(delays, (50, 99)),
            "max_ms": round(max(delays) * 1000, 3)}


def write_bodies(path: Path, setup: dict[str, Any], count: int = 5000) -> Path:
    rng = random.Random(1)
    with open(path, "w", encoding="utf-8") as out:
        for _ in range(count):
            out.write(json.dumps({"query_id": setup["query_id"], "etl_id": setup["etl_id"], "index_key": "user_id",
                                  "index_value": rng.choice(setup["users"])}) + "\n")
    return path


def parse_shape(text: str) -> dict[str, str]:
    """'2' or '2,THREADS=4,ETL_TIMEOUT_SECONDS=0': WORKERS and any other settings of one shape."""
    first, *rest = text.split(",")
    settings = {"WORKERS": first}
    for item in rest:
        name, _, value = item.partition("=")
        settings[name] = value
    return settings


def measure(shape: str, args: argparse.Namespace, work: Path, etl_path: Path) -> dict[str, Any]:
    settings = parse_shape(shape)
    workers = int(settings["WORKERS"])
    data_dir = work / f"data-w{workers}-{int(time.time() * 1000)}"
    with running_server(data_dir, work / "logs", **settings) as server:
        position = server.json("PUT", f"/v1.0/publish?n_flows={args.flows}&seed=7", timeout=600)["position"]
        client = Client("127.0.0.1", server.port)
        setup = prepare(client, None, 0, str(etl_path), auth=False)
        client.close()
        wait_all_serve(server, workers, setup["query_id"], setup["users"][0], position)
        bodies = write_bodies(work / f"bodies-w{workers}.jsonl", setup)
        loadgen.concurrent(server.port, "POST", "/v1.0/extract/realtime", bodies, args.clients, WARMUP_SECONDS,
                           {"Content-Type": "application/json"})  # every process's ETL loaded, caches warm
        one_client = loadgen.sequential(server.port, "POST", "/v1.0/extract/realtime",
                                        [line.encode() for line in bodies.read_text().splitlines()],
                                        ONE_CLIENT_REQUESTS, ONE_CLIENT_WARMUP, seed=1)  # as the peer's
        load = loadgen.concurrent(server.port, "POST", "/v1.0/extract/realtime", bodies, args.clients,
                                  args.seconds, {"Content-Type": "application/json"})
        result: dict[str, Any] = {"workers": workers, "shape": shape, "load": load, "one_client": one_client}
        if args.floor:
            result["health"] = loadgen.concurrent(server.port, "GET", "/v1.0/health", None, args.clients,
                                                  args.seconds)
        if workers > 1:
            result["freshness"] = freshness(server, args.fresh)
        pids = [server.pid, *children(server.pid)]
        result["rss_mib"] = {("primary" if pid == server.pid else f"serving {pid}"):
                             round(process_status(pid)["VmRSS"] / 2**20, 1) for pid in pids}
    if args.floor:
        threads = settings.get("THREADS", "8") if workers == 1 else settings.get("SERVING_THREADS", "2")
        result["bare"] = bare_floor("waitress", workers, int(threads), bodies, args)
        if GRANIAN.exists():
            result["bare_granian"] = bare_floor("granian", workers, int(threads), bodies, args)
    return result


ONE_CLIENT_REQUESTS, ONE_CLIENT_WARMUP = 2000, 200  # bench/peer_feature_server.py's defaults
GRANIAN = Path(os.environ.get("GRANIAN_VENV", "/tmp/granian-venv")) / "bin" / "granian"


def bare_floor(server: str, workers: int, threads: int, bodies: Path, args: argparse.Namespace) -> dict[str, Any]:
    """bench/framework_floor.py's bare flask-restx lookup on `server` (waitress: `workers` × `threads`, the
    service's shape; granian: `workers` processes), driven with the same clients and bodies."""
    port = free_port()
    command = ([sys.executable, "-m", "bench.framework_floor", "--port", str(port), "--workers", str(workers),
                "--threads", str(threads)] if server == "waitress" else
               [str(GRANIAN), "--interface", "wsgi", "--workers", str(workers), "--host", "127.0.0.1",
                "--port", str(port), "--no-ws", "bench.framework_floor:app"])
    root = Path(__file__).resolve().parent.parent
    process = subprocess.Popen(command, cwd=root, env={**os.environ, "PYTHONPATH": str(root)},
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        server = Server(f"http://127.0.0.1:{port}", port, process, Path(os.devnull))
        wait_until_healthy(server, time.monotonic() + 60)
        time.sleep(0.5)  # every process listening
        loadgen.concurrent(port, "POST", "/v1.0/lookup", bodies, args.clients, WARMUP_SECONDS,
                           {"Content-Type": "application/json"})
        return loadgen.concurrent(port, "POST", "/v1.0/lookup", bodies, args.clients, args.seconds,
                                  {"Content-Type": "application/json"})
    finally:
        stop(process)


def render(result: dict[str, Any]) -> str:
    load = result["load"]
    single = result["one_client"]
    line = (f"WORKERS={result['shape']}: {load['requests_per_second']} req/s, p50 {load['p50_ms']} ms, "
            f"p99 {load['p99_ms']} ms, errors {load['errors']} ({load['tool']})\n"
            f"  one client: p50 {single['p50_ms']} ms, p95 {single['p95_ms']} ms, p99 {single['p99_ms']} ms, "
            f"{single['requests_per_second']} req/s, errors {single['errors']}")
    for name, label in (("health", "GET /v1.0/health, same server"),
                        ("bare", "bare flask-restx lookup (bench/framework_floor.py) on waitress, same shape"),
                        ("bare_granian", "the same bare lookup on granian, as many processes")):
        if name in result:
            other = result[name]
            line += (f"\n  {label}: {other['requests_per_second']} req/s, p50 {other['p50_ms']} ms, "
                     f"p99 {other['p99_ms']} ms, errors {other['errors']}")
    if "freshness" in result:
        fresh = result["freshness"]
        line += (f"\n  freshness (ingest answered → served by another process, {fresh['ingests']} ingests): "
                 f"p50 {fresh['p50_ms']} ms, p99 {fresh['p99_ms']} ms, max {fresh['max_ms']} ms")
    line += "\n  resident memory (MiB): " + ", ".join(f"{name} {mib}" for name, mib in result["rss_mib"].items())
    return line


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--flows", type=int, default=10_000, help="demo flows published per shape")
    parser.add_argument("--seconds", type=float, default=20.0, help="load duration per shape")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--workers", nargs="+", default=["1", "2"],
                        help="the shapes, in order: WORKERS, then optional settings (e.g. 2,THREADS=4)")
    parser.add_argument("--rounds", type=int, default=1, help="times the shapes are measured, alternating")
    parser.add_argument("--fresh", type=int, default=200, help="ingests timed for freshness (WORKERS>1)")
    parser.add_argument("--peer", action="store_true", help="after each shape, Feast's feature server with as many "
                        "workers (bench/peer_feature_server.py; bash bench/install_feast.sh first)")
    parser.add_argument("--floor", action="store_true", help="after each shape's load, GET /v1.0/health on the "
                        "same server and a bare flask-restx lookup (bench/framework_floor.py) with as many "
                        "processes (on waitress, and on granian when bash bench/install_granian.sh made its "
                        "venv): what the framework allows at best")
    args = parser.parse_args(argv)
    if args.peer:
        peer_serving.feast_python()  # missing: fail now, not after the first shape
    with tempfile.TemporaryDirectory(prefix="bench-workers-") as folder:
        work = Path(folder)
        etl_path = make_etl_repo(work / "etl_repo")
        ours, peers = [], []
        for _ in range(args.rounds):
            for workers in args.workers:
                ours.append(measure(workers, args, work, etl_path))
                print(render(ours[-1]), flush=True)
                if args.peer:
                    peers.append(peer_serving.measure(ours[-1]["workers"], args.flows, args.seconds, args.clients))
                    print(peer_serving.render(peers[-1]), flush=True)
        if peers:
            print(peer_serving.compare(ours, peers), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
