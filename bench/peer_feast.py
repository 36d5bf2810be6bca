"""Peer benchmark: Feast's point-in-time join (get_historical_features, FILE offline store) on a Parquet spine.

    bash bench/install_feast.sh                              # once: feast in its own venv
    "${FEAST_VENV:-/tmp/feast-venv}/bin/python" bench/peer_feast.py \
        --source page_views.parquet --spine spine.parquet --out peer.parquet [--repeat 3] [--pad-dropped]

Runs in the Feast venv only (imports nothing from this repository). The semantics asked of Feast: for each
spine row (customer_id, as_of, label), the latest page view of that customer with
as_of - 7 days < viewed_at <= as_of; its page, category and viewed_at as last_page, last_category,
last_viewed_at; nulls when there is none.

Feast is set up programmatically in a temp dir (feature_store.yaml: provider local, offline_store file,
online_store sqlite in the temp dir, a file registry): an Entity `customer` (join key customer_id), a
FileSource on --source (timestamp_field viewed_at), a FeatureView `page_views` with ttl = 7 days and the
features page, category and viewed_at (the event timestamp, declared as a UnixTimestamp feature so that
Feast returns it), applied with FeatureStore.apply (not timed).

Timed, per repeat:
  seconds_call   store.get_historical_features(entity_df, features).to_df() alone (the entity df was
                 read from --spine beforehand: as_of renamed event_timestamp, a `row` number added);
  seconds_total  reading the spine + building the entity df + that call + renaming/sorting the answer.
Memory: VmHWM of this process is reset (write "5" to /proc/self/clear_refs) right before the call and
read right after it; baseline_rss_mb is VmRSS at the reset. result_mb = pa.Table.from_pandas(answer).nbytes.

What Feast 0.67's file (dask) store does, read from its source (feast/infra/offline_stores/dask.py) and
checked by the result counts in the JSON line:
  * it left-joins the whole entity df with the whole source on customer_id, then keeps
    `viewed_at >= as_of - ttl & viewed_at <= as_of` (the lower bound is INCLUSIVE, ours is exclusive)
    or viewed_at null (customers with no view at all), then sorts by viewed_at and keeps the last row
    per (customer_id, event_timestamp);
  * so a spine row whose customer has views, but none inside the window, is DROPPED (not kept with
    nulls), and spine rows sharing (customer_id, as_of) are collapsed into one (the last kept);
  * the answer comes back in Feast's own order: it is sorted back by the carried `row` number.
The output Parquet has customer_id, as_of, label, last_page, last_category, last_viewed_at and `row`
(the spine row number, so that an answer with dropped rows can still be lined up with the spine).
--pad-dropped puts the dropped spine rows back with null features (the JSON says so: "padded": true).

Prints one JSON line on stdout (Feast's own chatter goes to stderr).
"""
from __future__ import annotations

import argparse
import contextlib
import gc
import json
import logging
import os
import statistics
import sys
import tempfile
import time
import warnings
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

TTL = timedelta(days=7)
FEATURES = ["page_views:page", "page_views:category", "page_views:viewed_at"]
RENAMES = {"event_timestamp": "as_of", "page": "last_page", "category": "last_category", "viewed_at": "last_viewed_at"}
OUT_COLUMNS = ["customer_id", "as_of", "label", "last_page", "last_category", "last_viewed_at", "row"]


