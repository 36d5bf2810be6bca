"""`python -m app` as a newcomer runs it: a real process on a free loopback port, stopped by its PID."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from app.settings import SETTINGS, settings_table

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def server(tmp_path):
    port = free_port()
    env = {**os.environ, "DATA_DIR": str(tmp_path / "data"), "HOST": "127.0.0.1", "PORT": str(port)}
    for name in ("CATALOG_URL", "WAREHOUSE_URL", "REALTIME_URL"):
        env.pop(name, None)
    log = open(tmp_path / "server.log", "wb")
    process = subprocess.Popen([sys.executable, "-m", "app"], cwd=ROOT, env=env, stdout=log,
                               stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            assert process.poll() is None, (tmp_path / "server.log").read_text()
            try:
                requests.get(f"{base}/v1.0/health", timeout=1)
                break
            except requests.ConnectionError:
                time.sleep(0.1)
        yield base, tmp_path / "server.log"
    finally:
        os.kill(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.kill(process.pid, signal.SIGKILL)
            process.wait()
        log.close()


@pytest.mark.slow
def test_module_serves_on_a_production_server(server):
    base, log_path = server
    response = requests.get(f"{base}/v1.0/health", timeout=5)
    assert response.status_code == 200 and response.json()["status"] == "ok"
    assert response.headers["Server"] == "featurestore"  # waitress, not the Flask development server
    published = requests.put(f"{base}/v1.0/publish", params={"n_flows": 10, "seed": 1}, timeout=10)
    assert published.json()["written"]["quotes"] == 10
    assert requests.get(f"{base}/v1.0/docs", timeout=5).status_code == 200
    assert "WARNING: This is a development server" not in log_path.read_text()


def test_help_lists_every_setting():
    out = subprocess.run([sys.executable, "-m", "app", "--help"], cwd=ROOT, capture_output=True, text=True,
                         check=True).stdout
    assert all(setting.name in out for setting in SETTINGS)


def test_readme_settings_table_is_current():
    readme = (ROOT / "README.md").read_text()
    start, end = "<!-- settings-table:start -->\n", "\n<!-- settings-table:end -->"
    assert readme[readme.index(start) + len(start):readme.index(end)] == settings_table()
