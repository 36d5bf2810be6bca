"""Static checks of the production stack: no Docker engine runs here, so the files are read, not run."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from app.settings import SECRET_SETTINGS, SETTINGS

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


@pytest.fixture(scope="module")
def dockerfile() -> list[str]:
    lines = (ROOT / "Dockerfile").read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.strip().startswith("#")]


def test_compose_runs_the_service_with_mongo_and_postgres(compose):
    services = compose["services"]
    assert set(services) == {"featurestore", "mongo", "postgres"}
    env = services["featurestore"]["environment"]
    assert env["CATALOG_URL"].startswith("mongodb://mongo:27017/")
    assert env["REALTIME_URL"] == "sqlite:///:memory:" and env["AUTH"] == "on"
    readable = {setting.name for setting in SETTINGS} | {f"{name}_FILE" for name in SECRET_SETTINGS}
    assert set(env) <= readable, "every variable is a setting the service reads"
    # Security 2: no secret in the environment (ETL code could read it); files under /run/secrets instead.
    assert not {"ADMIN_KEY", "WAREHOUSE_URL"} & set(env) and "FEATURESTORE_ADMIN_KEY" not in str(env)
    assert (env["ADMIN_KEY_FILE"], env["WAREHOUSE_URL_FILE"]) == ("/run/secrets/admin_key", "/run/secrets/warehouse_url")
    assert set(services["featurestore"]["secrets"]) == {"admin_key", "warehouse_url"}
    assert compose["secrets"]["admin_key"] == {"environment": "FEATURESTORE_ADMIN_KEY"}  # never a default
    warehouse_url = (ROOT / compose["secrets"]["warehouse_url"]["file"]).read_text().strip()
    assert re.match(r"postgresql://\w+:\w+@postgres:5432/\w+$", warehouse_url)
    assert services["featurestore"]["depends_on"] == {"mongo": {"condition": "service_healthy"},
                                                      "postgres": {"condition": "service_healthy"}}
    assert services["featurestore"]["ports"] == ["127.0.0.1:8080:8080"]
    user, password, database = re.match(r"postgresql://(\w+):(\w+)@postgres:5432/(\w+)", warehouse_url).groups()
    pg_env = services["postgres"]["environment"]
    assert (pg_env["POSTGRES_USER"], pg_env["POSTGRES_PASSWORD"], pg_env["POSTGRES_DB"]) == (user, password, database)


def test_compose_keeps_data_in_named_volumes_and_checks_health(compose):
    declared = set(compose["volumes"])
    mounts = {
        "mongo": "/data/db", "postgres": "/var/lib/postgresql/data", "featurestore": "/var/lib/featurestore"}
    for service, target in mounts.items():
        volumes = compose["services"][service]["volumes"]
        names = [v.split(":")[0] for v in volumes if v.split(":")[1] == target]
        assert names and names[0] in declared, (service, volumes)
    for service in ("mongo", "postgres"):
        assert compose["services"][service]["healthcheck"]["test"]
        assert compose["services"][service]["restart"] == "unless-stopped"


def test_dockerfile_is_slim_non_root_and_checks_health(dockerfile):
    assert dockerfile[0] == "FROM python:3.11-slim"
    users = [line.split()[1] for line in dockerfile if line.startswith("USER ")]
    assert users and users[-1] not in ("root", "0")
    assert any(line.startswith("HEALTHCHECK") for line in dockerfile)
    assert any("/v1.0/health" in line for line in dockerfile)
    assert dockerfile[-1] == 'CMD ["python", "-m", "app"]'
    assert "EXPOSE 8080" in dockerfile
    assert any(line == "RUN pip install --no-cache-dir -r requirements.txt" for line in dockerfile)


def test_dockerfile_copies_every_package_the_service_imports(dockerfile):
    """Import the app as the container would and list the project's top-level packages it loaded."""
    script = ("import sys, app, app.cli; from app import create_app; "
              "print('\\n'.join(sorted({m.split('.')[0] for m, mod in list(sys.modules.items()) "
              f"if getattr(mod, '__file__', None) and mod.__file__.startswith({str(ROOT)!r} + '/') "
              "and '.venv' not in mod.__file__})))")
    imported = set(subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True,
                                  check=True).stdout.split())
    copied = {line.split()[1] for line in dockerfile if line.startswith("COPY ") and line.split()[1] != "requirements.txt"}
    assert imported <= copied, f"not copied into the image: {sorted(imported - copied)}"
    assert "tests" not in copied
