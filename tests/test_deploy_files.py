"""Static checks of the production stack: no Docker engine runs here, so the files are read, not run."""
from __future__ import annotations

import re
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Iterator

import psycopg
import pyarrow as pa
import pytest
import yaml
from psycopg import sql as pg_sql

from app.settings import SECRET_SETTINGS, SETTINGS
from tests.fixtures_pg import admin_connection

ROOT = Path(__file__).resolve().parent.parent
INIT_SQL = ROOT / "deploy" / "postgres-init.sql"


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
    assert not {"ADMIN_KEY", "WAREHOUSE_URL", "WAREHOUSE_READ_URL"} & set(env) and "FEATURESTORE_ADMIN_KEY" not in str(env)
    assert (env["ADMIN_KEY_FILE"], env["WAREHOUSE_URL_FILE"]) == ("/run/secrets/admin_key", "/run/secrets/warehouse_url")
    assert set(services["featurestore"]["secrets"]) == {"admin_key", "warehouse_url", "warehouse_read_url"}
    assert compose["secrets"]["admin_key"] == {"environment": "FEATURESTORE_ADMIN_KEY"}  # never a default
    warehouse_url = (ROOT / compose["secrets"]["warehouse_url"]["file"]).read_text().strip()
    assert re.match(r"postgresql://\w+:\w+@postgres:5432/\w+$", warehouse_url)
    assert services["featurestore"]["depends_on"] == {"mongo": {"condition": "service_healthy"},
                                                      "postgres": {"condition": "service_healthy"}}
    assert services["featurestore"]["ports"] == ["127.0.0.1:8080:8080"]
    database = re.match(r"postgresql://\w+:\w+@postgres:5432/(\w+)", warehouse_url).group(1)
    assert services["postgres"]["environment"]["POSTGRES_DB"] == database


def _url_role(url: str) -> tuple[str, str]:
    user, password = re.match(r"postgresql://(\w+):(\w+)@postgres:5432/\w+$", url).groups()
    return user, password


def _secret_url(compose: dict, name: str) -> str:
    return (ROOT / compose["secrets"][name]["file"]).read_text().strip()


def test_the_warehouse_roles_are_not_the_superuser_and_user_sql_may_only_read(compose):
    """The service writes as the warehouse's owner and runs user SQL as a reader (WAREHOUSE_READ_URL): both
    made by the init script the postgres image runs, neither the image's superuser."""
    env, postgres = compose["services"]["featurestore"]["environment"], compose["services"]["postgres"]
    assert env["WAREHOUSE_READ_URL_FILE"] == "/run/secrets/warehouse_read_url"
    writer, reader = _url_role(_secret_url(compose, "warehouse_url")), _url_role(_secret_url(compose, "warehouse_read_url"))
    assert postgres["environment"]["POSTGRES_USER"] not in (writer[0], reader[0]) and writer[0] != reader[0]
    [init] = [v for v in postgres["volumes"] if ":/docker-entrypoint-initdb.d/" in v]
    source, target = init.split(":")[:2]
    assert target.endswith(".sql") and (ROOT / source).resolve() == INIT_SQL
    script = INIT_SQL.read_text()
    for role, password in (writer, reader):
        assert re.search(rf"CREATE ROLE {role} LOGIN PASSWORD '{password}'\s+NOSUPERUSER", script), role
    assert f"ALTER DEFAULT PRIVILEGES FOR ROLE {writer[0]} IN SCHEMA public GRANT SELECT ON TABLES TO {reader[0]}" \
        in script
    assert postgres["healthcheck"]["test"][1].startswith(f"pg_isready -U {postgres['environment']['POSTGRES_USER']} ")


def test_compose_can_register_etls_from_mounted_repositories_or_allowed_remotes(compose, dockerfile):
    service = compose["services"]["featurestore"]
    [mount] = [v for v in service["volumes"] if ":/srv/etl-repos" in v]
    assert mount.endswith(":ro")  # the service reads commits, it never writes the repositories
    assert "ETL_ALLOWED_REMOTES" in service["environment"]
    # mounted repositories belong to the host's uid: git must not refuse them as "dubious ownership"
    assert any("git config --system --add safe.directory" in line for line in dockerfile)


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


