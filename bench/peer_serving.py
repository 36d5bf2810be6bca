"""Our side of the serving comparison with Feast's feature server (bench/peer_feature_server.py).

`python -m bench.workers --peer` calls `measure` after each of its shapes, so our server and the peer
alternate in one run on the same machine, and `compare` sets the medians against the scale issue's
targets: ≥ 3× the peer's requests/s at 8 clients, p99 ≤ ½ of the peer's. The peer script runs in the
Feast venv (`bash bench/install_feast.sh`; $FEAST_VENV, default /tmp/feast-venv) as a subprocess and
prints one JSON line; nothing of this repository is imported there.
"""
from __future__ import annotations

import json
import os
import statistics
import subprocess
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "bench" / "peer_feature_server.py"
TARGET_THROUGHPUT = 3.0  # ours ÷ peer's requests/s at 8 clients, at least
TARGET_P99 = 0.5         # ours ÷ peer's p99 at 8 clients, at most
TARGET_HEALTH_SHARE = 0.6  # ours ÷ our /health's requests/s on the same server, at least
TARGET_ONE_CLIENT_MS = 2.0  # our one-client p50, at most


def feast_python() -> Path:
    """The Feast venv's python; an error that says how to install it when it is missing."""
    python = Path(os.environ.get("FEAST_VENV", "/tmp/feast-venv")) / "bin" / "python"
    if not python.exists():
        raise RuntimeError(f"{python} not found: run `bash bench/install_feast.sh` first (or set FEAST_VENV)")
    return python


def measure(workers: int, users: int, seconds: float, clients: int) -> dict[str, Any]:
    """One run of the peer script: `feast serve -w workers` over `users` users, its JSON report."""
    command = [str(feast_python()), str(SCRIPT), "--users", str(users), "--seconds", f"{seconds:g}",
               "--clients", str(clients), "--workers", str(workers)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=seconds + 900)
    if done.returncode != 0:
        raise RuntimeError(f"peer_feature_server.py failed ({done.returncode}): {done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def render(result: dict[str, Any]) -> str:
    """Two lines in bench.workers' style: 8 clients, then one client."""
    load, single, server = result["concurrent"], result["one_client"], result["server"]
    return (f"feast serve -w {server['workers']} (peer, precomputed features, {result['users']:,} users): "
            f"{load['requests_per_second']} req/s, p50 {load['p50_ms']} ms, p99 {load['p99_ms']} ms, "
            f"errors {load['errors']} ({load['tool']}), server CPU {load['server_cpu_cores']} cores, "
            f"load average {load['load_average_before'][0]}\n"
            f"  one client: p50 {single['p50_ms']} ms, p95 {single['p95_ms']} ms, p99 {single['p99_ms']} ms, "
            f"{single['requests_per_second']} req/s; worker restarts {server['worker_restarts']}")


def compare(ours: list[dict[str, Any]], peers: list[dict[str, Any]]) -> str:
    """Per shape: the median of our runs against the median of the peer's runs with as many workers, the
    floors measured beside ours (--floor), ours against our /health, and both one-client p50s."""
    lines = ["ours ÷ peer (medians; targets: req/s ≥ 3×, p99 ≤ 0.5×):"]
    for shape in dict.fromkeys(result["shape"] for result in ours):
        runs = [result for result in ours if result["shape"] == shape]
        workers = runs[0]["workers"]
        theirs = [peer for peer in peers if peer["server"]["workers"] == workers]
        if not theirs:
            continue
        mine, their_loads = [run["load"] for run in runs], [peer["concurrent"] for peer in theirs]
        throughput = ratio(mine, their_loads, "requests_per_second")
        p99 = ratio(mine, their_loads, "p99_ms")
        lines.append(f"  WORKERS={shape} vs feast serve -w {workers} ({len(mine)} and {len(theirs)} runs): "
                     f"req/s {throughput:.2f}× ({verdict(throughput >= TARGET_THROUGHPUT)}), "
                     f"p99 {p99:.2f}× ({verdict(p99 <= TARGET_P99)})")
        for name, label in (("health", "our /health"), ("bare", "bare flask-restx on waitress"),
                            ("bare_granian", "bare flask-restx on granian")):
            floors = [run[name] for run in runs if name in run]
            if floors:
                lines.append(f"    {label} ÷ peer: req/s {ratio(floors, their_loads, 'requests_per_second'):.2f}×, "
                             f"p99 {ratio(floors, their_loads, 'p99_ms'):.2f}×")
        health = [run["health"] for run in runs if "health" in run]
        if health:
            share = ratio(mine, health, "requests_per_second")
            lines.append(f"    ours ÷ our /health on the same server: req/s {share:.2f}× "
                         f"({verdict(share >= TARGET_HEALTH_SHARE)}: ≥ {TARGET_HEALTH_SHARE:.2f}×)")
        single = median([run["one_client"] for run in runs], "p50_ms")
        lines.append(f"    one client p50: ours {single:.3f} ms ({verdict(single <= TARGET_ONE_CLIENT_MS)}: "
                     f"≤ {TARGET_ONE_CLIENT_MS:g} ms), peer {median([peer['one_client'] for peer in theirs], 'p50_ms'):.3f} ms")
    return "\n".join(lines)


def ratio(mine: list[dict[str, Any]], theirs: list[dict[str, Any]], key: str) -> float:
    return median(mine, key) / median(theirs, key)


def verdict(met: bool) -> str:
    return "met" if met else "missed"


def median(loads: list[dict[str, Any]], key: str) -> float:
    return statistics.median(load[key] for load in loads)
