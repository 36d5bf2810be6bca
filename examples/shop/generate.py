"""Make the online-shop example's data: page views and orders of N customers over D days, as Parquet.

    python examples/shop/generate.py OUT_DIR [--customers 1000] [--days 60] [--seed 7]

Writes OUT_DIR/page_views.parquet and OUT_DIR/orders.parquet (timezone-aware UTC event times,
several rows per customer, a history longer than the hot windows in sources.json).
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

PAGES = np.array(["/", "/search", "/product", "/cart", "/checkout", "/help"])
CATEGORIES = np.array(["books", "garden", "kitchen", "toys", "music", "sports"])
CHANNELS = np.array(["web", "app"])


def _timestamps(rng: np.random.Generator, n: int, now: float, days: int) -> pa.Array:
    seconds = now - rng.uniform(0, days * 86400, size=n)
    return pa.array((seconds * 1e6).astype("int64"), pa.timestamp("us", tz="UTC"))


def generate(customers: int, days: int, seed: int, now: float | None = None) -> dict[str, pa.Table]:
    """The two sources' rows for `customers` customers, event times within `days` before `now`."""
    rng = np.random.default_rng(seed)
    now = time.time() if now is None else now
    ids = np.array([f"c{i:06d}" for i in range(customers)])
    views = int(customers * 30)
    orders = int(customers * 3)
    page_views = pa.table({
        "customer_id": pa.array(ids[rng.integers(0, customers, views)], pa.large_string()),
        "viewed_at": _timestamps(rng, views, now, days),
        "page": pa.array(PAGES[rng.integers(0, len(PAGES), views)], pa.large_string()),
        "category": pa.array(CATEGORIES[rng.integers(0, len(CATEGORIES), views)], pa.large_string()),
        "seconds_on_page": pa.array(np.round(rng.gamma(2.0, 20.0, views), 1)),
    })
    order_table = pa.table({
        "order_id": pa.array([f"o{i:08d}" for i in range(orders)], pa.large_string()),
        "customer_id": pa.array(ids[rng.integers(0, customers, orders)], pa.large_string()),
        "ordered_at": _timestamps(rng, orders, now, days),
        "amount": pa.array(np.round(rng.lognormal(3.5, 0.8, orders), 2)),
        "items": pa.array(rng.integers(1, 8, orders)),
        "channel": pa.array(CHANNELS[rng.integers(0, 2, orders)], pa.large_string()),
        "coupon_used": pa.array(rng.random(orders) < 0.2),
    })
    return {"page_views": page_views, "orders": order_table}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--customers", type=int, default=1000)
    parser.add_argument("--days", type=int, default=60)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    args.out_dir.mkdir(parents=True, exist_ok=True)
    for name, table in generate(args.customers, args.days, args.seed).items():
        pq.write_table(table, args.out_dir / f"{name}.parquet")
        print(f"{args.out_dir / (name + '.parquet')}: {table.num_rows} rows")


if __name__ == "__main__":
    main()
