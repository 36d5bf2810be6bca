"""WORKERS=N: N processes serving one port on one machine.

The primary process (the one `python -m app` starts) owns the warehouse (an embedded DuckDB file
opens in one process only), every write and the change feed's writer; it serves the public port
like the others and a private loopback port the others forward to. Each serving process (started
and supervised by the primary: restarted when it dies, stopped with it) holds its own in-memory
realtime store, restored from a snapshot the primary writes just before starting it
(`SourceService.snapshot`: the SQLite backup API, to a file under DATA_DIR, the feed position in its
``user_version``), then tails the feed from that position (`FeedTailer`). It answers realtime requests
and catalog reads itself and forwards everything else to the primary (`Router`).

All processes bind the public port with SO_REUSEPORT: the kernel spreads new connections over them.
"""
from __future__ import annotations

import http.client
import logging
import os
import re
import secrets
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from io import BytesIO
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping
from urllib.parse import quote

from app import jsonio
from app.body_guard import error_response
from app.settings import SETTINGS
from common.errors import BackendUnavailable, FeatureStoreError, InvalidInput

log = logging.getLogger("featurestore")
ROLE_ENV, PRIMARY_ENV, DIALECT_ENV = "FEATURESTORE_ROLE", "FEATURESTORE_PRIMARY_PORT", "FEATURESTORE_DIALECT"
SLOT_ENV = "FEATURESTORE_SLOT"  # a serving process's number, 1 … WORKERS-1: where it saves serving statistics
SNAPSHOT_FILE = "realtime-snapshot.db"
SUPERVISE_SECONDS = 0.5
QUICK_EXIT_SECONDS = 5.0  # a serving process that exits sooner is restarted after this pause
FORWARD_TIMEOUT_SECONDS = 3600.0  # a forwarded training set may take long; the primary has its own limits
CHUNK_BYTES = 1 << 16
HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade", "proxy-connection"}
API = r"^/v1\.0"
LOCAL_ROUTES = [("POST", re.compile(API + r"/(extract|query)/realtime$")),
                ("POST", re.compile(API + r"/feature-sets/[^/]+/realtime$")),
                ("GET", re.compile(API + r"/health$")),
                ("GET", re.compile(API + r"/(queries|etls|feature-sets)(/[^/]+)?$")),
                ("GET", re.compile(API + r"/sources$"))]


def serving_role() -> str | None:
    """'serving' in a process the primary started, else None."""
    return os.environ.get(ROLE_ENV)


# -- the primary ---------------------------------------------------------------------------------------


def check_shape(settings: Mapping[str, Any]) -> None:
    """Refuse backends several processes cannot share."""
    if not settings["REALTIME_URL"].startswith("sqlite"):
        raise InvalidInput("WORKERS>1 needs the SQLite realtime store (REALTIME_URL=sqlite:///:memory:), "
                           "whose snapshot the serving processes start from; or set WORKERS=1")
    if ":memory:" in settings["CATALOG_URL"]:
        raise InvalidInput("WORKERS>1 needs a catalog every process opens (a file or a server), not an "
                           "in-memory one; or set WORKERS=1")


def child_environment(settings: Mapping[str, Any]) -> dict[str, str]:
    """The environment a serving process starts with: every resolved setting (the primary's own secrets
    are gone from its environment once read), no ADMIN_KEY (the primary registers it) and a UI secret
    shared by all processes (a login must work on whichever process a request lands)."""
    env = {name: value for name, value in os.environ.items()
           if not any(name in (s.name, f"{s.name}_FILE") for s in SETTINGS)}
    for setting in SETTINGS:
        value = settings.get(setting.name)
        if value is None or setting.name == "ADMIN_KEY":
            continue
        env[setting.name] = ",".join(value) if isinstance(value, tuple) else \
            ("true" if value else "false") if isinstance(value, bool) else str(value)
    env["UI_SECRET_KEY"] = settings.get("UI_SECRET_KEY") or secrets.token_hex(32)
    env["WORKERS"] = "1"
    env["THREADS"] = str(settings["SERVING_THREADS"])
    return env


