"""Real outages over HTTP: a stopped, frozen or absent PostgreSQL, a read-only or vanished SQLite
catalog, a git/HTTP remote on a closed port or one that never answers.

Each is a 503 naming the backend (502 naming the remote) within seconds, never a hang,
writes nothing, and the same app recovers without a restart when the backend is back.
"""
from __future__ import annotations

import http.server
import shutil
import socket
import sqlite3
import subprocess
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

import git
import pytest

from common.errors import BackendUnavailable
from tests.conftest import JsonClient
from tests.fixtures_pgserver import PgServer
from tests.walkthrough import FOUR_TABLE_QUERY, example_repo

QUICK_S = 10.0  # an outage must answer within this, whatever the backend
FROZEN_S = 25.0  # a hung server: per backend the pre-ping deadline (2 s) and connect_timeout (5 s), health two
REMOTE_TIMEOUT_S = 1.0
COUNT_QUOTES = "SELECT count(*) AS n FROM quotes"


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A loopback port that accepts connections and never answers."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(64)
        yield sock.getsockname()[1]


def timed(call: Callable[[], Any]) -> tuple[Any, float]:
    started = time.monotonic()
    result = call()
    return result, time.monotonic() - started


def unavailable(api: JsonClient, method: str, path: str, backend: str, body: Any = None) -> dict[str, Any]:
    """Call, expect 503 naming `backend`, quickly; the error body."""
    error, elapsed = timed(lambda: api.call(method, path, 503, body))
    assert elapsed < QUICK_S, (method, path, elapsed)
    assert error["code"] == "backend_unavailable", error
    assert error["details"] == {"backend": backend}, error
    assert error["message"].startswith(f"{backend} is unavailable"), error
    return error


def health_down(api: JsonClient, *down: str) -> dict[str, Any]:
    health, elapsed = timed(lambda: api.get("/v1.0/health", 503))
    assert elapsed < QUICK_S
    assert health["code"] == "backend_unavailable"
    assert health["message"] == f"unavailable: {', '.join(down)}"
    checks = health["details"]["checks"]
    assert {name for name, check in checks.items() if not check["ok"]} == set(down), checks
    for name in down:
        assert checks[name]["error"].startswith(f"{name} is unavailable"), checks[name]
    return health


def realtime_count(app: Any, table: str = "quotes") -> int:
    return int(app.extensions["feature_service"].realtime.query(f"SELECT count(*) AS n FROM {table}")["n"][0])


# -- PostgreSQL: stopped, absent at start, frozen ------------------------------------------------


@pytest.mark.postgres
def test_postgres_catalog_and_warehouse_stopped_then_back(make_app, private_pg: PgServer):
    catalog_url, warehouse_url = private_pg.create_database(), private_pg.create_database()
    app = make_app(CATALOG_URL=catalog_url, WAREHOUSE_URL=warehouse_url)
    api = JsonClient(app.test_client())
    api.put("/v1.0/publish?n_flows=20&seed=1")
    saved = api.post("/v1.0/query/train?save=true", {"query": COUNT_QUOTES})
    assert api.get("/v1.0/health")["status"] == "ok"

    private_pg.stop()
    unavailable(api, "GET", "/v1.0/queries", "catalog")
    unavailable(api, "GET", f"/v1.0/queries/{saved['query_id']}", "catalog")
    unavailable(api, "POST", "/v1.0/query/train", "warehouse", {"query": COUNT_QUOTES})
    unavailable(api, "POST", "/v1.0/query/train?save=true", "warehouse", {"query": "SELECT 2 AS two"})
    unavailable(api, "PUT", "/v1.0/publish?n_flows=5&seed=2", "warehouse")
    assert realtime_count(app) == 20  # the failed publish wrote nothing to the realtime store either
    health_down(api, "catalog", "warehouse")

    private_pg.start()  # the same app, no restart
    assert api.get("/v1.0/queries")["items"] == [api.get(f"/v1.0/queries/{saved['query_id']}")]
    assert api.post("/v1.0/query/train", {"query": COUNT_QUOTES})["data"] == [{"n": 20}]
    assert api.get("/v1.0/health")["status"] == "ok"
    api.put("/v1.0/publish?n_flows=5&seed=2")
    assert api.post("/v1.0/query/train", {"query": COUNT_QUOTES})["data"] == [{"n": 25}]
    assert realtime_count(app) == 25
    assert api.get("/v1.0/queries")["total"] == 1


