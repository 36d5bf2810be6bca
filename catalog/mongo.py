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
index on ``queries.sql_hash`` makes the same SQL converge on one query, one on
``api_keys.key_hash`` refuses a second key with the same secret. Feature sets
are ``_id = "name@version"``; a unique index on (name, stage), partial to string
stages, keeps one version per stage and name. Sources are ``_id = "name@version"``
too, with a unique index on (name, version). Serving statistics are
``{"_id": etl_id, "updated_at", "stats"}``, replaced whole.

Serving statistics are stored as their JSON round trip, so every backend gives
back the same thing (string keys, lists for tuples).
"""
from __future__ import annotations

import json
import logging
import threading
from contextlib import AbstractContextManager, contextmanager, nullcontext
from typing import Any, Callable, Iterator, TypeVar
from urllib.parse import parse_qsl, urlsplit

import pymongo
from pymongo import errors

from catalog.base import (STAGES, ApiKeyRecord, Catalog, EtlRecord, FeatureSetRecord, Page, QueryRecord,
                          SourceRecord, utc_now)
from common.errors import BackendUnavailable, InvalidInput, NotFound

log = logging.getLogger(__name__)

R = TypeVar("R")

DEFAULT_DATABASE = "featurestore"
DEFAULT_TIMEOUTS_MS = {"serverSelectionTimeoutMS": 5000, "connectTimeoutMS": 5000, "socketTimeoutMS": 10000}
NEWEST_FIRST = [("created_at", pymongo.DESCENDING), ("_id", pymongo.DESCENDING)]
OLDEST_FIRST = [("created_at", pymongo.ASCENDING), ("_id", pymongo.ASCENDING)]
ILLEGAL_OPERATION = 20  # a standalone server refusing a transaction
STAGE_MOVE_ATTEMPTS = 5


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


def _record_doc(record: Any, record_id: str) -> dict[str, Any]:
    return {"_id": record_id, **record.to_dict()}


def _check_paging(offset: int, limit: int) -> None:
    if offset < 0 or limit < 0:
        raise InvalidInput("offset and limit must not be negative", {"offset": offset, "limit": limit})


def _versioned_id(name: str, version: int) -> str:
    """The `_id` of a feature set or source version."""
    return f"{name}@{version}"


def _check_stage(stage: str | None) -> None:
    if stage is not None and stage not in STAGES:
        raise InvalidInput(f"stage must be one of {', '.join(STAGES)} or null, not {stage!r}", {"stage": stage})


def _json_safe(stats: dict[str, Any]) -> dict[str, Any]:
    """`stats` as JSON would give it back (what the SQL catalog stores), or InvalidInput."""
    if not isinstance(stats, dict):
        raise InvalidInput("serving statistics must be a JSON object", {"type": type(stats).__name__})
    try:
        return json.loads(json.dumps(stats))
    except (TypeError, ValueError) as err:
        raise InvalidInput(f"serving statistics are not JSON-safe: {err}") from err


def _fields(doc: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in doc.items() if key != "_id"}


class MongoCatalog(Catalog):
    """Queries, ETLs, feature sets, sources, serving statistics and API keys in MongoDB collections
    ``queries``, ``etls``, ``feature_sets``, ``sources``, ``serving_stats`` and ``api_keys``."""

    def __init__(self, url: str):
        self._client, name, mock = _client(url)
        db = self._client[name]
        self._queries = db["queries"]
        self._etls = db["etls"]
        self._feature_sets = db["feature_sets"]
        self._sources = db["sources"]
        self._serving_stats = db["serving_stats"]
        self._api_keys = db["api_keys"]
        self._write_lock: AbstractContextManager[Any] = threading.Lock() if mock else nullcontext()
        self._transactions: bool | None = False if mock else None  # None: not known until first tried
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

    # -- feature sets --------------------------------------------------------

    def save_feature_set(self, record: FeatureSetRecord) -> FeatureSetRecord:
        key = _versioned_id(record.name, record.version)
        doc = {**_record_doc(record, key), "stage": None}
        return FeatureSetRecord.from_dict(self._insert_or_get(self._feature_sets, doc, [{"_id": key}]))

    def feature_set_versions(self, name: str) -> list[FeatureSetRecord]:
        return self._versions(self._feature_sets, name, FeatureSetRecord.from_dict)

    def list_feature_sets(self, offset: int = 0, limit: int = 50) -> Page[FeatureSetRecord]:
        return self._newest_per_name(self._feature_sets, offset, limit, FeatureSetRecord.from_dict)

    def set_feature_set_stage(self, name: str, version: int, stage: str | None) -> FeatureSetRecord:
        """Take `stage` from the other versions of `name` and set it on `version`, in one transaction
        where the deployment has them (a replica set or mongos).

        Not atomic on a standalone server or mongomock: there it is find + update_many + update_one
        (under a lock for mongomock), so a reader may briefly see no version in `stage`. The unique
        (name, stage) index still forbids two at once: a move that loses that race is redone.
        """
        _check_stage(stage)
        self._ensure_indexes()
        key = _versioned_id(name, version)

        def move(session: Any) -> dict[str, Any]:
            if self._feature_sets.find_one({"_id": key}, session=session) is None:
                raise NotFound(f"no feature set {name!r} version {version}", {"name": name, "version": version})
            if stage is not None:
                self._feature_sets.update_many({"name": name, "stage": stage, "_id": {"$ne": key}},
                                               {"$set": {"stage": None}}, session=session)
            self._feature_sets.update_one({"_id": key}, {"$set": {"stage": stage}}, session=session)
            return self._feature_sets.find_one({"_id": key}, session=session)

        attempts_left = STAGE_MOVE_ATTEMPTS
        with _translated():
            while True:
                try:
                    return FeatureSetRecord.from_dict(_fields(self._atomically(move)))
                except errors.DuplicateKeyError:  # a concurrent move set `stage` on another version meanwhile
                    attempts_left -= 1
                    if not attempts_left:
                        raise

    # -- sources -------------------------------------------------------------

    def save_source(self, record: SourceRecord) -> SourceRecord:
        key = _versioned_id(record.name, record.version)
        return SourceRecord.from_dict(self._insert_or_get(self._sources, _record_doc(record, key), [{"_id": key}]))

    def source_versions(self, name: str) -> list[SourceRecord]:
        return self._versions(self._sources, name, SourceRecord.from_dict)

    def list_sources(self, offset: int = 0, limit: int = 50) -> Page[SourceRecord]:
        return self._newest_per_name(self._sources, offset, limit, SourceRecord.from_dict)

    # -- serving statistics --------------------------------------------------

    def save_serving_stats(self, etl_id: str, stats: dict[str, Any]) -> None:
        doc = {"updated_at": utc_now(), "stats": _json_safe(stats)}
        self._ensure_indexes()
        with _translated(), self._write_lock:
            try:
                self._serving_stats.replace_one({"_id": etl_id}, doc, upsert=True)
            except errors.DuplicateKeyError:  # two upserts raced to insert; now there is one to replace
                self._serving_stats.replace_one({"_id": etl_id}, doc, upsert=True)

    def get_serving_stats(self, etl_id: str) -> dict[str, Any] | None:
        self._ensure_indexes()
        with _translated():
            doc = self._serving_stats.find_one({"_id": etl_id})
        return None if doc is None else doc["stats"]

    # -- API keys ------------------------------------------------------------

    def save_api_key(self, record: ApiKeyRecord) -> ApiKeyRecord:
        self._ensure_indexes()
        with _translated(), self._write_lock:
            try:
                self._api_keys.insert_one(_record_doc(record, record.key_id))
            except errors.DuplicateKeyError as clash:
                raise InvalidInput("an API key with this key_id or key_hash exists",
                                   {"key_id": record.key_id}) from clash
        return record

    def find_api_key(self, key_hash: str) -> ApiKeyRecord | None:
        self._ensure_indexes()
        with _translated():
            doc = self._api_keys.find_one({"key_hash": key_hash})
        return None if doc is None else ApiKeyRecord.from_dict(_fields(doc))

    def list_api_keys(self) -> list[ApiKeyRecord]:
        self._ensure_indexes()
        with _translated():
            docs = list(self._api_keys.find().sort(OLDEST_FIRST))
        return [ApiKeyRecord.from_dict(_fields(doc)) for doc in docs]

    def revoke_api_key(self, key_id: str, revoked_at: str) -> ApiKeyRecord:
        self._ensure_indexes()
        with _translated(), self._write_lock:
            self._api_keys.update_one({"_id": key_id, "revoked_at": None}, {"$set": {"revoked_at": revoked_at}})
            doc = self._api_keys.find_one({"_id": key_id})
        if doc is None:
            raise NotFound(f"no API key with id {key_id!r}", {"key_id": key_id})
        return ApiKeyRecord.from_dict(_fields(doc))

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
            self._feature_sets.create_index([("name", pymongo.ASCENDING), ("version", pymongo.ASCENDING)],
                                            name="name_version")
            self._feature_sets.create_index([("name", pymongo.ASCENDING), ("stage", pymongo.ASCENDING)],
                                            unique=True, partialFilterExpression={"stage": {"$type": "string"}},
                                            name="one_version_per_stage")
            self._sources.create_index([("name", pymongo.ASCENDING), ("version", pymongo.ASCENDING)],
                                       unique=True, name="name_version_unique")
            self._api_keys.create_index("key_hash", unique=True, name="key_hash_unique")
            self._api_keys.create_index(OLDEST_FIRST, name="oldest")
        self._indexes_ready = True

    def _atomically(self, work: Callable[[Any], R]) -> R:
        """`work(session)` in a transaction if the deployment supports them, else `work(None)`
        (under the mongomock lock); a standalone server is detected on first use and remembered."""
        if self._transactions is not False:
            try:
                with self._client.start_session() as session:
                    result = session.with_transaction(work)
                self._transactions = True
                return result
            except errors.OperationFailure as err:
                if self._transactions or err.code != ILLEGAL_OPERATION:
                    raise
                log.info("MongoDB has no transactions here (standalone server); stage moves are not atomic")
                self._transactions = False
        with self._write_lock:
            return work(None)

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

    def _versions(self, collection: Any, name: str, parse: Callable[[dict[str, Any]], R]) -> list[R]:
        """Every version of `name` in a (name, version) keyed collection, oldest first, parsed."""
        self._ensure_indexes()
        with _translated():
            docs = list(collection.find({"name": name}).sort("version", pymongo.ASCENDING))
        return [parse(_fields(doc)) for doc in docs]

    def _newest_per_name(self, collection: Any, offset: int, limit: int,
                         parse: Callable[[dict[str, Any]], R]) -> Page[R]:
        """The newest version of each name in a (name, version) keyed collection, names in code point
        order, paged over names; `total` counts the names."""
        _check_paging(offset, limit)
        self._ensure_indexes()
        newest_per_name = [{"$sort": {"name": pymongo.ASCENDING, "version": pymongo.DESCENDING}},
                           {"$group": {"_id": "$name", "doc": {"$first": "$$ROOT"}}},
                           {"$sort": {"_id": pymongo.ASCENDING}}]
        with _translated():
            counted = list(collection.aggregate([{"$group": {"_id": "$name"}}, {"$count": "names"}]))
            total = counted[0]["names"] if counted else 0
            # $limit must be positive, so a zero limit reads nothing
            groups = list(collection.aggregate(
                [*newest_per_name, {"$skip": offset}, {"$limit": limit}])) if limit else []
        return Page([parse(_fields(group["doc"])) for group in groups], total, offset, limit)

    def _page(self, collection: Any, offset: int, limit: int, where: dict[str, Any],
              parse: Callable[[dict[str, Any]], R]) -> Page[R]:
        _check_paging(offset, limit)
        self._ensure_indexes()
        with _translated():
            total = collection.count_documents(where)
            # limit(0) means "no limit" to MongoDB, so a zero limit reads nothing
            docs = list(collection.find(where).sort(NEWEST_FIRST).skip(offset).limit(limit)) if limit else []
        return Page([parse(_fields(doc)) for doc in docs], total, offset, limit)
