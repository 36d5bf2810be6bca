"""A live `python -m app` process on a free loopback port, stopped by its PID (no pytest: scripts use it too)."""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator

import requests

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    """A loopback TCP port nobody listens on (right now)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class LiveProcess:
    """A running `python -m app`: its base URL, process and log file."""

    base: str
    process: subprocess.Popen
    log_path: Path


@contextlib.contextmanager
def live_process(data_dir: Path, startup_seconds: float = 30.0, **settings: str) -> Iterator[LiveProcess]:
    """Run the service on embedded backends under `data_dir` (one process, authentication off and the
    demo's sources declared unless `settings` say otherwise) on a free loopback port; yield it once /v1.0/health answers; stop it by PID afterwards
    (unless a test already killed it)."""
    port = free_port()
    env = {**os.environ, "DATA_DIR": str(data_dir), "HOST": "127.0.0.1", "PORT": str(port), "AUTH": "off",
           "DEMO_SOURCES": "on", "WORKERS": "1", **settings}
    for name in ("CATALOG_URL", "WAREHOUSE_URL", "REALTIME_URL"):
        if name not in settings:  # the embedded defaults, unless the caller names a backend
            env.pop(name, None)
    data_dir.mkdir(parents=True, exist_ok=True)
    log_path = data_dir.parent / f"server-{port}.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen([sys.executable, "-m", "app"], cwd=ROOT, env=env, stdout=log,
                                   stderr=subprocess.STDOUT)
    live = LiveProcess(f"http://127.0.0.1:{port}", process, log_path)
    try:
        deadline = time.monotonic() + startup_seconds
        while True:
            assert process.poll() is None, log_path.read_text()
            try:
                requests.get(f"{live.base}/v1.0/health", timeout=1)
                break
            except requests.ConnectionError:
                assert time.monotonic() < deadline, "the server did not answer: " + log_path.read_text()
                time.sleep(0.05)
        yield live
    finally:
        if process.poll() is None:
            os.kill(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.kill(process.pid, signal.SIGKILL)
                process.wait()


@contextlib.contextmanager
def running_server(data_dir: Path, startup_seconds: float = 30.0, **settings: str) -> Iterator[str]:
    """`live_process`, yielding only the base URL (the log path is kept in ``running_server.last_log``)."""
    with live_process(data_dir, startup_seconds, **settings) as live:
        running_server.last_log = live.log_path  # type: ignore[attr-defined]
        yield live.base
