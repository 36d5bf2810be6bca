"""A `python -m app` process under test, and what the benchmark reads about it and the machine.

The server runs as the production entry point does (waitress, `THREADS` worker threads) on a
free loopback port, is stopped by its PID, and is watched through /proc: resident memory (and
its high-water mark, which Linux lets root reset through ``clear_refs``), CPU seconds, and the
whole machine's busy time, so a measurement can say how much of the CPU others were using.
"""
from __future__ import annotations

import contextlib
import http.client
import json
import os
import platform
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

ROOT = Path(__file__).resolve().parent.parent
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def delete_redis_keys(url: str, pattern: str) -> None:
    """Delete every key matching `pattern` on the Redis server at `url` (a run's throwaway prefix)."""
    import redis

    with redis.Redis.from_url(url) as client:
        keys = list(client.scan_iter(match=pattern))
        if keys:
            client.delete(*keys)


def load_average() -> tuple[float, float, float]:
    one, five, fifteen = open("/proc/loadavg").read().split()[:3]
    return float(one), float(five), float(fifteen)


def wait_for_quiet(max_load: float, max_wait: float, log: Any = print) -> dict[str, Any]:
    """Wait (up to `max_wait` seconds) until the 1-minute load average is below `max_load`."""
    started = time.monotonic()
    while True:
        load = load_average()
        if load[0] < max_load:
            return {"load_average": load, "waited_seconds": round(time.monotonic() - started), "quiet": True}
        if time.monotonic() - started >= max_wait:
            log(f"  load average still {load[0]:.2f} after {max_wait:.0f} s: measuring anyway (noted in results)")
            return {"load_average": load, "waited_seconds": round(time.monotonic() - started), "quiet": False}
        log(f"  load average {load[0]:.2f} ≥ {max_load}: waiting (others are using the machine)")
        time.sleep(min(30.0, max(1.0, max_wait - (time.monotonic() - started))))


