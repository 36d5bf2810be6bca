"""Start-up hydration: how long `python -m app` takes to fill the realtime store, and the memory it takes.

    .venv/bin/python -m bench.hydration --users 100000 1000000 [--rounds 2] [--base main] [--base-max-users 100000]

For each `--users` N the bench dataset (bench/datagen.py, cached under bench/results/data/ as
bench/run.py caches it) is copied into a fresh DATA_DIR and the server is started twice on it, as
bench/run.py starts it (DEMO_SOURCES=on: the demo's sources have no hot window, every row is hot; the
default in-memory SQLite realtime store): the **first start** (a new catalog: the demo's sources adopt the
existing tables, their rows are backfilled) and a **restart** (the catalog has them: `hydrate`). This
tree and `--base` (default: main, exported with `git archive`; only up to `--base-max-users`, as the base
peaked at ~14 GiB at 1M users) take turns within each of `--rounds` rounds.

Reported per start: seconds from spawn to a healthy /v1.0/health, and the CPU seconds the server used
until then (user + system: on a shared machine less disturbed by other work than the wall time); its VmRSS when ready
(`rss`), its VmHWM then (`peak`), its anonymous memory (RssAnon); the SQLite store's files (database and
WAL, in memory-backed /dev/shm: RAM that the RSS counts only as far as the process maps them); and,
sampled every 20 ms during the start, the peak of anonymous memory plus those files (`peak anon+files`):
the RAM the start used, each page counted once. The **resident store** is what a hydrated server holds
beyond an empty one: RSS after start minus the RSS of a server started on an empty warehouse (same
tree), and (anonymous memory minus the empty server's) plus the store's files. Medians over rounds.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Callable

from bench import live
from bench.datagen import cached_warehouse
from bench.request_path import export
from realtime.sqlite_pool import FILE_PREFIX, SHARED_MEMORY

ROOT = Path(__file__).resolve().parent.parent
SETTINGS = {"DEMO_SOURCES": "on"}
STATUS_FIELDS = ("VmRSS", "VmHWM", "RssAnon", "RssShmem")
SAMPLE_SECONDS = 0.02
GIB = 2 ** 30


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def status(pid: int) -> dict[str, int]:
    """STATUS_FIELDS of `pid` from /proc, in bytes (absent once it exited)."""
    values = {}
    try:
        with open(f"/proc/{pid}/status") as lines:
            for line in lines:
                name, _, amount = line.partition(":")
                if name in STATUS_FIELDS:
                    values[name] = int(amount.split()[0]) * 1024
    except OSError:
        pass
    return values


def store_files(pid: int) -> int:
    """Bytes of the SQLite realtime store's files (database, WAL, index) that process `pid` created."""
    total = 0
    for folder in (SHARED_MEMORY, tempfile.gettempdir()):
        try:
            names = os.listdir(folder)
        except OSError:
            continue
        for name in names:
            if name.startswith(f"{FILE_PREFIX}{pid}-"):
                try:
                    total += os.path.getsize(os.path.join(folder, name))
                except OSError:  # removed meanwhile
                    pass
    return total


class Sampler:
    """Polls a process every SAMPLE_SECONDS from `start(pid)` to `stop()`: the peak of its anonymous memory
    plus its store's files, and the peak of the files alone."""

    def __init__(self) -> None:
        self.peak_total = self.peak_files = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self, pid: int) -> None:
        self._thread = threading.Thread(target=self._run, args=(pid,), daemon=True)
        self._thread.start()

    def _run(self, pid: int) -> None:
        while not self._stop.is_set():
            files = store_files(pid)
            self.peak_files = max(self.peak_files, files)
            self.peak_total = max(self.peak_total, status(pid).get("RssAnon", 0) + files)
            time.sleep(SAMPLE_SECONDS)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()


def one_start(tree: Path, data_dir: Path, log_dir: Path) -> dict[str, Any]:
    """Start the server of `tree` on `data_dir` until healthy; its timings and memory, then stop it."""
    sampler = Sampler()
    with live.running_server(data_dir, log_dir, root=tree, on_spawn=sampler.start, **SETTINGS) as server:
        sampler.stop()
        now = status(server.pid)
        files = store_files(server.pid)
        cpu = live.process_cpu_seconds(server.pid)
    return {"ready_s": server.ready_seconds, "cpu_s": cpu, "rss": now["VmRSS"], "peak": now["VmHWM"],
            "anon": now["RssAnon"], "shmem": now["RssShmem"], "files": files, "peak_anon_files": sampler.peak_total,
            "peak_files": sampler.peak_files}


