"""Point-in-time training sets over HTTP: a spine in, every row's features as of its time out, as Arrow.

    .venv/bin/python bench/point_in_time.py                         # the targets: 10M/1M and 100k, 3 repeats
    .venv/bin/python bench/point_in_time.py --source-rows 1000000 --spine-rows 100000 --repeats 2
    .venv/bin/python bench/point_in_time.py --peer                  # and Feast on the same data, alternating
    bash bench/install_feast.sh                                     # once, for --peer (its own venv)

A `python -m app` process (waitress, embedded DuckDB warehouse, in-memory SQLite realtime store, AUTH off)
runs on a fresh DATA_DIR and a free loopback port and is stopped by its PID.

latest    a `page_views` source (customer_id, viewed_at, page, category, seconds_on_page; a 7-day hot window)
          of --source-rows rows over 90 days and --customers customers, loaded from Parquet (not timed);
          a spine of --spine-rows (customer_id, as_of, label) rows at random times; the query is
          examples/shop/latest_page.sql (the latest view within the window). Timed end to end from the
          client: upload the spine (POST /spines, Arrow), POST /query/train?format=arrow with its id, read
          the whole stream into an Arrow table. Server peak memory above its resident size before the call
          (VmHWM reset through clear_refs, and VmRSS polled) against the answer's Arrow size. A sample of
          answers is checked against a brute-force computation in pandas.
history   the demo's four sources (publish --flows flows), a spine of --history-spine-rows users at random
          times, examples/user_history.sql (a four-table join with aggregates over each user's history).
          Rows/s = spine rows / end-to-end seconds (upload, train, read).
peer      (--peer) Feast's get_historical_features on the same Parquet files (its file offline store: a
          feature view with a 7-day ttl), in its own venv (bench/install_feast.sh), once per repeat,
          alternating with ours; its answer is compared with ours row by row.

Medians over --repeats; each repeat first waits (up to --max-wait s) for the load average to drop below
--max-load. Figures are printed as a table and written to bench/results/point_in_time.json.
"""
from __future__ import annotations

import argparse
import io
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.live import MemoryWatch, machine, running_server, wait_for_quiet  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
LATEST_SQL = (ROOT / "examples" / "shop" / "latest_page.sql").read_text()
HISTORY_SQL = (ROOT / "examples" / "user_history.sql").read_text()
NOW = 1_780_000_000
WINDOW = 7 * 86400
PAGES = np.array(["/", "/search", "/product", "/cart", "/checkout", "/help"])
CATEGORIES = np.array(["books", "garden", "kitchen", "toys", "music", "sports"])
PAGE_VIEWS = {"name": "page_views", "entity_keys": ["customer_id"], "event_time": "viewed_at",
              "hot_window_seconds": WINDOW, "columns": [
                  {"name": "customer_id", "type": "string"}, {"name": "viewed_at", "type": "timestamp"},
                  {"name": "page", "type": "string"}, {"name": "category", "type": "string"},
                  {"name": "seconds_on_page", "type": "float"}]}


def customer_ids(rng: np.random.Generator, customers: int, n: int) -> pa.Array:
    ids = np.char.add("c", np.char.zfill(rng.integers(0, customers, n).astype(str), 7))
    return pa.array(ids, pa.large_string())


def micros(rng: np.random.Generator, n: int, days: int = 90) -> pa.Array:
    return pa.array(((NOW - rng.uniform(0, days * 86400, n)) * 1e6).astype("int64"), pa.timestamp("us", tz="UTC"))


def page_views(rows: int, customers: int, seed: int) -> pa.Table:
    rng = np.random.default_rng(seed)
    return pa.table({"customer_id": customer_ids(rng, customers, rows), "viewed_at": micros(rng, rows),
                     "page": pa.array(PAGES[rng.integers(0, len(PAGES), rows)], pa.large_string()),
                     "category": pa.array(CATEGORIES[rng.integers(0, len(CATEGORIES), rows)], pa.large_string()),
                     "seconds_on_page": rng.gamma(2.0, 20.0, rows)})


