#!/usr/bin/env bash
# Install what the service needs (once) and run it on the embedded defaults: http://127.0.0.1:8080/v1.0/docs
source "$(dirname "$0")/_venv.sh" requirements.txt
# Local development: authentication is off unless AUTH is set (the service says so loudly when it starts).
export AUTH="${AUTH:-off}"
exec .venv/bin/python -m app "$@"
