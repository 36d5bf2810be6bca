#!/usr/bin/env bash
# Install Feast (the peer of bench/point_in_time.py --peer, run by bench/peer_feast.py) into its own venv, once.
#
#   bash bench/install_feast.sh                  # venv at ${FEAST_VENV:-/tmp/feast-venv}
#   FEAST_VENV=/somewhere bash bench/install_feast.sh
#
# The venv is separate from the project's .venv: Feast pins its own pandas/pyarrow/dask/protobuf.
# Idempotent: does nothing when the venv already has this exact feast version.
# The versions below are the ones pip resolved for feast 0.67.0 on python 3.11 (a full `pip freeze`
# of that venv); pinning them keeps the peer's numbers comparable from one machine to the next.
set -euo pipefail

FEAST_VERSION="0.67.0"
VENV="${FEAST_VENV:-/tmp/feast-venv}"
PY="${PYTHON:-python3.11}"

if [ -x "$VENV/bin/python" ] && "$VENV/bin/python" - "$FEAST_VERSION" >/dev/null 2>&1 <<'EOF'
import sys
from importlib.metadata import version
sys.exit(0 if version("feast") == sys.argv[1] else 1)
EOF
then
    echo "feast $FEAST_VERSION already installed: $VENV"
    exit 0
fi

if ! command -v "$PY" >/dev/null 2>&1; then
    echo "install_feast.sh: $PY not found (set PYTHON=... to a python 3.10-3.12)" >&2
    exit 1
fi

"$PY" -m venv "$VENV"

PINS="$(mktemp)"
trap 'rm -f "$PINS"' EXIT
cat >"$PINS" <<'EOF'
annotated-doc==0.0.7
annotated-types==0.8.0
anyio==4.16.0
ast_serialize==0.13.1
attrs==26.1.0
bigtree==1.5.3
certifi==2026.10.19.post1
charset-normalizer==3.5.3
click==8.5.1
cloudpickle==3.1.3
colorama==0.4.6
dask==2026.8.0
dill==0.4.1
fastapi==0.165.0
fsspec==2026.9.0
gunicorn==27.0.1
h11==0.16.0
httptools==0.9.0
idna==3.20
importlib_metadata==10.2.0
Jinja2==3.1.6
lazy-importer==0.1.0
librt==0.17.0
locket==1.0.0
MarkupSafe==3.0.4
mmh3==5.3.1
mypy==2.4.1
mypy_extensions==1.2.0
numpy==2.4.6
opentelemetry-api==1.45.2
packaging==26.4
pandas==2.3.3
partd==1.4.2
pathspec==1.1.1
prometheus_client==0.24.1
protobuf==7.36.2
psutil==7.2.2
pyarrow==26.0.1
pydantic==2.14.4
pydantic_core==2.50.5
Pygments==2.21.0
PyJWT==2.15.1
python-dateutil==4.0.0
python-dotenv==1.2.4
pytz==2026.6
PyYAML==6.0.4
requests==2.34.2
SQLAlchemy==2.1.9
starlette==1.10.0
tabulate==0.10.0
tenacity==8.5.0
toml==0.10.2
toolz==1.2.0
tqdm==4.70.1
typeguard==4.6.1
types-greenlet==3.5.0.20260518
typing-inspection==0.4.5
typing_extensions==4.16.0
tzdata==2026.6
urllib3==2.8.0
uvicorn==0.54.0
uvicorn-worker==0.4.0
uvloop==0.23.0
watchfiles==1.3.0
websockets==17.4
zipp==4.1.2
EOF

LOG="$(mktemp)"
trap 'rm -f "$PINS" "$LOG"' EXIT
# pip's own output goes to a log, shown only when the install fails.
if ! "$VENV/bin/pip" install --quiet --disable-pip-version-check "feast==$FEAST_VERSION" -c "$PINS" >"$LOG" 2>&1; then
    grep -v "^WARNING: Location" "$LOG" | tail -40 >&2
    echo "install_feast.sh: pip install feast==$FEAST_VERSION failed (venv: $VENV)" >&2
    exit 1
fi
echo "feast $("$VENV/bin/python" -c 'import feast; print(feast.__version__)') installed: $VENV"
