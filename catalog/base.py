"""The catalog contract: records and the interface every backend implements.

Records are frozen dataclasses, never ORM rows or Mongo documents. Saves are
*put-if-absent*: ids are derived from content (the normalized SQL for a query,
the query id and code hash for an ETL), so saving the same thing twice returns
the record stored first, and concurrent saves converge on one record.
"""
from __future__ import annotations

import dataclasses
import datetime as dt
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

Column = dict[str, str]  # {"name": ..., "type": logical type}


def utc_now() -> str:
    """The `created_at` of every record: ISO-8601 UTC, millisecond precision, so text order is time order."""
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="milliseconds")


def _known_fields(cls: type, data: dict[str, Any]) -> dict[str, Any]:
    """The entries of `data` that are fields of `cls` (records written by newer code still load)."""
    return {f.name: data[f.name] for f in dataclasses.fields(cls) if f.name in data}


@dataclass(frozen=True)
class QueryRecord:
    """A saved SQL query and the output schema it produced on the warehouse."""

    query_id: str
    name: str
    sql: str
    sql_hash: str
    schema: list[Column]
    created_by: str
    created_at: str  # ISO-8601, UTC

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "QueryRecord":
        return cls(**_known_fields(cls, data))


@dataclass(frozen=True)
class EtlSource:
    """Where ETL code came from: a git file at a resolved commit, or an HTTP URL."""

    kind: str  # "git" or "http"
    url: str  # what the user gave (etl_path) or the repository URL
    repo: str | None = None
    ref: str | None = None
    commit: str | None = None
    path: str | None = None


@dataclass(frozen=True)
class EtlRecord:
    """A registered ETL: its exact source, the query it was trained on and its output schema."""

    etl_id: str
    name: str
    query_id: str
    source: EtlSource
    code: str
    code_sha256: str
    schema: list[Column]
    created_by: str
    created_at: str
    state: dict[str, Any] = field(default_factory=dict)  # what the ETL's fit() learned from the training set
    expectations: dict[str, Any] = field(default_factory=dict)  # column -> rules, declared by the ETL
    serving_policy: str = "reject"  # on an expectation violated while serving: "reject" (422) or "warn"
    training_stats: dict[str, Any] = field(default_factory=dict)  # column -> statistics of the training output
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "EtlRecord":
        values = _known_fields(cls, data)
        values["source"] = EtlSource(**_known_fields(EtlSource, values["source"]))
        return cls(**values)


STAGES = ("production", "staging")
SOURCE_KINDS = ("table", "request")


@dataclass(frozen=True)
class SourceRecord:
    """One immutable version of a declared source: a table of raw events the user owns.

    `columns` are ``{"name", "type", "nullable"}`` with logical types; `table` is the warehouse
    table that holds the rows (the source's name unless adopted under another); `kind` is
    ``"table"`` (rows stored and served from the realtime store) or ``"request"`` (in serving, the
    caller supplies the rows). Versions only grow by compatible changes (see `sources.definition`).
    """

    name: str
    version: int
    table: str
    columns: list[dict[str, Any]]
    entity_keys: list[str]
    event_time: str
    created_time: str | None = None
    hot_window_seconds: int | None = None
    kind: str = "table"
    description: str = ""
    tags: list[str] = field(default_factory=list)
    owner: str = ""
    created_by: str = "anonymous"
    created_at: str = ""

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "SourceRecord":
        return cls(**_known_fields(cls, data))

    def definition(self) -> tuple:
        """What makes two versions the same (everything but version, who and when)."""
        return (self.table, tuple((c["name"], c["type"], bool(c.get("nullable", True))) for c in self.columns),
                tuple(self.entity_keys), self.event_time, self.created_time, self.hot_window_seconds, self.kind,
                self.description, tuple(self.tags), self.owner)

    def column_types(self) -> list[tuple[str, str]]:
        """(column, logical type) in declared order: what the SQL layer types queries with."""
        return [(c["name"], c["type"]) for c in self.columns]


@dataclass(frozen=True)
class FeatureSetRecord:
    """One immutable version of a named feature set; only `stage` is ever changed, by an explicit call."""

    name: str
    version: int
    query_id: str
    etl_id: str
    index_key: str
    features: list[str]
    description: str
    tags: list[str]
    created_by: str
    created_at: str
    stage: str | None = None  # "production", "staging" or None; one version per stage and name

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "FeatureSetRecord":
        return cls(**_known_fields(cls, data))

    def definition(self) -> tuple:
        """What makes two versions the same (everything but version, stage, who and when)."""
        return (self.query_id, self.etl_id, self.index_key, tuple(self.features), self.description,
                tuple(self.tags))


@dataclass(frozen=True)
class ApiKeyRecord:
    """An API key: only the sha256 of its secret is stored."""

    key_id: str
    name: str
    role: str  # "admin", "scientist" or "serving"
    key_hash: str
    created_at: str
    revoked_at: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ApiKeyRecord":
        return cls(**_known_fields(cls, data))


T = TypeVar("T")


