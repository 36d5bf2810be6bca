"""Security 2: ETL code sees none of the service's secrets, in either isolation mode.

Each case runs the service in a fresh `python` process (so the ETL worker pool's fork server starts
inside it, as in production), with the admin key and a PostgreSQL URL holding a password given either
as environment variables or as ``*_FILE`` secrets files. An ETL reports every environment it can see:
``os.environ``, what a child process it starts inherits, and the kernel's copy of its process's
starting environment (``/proc/self/environ``, which unsetting a variable does not change: the service
also wipes it there).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path

import pytest

from app.settings import SECRET_SETTINGS, load_settings, remove_secrets_from_environ

ROOT = Path(__file__).resolve().parent.parent

PEEKING_ETL = textwrap.dedent('''\
    import os
    import subprocess

    import pandas as pd

    from extraction.etl_contract import BaseEtl


    class Etl(BaseEtl):
        def transform(self, df):
            with open("/proc/self/environ", "rb") as handle:
                proc = handle.read().decode("utf-8", "replace").replace("\\0", "\\n")
            seen = {"os.environ": "\\n".join(f"{k}={v}" for k, v in os.environ.items()), "/proc/self/environ": proc,
                    "child process": subprocess.run(["env"], capture_output=True, text=True).stdout}
            return pd.DataFrame({"where": list(seen), "text": list(seen.values())})
''')

SERVICE = textwrap.dedent('''\
    import hashlib, json, sys
    import pandas as pd
    from app import close_app, create_app

    data_dir, isolation, code = sys.argv[1], sys.argv[2], open(sys.argv[3]).read()
    app = create_app({"DATA_DIR": data_dir, "ETL_ISOLATION": isolation, "ETL_WORKERS": 1, "AUTH": "on",
                      "STATS_FLUSH_SECONDS": 0.0, "EVICT_INTERVAL_SECONDS": 0.0})
    try:
        runner = app.extensions["feature_service"].runner
        sha = hashlib.sha256(code.encode()).hexdigest()
        frame = runner.run("peek", code, sha, pd.DataFrame({"user_id": ["u1"]}))
        print(json.dumps(dict(zip(frame["where"], frame["text"]))))
    finally:
        close_app(app)
''')


@pytest.mark.parametrize("given_as", ["environment", "files"])
@pytest.mark.parametrize("isolation", ["inprocess", "process"])
def test_etl_code_sees_no_secret(tmp_path, pg_database_url, isolation, given_as):
    password = f"pw{uuid.uuid4().hex}"
    admin_key = f"admin-key-{uuid.uuid4().hex}"
    warehouse_url = pg_database_url.replace("postgresql://postgres@", f"postgresql://postgres:{password}@")
    assert password in warehouse_url  # the local server trusts loopback: any password connects
    secrets = {"ADMIN_KEY": admin_key, "WAREHOUSE_URL": warehouse_url}
    env = {k: v for k, v in os.environ.items() if not k.startswith(SECRET_SETTINGS)}
    for name, value in secrets.items():
        if given_as == "files":
            (tmp_path / name).write_text(value + "\n")
            env[f"{name}_FILE"] = str(tmp_path / name)
        else:
            env[name] = value
    env["CLOUD_TOKEN"] = cloud_token = f"tok{uuid.uuid4().hex}"  # not the service's: workers drop it too
    (tmp_path / "etl.py").write_text(PEEKING_ETL)
    done = subprocess.run([sys.executable, "-c", SERVICE, str(tmp_path / "data"), isolation,
                           str(tmp_path / "etl.py")], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    assert set(seen) == {"os.environ", "child process", "/proc/self/environ"}
    assert "PATH=" in seen["os.environ"]  # it did see an environment
    for where, text in seen.items():
        for value in (admin_key, password, warehouse_url):
            assert value not in text, f"ETL code sees a secret in its {where}"
    for where in ("os.environ", "child process"):  # not even the names of the secrets files
        assert "ADMIN_KEY" not in seen[where] and "WAREHOUSE_URL" not in seen[where], where
        # A worker keeps an allow-list of its environment; in-process ETL code shares the server's.
        assert (cloud_token in seen[where]) == (isolation == "inprocess"), where


def test_secret_files_are_read_and_both_forms_at_once_are_refused(tmp_path):
    key_file = tmp_path / "admin_key"
    key_file.write_text("from-a-file-0123456789\n")
    settings = load_settings({"DATA_DIR": str(tmp_path)}, environ={"ADMIN_KEY_FILE": str(key_file)})
    assert settings["ADMIN_KEY"] == "from-a-file-0123456789"
    with pytest.raises(ValueError, match="not both"):
        load_settings(environ={"ADMIN_KEY_FILE": str(key_file), "ADMIN_KEY": "x" * 20})
    with pytest.raises(ValueError, match="cannot read"):
        load_settings(environ={"WAREHOUSE_URL_FILE": str(tmp_path / "missing")})
    (tmp_path / "empty").write_text("\n")
    with pytest.raises(ValueError, match="is empty"):
        load_settings(environ={"CATALOG_URL_FILE": str(tmp_path / "empty")})


def test_remove_secrets_from_environ_leaves_the_rest():
    environ = {"ADMIN_KEY": "k", "WAREHOUSE_URL_FILE": "/run/secrets/w", "CATALOG_URL": "sqlite://", "PORT": "1"}
    assert sorted(remove_secrets_from_environ(environ)) == ["ADMIN_KEY", "CATALOG_URL", "WAREHOUSE_URL_FILE"]
    assert environ == {"PORT": "1"}