@pytest.mark.postgres
def test_postgres_catalog_stopped_a_save_is_503_and_writes_nothing(make_app, private_pg: PgServer, tmp_path):
    repo = example_repo(tmp_path / "etl-repo")
    api = JsonClient(make_app(CATALOG_URL=private_pg.create_database()).test_client())  # warehouse: DuckDB
    api.put("/v1.0/publish?n_flows=30&seed=1")
    query_id = api.post("/v1.0/query/train?save=true", {"query": FOUR_TABLE_QUERY})["query_id"]
    etl_request = {"query_id": query_id, "etl_path": str(repo.file("etls/quote_features.py"))}

    private_pg.stop()
    unavailable(api, "POST", "/v1.0/query/train?save=true", "catalog", {"query": COUNT_QUOTES})
    assert api.post("/v1.0/query/train", {"query": COUNT_QUOTES})["data"] == [{"n": 30}]  # unsaved: no catalog
    unavailable(api, "POST", "/v1.0/extract/train?save=true", "catalog", etl_request)
    unavailable(api, "GET", "/v1.0/etls", "catalog")
    health_down(api, "catalog")

    private_pg.start()
    assert [q["query_id"] for q in api.get("/v1.0/queries")["items"]] == [query_id]  # nothing half-saved
    assert api.get("/v1.0/etls")["total"] == 0
    saved = api.post("/v1.0/query/train?save=true", {"query": COUNT_QUOTES})
    etl_id = api.post("/v1.0/extract/train?save=true", etl_request)["etl_id"]
    assert api.get(f"/v1.0/queries/{saved['query_id']}")["sql"] == COUNT_QUOTES
    assert api.get(f"/v1.0/etls/{etl_id}")["query_id"] == query_id
    assert api.get("/v1.0/health")["status"] == "ok"


@pytest.mark.postgres
def test_postgres_catalog_down_when_the_app_starts_then_up(make_app, private_pg: PgServer):
    catalog_url = private_pg.create_database()
    private_pg.stop()
    app, elapsed = timed(lambda: make_app(CATALOG_URL=catalog_url))
    assert elapsed < QUICK_S  # the catalog opens lazily: the service starts and says what is down
    api = JsonClient(app.test_client())
    unavailable(api, "GET", "/v1.0/queries", "catalog")
    unavailable(api, "POST", "/v1.0/query/train?save=true", "catalog", {"query": "SELECT 1 AS one"})
    health_down(api, "catalog")

    private_pg.start()
    assert api.get("/v1.0/queries")["total"] == 0  # tables made on first use
    assert api.post("/v1.0/query/train?save=true", {"query": "SELECT 1 AS one"})["query_id"]
    assert api.get("/v1.0/health")["status"] == "ok"


def test_catalog_on_a_closed_port_answers_503_quickly(make_app):
    app = make_app(CATALOG_URL=f"postgresql://postgres@127.0.0.1:{closed_port()}/fs")
    api = JsonClient(app.test_client())
    unavailable(api, "GET", "/v1.0/queries", "catalog")
    unavailable(api, "GET", "/v1.0/etls", "catalog")
    unavailable(api, "POST", "/v1.0/query/train?save=true", "catalog", {"query": "SELECT 1 AS one"})
    health_down(api, "catalog")


def test_warehouse_on_a_closed_port_answers_quickly_naming_it(make_app):
    """The service starts (degraded: /health names the warehouse) and a warehouse call is 503 naming it;
    never a failed start, never a hang."""
    url = f"postgresql://postgres@127.0.0.1:{closed_port()}/fs"
    app, elapsed = timed(lambda: make_app(WAREHOUSE_URL=url))
    assert elapsed < QUICK_S
    api = JsonClient(app.test_client())
    unavailable(api, "POST", "/v1.0/query/train", "warehouse", {"query": COUNT_QUOTES})
    health_down(api, "warehouse")


