"""Instructions per served request, counted by valgrind's callgrind: a measure of the request path's
CPU work that other load on the machine does not move (time does, by ±30% here), for this tree and a
base commit.

    .venv/bin/python -m bench.request_instructions [--base REV] [--flows N] [--calls C]

Needs valgrind (Debian's `valgrind`: it provides `callgrind_control`). For each tree (`--base`, default
main, exported with `git archive`; then this checkout) one child runs under callgrind with
instrumentation off: it publishes N demo flows, saves the walkthrough's four-table join, registers
the example ETL and serves 100 warm-up `POST /v1.0/extract/realtime` calls through Flask's test client
(the whole WSGI app, no network); then instrumentation is switched on (`callgrind_control -i on`) for C
calls of random known users and off again. Prints instructions per call for each tree and their ratio.
Callgrind runs one thread at a time, so the cost of waiting for the GIL under concurrency is not in
these counts: they measure work, not contention.
"""
from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.realtime_vs_main import DEMO_SETUP

ROOT = Path(__file__).resolve().parent.parent
CHILD = DEMO_SETUP + r'''
import os
client = app.test_client()
bodies = [{"query_id": query, "etl_id": extract["etl_id"], "index_key": "user_id",
           "index_value": users[i % len(users)]} for i in range(calls)]
for body in bodies[:100]:
    assert client.post("/v1.0/extract/realtime", json=body).status_code == 200
print("READY", flush=True)
while not os.path.exists(os.environ["BENCH_GO"]):
    time.sleep(0.05)
for body in bodies:
    assert client.post("/v1.0/extract/realtime", json=body).status_code == 200
open(os.environ["BENCH_DONE"], "w").close()
time.sleep(3600)
'''


def instructions_per_call(tree: Path, flows: int, calls: int, work: Path) -> int:
    """Run the child in `tree` under callgrind; the instructions of its timed calls, per call."""
    out, go, done = work / f"cg-{tree.name}.out", work / f"go-{tree.name}", work / f"done-{tree.name}"
    env = {"PYTHONPATH": str(tree), "PATH": "/usr/bin:/bin", "BENCH_GO": str(go), "BENCH_DONE": str(done)}
    child = subprocess.Popen(["valgrind", "--tool=callgrind", "--instr-atstart=no", f"--callgrind-out-file={out}",
                              sys.executable, "-c", CHILD, str(flows), str(calls)],
                             cwd=tree, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        assert child.stdout is not None
        for line in child.stdout:
            if line.startswith("READY"):
                break
        else:
            raise RuntimeError(f"the child in {tree} ended before it was ready ({child.wait()})")
        subprocess.run(["callgrind_control", "-i", "on", str(child.pid)], check=True, capture_output=True)
        go.touch()
        while not done.exists():
            if child.poll() is not None:
                raise RuntimeError(f"the child in {tree} ended ({child.returncode}) during the timed calls")
            time.sleep(0.2)
        subprocess.run(["callgrind_control", "-d", str(child.pid)], check=True, capture_output=True)
        subprocess.run(["callgrind_control", "-i", "off", str(child.pid)], check=True, capture_output=True)
    finally:
        child.kill()
        child.wait()
    total = 0
    for dump in work.glob(f"{out.name}*"):
        for line in dump.read_text().splitlines():
            found = re.match(r"^(summary|totals):\s+(\d+)", line)
            if found:
                total += int(found.group(2))
                break
    return total // calls


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base", default="main", help="the commit to compare with (git archive)")
    parser.add_argument("--flows", type=int, default=2000)
    parser.add_argument("--calls", type=int, default=200)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-instructions-") as folder:
        work = Path(folder)
        base = work / "base"
        base.mkdir()
        archive = subprocess.run(["git", "archive", args.base], cwd=ROOT, check=True, capture_output=True).stdout
        subprocess.run(["tar", "-x", "-C", str(base)], input=archive, check=True)
        counts = {}
        for name, tree in ((f"base {args.base}", base), ("this tree", ROOT)):
            counts[name] = instructions_per_call(tree, args.flows, args.calls, work)
            print(f"{name}: {counts[name]:,} instructions per extract/realtime call ({args.calls} calls)", flush=True)
        first, second = counts.values()
        print(f"this tree / base: {second / first:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
