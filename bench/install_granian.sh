#!/usr/bin/env bash
# Install granian (a Rust HTTP server for Python WSGI apps) with this project's Flask and flask-restx into
# their own venv, once: `python -m bench.workers --floor` then also serves bench/framework_floor.py's bare
# lookup on it, to show what the framework allows on the fastest server at hand, not only on waitress.
#
#   bash bench/install_granian.sh                # venv at ${GRANIAN_VENV:-/tmp/granian-venv}
#
# Not a dependency of the service: it serves on waitress (app/server.py).
set -euo pipefail
VENV="${GRANIAN_VENV:-/tmp/granian-venv}"
PY="${PYTHON:-python3.11}"
if [ -x "$VENV/bin/granian" ]; then
    echo "granian already installed: $VENV"
    exit 0
fi
"$PY" -m venv "$VENV"
"$VENV/bin/pip" install --quiet --disable-pip-version-check granian==2.8.7 flask==3.1.3 flask-restx==1.3.2 \
    waitress==3.0.2 2>&1 | grep -v "^WARNING: Location" || true
"$VENV/bin/granian" --version
