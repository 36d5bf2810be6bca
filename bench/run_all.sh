#!/usr/bin/env bash
# The service benchmark in one command: installs what it needs (.venv from requirements.txt, wrk),
# then runs bench/run.py. Arguments go to it, e.g. `bench/run_all.sh --users 100000 1000000`.
# Results: bench/results/latest.md and latest.json (and a timestamped copy of each).
source "$(dirname "$0")/../scripts/_venv.sh" requirements.txt
if ! command -v wrk >/dev/null 2>&1; then
  bench/install_wrk.sh || echo "wrk could not be installed: concurrent load falls back to Python clients" >&2
fi
exec .venv/bin/python -m bench.run "$@"
