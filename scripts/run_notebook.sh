#!/usr/bin/env bash
# Install the notebook dependencies (once), execute example.ipynb top to bottom without a browser and save it
# with the outputs of that run. Against $FEATURESTORE_URL if set (e.g. scripts/serve.sh in another terminal,
# FEATURESTORE_URL=http://127.0.0.1:8080), else a throwaway server on a temporary DATA_DIR.
# --no-save only checks that it runs.
source "$(dirname "$0")/_venv.sh" requirements-notebook.txt
save="--save"
[ "${1:-}" = "--no-save" ] && save=""
exec .venv/bin/python -m tests.notebook $save
