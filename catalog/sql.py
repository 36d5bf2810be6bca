"""The catalog on SQLAlchemy Core: embedded SQLite by default, PostgreSQL in production.

Each table keeps a few key columns for lookups, uniqueness and ordering, plus a
``doc`` column with the record's full JSON, so a new record field needs no
migration. Tables are created on open; if the database cannot be reached then,
the catalog still opens and retries on first use, so an outage shows up as
``BackendUnavailable`` from `ping()` and every call rather than as a crash.

Two fields that change after a save live only in their column, not in ``doc``:
a feature set's ``stage`` and an API key's ``revoked_at``; reads merge them in.
A unique (name, stage) constraint keeps one version per stage and name (NULL
stages never clash). Names are ordered by code point on every backend (PostgreSQL
is told ``COLLATE "C"``), as MongoDB and SQLite do by default.

SQLite runs in WAL mode with a busy timeout; ``sqlite:///:memory:`` shares one
connection (StaticPool) and serializes writes with a lock.
"""
from __future__ import annotations

import json
import logging
import threading
from contextlib import AbstractContextManager, contextmanager, nullcontext
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Callable, Iterator, TypeVar

import sqlalchemy as sa
from sqlalchemy import exc
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.pool import StaticPool

from catalog.base import (STAGES, ApiKeyRecord, Catalog, EtlRecord, FeatureSetRecord, Page, QueryRecord,
                          SourceRecord, utc_now)
from common import postgres as pg_deadlines
from common.errors import BackendUnavailable, InvalidInput, NotFound
from common.urls import sqlalchemy_url

log = logging.getLogger(__name__)

R = TypeVar("R")

SQLITE_BUSY_TIMEOUT_MS = 10_000
PG_CONNECT_TIMEOUT_S = 5
PG_DEADLINE_S = 30.0  # client-side limit of one wait on the server (a frozen server fails, never hangs a call)

metadata = sa.MetaData()

queries = sa.Table(
    "queries",
    metadata,
    sa.Column("id", sa.String(255), primary_key=True),
    sa.Column("name", sa.Text, nullable=False),
    sa.Column("sql_hash", sa.String(255), nullable=False, unique=True),
    sa.Column("created_at", sa.String(64), nullable=False),
    sa.Column("doc", sa.Text, nullable=False),
    sa.Index("ix_queries_newest", "created_at", "id"),
)

etls = sa.Table(
    "etls",
    metadata,
    sa.Column("id", sa.String(255), primary_key=True),
    sa.Column("name", sa.Text, nullable=False),
    sa.Column("query_id", sa.String(255), nullable=False),
    sa.Column("created_at", sa.String(64), nullable=False),
    sa.Column("doc", sa.Text, nullable=False),
    sa.Index("ix_etls_newest", "created_at", "id"),
    sa.Index("ix_etls_query_newest", "query_id", "created_at", "id"),
)