def machine() -> dict[str, Any]:
    """Cores, memory, CPU model, kernel, Python and the versions of the packages that matter here."""
    from importlib import metadata

    meminfo = dict(line.split(":", 1) for line in open("/proc/meminfo"))
    model = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")),
                 platform.processor())
    packages = {}
    for name in ("flask", "waitress", "duckdb", "pandas", "numpy", "pyarrow", "orjson", "sqlglot"):
        try:
            packages[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            packages[name] = None
    wrk = None
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        out = subprocess.run(["wrk", "--version"], capture_output=True, text=True, timeout=5)
        wrk = (out.stdout + out.stderr).split("Copyright")[0].strip() or None
    import sqlite3

    return {
        "cores": os.cpu_count(), "memory_gib": round(int(meminfo["MemTotal"].split()[0]) / 2**20, 1),
        "cpu_model": model, "kernel": platform.release(), "python": platform.python_version(),
        "sqlite": sqlite3.sqlite_version, "packages": packages, "wrk": wrk,
    }


def machine_busy_ticks() -> tuple[int, int]:
    """(busy, total) CPU ticks of the whole machine since boot, from /proc/stat."""
    fields = [int(v) for v in open("/proc/stat").readline().split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    total = sum(fields[:8])
    return total - idle, total


def process_status(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM of `pid` in bytes."""
    values = {}
    for line in open(f"/proc/{pid}/status"):
        if line.startswith(("VmRSS:", "VmHWM:")):
            name, amount = line.split(":", 1)
            values[name] = int(amount.split()[0]) * 1024
    return values


def process_cpu_seconds(pid: int) -> float:
    stat = open(f"/proc/{pid}/stat").read()
    fields = stat[stat.rindex(")") + 2:].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime + stime


def reset_peak(pid: int) -> bool:
    """Reset VmHWM to the current RSS (Linux ≥ 4.0, needs permission over the process)."""
    try:
        with open(f"/proc/{pid}/clear_refs", "w") as handle:
            handle.write("5")
        return True
    except OSError:
        return False


class MemoryWatch:
    """Peak resident memory of a process during a block: VmHWM reset at the start, plus VmRSS polled."""

    def __init__(self, pid: int, interval: float = 0.02):
        self.pid, self.interval = pid, interval
        self.baseline = self.peak_polled = self.peak_hwm = 0
        self.hwm_reset = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)

    def __enter__(self) -> "MemoryWatch":
        self.baseline = process_status(self.pid)["VmRSS"]
        self.hwm_reset = reset_peak(self.pid)
        self.peak_polled = self.baseline
        self._thread.start()
        return self

    def __exit__(self, *_: Any) -> None:
        self._stop.set()
        self._thread.join()
        status = process_status(self.pid)
        self.peak_polled = max(self.peak_polled, status["VmRSS"])
        self.peak_hwm = status["VmHWM"] if self.hwm_reset else 0

    @property
    def peak(self) -> int:
        return max(self.peak_polled, self.peak_hwm)

    def _poll(self) -> None:
        while not self._stop.wait(self.interval):
            with contextlib.suppress(OSError, KeyError):
                self.peak_polled = max(self.peak_polled, process_status(self.pid)["VmRSS"])


class CpuWatch:
    """CPU used during a block: the server's cores and the whole machine's busy cores."""

    def __init__(self, pid: int):
        self.pid = pid
        self.server_cores = self.machine_busy_cores = 0.0

    def __enter__(self) -> "CpuWatch":
        self._wall = time.monotonic()
        self._server = process_cpu_seconds(self.pid)
        self._busy, self._total = machine_busy_ticks()
        return self

    def __exit__(self, *_: Any) -> None:
        wall = time.monotonic() - self._wall
        self.server_cores = (process_cpu_seconds(self.pid) - self._server) / wall
        busy, total = machine_busy_ticks()
        cores = os.cpu_count() or 1
        self.machine_busy_cores = (busy - self._busy) / max(total - self._total, 1) * cores


@dataclass
class Server:
    """A running `python -m app`: its base URL, PID, log, and how long it took to be ready."""

    base: str
    port: int
    process: subprocess.Popen
    log_path: Path
    ready_seconds: float = 0.0
    hydrated_seconds: float | None = None  # from spawn to the "hydrated" log line
    hydrated_rows: dict[str, int] = field(default_factory=dict)
    peak_rss_at_ready: int = 0
    rss_at_ready: int = 0
    headers: dict[str, str] = field(default_factory=dict)  # sent with every request (an API key)
    etl_path: str = ""  # the registered ETL's file, for extract/train requests

    @property
    def pid(self) -> int:
        return self.process.pid

    def request(self, method: str, path: str, body: Any = None, timeout: float = 600.0,
                headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
        """One request on a fresh connection: (status, headers, body). A `bytes` body is sent as it is
        (say an Arrow stream, with its Content-Type in `headers`); anything else as JSON."""
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            data = body if isinstance(body, bytes) else json.dumps(body).encode() if body is not None else None
            sent = {**self.headers, **(headers or {})}
            if data is not None:
                sent.setdefault("Content-Type", "application/json")
            connection.request(method, path, body=data, headers=sent)
            response = connection.getresponse()
            return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
        finally:
            connection.close()

    def json(self, method: str, path: str, body: Any = None, timeout: float = 600.0,
             expect: tuple[int, ...] = (200, 201)) -> Any:
        status, _, data = self.request(method, path, body, timeout)
        if status not in expect:
            raise RuntimeError(f"{method} {path} → {status}: {data[:500].decode(errors='replace')}")
        return json.loads(data)


_HYDRATED = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) .*realtime store hydrated from the warehouse: (.*)$")


def wait_until_healthy(server: Server, deadline: float) -> None:
    """Poll `GET /v1.0/health` until it answers 200; RuntimeError if the process exits first or `deadline`
    (time.monotonic) passes."""
    while True:
        if server.process.poll() is not None:
            tail = server.log_path.read_text()[-3000:] if server.log_path.is_file() else ""
            raise RuntimeError(f"the server exited ({server.process.returncode}): {tail}")
        try:
            if server.request("GET", "/v1.0/health", timeout=5)[0] == 200:
                return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"the server did not answer in time: {server.log_path}")
        time.sleep(0.05)


@contextlib.contextmanager
def running_server(data_dir: Path, log_dir: Path, startup_seconds: float = 3600.0, root: Path = ROOT,
                   on_spawn: Any = None, **settings: str) -> Iterator[Server]:
    """Run `python -m app` on `data_dir` (one process, AUTH off, unless `settings` say otherwise) until the
    block ends: the code of `root` (another tree to compare with); `on_spawn(pid)` is called right after
    the process starts (say to sample its memory while it starts)."""
    port = free_port()
    env = {**os.environ, "DATA_DIR": str(data_dir), "HOST": "127.0.0.1", "PORT": str(port), "AUTH": "off",
           "PYTHONUNBUFFERED": "1", "WORKERS": "1", **settings}
    for name in ("CATALOG_URL", "WAREHOUSE_URL", "REALTIME_URL"):
        if name not in settings:
            env.pop(name, None)
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / f"server-{data_dir.name}-{port}.log"
    with open(log_path, "wb") as log:
        spawned_wall = time.time()
        spawned = time.monotonic()
        process = subprocess.Popen([sys.executable, "-m", "app"], cwd=root, env=env, stdout=log,
                                   stderr=subprocess.STDOUT)
        if on_spawn is not None:
            on_spawn(process.pid)
        server = Server(f"http://127.0.0.1:{port}", port, process, log_path)
        try:
            wait_until_healthy(server, spawned + startup_seconds)
            server.ready_seconds = time.monotonic() - spawned
            status = process_status(process.pid)
            server.rss_at_ready, server.peak_rss_at_ready = status["VmRSS"], status["VmHWM"]
            _read_hydration(server, spawned_wall)
            yield server
        finally:
            stop(process)


def _read_hydration(server: Server, spawned_wall: float) -> None:
    import datetime as dt

    for line in server.log_path.read_text(errors="replace").splitlines():
        match = _HYDRATED.match(line)
        if match:
            at = dt.datetime.strptime(match.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp()
            server.hydrated_seconds = at - spawned_wall
            with contextlib.suppress(ValueError, SyntaxError):
                import ast

                server.hydrated_rows = ast.literal_eval(match.group(2))


def stop(process: subprocess.Popen, grace: float = 30.0) -> None:
    """SIGTERM the process by its PID, SIGKILL it if it has not exited after `grace` seconds."""
    if process.poll() is not None:
        return
    os.kill(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        os.kill(process.pid, signal.SIGKILL)
        process.wait()


def make_etl_repo(path: Path) -> Path:
    """The shipped example ETL repository, committed as a fresh git repository at `path`; the ETL file."""
    import shutil

    if path.exists():
        shutil.rmtree(path)
    shutil.copytree(ROOT / "examples" / "etl_repo", path)
    git = ["git", "-C", str(path), "-c", "user.name=bench", "-c", "user.email=bench@localhost",
           "-c", "commit.gpgsign=false"]
    subprocess.run(git + ["init", "-q", "-b", "main"], check=True)
    subprocess.run(git + ["add", "."], check=True)
    subprocess.run(git + ["commit", "-qm", "Quote features"], check=True)
    return path / "etls" / "quote_features.py"
