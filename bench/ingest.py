"""Ingestion into a declared source: Arrow, JSON and Parquet over HTTP, and each store alone.

    .venv/bin/python bench/ingest.py                       # N = 1,000,000 rows, 3 repeats
    .venv/bin/python bench/ingest.py --rows 200000 --repeats 5
    .venv/bin/python bench/ingest.py --profile arrow       # and profile one path in-process afterwards
    .venv/bin/python bench/ingest.py --skip-bench --profile json
    .venv/bin/python bench/ingest.py --only arrow json parquet --realtime-url duckdb:///:memory:

A `python -m app` process (waitress, the default THREADS) runs on a fresh temporary DATA_DIR,
a free loopback port, AUTH=off and a large MAX_INGEST_BYTES; it is stopped by its PID. A
10-column source (entity key ``customer_id`` string, ``event_time`` timestamp, three integers,
two floats, a boolean, two strings; nulls in two nullable columns) is declared with a hot window
of 365 days, larger than the 30 days the rows span, so every row goes to both the warehouse
(DuckDB file) and the realtime store (in-memory SQLite): each answer's ``realtime_rows`` and the
source's row counts in both stores are checked after every run.

Variants, each into a fresh source (so each starts from an empty table), in an order rotated
every repeat so load from other processes falls on all of them alike:

  arrow      POST /v1.0/sources/<name>/rows, Arrow IPC stream bodies of --arrow-call-rows (250,000)
  json       POST /v1.0/sources/<name>/rows, {"rows": [...]} bodies of --json-call-rows (100,000)
  parquet    write the N rows to $DATA_DIR/load/ingest.parquet (once, not timed), then
             POST /v1.0/sources/<name>/load {"path": "ingest.parquet"}: one call of N rows
  upload     the Arrow bodies POSTed to a source that does not exist (404 before the body is
             read by the app): waitress receiving the body, routing, and the answer only
  validate   in-process: `rows_from_arrow(source, ipc_batches(body))` per Arrow body
  warehouse  in-process: `DuckDBWarehouse.append({table: validated})` on a DuckDB file, per Arrow
             call, and (warehouse-1call) once with all N rows, as the Parquet load does
  realtime   in-process: `SqliteRealtimeStore` register + `append({name: validated})`, per Arrow
             call, and (realtime-1call) once with all N rows

Rows/s of a run is its rows over the sum of its calls' latencies (request sent to answer read);
the tables give the median, min and max over the repeats, and per-call latencies, the server's
CPU seconds and the whole machine's busy cores during each run (from /proc: others' load shows).
Each repeat first waits (up to --max-wait s) for the 1-minute load average to drop below
--max-load. The client-side encoding of the bodies and the Parquet file is done before timing.

`--profile` then builds the service in-process (`app.create_app`, embedded backends on a fresh
DATA_DIR, DEMO_SOURCES off), declares the same source and, for the chosen path (`auto`: the one
furthest below its target), times `SourceService.ingest` of pre-built validated tables (from
`rows_from_arrow`) split into its parts by timing wrappers (no profiler overhead), profiles it with
cProfile, and profiles the whole request through Flask's test client (body reading, parsing and
validation included), printing the top functions.
"""
from __future__ import annotations

import argparse
import contextlib
import cProfile
import functools
import io
import json
import os
import pstats
import shutil
import statistics
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Iterator

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as `python bench/ingest.py`: the project's packages import from the root
    sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import orjson  # noqa: E402
import pyarrow as pa  # noqa: E402
import pyarrow.compute as pc  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402

from bench.live import (Server, machine_busy_ticks, process_cpu_seconds, process_status,  # noqa: E402
                        running_server, wait_for_quiet)

ARROW_STREAM = "application/vnd.apache.arrow.stream"
HOT_WINDOW_SECONDS = 365 * 86400
SPAN_SECONDS = 30 * 86400
TARGETS = {"arrow": 500_000, "json": 100_000, "parquet": 1_000_000}
COLUMNS = [("customer_id", "string"), ("event_time", "timestamp"), ("quantity", "integer"),
           ("amount_cents", "integer"), ("session_seconds", "integer"), ("price", "float"), ("score", "float"),
           ("is_returning", "boolean"), ("channel", "string"), ("country", "string")]
NULLABLE = {"session_seconds", "score"}


# -- data -------------------------------------------------------------------------------------------

