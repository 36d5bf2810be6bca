#!/usr/bin/env bash
# Install the test dependencies (once) and run every test. Extra arguments go to pytest.
source "$(dirname "$0")/_venv.sh" requirements-dev.txt
if [ ! -x /usr/bin/chromium ] || [ ! -x /usr/bin/chromedriver ]; then
  echo "installing chromium and chromedriver (the web UI's browser tests, tests/test_ui_browser.py)" >&2
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null
fi
status=0
.venv/bin/python -m pytest -n 2 "$@" || status=$?
# pytest exits 5 when it collected no tests: that is a failure of the suite, not a pass.
[ "$status" -eq 5 ] && echo "no tests were collected" >&2
exit "$status"