def spine_table(rows: int, customers: int, seed: int) -> pa.Table:
    rng = np.random.default_rng(seed + 1)
    return pa.table({"customer_id": customer_ids(rng, customers, rows), "as_of": micros(rng, rows),
                     "label": rng.integers(0, 2, rows)})


def arrow_bytes(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue().to_pybytes()


def timed_training_set(server: Any, body: dict[str, Any], spine: bytes) -> tuple[float, pa.Table, float, int, int]:
    """(seconds end to end, the answer, seconds of the train call alone, server peak bytes above its RSS before
    the upload, and above its RSS before the train call)."""
    with MemoryWatch(server.pid) as upload:
        started = time.perf_counter()
        status, _, data = server.request("POST", "/v1.0/spines", spine,
                                         headers={"Content-Type": "application/vnd.apache.arrow.stream"})
        if status != 201:
            raise RuntimeError(f"spine upload → {status}: {data[:300]!r}")
    body = {**body, "spine": {**body["spine"], "spine_id": json.loads(data)["spine_id"]}}
    with MemoryWatch(server.pid) as call:
        called = time.perf_counter()
        status, _, data = server.request("POST", "/v1.0/query/train?format=arrow", body, timeout=3600)
        if status != 200:
            raise RuntimeError(f"query/train → {status}: {data[:300]!r}")
        answer = pa.ipc.open_stream(data).read_all()
        ended = time.perf_counter()
    whole = max(upload.peak, call.peak) - upload.baseline
    return ended - started, answer, ended - called, whole, call.peak - call.baseline


def brute_force_latest(views: pd.DataFrame, spine: pd.DataFrame) -> pd.DataFrame:
    """The latest view of each spine row's customer within (as_of - 7 days, as_of], in pandas."""
    out = []
    by_customer = dict(tuple(views[views["customer_id"].isin(set(spine["customer_id"]))].groupby("customer_id")))
    for row in spine.itertuples():
        rows = by_customer.get(row.customer_id)
        hit = None
        if rows is not None:
            inside = rows[(rows["viewed_at"] <= row.as_of) & (rows["viewed_at"] > row.as_of - pd.Timedelta(seconds=WINDOW))]
            if len(inside):
                hit = inside.sort_values(["viewed_at", "page"]).iloc[-1]
        out.append({"last_page": None if hit is None else hit["page"],
                    "last_viewed_at": None if hit is None else hit["viewed_at"]})
    return pd.DataFrame(out)


def check_latest(answer: pa.Table, views: pa.Table, spine: pa.Table, sample: int = 300) -> int:
    """Mismatches between a random sample of the answer's rows and the brute force (0: all equal)."""
    rng = np.random.default_rng(0)
    rows = np.sort(rng.choice(spine.num_rows, size=min(sample, spine.num_rows), replace=False))
    picked = spine.take(rows).to_pandas()
    expected = brute_force_latest(views.to_pandas(), picked)
    got = answer.take(rows).to_pandas().reset_index(drop=True)
    same = (got["last_page"].fillna("∅") == expected["last_page"].fillna("∅")) & \
        (got["last_viewed_at"].astype("int64", errors="ignore").fillna(0).astype(str)
         == pd.to_datetime(expected["last_viewed_at"], utc=True).astype("int64", errors="ignore").fillna(0).astype(str))
    return int((~same).sum())


def run_peer(source: Path, spine: Path, out: Path) -> dict[str, Any]:
    venv = Path(os.environ.get("FEAST_VENV", "/tmp/feast-venv"))
    done = subprocess.run([str(venv / "bin" / "python"), str(ROOT / "bench" / "peer_feast.py"), "--source", str(source),
                           "--spine", str(spine), "--out", str(out), "--pad-dropped"], capture_output=True, text=True,
                          timeout=7200)
    if done.returncode != 0:
        raise RuntimeError(f"peer_feast.py failed: {done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def peer_mismatches(ours: pa.Table, theirs_path: Path, peer: dict[str, Any]) -> dict[str, int]:
    """Row by row (the peer's answer padded back to every spine row, by its row number): spine rows whose
    latest page differs, and how many of those the peer had dropped (it keeps no row for a key whose
    events are all outside the window)."""
    theirs = pq.read_table(theirs_path).to_pandas().sort_values("row").reset_index(drop=True)
    mine = ours.to_pandas()
    differ = mine["last_page"].fillna("∅").to_numpy() != theirs["last_page"].fillna("∅").to_numpy()
    return {"rows_ours": len(mine), "rows_peer_answered": peer.get("rows_out"), "page_mismatches": int(differ.sum()),
            "mismatches_where_ours_is_null": int((differ & mine["last_page"].isna().to_numpy()).sum())}


def latest(server: Any, args: argparse.Namespace, work: Path, report: dict[str, Any]) -> None:
    views = page_views(args.source_rows, args.customers, args.seed)
    spine = spine_table(args.spine_rows, args.customers, args.seed)
    load_dir = Path(server.data_dir) / "load"
    load_dir.mkdir(parents=True, exist_ok=True)
    pq.write_table(views, load_dir / "page_views.parquet")
    pq.write_table(views, work / "page_views.parquet")
    pq.write_table(spine, work / "spine.parquet")
    server.json("POST", "/v1.0/sources", PAGE_VIEWS)
    started = time.perf_counter()
    loaded = server.json("POST", "/v1.0/sources/page_views/load", {"path": "page_views.parquet"}, timeout=3600)
    report["latest"]["load"] = {"rows": loaded["rows"], "realtime_rows": loaded["realtime_rows"],
                                "seconds": round(time.perf_counter() - started, 2)}
    body = {"query": LATEST_SQL, "spine": {"index_key": "customer_id", "time": "as_of"}}
    spine_body = arrow_bytes(spine)
    runs, peers = [], []
    for repeat in range(args.repeats):
        quiet = wait_for_quiet(args.max_load, args.max_wait, print)
        seconds, answer, call, peak, call_peak = timed_training_set(server, body, spine_body)
        run = {"seconds": round(seconds, 3), "train_call_seconds": round(call, 3), "rows": answer.num_rows,
               "result_mb": round(answer.nbytes / 1e6, 1), "server_peak_above_rss_mb": round(peak / 1e6, 1),
               "peak_over_result": round(peak / max(answer.nbytes, 1), 2),
               "train_call_peak_over_result": round(call_peak / max(answer.nbytes, 1), 2),
               "load_average": quiet["load_average"][0]}
        if repeat == 0:
            run["sample_mismatches"] = check_latest(answer, views, spine)
        runs.append(run)
        print(f"  ours  #{repeat + 1}: {run}")
        if args.peer and repeat < args.peer_repeats:
            peer = run_peer(work / "page_views.parquet", work / "spine.parquet", work / "peer.parquet")
            peer["agreement"] = peer_mismatches(answer, work / "peer.parquet", peer)
            peers.append(peer)
            print(f"  feast #{repeat + 1}: {peer}")
    report["latest"]["runs"] = runs
    report["latest"]["median_seconds"] = statistics.median(r["seconds"] for r in runs)
    report["latest"]["median_peak_over_result"] = statistics.median(r["peak_over_result"] for r in runs)
    report["latest"]["median_train_call_peak_over_result"] = statistics.median(
        r["train_call_peak_over_result"] for r in runs)
    if peers:
        report["latest"]["peer_runs"] = peers
        report["latest"]["peer_median_seconds"] = statistics.median(p["seconds_call"] for p in peers)
        report["latest"]["speedup_vs_peer"] = round(report["latest"]["peer_median_seconds"]
                                                    / report["latest"]["median_seconds"], 2)


def history(server: Any, args: argparse.Namespace, report: dict[str, Any]) -> None:
    published = 0
    while published < args.flows:
        batch = min(50_000, args.flows - published)
        server.json("PUT", f"/v1.0/publish?n_flows={batch}&seed={args.seed + published}", timeout=3600)
        published += batch
    status, _, data = server.request("POST", "/v1.0/query/train?format=arrow",
                                     {"query": "SELECT user_id, creation_date FROM users"}, timeout=600)
    users = pa.ipc.open_stream(data).read_all()
    rng = np.random.default_rng(args.seed)
    picked = pa.array(rng.integers(0, users.num_rows, args.history_spine_rows))
    created = users.column("creation_date").take(picked).to_numpy().astype(np.int64)
    spine = pa.table({"user_id": users.column("user_id").take(picked).cast(pa.large_string()),
                      "as_of": pa.array((created + rng.integers(-86400, 7 * 86400, len(picked))) * 1_000_000,
                                        pa.timestamp("us", tz="UTC")),
                      "churned": rng.integers(0, 2, len(picked))})
    body = {"query": HISTORY_SQL, "spine": {"index_key": "user_id", "time": "as_of"}}
    spine_body = arrow_bytes(spine)
    runs = []
    for repeat in range(args.repeats):
        quiet = wait_for_quiet(args.max_load, args.max_wait, print)
        seconds, answer, call, peak, _ = timed_training_set(server, body, spine_body)
        run = {"seconds": round(seconds, 3), "train_call_seconds": round(call, 3), "rows": answer.num_rows,
               "rows_per_second": round(spine.num_rows / seconds),
               "train_call_rows_per_second": round(spine.num_rows / call),
               "server_peak_above_rss_mb": round(peak / 1e6, 1),
               "load_average": quiet["load_average"][0]}
        runs.append(run)
        print(f"  history #{repeat + 1}: {run}")
    report["history"] = {"flows": args.flows, "spine_rows": spine.num_rows, "runs": runs,
                         "median_rows_per_second": statistics.median(r["rows_per_second"] for r in runs),
                         "median_train_call_rows_per_second": statistics.median(
                             r["train_call_rows_per_second"] for r in runs)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--source-rows", type=int, default=10_000_000)
    parser.add_argument("--spine-rows", type=int, default=1_000_000)
    parser.add_argument("--customers", type=int, default=200_000)
    parser.add_argument("--flows", type=int, default=200_000, help="demo flows for the history scenario")
    parser.add_argument("--history-spine-rows", type=int, default=100_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--only", nargs="+", choices=["latest", "history"], default=["latest", "history"])
    parser.add_argument("--peer", action="store_true", help="also run Feast (bench/install_feast.sh first)")
    parser.add_argument("--peer-repeats", type=int, default=1, help="Feast runs (after ours, alternating)")
    parser.add_argument("--max-load", type=float, default=1.0)
    parser.add_argument("--max-wait", type=float, default=120.0)
    args = parser.parse_args()
    report: dict[str, Any] = {"machine": machine(), "args": vars(args), "latest": {}}
    with tempfile.TemporaryDirectory(prefix="fs-pit-") as work_dir:
        work = Path(work_dir)
        settings = {"MAX_INGEST_BYTES": str(4 << 30), "MAX_PUBLISH_FLOWS": "50000", "QUERY_TIMEOUT_SECONDS": "3600",
                    "MAX_SPINE_ROWS": str(max(args.spine_rows, args.history_spine_rows))}
        with running_server(work / "data", work, **settings) as server:
            server.data_dir = work / "data"
            if "latest" in args.only:
                print(f"latest value within a window: {args.source_rows:,} source rows, {args.spine_rows:,} spine rows")
                latest(server, args, work, report)
            if "history" in args.only:
                print(f"four-table history aggregates: {args.flows:,} flows, {args.history_spine_rows:,} spine rows")
                history(server, args, report)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "point_in_time.json").write_text(json.dumps(report, indent=2, default=str))
    print(json.dumps({k: v for k, v in report.items() if k != "machine"}, indent=2, default=str))


if __name__ == "__main__":
    main()