class Supervisor:
    """Starts `count` serving processes and restarts any that dies, each from a fresh snapshot."""

    def __init__(self, sources: Any, data_dir: str, env: dict[str, str], count: int):
        self.sources, self.env, self.count = sources, env, count
        self.snapshot_path = Path(data_dir) / SNAPSHOT_FILE
        self.children: list[subprocess.Popen] = []
        self._started: dict[int, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="worker-supervisor", daemon=True)

    def start(self) -> None:
        self.children = [self._spawn(index) for index in range(self.count)]
        self._thread.start()

    def _spawn(self, index: int) -> subprocess.Popen:
        """Serving process number index+1 (a replacement keeps the number: its statistics continue)."""
        self.write_snapshot()
        child = subprocess.Popen([sys.executable, "-m", "app", "serve"], env={**self.env, SLOT_ENV: str(index + 1)})
        self._started[child.pid] = time.monotonic()
        log.info("serving process %s started", child.pid)
        return child

    def write_snapshot(self) -> int:
        """The realtime store to the snapshot file (replaced atomically), its feed position in user_version."""
        partial = self.snapshot_path.with_suffix(".partial")
        partial.unlink(missing_ok=True)
        position = self.sources.snapshot(str(partial))
        with sqlite3.connect(partial) as db:
            db.execute(f"PRAGMA user_version = {int(position)}")
        db.close()
        os.replace(partial, self.snapshot_path)
        return position

    def _watch(self) -> None:
        while not self._stop.wait(SUPERVISE_SECONDS):
            for index, child in enumerate(self.children):
                if child.poll() is not None and not self._stop.is_set():
                    lived = time.monotonic() - self._started[child.pid]
                    log.warning("serving process %s exited (%s) after %.1f s; starting another", child.pid,
                                child.returncode, lived)
                    if lived < QUICK_EXIT_SECONDS and self._stop.wait(QUICK_EXIT_SECONDS):
                        return  # failing at start: paused, not spinning; stopped meanwhile
                    self.children[index] = self._spawn(index)

    def stop(self) -> None:
        """Stop supervising, then every child (SIGTERM, then SIGKILL after 10 s)."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()
        for child in self.children:
            if child.poll() is None:
                child.terminate()
        for child in self.children:
            try:
                child.wait(timeout=10)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()


def stop_on_sigterm() -> None:
    """SIGTERM ends the process as Ctrl-C does, so its `finally` blocks stop what it started."""
    def interrupt(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt
    signal.signal(signal.SIGTERM, interrupt)


def serve_primary(settings: dict[str, Any]) -> int:
    """Run the primary: the app on the public and a private loopback port, and WORKERS-1 serving processes."""
    from app import close_app, create_app
    from app.server import serve_forever, shared_socket

    check_shape(settings)
    env = child_environment(settings)
    stop_on_sigterm()
    app = create_app({"UI_SECRET_KEY": env["UI_SECRET_KEY"]})
    app.wsgi_app = ServedBy(app.wsgi_app)
    service = app.extensions["feature_service"]
    public, private = shared_socket(settings["HOST"], settings["PORT"]), shared_socket("127.0.0.1", 0)
    env.update({ROLE_ENV: "serving", PRIMARY_ENV: str(private.getsockname()[1]),
                DIALECT_ENV: service.warehouse.dialect})
    supervisor = Supervisor(service.sources, settings["DATA_DIR"], env, settings["WORKERS"] - 1)
    log.info("primary %s: serving on http://%s:%s with %s more processes", os.getpid(), settings["HOST"],
             settings["PORT"], settings["WORKERS"] - 1)
    try:
        supervisor.start()
        serve_forever(app, settings, [public, private])
    except KeyboardInterrupt:
        pass
    finally:
        supervisor.stop()
        close_app(app)
    return 0


# -- a serving process ---------------------------------------------------------------------------------


class PrimaryWarehouse:
    """A serving process's stand-in for the warehouse, which only the primary opens: its dialect (saved
    queries are read in it), a ping that asks whether the primary answers, and nothing else (the routes
    that need the warehouse are forwarded)."""

    def __init__(self, dialect: str, primary_port: int):
        self.dialect, self.primary_port = dialect, primary_port

    def ping(self) -> None:
        try:
            socket.create_connection(("127.0.0.1", self.primary_port), timeout=1).close()
        except OSError as error:
            raise BackendUnavailable("warehouse", f"the primary process does not answer ({error})") from None

    def close(self) -> None:
        """Nothing is open here."""

    def __getattr__(self, name: str) -> Callable[..., Any]:
        def refuse(*args: Any, **kwargs: Any) -> Any:
            raise BackendUnavailable("warehouse", "only the primary process opens it (this request should have "
                                     "been forwarded)")
        return refuse


def snapshot_position(path: Path) -> int:
    """The feed position a snapshot file holds everything through."""
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
        position = db.execute("PRAGMA user_version").fetchone()[0]
    db.close()
    return int(position)


def watch_parent() -> None:
    """End this process (as SIGTERM does) when the primary that started it is gone."""
    parent = os.getppid()

    def run() -> None:
        while os.getppid() == parent:
            time.sleep(SUPERVISE_SECONDS)
        os.kill(os.getpid(), signal.SIGTERM)
    threading.Thread(target=run, name="parent-watch", daemon=True).start()


def serve_worker(settings: dict[str, Any]) -> int:
    """Run one serving process: restore the snapshot, catch up from the feed, serve the public port."""
    from app import close_app, create_app
    from app.server import serve_forever, shared_socket

    stop_on_sigterm()
    watch_parent()
    primary_port = int(os.environ[PRIMARY_ENV])
    app = create_app(serving={"primary_port": primary_port, "dialect": os.environ[DIALECT_ENV],
                              "snapshot": Path(settings["DATA_DIR"]) / SNAPSHOT_FILE,
                              "slot": os.environ.get(SLOT_ENV)})
    app.wsgi_app = ServedBy(Router(app.wsgi_app, primary_port))
    try:
        serve_forever(app, settings, [shared_socket(settings["HOST"], settings["PORT"])])
    except KeyboardInterrupt:
        pass
    finally:
        close_app(app)
    return 0


class ServedBy:
    """WSGI middleware: the answering process's PID in X-Served-By (a forwarded answer keeps the primary's)."""

    def __init__(self, app: Callable[..., Iterable[bytes]]):
        self.app, self.pid = app, str(os.getpid())

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        def start(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            if not any(name.lower() == "x-served-by" for name, _ in headers):
                headers = [*headers, ("X-Served-By", self.pid)]
            return start_response(status, headers, exc_info)
        return self.app(environ, start)


class Router:
    """WSGI middleware of a serving process: realtime requests (unless they log their request rows, a
    write) and catalog reads run here; everything else is forwarded to the primary's private port (or a
    replica's writer at `host`:`primary_port`, app/replicas.py)."""

    def __init__(self, app: Callable[..., Iterable[bytes]], primary_port: int, host: str = "127.0.0.1",
                 writer: str = "primary process"):
        self.app, self.primary_port, self.host, self.writer = app, primary_port, host, writer

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        method, path = environ["REQUEST_METHOD"], environ.get("PATH_INFO", "")
        route = next((pattern for verb, pattern in LOCAL_ROUTES if verb == method and pattern.match(path)), None)
        if route is None:
            return self.forward(environ, start_response)
        if method == "POST":
            body = environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
            environ["wsgi.input"] = BytesIO(body)
            if _logs_rows(body):
                return self.forward(environ, start_response)
        return self.app(environ, start_response)

    def forward(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        """The request as the primary answers it, streamed back."""
        connection = http.client.HTTPConnection(self.host, self.primary_port, timeout=FORWARD_TIMEOUT_SECONDS)
        try:
            _send(connection, environ)
            response = connection.getresponse()
        except OSError as error:
            connection.close()
            status, headers, body = error_response(BackendUnavailable(
                self.writer, f"{error} (writes and training are served by the {self.writer})"))
            start_response(status, [(name, value) for name, value in headers if name.lower() not in HOP_BY_HOP])
            return [body]
        start_response(f"{response.status} {response.reason}",
                       [(name, value) for name, value in response.getheaders() if name.lower() not in HOP_BY_HOP])
        return _streamed(connection, response)


def _logs_rows(body: bytes) -> bool:
    """Whether a realtime request body asks to log its request rows (a write: the primary's)."""
    if b'"log"' not in body:
        return False
    try:
        parsed = jsonio.strict_loads(body)
    except (FeatureStoreError, ValueError):
        return False  # refused here, in the one error shape
    return isinstance(parsed, dict) and bool(parsed.get("log"))


def _send(connection: http.client.HTTPConnection, environ: dict[str, Any]) -> None:
    """Send the request `environ` describes, its body streamed from wsgi.input."""
    path = quote((environ.get("SCRIPT_NAME", "") + environ.get("PATH_INFO", "")).encode("latin-1"),
                 safe="/;=,:@!$&'()*+~")
    query = environ.get("QUERY_STRING")
    connection.putrequest(environ["REQUEST_METHOD"], path + (f"?{query}" if query else ""), skip_host=True,
                          skip_accept_encoding=True)
    length = int(environ.get("CONTENT_LENGTH") or 0)
    for key, value in environ.items():
        if key.startswith("HTTP_") and key[5:].replace("_", "-").lower() not in HOP_BY_HOP | {"content-length"}:
            connection.putheader(key[5:].replace("_", "-"), value)
    if environ.get("CONTENT_TYPE"):
        connection.putheader("Content-Type", environ["CONTENT_TYPE"])
    connection.putheader("Content-Length", str(length))
    connection.putheader("X-Forwarded-For", environ.get("REMOTE_ADDR", ""))
    connection.endheaders()
    stream, left = environ["wsgi.input"], length
    while left > 0:
        chunk = stream.read(min(CHUNK_BYTES, left))
        if not chunk:
            break
        connection.send(chunk)
        left -= len(chunk)


def _streamed(connection: http.client.HTTPConnection, response: http.client.HTTPResponse) -> Iterator[bytes]:
    try:
        while chunk := response.read1(CHUNK_BYTES) if hasattr(response, "read1") else response.read(CHUNK_BYTES):
            yield chunk
    finally:
        connection.close()
