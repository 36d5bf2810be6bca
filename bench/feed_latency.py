"""Change-feed latency, the embedded SQLite file against Redis Streams, alternating in one run: how long
from an `append` until another process's FeedTailer has applied the entry.

    .venv/bin/python -m bench.feed_latency --seconds 30 --rounds 3

Each measurement starts a reader process that tails a fresh feed with `FeedTailer` (its default 5 ms
poll, as a serving process does), then appends one entry (a one-row table holding the wall-clock time
just before the append) every --interval seconds, with jitter, for its share of --seconds. The reader
takes the difference to the clock when it applies each row (same machine, same clock). Also shown: the
writer's own `append` call. The Redis feed uses a fresh prefix on --redis, deleted at the end.
"""
from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import pyarrow as pa

from bench import loadgen
from bench.live import delete_redis_keys
from feed import FeedTailer, open_feed


def read(url: str, entries: int) -> None:
    """The reader process: tail `url` until `entries` rows are applied; print their delays (JSON)."""
    delays: list[float] = []
    done = threading.Event()

    def apply(frames: dict[str, pa.Table]) -> None:
        now = time.time()
        delays.extend(now - sent for sent in frames["timing"].column("sent").to_pylist())
        if len(delays) >= entries:
            done.set()

    feed = open_feed(url)
    tailer = FeedTailer(feed, apply)
    tailer.start()
    print("ready", flush=True)
    done.wait()
    tailer.stop()
    feed.close()
    print(json.dumps(delays), flush=True)


def measure(url: str, seconds: float, interval: float) -> dict[str, Any]:
    """Append for `seconds` while a reader process tails; the delay and append-call percentiles."""
    count = max(1, int(seconds / interval))
    reader = subprocess.Popen([sys.executable, "-m", "bench.feed_latency", "--read", url, "--entries", str(count)],
                              stdout=subprocess.PIPE, text=True)
    try:
        if reader.stdout is None or reader.stdout.readline().strip() != "ready":
            raise RuntimeError(f"the reader process did not start on {url}")
        feed, calls, rng = open_feed(url), [], random.Random(7)
        for _ in range(count):
            sent = time.time()
            feed.append({"timing": pa.table({"sent": [sent], "user_id": [uuid.uuid4().hex]})})
            calls.append(time.time() - sent)
            time.sleep(interval * rng.uniform(0.5, 1.5))
        feed.close()
        delays = json.loads(reader.communicate(timeout=60)[0])
    finally:
        if reader.poll() is None:
            reader.kill()
            reader.wait()
    return {"entries": count, "visible": {**loadgen.percentiles_ms(delays, (50, 99)),
                                          "max_ms": round(max(delays) * 1000, 3)},
            "append": loadgen.percentiles_ms(calls, (50, 99))}


def render(backend: str, result: dict[str, Any]) -> str:
    seen, call = result["visible"], result["append"]
    return (f"{backend:6} {result['entries']} appends: append → applied by another process p50 {seen['p50_ms']} ms, "
            f"p99 {seen['p99_ms']} ms, max {seen['max_ms']} ms; append call p50 {call['p50_ms']} ms, "
            f"p99 {call['p99_ms']} ms")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=30.0, help="total appending time, all measurements")
    parser.add_argument("--rounds", type=int, default=3, help="times each backend is measured, alternating")
    parser.add_argument("--interval", type=float, default=0.02, help="mean seconds between appends")
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/0", help="the Redis server's URL")
    parser.add_argument("--read", help=argparse.SUPPRESS)  # the reader process: the feed URL
    parser.add_argument("--entries", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.read:
        read(args.read, args.entries)
        return 0
    share = args.seconds / (2 * args.rounds)
    prefix = f"bench_feed_{uuid.uuid4().hex}"
    with tempfile.TemporaryDirectory(prefix="bench-feed-") as folder:
        try:
            for n in range(args.rounds):
                urls = {"sqlite": f"sqlite:///{Path(folder) / f'feed-{n}.db'}",
                        "redis": f"{args.redis}?prefix={prefix}-{n}"}
                for backend, url in urls.items():
                    print(render(backend, measure(url, share, args.interval)), flush=True)
        finally:
            delete_redis_keys(args.redis, f"{prefix}-*")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
