#!/usr/bin/env bash
# Install wrk (the HTTP load generator bench/run.py drives) from the Debian package, once.
# Needs root (or sudo). Without wrk, bench/run.py falls back to a Python load generator and says so.
set -euo pipefail
if command -v wrk >/dev/null 2>&1; then
    echo "wrk already installed: $(command -v wrk)"
    exit 0
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    SUDO="sudo"
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq wrk
command -v wrk