@pytest.mark.postgres
def test_postgres_warehouse_down_when_the_app_starts_then_up(make_app, private_pg: PgServer):
    warehouse_url = private_pg.create_database()
    private_pg.stop()
    app, elapsed = timed(lambda: make_app(WAREHOUSE_URL=warehouse_url))
    assert elapsed < QUICK_S
    api = JsonClient(app.test_client())
    unavailable(api, "POST", "/v1.0/query/train", "warehouse", {"query": COUNT_QUOTES})
    health_down(api, "warehouse")

    private_pg.start()
    api.put("/v1.0/publish?n_flows=5&seed=1")
    assert api.post("/v1.0/query/train", {"query": COUNT_QUOTES})["data"] == [{"n": 5}]
    assert realtime_count(app) == 5
    assert api.get("/v1.0/health")["status"] == "ok"


@pytest.mark.postgres
def test_frozen_postgres_does_not_hang_requests(make_app, private_pg: PgServer):
    """SIGSTOP the whole server (a hung host): connections stay open but nothing answers. Each pooled
    connection's pre-ping gives up after PING_DEADLINE_S (common/postgres.py), the reconnect after the
    connect timeout: 503 naming the backend (health checks two such backends one after the other)."""
    app = make_app(CATALOG_URL=private_pg.create_database(), WAREHOUSE_URL=private_pg.create_database())
    api = JsonClient(app.test_client())
    api.put("/v1.0/publish?n_flows=5&seed=1")
    api.get("/v1.0/queries")  # pooled connections exist on both pools
    api.post("/v1.0/query/train", {"query": COUNT_QUOTES})

    calls = {"queries": ("GET", "/v1.0/queries", None), "train": ("POST", "/v1.0/query/train", {"query": COUNT_QUOTES}),
             "health": ("GET", "/v1.0/health", None)}
    results: dict[str, Any] = {}

    def call(name: str) -> None:
        method, path, body = calls[name]
        started = time.monotonic()
        response = app.test_client().open(path, method=method, json=body)
        results[name] = (response.status_code, response.get_json(), time.monotonic() - started)

    threads = [threading.Thread(target=call, args=(name,), daemon=True) for name in calls]
    private_pg.freeze()
    try:
        for thread in threads:
            thread.start()
        deadline = time.monotonic() + FROZEN_S
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        answered = dict(results)
    finally:
        private_pg.thaw()
        for thread in threads:
            thread.join(30)
    assert set(answered) == set(calls), f"still hanging after {FROZEN_S} s: {sorted(set(calls) - set(answered))}"
    assert answered["queries"][0] == 503 and answered["queries"][1]["details"] == {"backend": "catalog"}
    assert answered["train"][0] == 503 and answered["train"][1]["details"] == {"backend": "warehouse"}
    assert answered["health"][0] == 503


# -- SQLite catalog: read-only, missing -------------------------------------------------------


@contextmanager
def immutable(*paths: Path) -> Iterator[None]:
    """`chattr +i`: not even root may write (chmod would not stop root)."""
    targets = [str(p) for p in paths if p.exists()]
    subprocess.run(["chattr", "+i", *targets], check=True, capture_output=True)
    try:
        yield
    finally:
        subprocess.run(["chattr", "-i", *targets], check=True, capture_output=True)


def sqlite_catalog_app(make_app, directory: Path, data_dir: Path | None = None):
    """An app whose SQLite catalog lives in `directory` (a restart passes another `data_dir`: DuckDB
    refuses a second in-process open of the first app's warehouse file)."""
    directory.mkdir(parents=True, exist_ok=True)
    return make_app(data_dir, CATALOG_URL=f"sqlite:///{directory}/catalog.db")