def declaration(name: str) -> dict[str, Any]:
    return {"name": name, "columns": [{"name": c, "type": t, "nullable": c in NULLABLE or c not in
                                       ("customer_id", "event_time")} for c, t in COLUMNS],
            "entity_keys": ["customer_id"], "event_time": "event_time", "hot_window_seconds": HOT_WINDOW_SECONDS,
            "description": "bench/ingest.py"}


def make_table(rows: int, seed: int, now: float) -> pa.Table:
    """`rows` events of about rows/10 customers over the 30 days before `now`, roughly in time order."""
    rng = np.random.default_rng(seed)
    now_us = int(now * 1e6) - 60 * 10**6
    span_us = SPAN_SECONDS * 10**6
    base = now_us - span_us + np.arange(rows, dtype=np.int64) * (span_us // max(rows, 1))
    event_us = np.minimum(base + rng.integers(0, 60 * 10**6, rows), now_us)
    customers = pc.binary_join_element_wise(
        "c", pc.cast(pa.array(rng.integers(0, max(rows // 10, 1), rows)), pa.string()), "")
    channels = pa.array(["web", "app", "store", "phone", "partner"])
    countries = pa.array(["US", "GB", "DE", "FR", "ES", "IT", "NL", "SE", "PL", "BR", "MX", "CA", "AU", "JP",
                          "IN", "ZA", "NG", "KR", "AR", "CH"])
    arrays = {
        "customer_id": customers,
        "event_time": pa.array(event_us, pa.timestamp("us", tz="UTC")),
        "quantity": pa.array(rng.integers(1, 11, rows)),
        "amount_cents": pa.array(rng.integers(100, 500_000, rows)),
        "session_seconds": pa.array(rng.integers(0, 7200, rows), mask=rng.random(rows) < 0.02),
        "price": pa.array(np.round(rng.gamma(2.0, 40.0, rows), 2)),
        "score": pa.array(rng.random(rows), mask=rng.random(rows) < 0.01),
        "is_returning": pa.array(rng.random(rows) < 0.6),
        "channel": channels.take(pa.array(rng.integers(0, len(channels), rows))),
        "country": countries.take(pa.array(rng.integers(0, len(countries), rows))),
    }
    return pa.table(arrays)


def chunks(table: pa.Table, size: int) -> list[pa.Table]:
    return [table.slice(start, size) for start in range(0, table.num_rows, size)]


def ipc_body(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue().to_pybytes()


def json_body(table: pa.Table) -> bytes:
    """{"rows": [...]}, timestamps as ISO-8601 with an offset (orjson writes "+00:00")."""
    return orjson.dumps({"rows": table.to_pylist()})


@dataclass
class Data:
    table: pa.Table
    arrow_bodies: list[tuple[bytes, int]]
    json_bodies: list[tuple[bytes, int]]
    arrow_chunks: list[pa.Table]
    prepare_seconds: dict[str, float] = field(default_factory=dict)


def prepare(args: argparse.Namespace) -> Data:
    seconds = {}
    started = time.perf_counter()
    table = make_table(args.rows, args.seed, time.time())
    seconds["generate"] = time.perf_counter() - started
    started = time.perf_counter()
    arrow_chunks = chunks(table, args.arrow_call_rows)
    arrow_bodies = [(ipc_body(chunk), chunk.num_rows) for chunk in arrow_chunks]
    seconds["encode_arrow"] = time.perf_counter() - started
    started = time.perf_counter()
    json_table = table if args.json_rows == args.rows else make_table(args.json_rows, args.seed + 1, time.time())
    json_bodies = [(json_body(chunk), chunk.num_rows) for chunk in chunks(json_table, args.json_call_rows)]
    seconds["encode_json"] = time.perf_counter() - started
    return Data(table, arrow_bodies, json_bodies, arrow_chunks, seconds)


# -- the server process -------------------------------------------------------------------------------

def ingest_server(data_dir: Path, **settings: str) -> Any:
    """`bench.live.running_server` on `data_dir`, with nothing of the demo and room for large uploads."""
    return running_server(data_dir, data_dir.parent, 120.0, **{
        "DEMO_SOURCES": "off", "MAX_INGEST_BYTES": str(16 * 2**30), **settings})


# -- one run of one variant -----------------------------------------------------------------------------

@dataclass
class Run:
    rows: int
    calls: list[float]  # seconds per call
    server_cpu: float | None = None  # CPU seconds of the server process during the run
    machine_busy: float | None = None  # busy cores of the whole machine during the run (others included)
    parts: dict[str, float] = field(default_factory=dict)

    @property
    def seconds(self) -> float:
        return sum(self.calls)

    @property
    def rate(self) -> float:
        return self.rows / self.seconds if self.seconds else float("nan")


def _checked_answer(status: int, data: bytes, rows: int, what: str) -> None:
    if status != 200:
        raise RuntimeError(f"{what} -> {status}: {data[:1000].decode(errors='replace')}")
    answer = json.loads(data)
    if answer["rows"] != rows or answer["realtime_rows"] != rows or answer.get("duplicate"):
        raise RuntimeError(f"{what}: expected {rows} rows in both stores, got {answer}")


def _check_counts(server: Server, name: str, rows: int) -> None:
    described = server.json("GET", f"/v1.0/sources/{name}")
    if described["warehouse"]["rows"] != rows or described["realtime"]["rows"] != rows:
        raise RuntimeError(f"source {name}: expected {rows} rows in each store, got warehouse "
                           f"{described['warehouse']['rows']}, realtime {described['realtime']['rows']}")


def http_rows(server: Server, name: str, bodies: list[tuple[bytes, int]], content_type: str) -> Run:
    server.json("POST", "/v1.0/sources", declaration(name))
    calls, cpu = [], process_cpu_seconds(server.pid)
    for body, rows in bodies:
        started = time.perf_counter()
        status, _, data = server.request("POST", f"/v1.0/sources/{name}/rows", body,
                                         headers={"Content-Type": content_type})
        calls.append(time.perf_counter() - started)
        _checked_answer(status, data, rows, f"POST /v1.0/sources/{name}/rows")
    run = Run(sum(rows for _, rows in bodies), calls, process_cpu_seconds(server.pid) - cpu)
    _check_counts(server, name, run.rows)
    return run


def http_parquet(server: Server, name: str, file_name: str, rows: int) -> Run:
    server.json("POST", "/v1.0/sources", declaration(name))
    cpu = process_cpu_seconds(server.pid)
    started = time.perf_counter()
    status, _, data = server.request("POST", f"/v1.0/sources/{name}/load", {"path": file_name})
    calls = [time.perf_counter() - started]
    _checked_answer(status, data, rows, f"POST /v1.0/sources/{name}/load")
    run = Run(rows, calls, process_cpu_seconds(server.pid) - cpu)
    _check_counts(server, name, rows)
    return run


def http_upload(server: Server, bodies: list[tuple[bytes, int]]) -> Run:
    calls, cpu = [], process_cpu_seconds(server.pid)
    for body, _ in bodies:
        started = time.perf_counter()
        status, _, data = server.request("POST", "/v1.0/sources/no_such_source/rows", body,
                                         headers={"Content-Type": ARROW_STREAM})
        calls.append(time.perf_counter() - started)
        if status != 404:
            raise RuntimeError(f"upload to an unknown source -> {status}: {data[:300]!r}")
    return Run(sum(rows for _, rows in bodies), calls, process_cpu_seconds(server.pid) - cpu)


def source_record(name: str) -> Any:
    from catalog.base import utc_now
    from sources.definition import parse_source

    return replace(parse_source(declaration(name), created_by="bench", created_at=utc_now()), version=1)


def inproc_validate(name: str, bodies: list[tuple[bytes, int]]) -> Run:
    from sources.rows import ipc_batches, rows_from_arrow

    source = source_record(name)
    calls = []
    for body, rows in bodies:
        started = time.perf_counter()
        table = rows_from_arrow(source, ipc_batches(io.BytesIO(body)))
        calls.append(time.perf_counter() - started)
        assert table.num_rows == rows
    return Run(sum(rows for _, rows in bodies), calls)


def inproc_warehouse(warehouse: Any, name: str, tables: list[pa.Table]) -> Run:
    source = source_record(name)
    warehouse.create_table(source)
    calls = []
    for table in tables:
        started = time.perf_counter()
        warehouse.append({source.table: table})
        calls.append(time.perf_counter() - started)
    rows = sum(t.num_rows for t in tables)
    assert warehouse.table_stats(source.table, source.event_time)["rows"] == rows
    return Run(rows, calls)


def inproc_realtime(name: str, tables: list[pa.Table]) -> Run:
    from realtime.sqlite_store import SqliteRealtimeStore

    source = source_record(name)
    store = SqliteRealtimeStore(statement_timeout=30.0)
    try:
        store.register(source)
        calls = []
        for table in tables:
            started = time.perf_counter()
            store.append({name: table})
            calls.append(time.perf_counter() - started)
        rows = sum(t.num_rows for t in tables)
        assert store.stats(name)["rows"] == rows
        return Run(rows, calls)
    finally:
        store.close()


# -- the benchmark ------------------------------------------------------------------------------------

VARIANTS = {  # key: (label, target rows/s or None, where)
    "arrow": ("Arrow IPC over HTTP → both stores", TARGETS["arrow"], "http"),
    "json": ("JSON over HTTP → both stores", TARGETS["json"], "http"),
    "parquet": ("Parquet load over HTTP → both stores", TARGETS["parquet"], "http"),
    "upload": ("HTTP upload alone (Arrow bodies, 404)", None, "http"),
    "validate": ("rows_from_arrow alone (in-process)", None, "in-process"),
    "warehouse": ("DuckDB warehouse.append alone (in-process)", None, "in-process"),
    "realtime": ("SQLite realtime append alone (in-process)", None, "in-process"),
    "warehouse-1call": ("DuckDB warehouse.append alone, 1 call", None, "in-process"),
    "realtime-1call": ("SQLite realtime append alone, 1 call", None, "in-process"),
}


def run_benchmark(args: argparse.Namespace, data: Data, work: Path) -> dict[str, list[Run]]:
    from sources.rows import ipc_batches, rows_from_arrow
    from warehouse.duckdb import DuckDBWarehouse

    data_dir = work / "data"
    load_dir = data_dir / "load"
    load_dir.mkdir(parents=True)
    started = time.perf_counter()
    pq.write_table(data.table, load_dir / "ingest.parquet")
    data.prepare_seconds["write_parquet"] = time.perf_counter() - started
    parquet_bytes = (load_dir / "ingest.parquet").stat().st_size

    probe = source_record("probe")
    validated = [rows_from_arrow(probe, ipc_batches(io.BytesIO(body))) for body, _ in data.arrow_bodies]
    validated_whole = rows_from_arrow(probe, pq.read_table(load_dir / "ingest.parquet").to_batches(
        max_chunksize=1_000_000))  # as SourceService.load_file reads it
    warehouse = DuckDBWarehouse(f"duckdb:///{work}/inprocess/warehouse.duckdb", statement_timeout=30.0)

    arrow_mb = sum(len(b) for b, _ in data.arrow_bodies) / 2**20
    json_mb = sum(len(b) for b, _ in data.json_bodies) / 2**20
    print(f"data: {args.rows:,} rows x {len(COLUMNS)} columns; generated in {data.prepare_seconds['generate']:.2f} s; "
          f"Arrow bodies {len(data.arrow_bodies)} x {args.arrow_call_rows:,} rows = {arrow_mb:.0f} MiB "
          f"(encoded in {data.prepare_seconds['encode_arrow']:.2f} s); JSON bodies {len(data.json_bodies)} x "
          f"{args.json_call_rows:,} rows = {json_mb:.0f} MiB (client-side to_pylist + orjson "
          f"{data.prepare_seconds['encode_json']:.2f} s, not timed); Parquet {parquet_bytes / 2**20:.0f} MiB "
          f"(written in {data.prepare_seconds['write_parquet']:.2f} s, not timed)")

    results: dict[str, list[Run]] = {key: [] for key in VARIANTS}
    order = list(VARIANTS)
    settings = {} if args.realtime_url is None else {"REALTIME_URL": args.realtime_url}
    with ingest_server(data_dir, **settings) as server:
        print(f"server: pid {server.pid}, port {server.port}, DATA_DIR {data_dir}, REALTIME_URL "
              f"{args.realtime_url or 'sqlite:///:memory: (the default)'}, log {server.log_path}")
        for repeat in range(args.repeats):
            shift = repeat * (len(order) // args.repeats or 1)
            rotated = order[shift % len(order):] + order[:shift % len(order)]
            load = wait_for_quiet(args.max_load, args.max_wait)["load_average"][0]
            print(f"\nrepeat {repeat + 1}/{args.repeats} (load average {load:.2f}): {', '.join(rotated)}")
            for key in rotated:
                name = f"bench_{key.replace('-', '_')}_{repeat}"
                busy, total = machine_busy_ticks()
                if key == "arrow":
                    run = http_rows(server, name, data.arrow_bodies, ARROW_STREAM)
                elif key == "json":
                    run = http_rows(server, name, data.json_bodies, "application/json")
                elif key == "parquet":
                    run = http_parquet(server, name, "ingest.parquet", args.rows)
                elif key == "upload":
                    run = http_upload(server, data.arrow_bodies)
                elif key == "validate":
                    run = inproc_validate(name, data.arrow_bodies)
                elif key == "warehouse":
                    run = inproc_warehouse(warehouse, name, validated)
                elif key == "realtime":
                    run = inproc_realtime(name, validated)
                elif key == "warehouse-1call":
                    run = inproc_warehouse(warehouse, name, [validated_whole])
                elif key == "realtime-1call":
                    run = inproc_realtime(name, [validated_whole])
                else:
                    raise AssertionError(key)
                busy_after, total_after = machine_busy_ticks()
                run.machine_busy = (busy_after - busy) / max(total_after - total, 1) * (os.cpu_count() or 1)
                results[key].append(run)
                cpu = "" if run.server_cpu is None else f", server CPU {run.server_cpu:.2f} s " \
                                                         f"({run.server_cpu / run.seconds:.2f} cores)"
                cpu += f", machine busy {run.machine_busy:.2f} cores"
                print(f"  {key:<16} {run.rows:>10,} rows {run.seconds:7.2f} s {run.rate:>12,.0f} rows/s; calls "
                      f"{', '.join(f'{c:.3f}' for c in run.calls)} s{cpu}")
        mem = process_status(server.pid)
        print(f"\nserver memory at the end: RSS {mem['VmRSS'] / 2**30:.2f} GiB, peak {mem['VmHWM'] / 2**30:.2f} GiB "
              f"(its realtime store holds every run's rows)")
    warehouse.close()
    return results


def summarize(args: argparse.Namespace, results: dict[str, list[Run]]) -> None:
    def rates(key: str) -> list[float]:
        return [run.rate for run in results[key]]

    print(f"\n## Ingestion, {args.rows:,} rows (JSON: {args.json_rows:,}), median of {args.repeats} alternating "
          f"repeats\n")
    print("| variant | rows | calls x rows | median rows/s | min | max | per call median s | per call max s | "
          "server CPU s | machine busy cores |")
    print("|---|---:|---|---:|---:|---:|---:|---:|---:|---:|")
    for key, (label, _, _) in VARIANTS.items():
        runs = results[key]
        if not runs:
            continue
        calls = [c for run in runs for c in run.calls]
        per_call = f"{len(runs[0].calls)} x {runs[0].rows // len(runs[0].calls):,}"
        cpu = [run.server_cpu for run in runs if run.server_cpu is not None]
        busy = [run.machine_busy for run in runs if run.machine_busy is not None]
        print(f"| {key}: {label} | {runs[0].rows:,} | {per_call} | {statistics.median(rates(key)):,.0f} | "
              f"{min(rates(key)):,.0f} | {max(rates(key)):,.0f} | {statistics.median(calls):.3f} | {max(calls):.3f} | "
              f"{f'{statistics.median(cpu):.2f}' if cpu else '—'} | "
              f"{f'{statistics.median(busy):.2f}' if busy else '—'} |")

    print("\nPer-call latency by call index (median over repeats, seconds):")
    for key in ("arrow", "json", "upload", "warehouse", "realtime"):
        if results.get(key):
            by_index = zip(*(run.calls for run in results[key]))
            print(f"  {key:<10} " + " ".join(f"{statistics.median(values):.3f}" for values in by_index))

    if all(results.get(k) for k in ("arrow", "upload", "validate", "warehouse", "realtime")):
        median_seconds = {k: statistics.median(run.seconds for run in results[k])
                          for k in ("arrow", "upload", "validate", "warehouse", "realtime")}
        rest = median_seconds["arrow"] - sum(median_seconds[k] for k in ("upload", "validate", "warehouse",
                                                                         "realtime"))
        print(f"\nWhere an Arrow ingest of {args.rows:,} rows goes (medians, s): HTTP upload "
              f"{median_seconds['upload']:.2f} + validation {median_seconds['validate']:.2f} + DuckDB "
              f"{median_seconds['warehouse']:.2f} + SQLite {median_seconds['realtime']:.2f} + rest {rest:.2f} = "
              f"{median_seconds['arrow']:.2f} end to end")

    print("\n| variant | rows | median rows/s | target | met? |")
    print("|---|---:|---:|---:|---|")
    for key, (label, target, _) in VARIANTS.items():
        if not results[key]:
            continue
        median = statistics.median(rates(key))
        met = "—" if target is None else ("yes" if median >= target else f"no ({median / target:.0%} of target)")
        print(f"| {key}: {label} | {results[key][0].rows:,} | {median:,.0f} | "
              f"{'—' if target is None else f'≥ {target:,}'} | {met} |")


# -- the in-process profile -----------------------------------------------------------------------------

def timed(parts: dict[str, float], name: str, function: Callable) -> Callable:
    @functools.wraps(function)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            return function(*args, **kwargs)
        finally:
            parts[name] = parts.get(name, 0.0) + time.perf_counter() - started
    return wrapper


class TimedConnection:
    """A sqlite3 connection whose executemany is timed (the store's own attribute is swapped, not the code)."""

    def __init__(self, connection: Any, parts: dict[str, float]):
        self._connection, self._parts = connection, parts

    def executemany(self, *args: Any) -> Any:
        return timed(self._parts, "sqlite executemany (the row inserts)", self._connection.executemany)(
            *args)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._connection, name)


@contextlib.contextmanager
def instrumented(service: Any, parts: dict[str, float]) -> Iterator[None]:
    """Time the parts of `SourceService.ingest` by wrapping the instances' methods (restored afterwards)."""
    import realtime.sqlite_store as sqlite_store

    sources, warehouse, realtime = service.sources, service.sources.warehouse, service.sources.realtime
    saved_stored, saved_columns = sqlite_store._stored, sqlite_store.python_columns
    sqlite_store._stored = timed(parts, "sqlite _stored (timestamps to text)", saved_stored)
    sqlite_store.python_columns = timed(parts, "sqlite python_columns (Arrow to Python lists)", saved_columns)
    warehouse.append = timed(parts, "warehouse.append (DuckDB)", warehouse.append)
    realtime.append = timed(parts, "realtime.append (SQLite)", realtime.append)
    realtime._rebuild_indexes = timed(parts, "sqlite index drop/rebuild", realtime._rebuild_indexes)
    realtime._row_estimate = timed(parts, "sqlite row estimate", realtime._row_estimate)
    sources._hot_rows = timed(parts, "hot-window filter", sources._hot_rows)
    connection = realtime._connection
    realtime._connection = TimedConnection(connection, parts)
    try:
        yield
    finally:
        sqlite_store._stored, sqlite_store.python_columns = saved_stored, saved_columns
        for obj, names in ((warehouse, ("append",)), (realtime, ("append", "_rebuild_indexes", "_row_estimate")),
                           (sources, ("_hot_rows",))):
            for attr in names:
                del obj.__dict__[attr]
        realtime._connection = connection


def print_profile(profile: cProfile.Profile, title: str, top: int) -> None:
    text = io.StringIO()
    stats = pstats.Stats(profile, stream=text)
    stats.strip_dirs().sort_stats("tottime").print_stats(top)
    print(f"\n### cProfile: {title} — top {top} by own time\n")
    lines = text.getvalue().splitlines()
    start = next((i for i, line in enumerate(lines) if line.strip().startswith("ncalls")), 0)
    header = [line for line in lines[:start] if "function calls" in line]
    print("\n".join(header + lines[start:]).rstrip())
    text = io.StringIO()
    stats = pstats.Stats(profile, stream=text)
    stats.strip_dirs().sort_stats("cumulative").print_stats(top)
    lines = text.getvalue().splitlines()
    start = next((i for i, line in enumerate(lines) if line.strip().startswith("ncalls")), 0)
    print(f"\n### cProfile: {title} — top {top} by cumulative time\n")
    print("\n".join(lines[start:]).rstrip())


def run_profile(args: argparse.Namespace, data: Data, path: str, work: Path) -> None:
    from app import close_app, create_app
    from sources.rows import ipc_batches, rows_from_arrow, rows_from_json

    data_dir = work / "profile-data"
    config = {"DATA_DIR": str(data_dir), "CATALOG_URL": None, "WAREHOUSE_URL": None,
              "REALTIME_URL": "sqlite:///:memory:", "MAX_RESPONSE_ROWS": 5000, "MAX_PUBLISH_FLOWS": 5000,
              "MAX_BODY_BYTES": 64 * 1024, "ETL_ALLOWED_REMOTES": (), "REMOTE_TIMEOUT_SECONDS": 10.0,
              "AUTH": "off", "STATS_FLUSH_SECONDS": 0.0, "DEMO_SOURCES": False,
              "MAX_INGEST_BYTES": 16 * 2**30, "EVICT_INTERVAL_SECONDS": 0.0}
    app = create_app(config)
    try:
        service = app.extensions["feature_service"]
        sources = service.sources

        def declared(name: str) -> Any:
            return sources.declare(declaration(name), created_by="bench")[0]

        # The calls this path makes: Arrow bodies of --arrow-call-rows, JSON of --json-call-rows, one Parquet call of N.
        if path == "arrow":
            bodies = data.arrow_bodies
        elif path == "json":
            bodies = data.json_bodies
        else:
            bodies = []
        source = declared("profile_probe")
        if path == "json":
            tables = [rows_from_json(source, orjson.loads(body)["rows"]) for body, _ in bodies]
        elif path == "arrow":
            tables = [rows_from_arrow(source, ipc_batches(io.BytesIO(body))) for body, _ in bodies]
        else:
            load_dir = Path(app.config["LOAD_DIR"])
            load_dir.mkdir(parents=True, exist_ok=True)
            pq.write_table(data.table, load_dir / "ingest.parquet")
            tables = [rows_from_arrow(source, pq.read_table(load_dir / "ingest.parquet").to_batches(
                max_chunksize=1_000_000))]
        rows = sum(t.num_rows for t in tables)
        print(f"\n## Profile: the {path} path in-process ({rows:,} rows in {len(tables)} call(s) of "
              f"{tables[0].num_rows:,})")

        # 1. SourceService.ingest of pre-built validated tables, split by timing wrappers (no profiler).
        for attempt in range(args.profile_repeats):
            name = f"profile_split_{attempt}"
            declared(name)
            parts: dict[str, float] = {}
            with instrumented(service, parts):
                started = time.perf_counter()
                for table in tables:
                    answer = sources.ingest(name, table)
                    assert answer["realtime_rows"] == table.num_rows
                total = time.perf_counter() - started
            print(f"\nSourceService.ingest, run {attempt + 1}: {total:.3f} s for {rows:,} rows "
                  f"({rows / total:,.0f} rows/s)")
            realtime = parts.get("realtime.append (SQLite)", 0.0)
            inner = ("sqlite _stored (timestamps to text)", "sqlite python_columns (Arrow to Python lists)",
                     "sqlite executemany (the row inserts)", "sqlite index drop/rebuild",
                     "sqlite row estimate")
            lines = [("warehouse.append (DuckDB)", parts.get("warehouse.append (DuckDB)", 0.0)),
                     ("realtime.append (SQLite)", realtime),
                     *[("    " + k, parts.get(k, 0.0)) for k in inner],
                     ("    sqlite other (lock, BEGIN/COMMIT, zip)", realtime - sum(parts.get(k, 0.0) for k in inner)),
                     ("hot-window filter", parts.get("hot-window filter", 0.0))]
            lines.append(("rest of ingest (event-time range, answers)", total - sum(
                v for k, v in lines if not k.startswith(" "))))
            for label, seconds in lines:
                print(f"  {label:<52} {seconds:7.3f} s {seconds / total:6.1%}")

        # validation alone, for the same path
        started = time.perf_counter()
        if path == "json":
            parsed = [orjson.loads(body)["rows"] for body, _ in bodies]
            parse_seconds = time.perf_counter() - started
            started = time.perf_counter()
            for rows_list in parsed:
                rows_from_json(source, rows_list)
            print(f"\nvalidation alone: orjson.loads {parse_seconds:.3f} s, rows_from_json "
                  f"{time.perf_counter() - started:.3f} s")
        elif path == "arrow":
            for body, _ in bodies:
                rows_from_arrow(source, ipc_batches(io.BytesIO(body)))
            print(f"\nvalidation alone: rows_from_arrow(ipc_batches(body)) {time.perf_counter() - started:.3f} s")
        else:
            table = pq.read_table(Path(app.config["LOAD_DIR"]) / "ingest.parquet")
            read_seconds = time.perf_counter() - started
            started = time.perf_counter()
            rows_from_arrow(source, table.to_batches(max_chunksize=1_000_000))
            print(f"\nvalidation alone: pq.read_table {read_seconds:.3f} s, rows_from_arrow "
                  f"{time.perf_counter() - started:.3f} s")

        # 2. cProfile of the same ingest calls.
        name = "profile_cprofile"
        declared(name)
        profile = cProfile.Profile()
        started = time.perf_counter()
        profile.enable()
        for table in tables:
            sources.ingest(name, table)
        profile.disable()
        print(f"\nunder cProfile: {time.perf_counter() - started:.3f} s")
        print_profile(profile, f"SourceService.ingest, {path} calls", args.profile_top)

        # 3. The whole request through Flask's test client (no socket: body reading, parsing, validation, ingest).
        name = "profile_request"
        declared(name)
        client = app.test_client()
        profile = cProfile.Profile()
        started = time.perf_counter()
        profile.enable()
        if path == "parquet":
            response = client.post(f"/v1.0/sources/{name}/load", json={"path": "ingest.parquet"})
            assert response.status_code == 200, response.get_data()[:500]
        else:
            for body, count in bodies:
                response = client.post(f"/v1.0/sources/{name}/rows", data=body,
                                       content_type=ARROW_STREAM if path == "arrow" else "application/json")
                assert response.status_code == 200, response.get_data()[:500]
        profile.disable()
        print(f"\nwhole requests through the test client under cProfile: {time.perf_counter() - started:.3f} s")
        print_profile(profile, f"POST /v1.0/sources/<name>/{'load' if path == 'parquet' else 'rows'} "
                               f"({path}) through the test client", args.profile_top)
    finally:
        close_app(app)


# -- main -----------------------------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    # DuckDB's note on the warehouse's own `table_stats` (read once per run to check the row count)
    warnings.filterwarnings("ignore", message="Arrow output on a DB-API result", category=UserWarning)
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--rows", type=int, default=1_000_000, help="N: rows per run (default 1,000,000)")
    parser.add_argument("--repeats", type=int, default=3, help="K: repeats of every variant (default 3)")
    parser.add_argument("--arrow-call-rows", type=int, default=250_000, help="rows per Arrow call (250,000)")
    parser.add_argument("--json-call-rows", type=int, default=100_000, help="rows per JSON call (100,000)")
    parser.add_argument("--json-rows", type=int, default=None, help="rows per JSON run (default: N)")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--max-load", type=float, default=1.5,
                        help="before each repeat, wait for the 1-minute load average to drop below this (1.5)")
    parser.add_argument("--max-wait", type=float, default=300.0, help="longest such wait, seconds (300)")
    parser.add_argument("--realtime-url", default=None,
                        help="the server's REALTIME_URL (default: its own, sqlite:///:memory:); e.g. duckdb:///:memory: "
                             "to compare engines (the in-process 'realtime' variants stay SQLite)")
    parser.add_argument("--only", nargs="+", choices=list(VARIANTS), help="run only these variants")
    parser.add_argument("--profile", choices=["none", "auto", "all", "arrow", "json", "parquet"], default="none",
                        help="afterwards, profile a path in-process (auto: the one furthest below its target; "
                             "all: each of the three)")
    parser.add_argument("--profile-repeats", type=int, default=2, help="timed ingest runs in the profile (2)")
    parser.add_argument("--profile-top", type=int, default=25, help="functions listed per profile (25)")
    parser.add_argument("--skip-bench", action="store_true", help="only the profile")
    parser.add_argument("--keep", action="store_true", help="keep the temporary data directory")
    args = parser.parse_args(argv)
    args.json_rows = args.json_rows or args.rows
    if args.only:
        for key in list(VARIANTS):
            if key not in args.only:
                del VARIANTS[key]

    work = Path(tempfile.mkdtemp(prefix="bench-ingest-"))
    print(f"bench/ingest.py: {os.cpu_count()} cores, Python {sys.version.split()[0]}, pyarrow {pa.__version__}, "
          f"load average {os.getloadavg()[0]:.2f}; work dir {work}")
    try:
        data = prepare(args)
        path = args.profile
        if not args.skip_bench:
            results = run_benchmark(args, data, work)
            summarize(args, results)
            if path == "auto":
                ratios = {k: statistics.median(r.rate for r in results[k]) / TARGETS[k]
                          for k in TARGETS if k in results and results[k]}
                path = min(ratios, key=ratios.get) if ratios else "arrow"
                print(f"\nslowest against its target: {path} ({ratios[path]:.0%} of target)")
        elif path == "auto":
            path = "arrow"
        for one in (["arrow", "json", "parquet"] if path == "all" else [] if path == "none" else [path]):
            run_profile(args, data, one, work / f"profile-{one}")
        print(f"\nload average at the end {os.getloadavg()[0]:.2f}")
    finally:
        if args.keep:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