feature_sets = sa.Table(
    "feature_sets",
    metadata,
    sa.Column("name", sa.Text, primary_key=True),
    sa.Column("version", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("stage", sa.String(32), nullable=True),  # the truth; `doc` has no stage
    sa.Column("created_at", sa.String(64), nullable=False),
    sa.Column("doc", sa.Text, nullable=False),
    sa.UniqueConstraint("name", "stage", name="uq_feature_sets_one_version_per_stage"),
)

sources = sa.Table(
    "sources",
    metadata,
    sa.Column("name", sa.Text, primary_key=True),
    sa.Column("version", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("created_at", sa.String(64), nullable=False),
    sa.Column("doc", sa.Text, nullable=False),
)

serving_stats = sa.Table(
    "serving_stats",
    metadata,
    sa.Column("etl_id", sa.String(255), primary_key=True),
    sa.Column("updated_at", sa.String(64), nullable=False),
    sa.Column("doc", sa.Text, nullable=False),
)

api_keys = sa.Table(
    "api_keys",
    metadata,
    sa.Column("key_id", sa.String(255), primary_key=True),
    sa.Column("key_hash", sa.String(255), nullable=False, unique=True),
    sa.Column("role", sa.String(32), nullable=False),
    sa.Column("created_at", sa.String(64), nullable=False),
    sa.Column("revoked_at", sa.String(64), nullable=True),  # the truth; `doc` has no revoked_at
    sa.Column("doc", sa.Text, nullable=False),
    sa.Index("ix_api_keys_oldest", "created_at", "key_id"),
)

# INSERT … ON CONFLICT DO UPDATE comes from the dialect's own insert()
UPSERT_INSERTS = {"sqlite": sqlite.insert, "postgresql": postgresql.insert}


@contextmanager
def _translated() -> Iterator[None]:
    """Turn connection-level driver failures into BackendUnavailable; let bugs through."""
    try:
        yield
    except (exc.OperationalError, exc.InterfaceError, exc.TimeoutError) as err:
        raise BackendUnavailable("catalog", getattr(err, "orig", None) or err) from err
    except exc.DBAPIError as err:
        if err.connection_invalidated:
            raise BackendUnavailable("catalog", err.orig or err) from err
        raise
    except OSError as err:  # SQLite: the database file's directory cannot be created
        raise BackendUnavailable("catalog", err) from err


def _build_engine(url: str) -> tuple[sa.Engine, bool, Path | None]:
    """An engine for `url`, whether it is one shared in-memory SQLite connection, and
    the directory a SQLite file needs."""
    try:
        parsed = sa.make_url(sqlalchemy_url(url))
    except exc.ArgumentError as err:
        raise InvalidInput(f"CATALOG_URL: cannot parse {url!r}: {err}") from err
    if parsed.get_backend_name() != "sqlite":
        arguments = pg_deadlines.connect_args(parsed, **({} if "connect_timeout" in parsed.query
                                                      else {"connect_timeout": PG_CONNECT_TIMEOUT_S}))
        engine = sa.create_engine(parsed, pool_pre_ping=True, pool_timeout=10, connect_args=arguments)
        return pg_deadlines.with_deadlines(engine, PG_DEADLINE_S), False, None

    database = parsed.database or ""
    in_memory = database in ("", ":memory:")
    if in_memory:
        engine = sa.create_engine(parsed, poolclass=StaticPool, connect_args={"check_same_thread": False})
    else:
        engine = sa.create_engine(parsed)
    directory = None if in_memory or database.startswith("file:") else Path(database).expanduser().parent

    @sa.event.listens_for(engine, "connect")
    def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        cursor.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")
        if not in_memory:
            cursor.execute("PRAGMA journal_mode = WAL")
        cursor.close()

    return engine, in_memory, directory


def _doc_without(record: Any, column_only: str) -> str:
    """The record's JSON minus the field whose truth is a column."""
    data = record.to_dict()
    del data[column_only]
    return json.dumps(data)


def _check_paging(offset: int, limit: int) -> None:
    if offset < 0 or limit < 0:
        raise InvalidInput("offset and limit must not be negative", {"offset": offset, "limit": limit})


def _feature_set(row: Any) -> FeatureSetRecord:
    return FeatureSetRecord.from_dict({**json.loads(row.doc), "stage": row.stage})


def _source(row: Any) -> SourceRecord:
    return SourceRecord.from_dict(json.loads(row.doc))


def _api_key(row: Any) -> ApiKeyRecord:
    return ApiKeyRecord.from_dict({**json.loads(row.doc), "revoked_at": row.revoked_at})


def _check_stage(stage: str | None) -> None:
    if stage is not None and stage not in STAGES:
        raise InvalidInput(f"stage must be one of {', '.join(STAGES)} or null, not {stage!r}", {"stage": stage})


def _json_text(stats: dict[str, Any]) -> str:
    if not isinstance(stats, dict):
        raise InvalidInput("serving statistics must be a JSON object", {"type": type(stats).__name__})
    try:
        return json.dumps(stats)
    except (TypeError, ValueError) as err:
        raise InvalidInput(f"serving statistics are not JSON-safe: {err}") from err


class SqlCatalog(Catalog):
    """Queries, ETLs, feature sets, sources, serving statistics and API keys in a SQL database
    (``sqlite:///…`` or ``postgresql://…``)."""

    def __init__(self, url: str):
        self._engine, shared, self._directory = _build_engine(url)
        database = self._engine.url.database or ""
        self._file = Path(database).expanduser() if self._directory is not None else None
        self._write_lock: AbstractContextManager[Any] = threading.Lock() if shared else nullcontext()
        self._schema_lock = threading.Lock()
        self._schema_ready = False
        try:
            self._ensure_schema()
        except BackendUnavailable as err:
            log.warning("catalog not reachable on open, will retry on use: %s", err.message)

    # -- queries -------------------------------------------------------------

    def save_query(self, record: QueryRecord) -> QueryRecord:
        row = {"id": record.query_id, "name": record.name, "sql_hash": record.sql_hash,
               "created_at": record.created_at, "doc": json.dumps(record.to_dict())}
        stored = self._insert_or_get(queries, row, [queries.c.id == record.query_id,
                                                    queries.c.sql_hash == record.sql_hash])
        return QueryRecord.from_dict(json.loads(stored.doc))

    def get_query(self, query_id: str) -> QueryRecord:
        return QueryRecord.from_dict(self._get(queries, query_id, "query"))

    def list_queries(self, offset: int = 0, limit: int = 50) -> Page[QueryRecord]:
        return self._page(queries, offset, limit, None, QueryRecord.from_dict)

    # -- ETLs ----------------------------------------------------------------

    def save_etl(self, record: EtlRecord) -> EtlRecord:
        row = {"id": record.etl_id, "name": record.name, "query_id": record.query_id,
               "created_at": record.created_at, "doc": json.dumps(record.to_dict())}
        stored = self._insert_or_get(etls, row, [etls.c.id == record.etl_id])
        return EtlRecord.from_dict(json.loads(stored.doc))

    def get_etl(self, etl_id: str) -> EtlRecord:
        return EtlRecord.from_dict(self._get(etls, etl_id, "etl"))

    def list_etls(self, offset: int = 0, limit: int = 50, query_id: str | None = None) -> Page[EtlRecord]:
        where = None if query_id is None else etls.c.query_id == query_id
        return self._page(etls, offset, limit, where, EtlRecord.from_dict)

    # -- feature sets --------------------------------------------------------

    def save_feature_set(self, record: FeatureSetRecord) -> FeatureSetRecord:
        row = {"name": record.name, "version": record.version, "stage": None, "created_at": record.created_at,
               "doc": _doc_without(record, "stage")}
        this = (feature_sets.c.name == record.name) & (feature_sets.c.version == record.version)
        return _feature_set(self._insert_or_get(feature_sets, row, [this]))

    def feature_set_versions(self, name: str) -> list[FeatureSetRecord]:
        return self._versions(feature_sets, name, _feature_set)

    def list_feature_sets(self, offset: int = 0, limit: int = 50) -> Page[FeatureSetRecord]:
        return self._newest_per_name(feature_sets, offset, limit, _feature_set)

    def set_feature_set_stage(self, name: str, version: int, stage: str | None) -> FeatureSetRecord:
        """One transaction: take `stage` from the other versions of `name`, then set it on `version`.

        On PostgreSQL the oldest version's row is locked first, a per-name mutex (versions are
        never deleted): concurrent moves queue instead of both clearing before either sets, and
        locking one row cannot deadlock as locking all of them in scan order did. SQLite
        serializes writers anyway.
        """
        _check_stage(stage)
        self._ensure_schema()
        fs = feature_sets.c
        this = (fs.name == name) & (fs.version == version)
        with _translated(), self._write_lock, self._writing() as conn:
            if self._engine.dialect.name == "postgresql":
                conn.execute(sa.select(fs.version).where(fs.name == name).order_by(fs.version).limit(1)
                             .with_for_update())
            if stage is not None:
                conn.execute(feature_sets.update().where((fs.name == name) & (fs.stage == stage) & ~this)
                             .values(stage=None))
            if conn.execute(feature_sets.update().where(this).values(stage=stage)).rowcount == 0:
                raise NotFound(f"no feature set {name!r} version {version}", {"name": name, "version": version})
            return _feature_set(conn.execute(sa.select(fs.doc, fs.stage).where(this)).one())

    # -- sources -------------------------------------------------------------

    def save_source(self, record: SourceRecord) -> SourceRecord:
        row = {"name": record.name, "version": record.version, "created_at": record.created_at,
               "doc": json.dumps(record.to_dict())}
        this = (sources.c.name == record.name) & (sources.c.version == record.version)
        return _source(self._insert_or_get(sources, row, [this]))

    def source_versions(self, name: str) -> list[SourceRecord]:
        return self._versions(sources, name, _source)

    def list_sources(self, offset: int = 0, limit: int = 50) -> Page[SourceRecord]:
        return self._newest_per_name(sources, offset, limit, _source)

    # -- serving statistics --------------------------------------------------

    def save_serving_stats(self, etl_id: str, stats: dict[str, Any]) -> None:
        """Upsert with the dialect's INSERT … ON CONFLICT DO UPDATE: concurrent callers never clash."""
        self._ensure_schema()
        insert = UPSERT_INSERTS[self._engine.dialect.name](serving_stats).values(
            etl_id=etl_id, updated_at=utc_now(), doc=_json_text(stats))
        upsert = insert.on_conflict_do_update(index_elements=[serving_stats.c.etl_id],
                                              set_={"updated_at": insert.excluded.updated_at,
                                                    "doc": insert.excluded.doc})
        with _translated(), self._write_lock, self._writing() as conn:
            conn.execute(upsert)

    def get_serving_stats(self, etl_id: str) -> dict[str, Any] | None:
        self._ensure_schema()
        with _translated(), self._engine.connect() as conn:
            doc = conn.execute(sa.select(serving_stats.c.doc).where(serving_stats.c.etl_id == etl_id)).scalar()
        return None if doc is None else json.loads(doc)

    # -- API keys ------------------------------------------------------------

    def save_api_key(self, record: ApiKeyRecord) -> ApiKeyRecord:
        row = {"key_id": record.key_id, "key_hash": record.key_hash, "role": record.role,
               "created_at": record.created_at, "revoked_at": record.revoked_at,
               "doc": _doc_without(record, "revoked_at")}
        self._ensure_schema()
        try:
            with _translated(), self._write_lock, self._writing() as conn:
                conn.execute(api_keys.insert().values(**row))
        except exc.IntegrityError as clash:
            raise InvalidInput("an API key with this key_id or key_hash exists",
                               {"key_id": record.key_id}) from clash
        return record

    def find_api_key(self, key_hash: str) -> ApiKeyRecord | None:
        self._ensure_schema()
        with _translated(), self._engine.connect() as conn:
            row = conn.execute(sa.select(api_keys.c.doc, api_keys.c.revoked_at)
                               .where(api_keys.c.key_hash == key_hash)).first()
        return None if row is None else _api_key(row)

    def list_api_keys(self) -> list[ApiKeyRecord]:
        self._ensure_schema()
        oldest_first = (sa.select(api_keys.c.doc, api_keys.c.revoked_at)
                        .order_by(api_keys.c.created_at, api_keys.c.key_id))
        with _translated(), self._engine.connect() as conn:
            return [_api_key(row) for row in conn.execute(oldest_first)]

    def revoke_api_key(self, key_id: str, revoked_at: str) -> ApiKeyRecord:
        self._ensure_schema()
        this = api_keys.c.key_id == key_id
        with _translated(), self._write_lock, self._writing() as conn:
            not_yet = this & api_keys.c.revoked_at.is_(None)  # the first revocation's time is kept
            conn.execute(api_keys.update().where(not_yet).values(revoked_at=revoked_at))
            row = conn.execute(sa.select(api_keys.c.doc, api_keys.c.revoked_at).where(this)).first()
        if row is None:
            raise NotFound(f"no API key with id {key_id!r}", {"key_id": key_id})
        return _api_key(row)

    # -- health --------------------------------------------------------------

    def ping(self) -> None:
        self._check_file()
        with _translated(), self._engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))

    def close(self) -> None:
        self._engine.dispose()

    # -- helpers -------------------------------------------------------------

    def _check_file(self) -> None:
        """A SQLite file deleted under a running service: pooled connections would go on writing to
        the unlinked file and every save would vanish at the next start, so refuse instead."""
        if self._file is not None and self._schema_ready and not self._file.exists():
            raise BackendUnavailable("catalog", f"the catalog file {self._file} is missing")

    @contextmanager
    def _writing(self) -> Iterator[Any]:
        """A write transaction, after checking the SQLite file is still there."""
        self._check_file()
        with self._engine.begin() as conn:
            yield conn

    def _ensure_schema(self) -> None:
        """Create missing tables once; a concurrent creator elsewhere is not an error."""
        if self._schema_ready:
            return
        with self._schema_lock, _translated():
            if self._schema_ready:
                return
            if self._directory is not None:
                self._directory.mkdir(parents=True, exist_ok=True)
            try:
                metadata.create_all(self._engine, checkfirst=True)
            except (exc.ProgrammingError, exc.IntegrityError):  # lost a CREATE race; tables exist now
                metadata.create_all(self._engine, checkfirst=True)
            self._schema_ready = True

    def _insert_or_get(self, table: sa.Table, row: dict[str, Any], same: list[Any]) -> Any:
        """Insert `row`; if a unique key clashes, return the stored row that matches `same` first
        (either way a row with attributes named like the table's columns)."""
        self._ensure_schema()
        with _translated(), self._write_lock:
            try:
                with self._writing() as conn:
                    conn.execute(table.insert().values(**row))
                return SimpleNamespace(**row)
            except exc.IntegrityError as clash:
                with self._engine.connect() as conn:
                    for condition in same:
                        stored = conn.execute(sa.select(table).where(condition)).first()
                        if stored is not None:
                            return stored
                raise clash

    def _by_code_point(self, column: Any) -> Any:
        """`column` for ORDER BY in code point order: PostgreSQL would otherwise use the database's locale."""
        return column.collate("C") if self._engine.dialect.name == "postgresql" else column

    def _get(self, table: sa.Table, key: str, kind: str) -> dict[str, Any]:
        self._ensure_schema()
        with _translated(), self._engine.connect() as conn:
            doc = conn.execute(sa.select(table.c.doc).where(table.c.id == key)).scalar()
        if doc is None:
            raise NotFound(f"no {kind} with id {key!r}", {kind + "_id": key})
        return json.loads(doc)

    def _versions(self, table: sa.Table, name: str, parse: Callable[[Any], R]) -> list[R]:
        """Every row of `name` in a (name, version) keyed table, oldest version first, parsed."""
        self._ensure_schema()
        versions = sa.select(table).where(table.c.name == name).order_by(table.c.version)
        with _translated(), self._engine.connect() as conn:
            return [parse(row) for row in conn.execute(versions)]

    def _newest_per_name(self, table: sa.Table, offset: int, limit: int, parse: Callable[[Any], R]) -> Page[R]:
        """The newest version of each name in a (name, version) keyed table, names in code point
        order, paged over names; `total` counts the names."""
        _check_paging(offset, limit)
        self._ensure_schema()
        t = table.c
        newest = (sa.select(t.name, sa.func.max(t.version).label("version")).group_by(t.name)
                  .order_by(self._by_code_point(t.name)).offset(offset).limit(limit).subquery())
        items = (sa.select(table)
                 .join(newest, (t.name == newest.c.name) & (t.version == newest.c.version))
                 .order_by(self._by_code_point(t.name)))
        with _translated(), self._engine.connect() as conn:
            total = conn.execute(sa.select(sa.func.count(sa.distinct(t.name)))).scalar_one()
            rows = conn.execute(items).all() if limit else []
        return Page([parse(row) for row in rows], total, offset, limit)

    def _page(self, table: sa.Table, offset: int, limit: int, where: Any,
              parse: Callable[[dict[str, Any]], R]) -> Page[R]:
        _check_paging(offset, limit)
        self._ensure_schema()
        count = sa.select(sa.func.count()).select_from(table)
        items = (sa.select(table.c.doc).order_by(table.c.created_at.desc(), table.c.id.desc())
                 .offset(offset).limit(limit))
        if where is not None:
            count, items = count.where(where), items.where(where)
        with _translated(), self._engine.connect() as conn:
            total = conn.execute(count).scalar_one()
            docs = conn.execute(items).scalars().all() if limit else []
        return Page([parse(json.loads(doc)) for doc in docs], total, offset, limit)