def test_sqlite_catalog_made_read_only_then_writable(make_app, tmp_path):
    if shutil.which("chattr") is None:
        pytest.skip("chattr is needed to make a file read-only for root")
    directory = tmp_path / "catalog"
    api = JsonClient(sqlite_catalog_app(make_app, directory).test_client())
    first = api.post("/v1.0/query/train?save=true", {"query": "SELECT 1 AS one"})
    try:  # the probe: does this filesystem honour chattr +i?
        with immutable(directory / "catalog.db"):
            pass
    except subprocess.CalledProcessError as err:
        pytest.skip(f"chattr +i unsupported here: {err.stderr!r}")

    # The database, its WAL and the directory (no new journal); not the -shm, which SQLite maps into memory.
    with immutable(directory, directory / "catalog.db", directory / "catalog.db-wal"):
        error = unavailable(api, "POST", "/v1.0/query/train?save=true", "catalog", {"query": "SELECT 2 AS two"})
        assert "catalog" in error["message"]
        listed = api.get("/v1.0/queries")  # reads still work
        assert [q["query_id"] for q in listed["items"]] == [first["query_id"]] and listed["total"] == 1

    assert api.get("/v1.0/queries")["total"] == 1  # nothing half-written
    second = api.post("/v1.0/query/train?save=true", {"query": "SELECT 2 AS two"})  # same app, writable again
    assert api.get(f"/v1.0/queries/{second['query_id']}")["sql"] == "SELECT 2 AS two"
    assert {q["query_id"] for q in api.get("/v1.0/queries")["items"]} == {first["query_id"], second["query_id"]}
    with sqlite3.connect(directory / "catalog.db") as check:
        assert check.execute("PRAGMA integrity_check").fetchone() == ("ok",)

    restarted = JsonClient(sqlite_catalog_app(make_app, directory, tmp_path / "other-data").test_client())
    assert restarted.get("/v1.0/queries")["total"] == 2


def test_sqlite_catalog_opened_read_only(make_app, tmp_path):
    """CATALOG_URL with SQLite's mode=ro: reads answer, a save is 503 naming the catalog and writes nothing."""
    directory = tmp_path / "catalog"
    writable = JsonClient(sqlite_catalog_app(make_app, directory).test_client())
    first = writable.post("/v1.0/query/train?save=true", {"query": "SELECT 1 AS one"})["query_id"]

    read_only = JsonClient(make_app(tmp_path / "other-data", CATALOG_URL=f"sqlite:///file:{directory}/catalog.db?mode=ro&uri=true")
                           .test_client())
    assert read_only.get(f"/v1.0/queries/{first}")["sql"] == "SELECT 1 AS one"
    unavailable(read_only, "POST", "/v1.0/query/train?save=true", "catalog", {"query": "SELECT 2 AS two"})
    assert read_only.get("/v1.0/queries")["total"] == 1
    assert writable.get("/v1.0/queries")["total"] == 1


def test_sqlite_catalog_file_missing_then_created(make_app, tmp_path):
    """mode=rw does not create the file: every call is 503 until it exists, then the same app works."""
    path = tmp_path / "catalog.db"
    api = JsonClient(make_app(CATALOG_URL=f"sqlite:///file:{path}?mode=rw&uri=true").test_client())
    unavailable(api, "GET", "/v1.0/queries", "catalog")
    unavailable(api, "POST", "/v1.0/query/train?save=true", "catalog", {"query": "SELECT 1 AS one"})
    health_down(api, "catalog")
    assert not path.exists()

    sqlite3.connect(path).close()  # the file is back (empty)
    saved = api.post("/v1.0/query/train?save=true", {"query": "SELECT 1 AS one"})
    assert api.get(f"/v1.0/queries/{saved['query_id']}")["sql"] == "SELECT 1 AS one"
    assert api.get("/v1.0/health")["status"] == "ok"


def test_sqlite_catalog_file_deleted_while_running(make_app, tmp_path):
    directory = tmp_path / "catalog"
    api = JsonClient(sqlite_catalog_app(make_app, directory).test_client())
    api.post("/v1.0/query/train?save=true", {"query": "SELECT 1 AS one"})
    for path in directory.iterdir():  # catalog.db, -wal, -shm: the file is gone
        path.unlink()
    response = api.client.post("/v1.0/query/train?save=true", json={"query": "SELECT 2 AS two"})
    acknowledged = response.status_code == 200
    restarted = JsonClient(sqlite_catalog_app(make_app, directory, tmp_path / "other-data").test_client())
    kept = restarted.get("/v1.0/queries")["total"]
    assert not acknowledged or kept == 1, "a save acknowledged with 200 is gone after a restart"
    assert response.status_code == 503 and response.get_json()["details"] == {"backend": "catalog"}


# -- git and HTTP remotes ---------------------------------------------------------------------


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args: Any) -> None:
        pass


@contextmanager
def dumb_git_http(root: Path, port: int = 0) -> Iterator[int]:
    """Serve `root` (bare repositories with `git update-server-info`) over HTTP on `port`; yield the port."""

    def handler(*args: Any, **kwargs: Any) -> _Quiet:
        return _Quiet(*args, directory=str(root), **kwargs)

    http.server.ThreadingHTTPServer.allow_reuse_address = True
    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


