"""The catalog on SQLAlchemy Core: embedded SQLite by default, PostgreSQL in production.

Each table keeps a few key columns for lookups, uniqueness and ordering, plus a
``doc`` column with the record's full JSON, so a new record field needs no
migration. Tables are created on open; if the database cannot be reached then,
the catalog still opens and retries on first use, so an outage shows up as
``BackendUnavailable`` from `ping()` and every call rather than as a crash.

SQLite runs in WAL mode with a busy timeout; ``sqlite:///:memory:`` shares one
connection (StaticPool) and serializes writes with a lock.
"""
from __future__ import annotations

import json
import logging
import threading
from contextlib import AbstractContextManager, contextmanager, nullcontext
from pathlib import Path
from typing import Any, Callable, Iterator, TypeVar

import sqlalchemy as sa
from sqlalchemy import exc
from sqlalchemy.pool import StaticPool

from catalog.base import Catalog, EtlRecord, Page, QueryRecord
from common.errors import BackendUnavailable, InvalidInput, NotFound
from common.urls import sqlalchemy_url

log = logging.getLogger(__name__)

R = TypeVar("R")

SQLITE_BUSY_TIMEOUT_MS = 10_000
PG_CONNECT_TIMEOUT_S = 5

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
        connect_args = {} if "connect_timeout" in parsed.query else {"connect_timeout": PG_CONNECT_TIMEOUT_S}
        return sa.create_engine(parsed, pool_pre_ping=True, pool_timeout=10, connect_args=connect_args), False, None

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


class SqlCatalog(Catalog):
    """Saved queries and ETLs in a SQL database (``sqlite:///…`` or ``postgresql://…``)."""

    def __init__(self, url: str):
        self._engine, shared, self._directory = _build_engine(url)
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
        doc = self._insert_or_get(queries, row, [queries.c.id == record.query_id,
                                                 queries.c.sql_hash == record.sql_hash])
        return QueryRecord.from_dict(doc)

    def get_query(self, query_id: str) -> QueryRecord:
        return QueryRecord.from_dict(self._get(queries, query_id, "query"))

    def list_queries(self, offset: int = 0, limit: int = 50) -> Page[QueryRecord]:
        return self._page(queries, offset, limit, None, QueryRecord.from_dict)

    # -- ETLs ----------------------------------------------------------------

    def save_etl(self, record: EtlRecord) -> EtlRecord:
        row = {"id": record.etl_id, "name": record.name, "query_id": record.query_id,
               "created_at": record.created_at, "doc": json.dumps(record.to_dict())}
        return EtlRecord.from_dict(self._insert_or_get(etls, row, [etls.c.id == record.etl_id]))

    def get_etl(self, etl_id: str) -> EtlRecord:
        return EtlRecord.from_dict(self._get(etls, etl_id, "etl"))

    def list_etls(self, offset: int = 0, limit: int = 50, query_id: str | None = None) -> Page[EtlRecord]:
        where = None if query_id is None else etls.c.query_id == query_id
        return self._page(etls, offset, limit, where, EtlRecord.from_dict)

    # -- health --------------------------------------------------------------

    def ping(self) -> None:
        with _translated(), self._engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))

    def close(self) -> None:
        self._engine.dispose()

    # -- helpers -------------------------------------------------------------

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

    def _insert_or_get(self, table: sa.Table, row: dict[str, Any], same: list[Any]) -> dict[str, Any]:
        """Insert `row`; if a unique key clashes, return the stored doc that matches `same` first."""
        self._ensure_schema()
        with _translated(), self._write_lock:
            try:
                with self._engine.begin() as conn:
                    conn.execute(table.insert().values(**row))
                return json.loads(row["doc"])
            except exc.IntegrityError as clash:
                with self._engine.connect() as conn:
                    for condition in same:
                        doc = conn.execute(sa.select(table.c.doc).where(condition)).scalar()
                        if doc is not None:
                            return json.loads(doc)
                raise clash

    def _get(self, table: sa.Table, key: str, kind: str) -> dict[str, Any]:
        self._ensure_schema()
        with _translated(), self._engine.connect() as conn:
            doc = conn.execute(sa.select(table.c.doc).where(table.c.id == key)).scalar()
        if doc is None:
            raise NotFound(f"no {kind} with id {key!r}", {kind + "_id": key})
        return json.loads(doc)

    def _page(self, table: sa.Table, offset: int, limit: int, where: Any,
              parse: Callable[[dict[str, Any]], R]) -> Page[R]:
        if offset < 0 or limit < 0:
            raise InvalidInput("offset and limit must not be negative", {"offset": offset, "limit": limit})
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