def status_mb(field: str) -> float | None:
    """A field of /proc/self/status (VmRSS, VmHWM) in MB (1e6 bytes), None where there is no /proc."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024 / 1e6
    except OSError:
        return None
    return None


def reset_peak() -> bool:
    """Reset VmHWM to the current RSS (Linux >= 4.0); False when that is not permitted."""
    try:
        with open("/proc/self/clear_refs", "w") as clear_refs:
            clear_refs.write("5")
        return True
    except OSError:
        return False


def build_store(source: Path, repo: Path) -> Any:
    from feast import Entity, FeatureStore, FeatureView, Field, FileSource, ValueType
    from feast.types import String, UnixTimestamp

    (repo / "feature_store.yaml").write_text(
        "project: peer_bench\n"
        f"registry: {repo / 'registry.db'}\n"
        "provider: local\n"
        "online_store:\n"
        "  type: sqlite\n"
        f"  path: {repo / 'online.db'}\n"
        "offline_store:\n"
        "  type: file\n"
        "entity_key_serialization_version: 3\n")
    customer = Entity(name="customer", join_keys=["customer_id"], value_type=ValueType.STRING)
    views = FileSource(name="page_views_source", path=str(source.resolve()), timestamp_field="viewed_at")
    view = FeatureView(name="page_views", entities=[customer], ttl=TTL, source=views, online=False,
                       schema=[Field(name="customer_id", dtype=String), Field(name="page", dtype=String),
                               Field(name="category", dtype=String), Field(name="viewed_at", dtype=UnixTimestamp)])
    store = FeatureStore(repo_path=str(repo))
    store.apply([customer, view])
    return store


def entity_frame(spine_path: Path) -> pd.DataFrame:
    spine = pq.read_table(spine_path).to_pandas()
    spine = spine.rename(columns={"as_of": "event_timestamp"})
    spine["row"] = np.arange(len(spine), dtype="int64")
    return spine


def one_run(store: Any, spine_path: Path) -> tuple[dict[str, Any], pd.DataFrame, pd.DataFrame, bool]:
    """(figures, Feast's answer as it came, the answer renamed and in spine order, whether it was reordered)."""
    gc.collect()
    started = time.perf_counter()
    entity_df = entity_frame(spine_path)
    was_reset = reset_peak()
    baseline = status_mb("VmRSS")
    called = time.perf_counter()
    raw = store.get_historical_features(entity_df=entity_df, features=FEATURES).to_df()
    ended_call = time.perf_counter()
    peak = status_mb("VmHWM")
    reordered = not raw["row"].is_monotonic_increasing
    answer = raw.sort_values("row", kind="stable").rename(columns=RENAMES).reset_index(drop=True)
    ended = time.perf_counter()
    figures = {"seconds_call": round(ended_call - called, 3), "seconds_total": round(ended - started, 3),
               "rows_in": len(entity_df), "rows_out": len(raw),
               "peak_rss_mb": None if peak is None else round(peak, 1),
               "baseline_rss_mb": None if baseline is None else round(baseline, 1),
               "hwm_reset": was_reset}
    del entity_df
    return figures, raw, answer, reordered


def output_table(answer: pd.DataFrame, spine: pa.Table, views_schema: pa.Schema) -> pa.Table:
    types = {"customer_id": spine.schema.field("customer_id").type, "as_of": spine.schema.field("as_of").type,
             "label": spine.schema.field("label").type, "last_page": views_schema.field("page").type,
             "last_category": views_schema.field("category").type,
             "last_viewed_at": views_schema.field("viewed_at").type, "row": pa.int64()}
    columns = {}
    for name in OUT_COLUMNS:
        values = answer[name]
        if name in ("as_of", "last_viewed_at"):
            values = pd.to_datetime(values, utc=True)
        columns[name] = pa.array(values, from_pandas=True).cast(types[name], safe=False)
    return pa.table(columns)


def pad_dropped(table: pa.Table, spine: pa.Table) -> pa.Table:
    """Every spine row, in order: Feast's values where it answered the row, nulls where it dropped it."""
    position = np.full(spine.num_rows, -1, dtype="int64")
    position[table.column("row").to_numpy()] = np.arange(table.num_rows)
    found = position >= 0
    take = pa.array(np.where(found, position, 0), mask=~found)
    padded = {name: table.column(name).take(take) for name in ("last_page", "last_category", "last_viewed_at")}
    return pa.table({"customer_id": spine.column("customer_id"), "as_of": spine.column("as_of"),
                     "label": spine.column("label"), **padded, "row": pa.array(np.arange(spine.num_rows))})


def dropped_breakdown(table: pa.Table, spine: pa.Table) -> dict[str, int]:
    """How many spine rows Feast's answer lacks, and how many of those share (customer_id, as_of) with another."""
    kept = np.zeros(spine.num_rows, dtype=bool)
    kept[table.column("row").to_numpy()] = True
    keys = spine.select(["customer_id", "as_of"]).to_pandas()
    shared = keys.duplicated(keep=False).to_numpy()
    return {"rows_dropped": int((~kept).sum()), "rows_dropped_duplicate_key": int((~kept & shared).sum()),
            "rows_dropped_no_view_in_window": int((~kept & ~shared).sum()),
            "spine_rows_sharing_a_key": int(shared.sum())}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--source", type=Path, required=True, help="page views Parquet")
    parser.add_argument("--spine", type=Path, required=True, help="spine Parquet (customer_id, as_of, label)")
    parser.add_argument("--out", type=Path, required=True, help="where to write Feast's answer (Parquet)")
    parser.add_argument("--repeat", type=int, default=1, help="timed runs (medians reported); default 1")
    parser.add_argument("--pad-dropped", action="store_true",
                        help="write every spine row, nulls for the rows Feast dropped (default: Feast's rows only)")
    parser.add_argument("--workdir", type=Path, default=None, help="where to build the Feast repo (default: a temp dir)")
    args = parser.parse_args()

    warnings.filterwarnings("ignore")
    logging.getLogger("feast").setLevel(logging.ERROR)
    import dask
    import feast

    real_stdout = sys.stdout
    runs: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="peer-feast-", dir=args.workdir) as repo, \
            contextlib.redirect_stdout(sys.stderr):
        started = time.perf_counter()
        store = build_store(args.source, Path(repo))
        setup_seconds = time.perf_counter() - started
        raw = answer = None
        for _ in range(max(1, args.repeat)):
            raw = answer = None
            figures, raw, answer, reordered = one_run(store, args.spine)
            figures["reordered"] = reordered
            runs.append(figures)
        assert raw is not None and answer is not None
        result_mb = pa.Table.from_pandas(raw, preserve_index=False).nbytes / 1e6
        raw_columns = list(raw.columns)
        del raw
        spine = pq.read_table(args.spine)
        views_schema = pq.read_schema(args.source)
        table = output_table(answer, spine, views_schema)
        del answer
        breakdown = dropped_breakdown(table, spine)
        if args.pad_dropped:
            table = pad_dropped(table, spine)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(table, args.out)

    last = runs[-1]
    peakiest = max(runs, key=lambda r: r["peak_rss_mb"] or 0.0)
    report = {
        "peer": "feast", "version": feast.__version__,
        "seconds_call": statistics.median(r["seconds_call"] for r in runs),
        "seconds_total": statistics.median(r["seconds_total"] for r in runs),
        "runs": runs, "rows_in": last["rows_in"], "rows_out": last["rows_out"],
        # The run with the highest peak, and its own baseline.
        "peak_rss_mb": peakiest["peak_rss_mb"], "baseline_rss_mb": peakiest["baseline_rss_mb"],
        "result_mb": round(result_mb, 1),
        "hwm_reset": all(r["hwm_reset"] for r in runs),
        "drops_rows": breakdown["rows_dropped"] > 0, **breakdown,
        "padded": bool(args.pad_dropped), "rows_written": table.num_rows,
        "reordered_by_feast": any(r["reordered"] for r in runs), "sorted_by": "row",
        "feast_columns": raw_columns, "setup_seconds": round(setup_seconds, 3),
        "offline_store": "file (dask)", "ttl_window": "as_of - 7 days <= viewed_at <= as_of",
        "dask": dask.__version__, "pandas": pd.__version__, "pyarrow": pa.__version__,
        "cpus": os.cpu_count(),
    }
    print(json.dumps(report), file=real_stdout, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