@pytest.fixture
def remote_setup(make_app, tmp_path):
    """An app allowing remotes on 127.0.0.1, a saved query, and a bare copy of the example ETL repository."""
    def build(*ports: int, timeout: float = REMOTE_TIMEOUT_S):
        app = make_app(ETL_ALLOWED_REMOTES=tuple(f"http://127.0.0.1:{port}/" for port in ports),
                       REMOTE_TIMEOUT_SECONDS=timeout)
        api = JsonClient(app.test_client())
        api.put("/v1.0/publish?n_flows=30&seed=1")
        query_id = api.post("/v1.0/query/train?save=true", {"query": FOUR_TABLE_QUERY})["query_id"]
        return api, query_id

    repo = example_repo(tmp_path / "etl-repo")
    served = tmp_path / "served"
    served.mkdir()
    git.Repo.clone_from(str(repo.path), str(served / "x.git"), bare=True).close()
    git.Git(str(served / "x.git")).update_server_info()
    return build, served


def upstream_unavailable(api: JsonClient, query_id: str, etl_path: str, remote: str) -> float:
    error, elapsed = timed(lambda: api.post("/v1.0/extract/train?save=true",
                                            {"query_id": query_id, "etl_path": etl_path}, 502))
    assert error["code"] == "upstream_unavailable", error
    assert remote in error["message"], error
    return elapsed


def test_git_remote_on_a_closed_port_is_502_then_recovers(remote_setup):
    build, served = remote_setup
    port = closed_port()
    api, query_id = build(port)
    etl_path = f"git+http://127.0.0.1:{port}/x.git@main#etls/quote_features.py"
    elapsed = upstream_unavailable(api, query_id, etl_path, f"http://127.0.0.1:{port}/x.git")
    assert elapsed < REMOTE_TIMEOUT_S + 3
    assert api.get("/v1.0/etls")["total"] == 0

    with dumb_git_http(served, port):  # the remote comes back on the same port; the same app
        saved = api.post("/v1.0/extract/train?save=true&include_data=false",
                         {"query_id": query_id, "etl_path": etl_path})
    record = api.get(f"/v1.0/etls/{saved['etl_id']}")
    assert record["source"]["repo"] == f"http://127.0.0.1:{port}/x.git" and len(record["source"]["commit"]) == 40
    assert api.get("/v1.0/etls")["total"] == 1


def test_git_remote_that_never_answers_is_502_within_the_timeout(remote_setup, silent_port):
    build, _ = remote_setup
    api, query_id = build(silent_port)
    etl_path = f"git+http://127.0.0.1:{silent_port}/x.git@main#etls/quote_features.py"
    elapsed = upstream_unavailable(api, query_id, etl_path, f"http://127.0.0.1:{silent_port}/x.git")
    assert elapsed < REMOTE_TIMEOUT_S + 3
    assert api.get("/v1.0/etls")["total"] == 0


def test_http_etl_url_that_never_answers_is_502_within_the_timeout(remote_setup, silent_port):
    build, _ = remote_setup
    closed = closed_port()
    api, query_id = build(silent_port, closed)
    for port in (silent_port, closed):
        url = f"http://127.0.0.1:{port}/etls/quote_features.py"
        assert upstream_unavailable(api, query_id, url, url) < REMOTE_TIMEOUT_S + 3
    assert api.get("/v1.0/etls")["total"] == 0


def test_concurrent_registrations_from_a_hung_git_remote_each_answer_within_the_timeout(remote_setup, silent_port):
    build, _ = remote_setup
    timeout = 1.0
    api, query_id = build(silent_port, timeout=timeout)
    etl_path = f"git+http://127.0.0.1:{silent_port}/x.git@main#etls/quote_features.py"
    results: list[tuple[int, float]] = []

    def register() -> None:
        started = time.monotonic()
        response = api.client.application.test_client().post(
            "/v1.0/extract/train?save=true", json={"query_id": query_id, "etl_path": etl_path})
        results.append((response.status_code, time.monotonic() - started))

    threads = [threading.Thread(target=register) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert [status for status, _ in results] == [502, 502, 502]
    assert max(elapsed for _, elapsed in results) < timeout + 1.5, results
