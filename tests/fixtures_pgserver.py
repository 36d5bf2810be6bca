"""A private PostgreSQL server for tests that take it down: stop, start, freeze and thaw it mid-test.

`private_pg_server` runs ``initdb`` into a fresh temporary directory and starts a server
of its own on a free loopback port (Unix sockets in its own directory, trust auth, no
fsync), once per module; `private_pg` gives each test that server, started and answering,
with a fresh database. Teardown stops the server by its PID (``pg_ctl stop -m immediate``,
then SIGKILL to the postmaster and its children if they are still there) and removes the
directory.

As root (as these tests run), ``initdb`` and ``pg_ctl`` refuse to run, so they run as the
``postgres`` OS user through ``runuser``, in a directory that user owns.

Without PostgreSQL binaries under /usr/lib/postgresql/*/bin (or on PATH) the tests skip,
except with ``CI=true``, where they fail.
"""
from __future__ import annotations

import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from pathlib import Path
from typing import Iterator, NoReturn

import psycopg
import pytest
from psycopg import sql

from tests.required import missing

START_SECONDS = 30.0


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _missing(message: str) -> NoReturn:
    missing("a private PostgreSQL server", message)


def find_pg_bindir() -> Path | None:
    """The newest PostgreSQL bin directory holding initdb, pg_ctl and postgres."""
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(p.split("/")[-2])
                        if p.split("/")[-2].isdigit() else 0, reverse=True)
    on_path = shutil.which("pg_ctl")
    if on_path:
        candidates.append(str(Path(on_path).parent))
    for candidate in candidates:
        if all((Path(candidate) / tool).exists() for tool in ("initdb", "pg_ctl", "postgres")):
            return Path(candidate)
    return None


