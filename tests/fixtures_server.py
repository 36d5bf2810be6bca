"""A live `python -m app` process on a free loopback port, started once per module, stopped by its PID."""
from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator

import pytest
import requests

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    """A loopback TCP port nobody listens on (right now)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def running_server(data_dir: Path, startup_seconds: float = 30.0, **settings: str) -> Iterator[str]:
    """Run the service on embedded backends under `data_dir` (authentication off unless `settings` say
    otherwise); yield its base URL once /v1.0/health answers."""
    port = free_port()
    env = {**os.environ, "DATA_DIR": str(data_dir), "HOST": "127.0.0.1", "PORT": str(port), "AUTH": "off",
           **settings}
    for name in ("CATALOG_URL", "WAREHOUSE_URL", "REALTIME_URL"):
        env.pop(name, None)
    data_dir.mkdir(parents=True, exist_ok=True)
    log_path = data_dir.parent / f"server-{port}.log"
    running_server.last_log = log_path  # type: ignore[attr-defined]
    with open(log_path, "wb") as log:
        process = subprocess.Popen([sys.executable, "-m", "app"], cwd=ROOT, env=env, stdout=log,
                                   stderr=subprocess.STDOUT)
        base = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + startup_seconds
            while True:
                assert process.poll() is None, log_path.read_text()
                try:
                    requests.get(f"{base}/v1.0/health", timeout=1)
                    break
                except requests.ConnectionError:
                    assert time.monotonic() < deadline, "the server did not answer: " + log_path.read_text()
                    time.sleep(0.1)
            yield base
        finally:
            os.kill(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.kill(process.pid, signal.SIGKILL)
                process.wait()


@pytest.fixture(scope="module")
def live_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The base URL (``http://127.0.0.1:<port>``) of a service shared by the module's tests."""
    with running_server(tmp_path_factory.mktemp("live-server") / "data") as base:
        yield base
