"""`python -m app` as a newcomer runs it: a real process on a free loopback port, stopped by its PID."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import requests

from app.settings import SETTINGS, settings_table
from tests.fixtures_server import running_server

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def server(tmp_path):
    with running_server(tmp_path / "data") as base:
        yield base, running_server.last_log


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


@pytest.mark.slow
def test_worker_threads_share_one_realtime_store(tmp_path):
    """The production server runs one process with THREADS workers: a publish through one connection
    is what every other worker serves at once (no per-worker copy to fall out of step)."""
    import concurrent.futures

    with running_server(tmp_path / "data", THREADS="4") as base:
        session = requests.Session()
        query = {"query": "SELECT count(*) AS quotes, 1 AS k FROM quotes"}
        query_id = session.post(f"{base}/v1.0/query/train?save=true", json=query, timeout=10).json()["query_id"]
        lookup = {"query_id": query_id, "index_key": "k", "index_value": 1}

        def count(_: int) -> int:
            with requests.Session() as own:  # its own connection: likely another worker thread
                return own.post(f"{base}/v1.0/query/realtime", json=lookup, timeout=10).json()["data"][0]["quotes"]

        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            for published in (50, 100, 150):
                session.put(f"{base}/v1.0/publish", params={"n_flows": 50}, timeout=30).raise_for_status()
                assert set(pool.map(count, range(16))) == {published}


def _reset(data_dir: Path, *flags: str) -> subprocess.CompletedProcess:
    env = {key: value for key, value in os.environ.items() if key not in ("CATALOG_URL", "WAREHOUSE_URL")}
    return subprocess.run([sys.executable, "-m", "app", "reset", *flags], cwd=ROOT, capture_output=True, text=True,
                          env={**env, "DATA_DIR": str(data_dir)}, timeout=60)


@pytest.mark.slow
def test_reset_deletes_the_embedded_data_only_when_the_service_is_stopped(tmp_path):
    """`python -m app reset --yes` is the documented way back to an empty store: refused while a service
    holds the warehouse, a dry run without --yes, then the stores are gone and the load folder kept."""
    data = tmp_path / "data"
    (data / "load").mkdir(parents=True)
    (data / "load" / "mine.csv").write_text("a\n1\n")
    with running_server(data) as base:
        assert requests.put(f"{base}/v1.0/publish", params={"n_flows": 10, "seed": 1}, timeout=30).ok
        refused = _reset(data, "--yes")
        assert refused.returncode == 1 and "stop the service first" in refused.stderr
    assert (data / "warehouse.duckdb").exists() and (data / "catalog.db").exists()
    dry = _reset(data)
    assert dry.returncode == 1 and "--yes" in dry.stderr and (data / "warehouse.duckdb").exists()
    done = _reset(data, "--yes")
    assert done.returncode == 0, done.stderr
    assert not (data / "warehouse.duckdb").exists() and not (data / "catalog.db").exists()
    assert (data / "load" / "mine.csv").exists()
    with running_server(data) as base:
        counts = requests.post(f"{base}/v1.0/query/train", json={"query": "SELECT count(*) AS n FROM quotes"},
                               timeout=30).json()
        assert counts["data"] == [{"n": 0}]
