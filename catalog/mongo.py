"""The catalog on MongoDB through pymongo.

``mongodb://host[:port]/dbname[?options]`` picks the database from the URL path
(default ``featurestore``). Short server-selection, connect and socket timeouts
are set unless the URL's query gives its own, e.g. ``?serverSelectionTimeoutMS=500``.

``mongomock://anything/dbname`` builds an in-process ``mongomock.MongoClient()``
instead (imported only for that scheme; its data lives as long as the catalog).
This is how tests run this module without a server. mongomock's inserts are not
atomic, so in that mode writes are serialized with a lock; a real server
enforces uniqueness itself.

Documents are the record's fields with ``_id`` set to the record id; a unique
index on ``queries.sql_hash`` makes the same SQL converge on one query.
"""
from __future__ import annotations

import logging
import threading
from contextlib import AbstractContextManager, contextmanager, nullcontext
from typing import Any, Callable, Iterator, TypeVar
from urllib.parse import parse_qsl, urlsplit

import pymongo
from pymongo import errors

from catalog.base import Catalog, EtlRecord, Page, QueryRecord
from common.errors import BackendUnavailable, InvalidInput, NotFound

log = logging.getLogger(__name__)

R = TypeVar("R")

DEFAULT_DATABASE = "featurestore"
DEFAULT_TIMEOUTS_MS = {"serverSelectionTimeoutMS": 5000, "connectTimeoutMS": 5000, "socketTimeoutMS": 10000}
NEWEST_FIRST = [("created_at", pymongo.DESCENDING), ("_id", pymongo.DESCENDING)]


@contextmanager
def _translated() -> Iterator[None]:
    """Turn network failures into BackendUnavailable; let everything else through."""
    try:
        yield
    except errors.ConnectionFailure as err:  # includes ServerSelectionTimeoutError, AutoReconnect
        raise BackendUnavailable("catalog", err) from err


def _client(url: str) -> tuple[Any, str, bool]:
    """A client for `url`, the database name, and whether it is mongomock."""
    parts = urlsplit(url)
    database = parts.path.strip("/") or DEFAULT_DATABASE
    if parts.scheme == "mongomock":
        import mongomock

        return mongomock.MongoClient(), database, True
    given = {key.lower() for key, _ in parse_qsl(parts.query)}
    timeouts = {key: ms for key, ms in DEFAULT_TIMEOUTS_MS.items() if key.lower() not in given}
    try:
        return pymongo.MongoClient(url, **timeouts), database, False
    except errors.ConfigurationError as err:
        raise InvalidInput(f"CATALOG_URL: bad MongoDB URL {url!r}: {err}") from err


def _record_doc(record: QueryRecord | EtlRecord, record_id: str) -> dict[str, Any]:
    return {"_id": record_id, **record.to_dict()}


def _fields(doc: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in doc.items() if key != "_id"}


class MongoCatalog(Catalog):
    """Saved queries and ETLs in MongoDB collections ``queries`` and ``etls``."""

    def __init__(self, url: str):
        self._client, name, mock = _client(url)
        db = self._client[name]
        self._queries = db["queries"]
        self._etls = db["etls"]
        self._write_lock: AbstractContextManager[Any] = threading.Lock() if mock else nullcontext()
        self._indexes_ready = False
        try:
            self._ensure_indexes()
        except BackendUnavailable as err:
            log.warning("catalog not reachable on open, will retry on use: %s", err.message)

    # -- queries -------------------------------------------------------------

    def save_query(self, record: QueryRecord) -> QueryRecord:
        doc = self._insert_or_get(self._queries, _record_doc(record, record.query_id),
                                  [{"_id": record.query_id}, {"sql_hash": record.sql_hash}])
        return QueryRecord.from_dict(doc)

    def get_query(self, query_id: str) -> QueryRecord:
        return QueryRecord.from_dict(self._get(self._queries, query_id, "query"))

    def list_queries(self, offset: int = 0, limit: int = 50) -> Page[QueryRecord]:
        return self._page(self._queries, offset, limit, {}, QueryRecord.from_dict)

    # -- ETLs ----------------------------------------------------------------

    def save_etl(self, record: EtlRecord) -> EtlRecord:
        doc = self._insert_or_get(self._etls, _record_doc(record, record.etl_id), [{"_id": record.etl_id}])
        return EtlRecord.from_dict(doc)

    def get_etl(self, etl_id: str) -> EtlRecord:
        return EtlRecord.from_dict(self._get(self._etls, etl_id, "etl"))

    def list_etls(self, offset: int = 0, limit: int = 50, query_id: str | None = None) -> Page[EtlRecord]:
        where = {} if query_id is None else {"query_id": query_id}
        return self._page(self._etls, offset, limit, where, EtlRecord.from_dict)

    # -- health --------------------------------------------------------------

    def ping(self) -> None:
        with _translated():
            self._client.admin.command("ping")

    def close(self) -> None:
        self._client.close()

    # -- helpers -------------------------------------------------------------

    def _ensure_indexes(self) -> None:
        """Create the indexes once (idempotent on the server)."""
        if self._indexes_ready:
            return
        with _translated():
            self._queries.create_index("sql_hash", unique=True, name="sql_hash_unique")
            self._queries.create_index(NEWEST_FIRST, name="newest")
            self._etls.create_index(NEWEST_FIRST, name="newest")
            self._etls.create_index([("query_id", pymongo.ASCENDING), *NEWEST_FIRST], name="query_newest")
        self._indexes_ready = True

    def _insert_or_get(self, collection: Any, doc: dict[str, Any], same: list[dict[str, Any]]) -> dict[str, Any]:
        """Insert `doc`; on a duplicate key return the stored doc matching `same` first."""
        self._ensure_indexes()
        with _translated(), self._write_lock:
            try:
                collection.insert_one(dict(doc))
                return _fields(doc)
            except errors.DuplicateKeyError:
                for condition in same:
                    stored = collection.find_one(condition)
                    if stored is not None:
                        return _fields(stored)
                raise

    def _get(self, collection: Any, key: str, kind: str) -> dict[str, Any]:
        self._ensure_indexes()
        with _translated():
            doc = collection.find_one({"_id": key})
        if doc is None:
            raise NotFound(f"no {kind} with id {key!r}", {kind + "_id": key})
        return _fields(doc)

    def _page(self, collection: Any, offset: int, limit: int, where: dict[str, Any],
              parse: Callable[[dict[str, Any]], R]) -> Page[R]:
        if offset < 0 or limit < 0:
            raise InvalidInput("offset and limit must not be negative", {"offset": offset, "limit": limit})
        self._ensure_indexes()
        with _translated():
            total = collection.count_documents(where)
            # limit(0) means "no limit" to MongoDB, so a zero limit reads nothing
            docs = list(collection.find(where).sort(NEWEST_FIRST).skip(offset).limit(limit)) if limit else []
        return Page([parse(_fields(doc)) for doc in docs], total, offset, limit)
