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
    extra: dict[str, Any] = field(default_factory=dict)  # room for fitted state, expectations, stats

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "EtlRecord":
        values = _known_fields(cls, data)
        values["source"] = EtlSource(**_known_fields(EtlSource, values["source"]))
        return cls(**values)


T = TypeVar("T")


@dataclass(frozen=True)
class Page(Generic[T]):
    """One page of a listing, newest first."""

    items: list[T]
    total: int
    offset: int
    limit: int


class Catalog(ABC):
    """Keeps saved queries and ETLs. Every backend must:

    - make `save_*` put-if-absent and atomic: the id's first record wins, is returned
      to every later or concurrent caller, and a failed save leaves nothing behind;
    - raise `common.errors.NotFound` from `get_*` for an unknown id;
    - list newest first (by `created_at`, then id) with `offset`/`limit`; a negative offset or
      limit is InvalidInput, `limit=0` returns only the total;
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

    @abstractmethod
    def ping(self) -> None:
        """Return if the backend answers, else raise BackendUnavailable."""

    def close(self) -> None:
        """Release connections; the default does nothing."""