@dataclass(frozen=True)
class Page(Generic[T]):
    """One page of a listing, in the listing's order."""

    items: list[T]
    total: int
    offset: int
    limit: int


class Catalog(ABC):
    """Keeps saved queries, ETLs, feature sets, serving statistics and API keys. Every backend must:

    - make `save_query`, `save_etl`, `save_feature_set` and `save_source` put-if-absent and atomic: the id's
      first record wins, is returned to every later or concurrent caller, and a failed save
      leaves nothing behind (`save_serving_stats` replaces; `save_api_key` refuses duplicates);
    - raise `common.errors.NotFound` from `get_query`/`get_etl` for an unknown id;
    - list queries and ETLs newest first (by `created_at`, then id), feature sets and sources by
      name (code-point order), API keys oldest first; a negative offset or limit is InvalidInput,
      `limit=0` returns only the total;
    - open without failing when the server is down (only a malformed URL fails); calls fail
      with BackendUnavailable until it is back, and then work again without a restart;
    - translate driver failures into `common.errors.BackendUnavailable("catalog", ...)`.
    """

    backend: str = "catalog"

    @abstractmethod
    def save_query(self, record: QueryRecord) -> QueryRecord:
        """Store `record` unless its `query_id` or `sql_hash` exists; return the stored record."""

    @abstractmethod
    def get_query(self, query_id: str) -> QueryRecord:
        """The record with this id, or NotFound."""

    @abstractmethod
    def list_queries(self, offset: int = 0, limit: int = 50) -> Page[QueryRecord]:
        """A page of saved queries, newest first."""

    @abstractmethod
    def save_etl(self, record: EtlRecord) -> EtlRecord:
        """Store `record` unless its `etl_id` exists; return the stored record."""

    @abstractmethod
    def get_etl(self, etl_id: str) -> EtlRecord:
        """The record with this id, or NotFound."""

    @abstractmethod
    def list_etls(self, offset: int = 0, limit: int = 50, query_id: str | None = None) -> Page[EtlRecord]:
        """A page of ETLs, newest first, optionally only those trained on `query_id`."""

    # -- feature sets ------------------------------------------------------------------------

    @abstractmethod
    def save_feature_set(self, record: FeatureSetRecord) -> FeatureSetRecord:
        """Store `record` unless (name, version) exists; return the stored record (put-if-absent).

        The record is stored with stage None whatever `record.stage` says.
        """

    @abstractmethod
    def feature_set_versions(self, name: str) -> list[FeatureSetRecord]:
        """Every version of `name`, oldest first; [] when the name is unknown."""

    @abstractmethod
    def list_feature_sets(self, offset: int = 0, limit: int = 50) -> Page[FeatureSetRecord]:
        """The newest version of each name, names in alphabetical order, paged over names."""

    @abstractmethod
    def set_feature_set_stage(self, name: str, version: int, stage: str | None) -> FeatureSetRecord:
        """Give `version` the `stage` (taking it from any other version of `name`) or clear it.

        NotFound for an unknown name or version, InvalidInput for a stage not in STAGES; the
        change is atomic where the backend allows.
        """

    # -- sources -------------------------------------------------------------------------------

    @abstractmethod
    def save_source(self, record: SourceRecord) -> SourceRecord:
        """Store `record` unless (name, version) exists; return the stored record (put-if-absent, atomic)."""

    @abstractmethod
    def source_versions(self, name: str) -> list[SourceRecord]:
        """Every version of the source `name`, oldest first; [] when the name is unknown."""

    @abstractmethod
    def list_sources(self, offset: int = 0, limit: int = 50) -> Page[SourceRecord]:
        """The newest version of each source, names in code-point order, paged over names."""

    # -- serving statistics --------------------------------------------------------------------

    @abstractmethod
    def save_serving_stats(self, etl_id: str, stats: dict[str, Any]) -> None:
        """Replace the persisted serving statistics of `etl_id` (a JSON-safe mapping)."""

    @abstractmethod
    def get_serving_stats(self, etl_id: str) -> dict[str, Any] | None:
        """The persisted serving statistics of `etl_id`, or None."""

    # -- API keys ------------------------------------------------------------------------------

    @abstractmethod
    def save_api_key(self, record: ApiKeyRecord) -> ApiKeyRecord:
        """Store a new key; InvalidInput if its key_id or key_hash exists."""

    @abstractmethod
    def find_api_key(self, key_hash: str) -> ApiKeyRecord | None:
        """The key with this hash (revoked or not), or None."""

    @abstractmethod
    def list_api_keys(self) -> list[ApiKeyRecord]:
        """Every key, oldest first."""

    @abstractmethod
    def revoke_api_key(self, key_id: str, revoked_at: str) -> ApiKeyRecord:
        """Mark the key revoked (idempotent: an already revoked key keeps its first time); NotFound if unknown."""

    @abstractmethod
    def ping(self) -> None:
        """Return if the backend answers, else raise BackendUnavailable."""

    def close(self) -> None:
        """Release connections; the default does nothing."""