def test_the_image_makes_data_dir_for_its_user(dockerfile):
    """DATA_DIR exists in the image and belongs to the non-root user before the switch to it (a named volume
    mounted there starts with that ownership), or the service could not write its git cache."""
    data_dir = re.search(r"DATA_DIR=(\S+)", " ".join(dockerfile)).group(1)
    user = [line.split()[1] for line in dockerfile if line.startswith("USER ")][-1]
    run = " ".join(line for line in dockerfile[:dockerfile.index(f"USER {user}")])
    assert re.search(rf"mkdir -p [^&]*{re.escape(data_dir)}", run), run
    assert re.search(rf"chown {user}:{user} [^&]*{re.escape(data_dir)}", run), run


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


@pytest.fixture
def warehouse_roles(pg_server_url: str) -> Iterator[dict[str, str]]:
    """deploy/postgres-init.sql run as the image would (as the superuser, in a fresh database), its two roles
    renamed uniquely (roles are server-wide); the writer's and the reader's URLs. Dropped afterwards."""
    suffix = uuid.uuid4().hex[:12]
    writer, reader, database = f"fs_writer_{suffix}", f"fs_reader_{suffix}", f"fs_roles_{suffix}"
    script = re.sub(r"\bfeaturestore_reader\b", reader, INIT_SQL.read_text())
    script = re.sub(r"\bfeaturestore\b", writer, script)
    with admin_connection(pg_server_url) as admin:
        admin.execute(pg_sql.SQL("CREATE DATABASE {} TEMPLATE template0").format(pg_sql.Identifier(database)))
    try:
        with psycopg.connect(f"{pg_server_url}/{database}", autocommit=True) as init:
            init.execute(script)
        yield {"writer": f"postgresql://{writer}@127.0.0.1:5432/{database}",
               "reader": f"postgresql://{reader}@127.0.0.1:5432/{database}", "writer_role": writer}
    finally:
        with admin_connection(pg_server_url) as admin:
            admin.execute(pg_sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(pg_sql.Identifier(database)))
            for role in (reader, writer):
                admin.execute(pg_sql.SQL("DROP ROLE IF EXISTS {}").format(pg_sql.Identifier(role)))


@pytest.mark.postgres
def test_the_init_script_roles_write_as_owner_and_read_only_for_user_sql(warehouse_roles):
    """The service on those roles: sources' tables made and filled by the writer, user SQL through the reader
    (WAREHOUSE_READ_URL) reads them and can do nothing else, not even as the superuser's functions allow."""
    from catalog.base import SourceRecord
    from common.errors import InvalidQuery
    from demo.sources import demo_source_declarations
    from sources.definition import parse_source
    from warehouse.sql import SqlAlchemyWarehouse

    with psycopg.connect(warehouse_roles["writer"]) as connection:
        assert connection.execute("SELECT rolsuper FROM pg_roles WHERE rolname = current_user").fetchone() == (False,)
    warehouse = SqlAlchemyWarehouse(warehouse_roles["writer"], statement_timeout=5.0,
                                    read_url=warehouse_roles["reader"])
    try:
        declaration = next(d for d in demo_source_declarations() if d["name"] == "users")
        source: SourceRecord = parse_source(declaration, created_by="test", created_at="2026-12-02T00:00:00Z")
        warehouse.create_table(source)
        warehouse.append({source.table: pa.table({"user_id": ["u1"], "name": ["Ada"], "address": ["1 Main St"],
                                                  "creation_date": [1]})})
        assert warehouse.query(f"SELECT user_id FROM {source.table}")["user_id"].tolist() == ["u1"]
        for hostile in ("SELECT pg_read_file('/etc/passwd')", "SELECT * FROM pg_authid"):
            with pytest.raises(InvalidQuery, match="permission denied"):
                warehouse.query(hostile)
    finally:
        warehouse.close()
    with psycopg.connect(warehouse_roles["reader"], autocommit=True) as reader:
        # a temporary table only in a transaction the service makes writable (a training spine's upload):
        # user SQL runs in the reader's default, read-only transactions
        with pytest.raises(psycopg.Error, match="read-only transaction"):
            with reader.transaction():
                reader.execute("CREATE TEMPORARY TABLE mine (a int)")
        for statement in (f"INSERT INTO {source.table} (user_id) VALUES ('x')", "CREATE TABLE mine (a int)",
                          f"DELETE FROM {source.table}"):
            with pytest.raises(psycopg.Error):
                with reader.transaction():
                    reader.execute("SET TRANSACTION READ WRITE")  # even a writable transaction may not
                    reader.execute(statement)
