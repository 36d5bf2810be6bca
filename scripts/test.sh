#!/usr/bin/env bash
# Install the test dependencies (once) and run every test. Extra arguments go to pytest.
source "$(dirname "$0")/_venv.sh" requirements-dev.txt
status=0
.venv/bin/python -m pytest -n 2 "$@" || status=$?
# pytest exits 5 when it collected no tests: that is a failure of the suite, not a pass.
[ "$status" -eq 5 ] && echo "no tests were collected" >&2
exit "$status"