def empty_server(tree: Path, scratch: Path, log_dir: Path) -> dict[str, Any]:
    """A server of `tree` on an empty DATA_DIR (the demo's tables created empty): the baseline."""
    folder = scratch / "empty"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    try:
        return one_start(tree, folder, log_dir)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def starts(tree: Path, warehouse: Path, scratch: Path, log_dir: Path) -> dict[str, dict[str, Any]]:
    """The first start and a restart of `tree`'s server on a fresh copy of `warehouse`."""
    folder = scratch / "data"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    shutil.copyfile(warehouse, folder / "warehouse.duckdb")
    try:
        return {"first start": one_start(tree, folder, log_dir), "restart": one_start(tree, folder, log_dir)}
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def with_store(run: dict[str, Any], empty: dict[str, Any]) -> dict[str, Any]:
    """`run` with the resident store (over the empty server) and the peak's ratios to it."""
    resident_rss = run["rss"] - empty["rss"]
    resident_ram = run["anon"] - empty["anon"] + run["files"]
    return {**run, "resident_rss": resident_rss, "resident_ram": resident_ram,
            "peak_over_rss": run["peak"] / run["rss"],
            "peak_ram_over_resident": (run["peak_anon_files"] - empty["anon"]) / max(resident_ram, 1)}


def medians(runs: list[dict[str, Any]]) -> dict[str, float]:
    return {key: statistics.median(run[key] for run in runs) for key in runs[0]}


def table(results: dict[str, dict[str, list[dict[str, Any]]]], users: int) -> str:
    """The medians as a Markdown table."""
    lines = [f"{users:,} users, median of {max(len(r) for kinds in results.values() for r in kinds.values())} "
             "round(s):", "",
             "| tree | start | ready s | server CPU s | RSS after GiB | peak (VmHWM) GiB | peak ÷ RSS after | store files GiB "
             "| resident store GiB (RSS − empty server's) | resident RAM GiB (anon − empty's + files) "
             "| peak anon+files GiB | (peak anon+files − empty anon) ÷ resident RAM |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for tree, kinds in results.items():
        for kind, runs in kinds.items():
            m = medians(runs)
            lines.append(f"| {tree} | {kind} | {m['ready_s']:.1f} | {m['cpu_s']:.1f} | {m['rss'] / GIB:.2f} | {m['peak'] / GIB:.2f} | "
                         f"{m['peak_over_rss']:.2f} | {m['files'] / GIB:.2f} | {m['resident_rss'] / GIB:.2f} | "
                         f"{m['resident_ram'] / GIB:.2f} | {m['peak_anon_files'] / GIB:.2f} | "
                         f"{m['peak_ram_over_resident']:.2f} |")
    return "\n".join(lines)


def run_scale(users: int, trees: dict[str, Path], args: argparse.Namespace, scratch: Path,
              say: Callable[[str], None] = log) -> dict[str, dict[str, list[dict[str, Any]]]]:
    manifest, reused = cached_warehouse(args.data_dir / f"users-{users}-seed-{args.seed}", users, args.seed, log=say)
    say(f"== {users:,} users ({'reused' if reused else 'generated'}: {manifest['rows']})")
    warehouse = args.data_dir / f"users-{users}-seed-{args.seed}" / "warehouse.duckdb"
    log_dir = args.results_dir / "logs"
    names = [name for name in trees if name == "this tree" or users <= args.base_max_users]
    empties = {name: empty_server(trees[name], scratch, log_dir) for name in names}
    results: dict[str, dict[str, list[dict[str, Any]]]] = {name: {} for name in names}
    for round_ in range(args.rounds):
        for name in names[round_ % len(names):] + names[:round_ % len(names)]:
            say(f"  round {round_ + 1}: {name} (load average {live.load_average()[0]:.2f})")
            for kind, run in starts(trees[name], warehouse, scratch, log_dir).items():
                run = with_store(run, empties[name])
                results[name].setdefault(kind, []).append(run)
                say(f"    {kind}: ready in {run['ready_s']:.1f} s ({run['cpu_s']:.1f} CPU s), RSS {run['rss'] / GIB:.2f} GiB, peak "
                    f"{run['peak'] / GIB:.2f} GiB, store files {run['files'] / GIB:.2f} GiB, peak anon+files "
                    f"{run['peak_anon_files'] / GIB:.2f} GiB")
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, nargs="+", default=[100_000])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--base", default="main", help="the git revision to compare with ('' for none)")
    parser.add_argument("--base-max-users", type=int, default=100_000, help="run the base only up to this scale")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--data-dir", type=Path, default=ROOT / "bench" / "results" / "data")
    parser.add_argument("--results-dir", type=Path, default=ROOT / "bench" / "results")
    args = parser.parse_args(argv)
    started = time.time()
    with tempfile.TemporaryDirectory(prefix="bench-hydration-") as scratch_name:
        scratch = Path(scratch_name)
        trees = {"this tree": ROOT}
        if args.base:
            export(args.base, scratch / "base")
            trees = {f"base ({args.base})": scratch / "base", **trees}
        report = {"machine": live.machine(), "settings": SETTINGS, "started": started,
                  "scales": {users: run_scale(users, trees, args, scratch) for users in args.users}}
    args.results_dir.mkdir(parents=True, exist_ok=True)
    out = args.results_dir / f"hydration-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.write_text(json.dumps(report, indent=1, default=str))
    print(f"\nCommand: .venv/bin/python -m bench.hydration {' '.join(argv if argv is not None else sys.argv[1:])} "
          f"({(time.time() - started) / 60:.1f} min; load average after: {live.load_average()[0]:.2f})\n")
    for users, results in report["scales"].items():
        print(table(results, users) + "\n")
    print(f"(raw: {out})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
