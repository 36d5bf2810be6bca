"""HTTP load against a live server: one sequential keep-alive client, and N concurrent clients.

Concurrent load is wrk (`bench/install_wrk.sh`) driving `bench/wrk_bodies.lua`: POSTs of
bodies picked at random from a file, or plain GETs. Its ``--latency`` text is parsed
(requests/s, the latency distribution, non-2xx responses, socket errors) next to the
percentiles the script's ``done`` prints. Without wrk a Python load generator stands in
(one process per client, one keep-alive connection each) and the result says so.
"""
from __future__ import annotations

import http.client
import json
import multiprocessing
import os
import random
import re
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import numpy as np

LUA = Path(__file__).resolve().parent / "wrk_bodies.lua"


def percentiles_ms(seconds: list[float] | np.ndarray, points: tuple[float, ...] = (50, 95, 99)) -> dict[str, float]:
    if len(seconds) == 0:
        return {f"p{p:g}_ms": float("nan") for p in points}
    values = np.percentile(np.asarray(seconds) * 1000, points)
    return {f"p{p:g}_ms": round(float(v), 3) for p, v in zip(points, values)}


# -- one client, one keep-alive connection ---------------------------------------------------------

def sequential(port: int, method: str, path: str, bodies: list[bytes] | None, n: int, warmup: int,
               headers: dict[str, str] | None = None, seed: int = 0) -> dict[str, Any]:
    """`warmup` then `n` timed requests, one after the other on one connection; latency percentiles."""
    rng = random.Random(seed)
    sent = {**(headers or {})}
    if bodies:
        sent["Content-Type"] = "application/json"
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    latencies: list[float] = []
    errors = 0
    statuses: dict[int, int] = {}
    try:
        for i in range(warmup + n):
            body = rng.choice(bodies) if bodies else None
            started = time.perf_counter()
            try:
                connection.request(method, path, body=body, headers=sent)
                response = connection.getresponse()
                response.read()
                status = response.status
            except (OSError, http.client.HTTPException):
                connection.close()
                connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
                status = 0
            elapsed = time.perf_counter() - started
            if i >= warmup:
                latencies.append(elapsed)
                statuses[status] = statuses.get(status, 0) + 1
                errors += status != 200
    finally:
        connection.close()
    return {"requests": n, "errors": errors, "statuses": statuses, "mean_ms": round(float(np.mean(latencies)) * 1000, 3),
            "requests_per_second": round(n / sum(latencies), 1), **percentiles_ms(latencies, (50, 95, 99))}


# -- N concurrent clients ----------------------------------------------------------------------------

def wrk_available() -> bool:
    return shutil.which("wrk") is not None


def concurrent(port: int, method: str, path: str, body_file: Path | None, clients: int, seconds: float,
               headers: dict[str, str] | None = None, threads: int | None = None) -> dict[str, Any]:
    """`clients` connections for `seconds`: wrk if installed, else the Python fallback."""
    if wrk_available():
        return run_wrk(port, path, body_file, clients, seconds, headers, threads)
    return run_python(port, method, path, body_file, clients, seconds, headers)


def run_wrk(port: int, path: str, body_file: Path | None, clients: int, seconds: float,
            headers: dict[str, str] | None = None, threads: int | None = None) -> dict[str, Any]:
    threads = threads or min(clients, os.cpu_count() or 1)
    command = ["wrk", f"-t{threads}", f"-c{clients}", f"-d{seconds:g}s", "--latency", "--timeout", "30s",
               "-s", str(LUA)]
    for name, value in (headers or {}).items():
        command += ["-H", f"{name}: {value}"]
    command.append(f"http://127.0.0.1:{port}{path}")
    env = {**os.environ, "WRK_BODIES": str(body_file) if body_file else ""}
    out = subprocess.run(command, capture_output=True, text=True, env=env, timeout=seconds + 120)
    if out.returncode != 0:
        raise RuntimeError(f"wrk failed ({out.returncode}): {out.stderr or out.stdout}")
    result = parse_wrk(out.stdout)
    result["tool"] = f"wrk -t{threads} -c{clients} -d{seconds:g}s"
    return result


_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1000.0, "m": 60_000.0}


def _ms(text: str) -> float:
    number, unit = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text).groups()
    return float(number) * _UNITS[unit]


def parse_wrk(text: str) -> dict[str, Any]:
    """Requests/s, latency distribution, non-2xx and socket errors from `wrk --latency` output."""
    result: dict[str, Any] = {"raw": text}
    done = re.search(r"(\d+) requests in ([\d.]+)(us|ms|s|m)", text)
    result["requests"] = int(done.group(1))
    result["duration_s"] = _ms(done.group(2) + done.group(3)) / 1000
    result["requests_per_second"] = float(re.search(r"Requests/sec:\s+([\d.]+)", text).group(1))
    for pct, value in re.findall(r"^\s+(\d+)%\s+([\d.]+(?:us|ms|s|m))\s*$", text, re.M):
        result[f"p{pct}_ms"] = round(_ms(value), 3)
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    result["non_2xx"] = int(non_2xx.group(1)) if non_2xx else 0
    sockets = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    result["socket_errors"] = sum(map(int, sockets.groups())) if sockets else 0
    result["errors"] = result["non_2xx"] + result["socket_errors"]
    line = re.search(r"^WRKJSON (\{.*\})$", text, re.M)
    if line:
        counters = json.loads(line.group(1))
        result["p95_ms"] = round(counters["p95_us"] / 1000, 3)
        result["p999_ms"] = round(counters["p999_us"] / 1000, 3)
        result["mean_ms"] = round(counters["mean_us"] / 1000, 3)
        result["max_ms"] = round(counters["max_us"] / 1000, 3)
    return result


def _python_client(args: tuple) -> tuple[list[float], int, int]:
    port, method, path, bodies, seconds, headers, seed = args
    rng = random.Random(seed)
    sent = dict(headers)
    if bodies:
        sent["Content-Type"] = "application/json"
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    latencies, errors, count = [], 0, 0
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        started = time.perf_counter()
        try:
            connection.request(method, path, body=rng.choice(bodies) if bodies else None, headers=sent)
            response = connection.getresponse()
            response.read()
            errors += response.status >= 400
        except (OSError, http.client.HTTPException):
            errors += 1
            connection.close()
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        latencies.append(time.perf_counter() - started)
        count += 1
    connection.close()
    return latencies, errors, count


def run_python(port: int, method: str, path: str, body_file: Path | None, clients: int, seconds: float,
               headers: dict[str, str] | None = None) -> dict[str, Any]:
    """The fallback load generator: one process per client, one keep-alive connection each."""
    bodies = [line.encode() for line in body_file.read_text().splitlines() if line] if body_file else None
    jobs = [(port, method, path, bodies, seconds, headers or {}, seed) for seed in range(clients)]
    with multiprocessing.get_context("fork").Pool(clients) as pool:
        started = time.perf_counter()
        parts = pool.map(_python_client, jobs)
        wall = time.perf_counter() - started
    latencies = [value for part in parts for value in part[0]]
    errors = sum(part[1] for part in parts)
    count = sum(part[2] for part in parts)
    return {"tool": f"python fallback ({clients} processes; wrk not installed)", "requests": count,
            "duration_s": round(wall, 2), "requests_per_second": round(count / wall, 1), "errors": errors,
            "non_2xx": errors, "socket_errors": 0, **percentiles_ms(latencies, (50, 75, 90, 95, 99))}
