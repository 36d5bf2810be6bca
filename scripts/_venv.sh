# Sourced by the other scripts: make .venv with the pinned requirements of $1, once per change of that file.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
if ! command -v git >/dev/null 2>&1; then
  echo "installing git (needed to load ETLs from repositories)" >&2
  apt-get update -qq && apt-get install -y -qq git >/dev/null
fi
PYTHON=${PYTHON:-python3.11}
command -v "$PYTHON" >/dev/null 2>&1 || PYTHON=python3
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
stamp=".venv/.installed-$(cat requirements*.txt | sha256sum | cut -c1-16)-$(basename "$1")"
if [ ! -f "$stamp" ]; then
  .venv/bin/python -m pip install --quiet --disable-pip-version-check -r "$1"
  rm -f .venv/.installed-* && touch "$stamp"
fi