def _alive(pid: int) -> bool:
    """Whether `pid` runs (a zombie, or a process that is not ours to reap, counts as gone)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False


def _children(pid: int) -> list[int]:
    """Direct children of `pid` (the postmaster's backends and auxiliary processes)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError, IndexError):
            continue
        if int(fields[1]) == pid:
            found.append(int(entry))
    return found


class PgServer:
    """One private PostgreSQL cluster: initdb'd once, started and stopped at will."""

    def __init__(self, bindir: Path):
        self.bindir = bindir
        self.as_root = os.geteuid() == 0
        self.root = Path(tempfile.mkdtemp(prefix="fs-private-pg-"))
        self.data = self.root / "data"
        self.sockets = self.root / "sockets"
        self.log = self.root / "server.log"
        self.port = _free_port()
        self.pid: int | None = None
        self.databases: list[str] = []
        self.sockets.mkdir()
        if self.as_root:
            try:
                owner = pwd.getpwnam("postgres")
            except KeyError:
                _missing("running as root needs a 'postgres' OS user to run initdb and pg_ctl")
            if shutil.which("runuser") is None:
                _missing("running as root needs runuser to run initdb and pg_ctl as 'postgres'")
            for path in (self.root, self.sockets):
                os.chown(path, owner.pw_uid, owner.pw_gid)
        os.chmod(self.root, 0o700)
        self._run("initdb", "-D", str(self.data), "-A", "trust", "-U", "postgres", "-E", "UTF8",
                  "--locale=C", "--no-sync")

    # -- processes -----------------------------------------------------------------------

    def _run(self, tool: str, *args: str, timeout: float = 60.0) -> subprocess.CompletedProcess:
        command = [str(self.bindir / tool), *args]
        if self.as_root:
            command = ["runuser", "-u", "postgres", "--", *command]
        done = subprocess.run(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=timeout,
                              cwd=self.root)
        if done.returncode != 0:
            log = self.log.read_text(errors="replace")[-3000:] if self.log.exists() else ""
            raise RuntimeError(f"{tool} failed ({done.returncode}): {done.stdout.decode(errors='replace')}\n{log}")
        return done

    def _postmaster_pid(self) -> int | None:
        try:
            return int((self.data / "postmaster.pid").read_text().split("\n", 1)[0])
        except (FileNotFoundError, ValueError):
            return None

    def start(self) -> None:
        """Start the server (on the same port as before) and wait until it answers."""
        if self.pid is not None and _alive(self.pid):
            self.thaw()
            return
        options = (f"-p {self.port} -c listen_addresses=127.0.0.1 -c unix_socket_directories={self.sockets} "
                   "-c fsync=off -c full_page_writes=off -c max_connections=200 "
                   "-c shared_buffers=32MB")
        self._run("pg_ctl", "start", "-D", str(self.data), "-l", str(self.log), "-w", "-t", str(int(START_SECONDS)),
                  "-o", options, timeout=START_SECONDS + 10)
        self.pid = self._postmaster_pid()
        deadline = time.monotonic() + START_SECONDS
        while True:
            try:
                psycopg.connect(self.url("postgres"), connect_timeout=2).close()
                return
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def stop(self) -> None:
        """Stop the server at once (an outage): pg_ctl stop -m immediate, then SIGKILL what is left."""
        pid = self.pid or self._postmaster_pid()
        if pid is None:
            return
        processes = [pid, *_children(pid)]
        self.thaw()
        try:
            self._run("pg_ctl", "stop", "-D", str(self.data), "-m", "immediate", "-w", "-t", "10", timeout=20)
        except (RuntimeError, subprocess.TimeoutExpired):
            pass
        deadline = time.monotonic() + 10
        while any(_alive(p) for p in processes) and time.monotonic() < deadline:
            time.sleep(0.02)
        for leftover in (p for p in processes if _alive(p)):
            try:
                os.kill(leftover, signal.SIGKILL)
            except ProcessLookupError:
                pass
        while any(_alive(p) for p in processes) and time.monotonic() < deadline + 5:
            time.sleep(0.02)
        self.pid = None

    def _signal_all(self, signum: int) -> None:
        pid = self.pid
        if pid is None or not _alive(pid):
            return
        for process in [pid, *_children(pid)]:
            try:
                os.kill(process, signum)
            except ProcessLookupError:
                pass

    def freeze(self) -> None:
        """SIGSTOP the postmaster and every backend: connections stay open, nothing answers (a hung host)."""
        self._signal_all(signal.SIGSTOP)

    def thaw(self) -> None:
        """SIGCONT what `freeze` stopped."""
        self._signal_all(signal.SIGCONT)

    @property
    def running(self) -> bool:
        return self.pid is not None and _alive(self.pid)

    # -- databases -----------------------------------------------------------------------

    def url(self, database: str) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def create_database(self) -> str:
        """A fresh, uniquely named database; its URL."""
        name = f"fs_private_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(self.url("postgres"), connect_timeout=3, autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {} TEMPLATE template0").format(sql.Identifier(name)))
        self.databases.append(name)
        return self.url(name)

    def drop_databases(self) -> None:
        if not self.running:
            return
        with psycopg.connect(self.url("postgres"), connect_timeout=3, autocommit=True) as conn:
            for name in self.databases:
                conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
        self.databases.clear()

    def destroy(self) -> None:
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)


@pytest.fixture(scope="module")
def private_pg_server() -> Iterator[PgServer]:
    """A PostgreSQL server private to the module (initdb'd into a temporary directory); removed afterwards."""
    bindir = find_pg_bindir()
    if bindir is None:
        _missing("no PostgreSQL binaries (initdb, pg_ctl, postgres) under /usr/lib/postgresql/*/bin or on PATH")
    server = PgServer(bindir)
    try:
        server.start()
        yield server
    finally:
        server.destroy()


@pytest.fixture
def private_pg(private_pg_server: PgServer) -> Iterator[PgServer]:
    """The module's private server, running and answering, for one test; its databases are dropped after."""
    private_pg_server.start()
    try:
        yield private_pg_server
    finally:
        try:
            private_pg_server.start()  # a test that left it stopped or frozen
            private_pg_server.drop_databases()
        except Exception:  # noqa: BLE001 - a broken server is rebuilt by stopping it; the next test starts it
            private_pg_server.stop()
