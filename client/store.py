"""`FeatureStore`: the service's endpoints as Python methods, rows as pandas DataFrames."""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Iterable
from urllib.parse import quote

import pandas as pd

from client.frames import Column, records_frame
from client.ingest import CHUNK_ROWS, arrow_chunks, json_rows, summed
from client.transport import ARROW_STREAM, Transport

Scalar = str | int | float | bool


@dataclass(frozen=True)
class TrainingResult:
    """A training run: the saved ids (None unless saved), the logical schema and the rows (None if not asked)."""

    query_id: str | None
    etl_id: str | None
    schema: list[Column] | None
    data: pd.DataFrame | None
    warnings: list[dict[str, Any]] = field(default_factory=list)  # e.g. a source's hot window (code hot_window)


@dataclass(frozen=True)
class Page:
    """One page of catalog records (dicts), newest first, out of `total`."""

    items: list[dict[str, Any]]
    total: int
    offset: int
    limit: int

    def frame(self) -> pd.DataFrame:
        """The items as a DataFrame, one row per record."""
        return pd.DataFrame.from_records(self.items)


class FeatureStore:
    """A client of the feature store service at `url` (``http://host:port``, with or without ``/v1.0``).

    Every call has `timeout` seconds. Reads and idempotent calls (training runs:
    their saved ids derive from content; realtime lookups; declaring a source;
    ingesting or loading with a `batch_id`, which the service writes once) are
    retried up to `retries` more times with exponential `backoff` on connection
    errors and 502/503/504; `publish`, ingesting or loading without a `batch_id`
    and any 4xx never are. Errors are the classes of `common.errors` (see
    `client.errors`). Use as a context manager or `close()`.
    """

    def __init__(self, url: str, api_key: str | None = None, timeout: float = 30.0, retries: int = 3,
                 backoff: float = 0.2):
        self._http = Transport(url, api_key, timeout, retries, backoff)
        self._schemas: dict[str, list[Column]] = {}  # query/etl id → training schema (ids are immutable)

    @property
    def url(self) -> str:
        """The API root requests go to (``…/v1.0``)."""
        return self._http.root

    def __enter__(self) -> FeatureStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the HTTP session."""
        self._http.close()

    def health(self) -> dict[str, Any]:
        """Each backend's state; raises `BackendUnavailable` (details: the checks) when one is down."""
        return self._http.call("GET", "/health", retry=True)

    def publish(self, n_flows: int, seed: int | None = None) -> dict[str, Any]:
        """Generate `n_flows` demo flows: ``{n_flows, seed, written, duplicate}``. The same `seed` and
        `n_flows` again write nothing (``duplicate`` true), another `n_flows` is `InvalidInput`; unseeded
        calls are new data, so never retried."""
        params = {"n_flows": n_flows, **({"seed": seed} if seed is not None else {})}
        return self._http.call("PUT", "/publish", retry=False, params=params)

    def query_train(self, query: str, name: str | None = None, save: bool = False,
                    include_data: bool = True, arrow: bool = False, hot_window: bool = False) -> TrainingResult:
        """Run SQL on the warehouse; `save` keeps it (same SQL, same `query_id`).

        `arrow=True` streams the rows as Arrow IPC (no row limit, read straight into a DataFrame);
        `hot_window=True` reads only the rows each source's hot window holds now, as serving does.
        """
        body = {"query": query, **({"query_name": name} if name is not None else {})}
        if arrow:
            table, headers = self._http.call("POST", "/query/train", retry=True, body=body,
                                             params={**_flags(save, True, hot_window), "format": "arrow"})
            return TrainingResult(headers.get("X-Query-Id"), None, None, table.to_pandas())
        payload = self._http.call("POST", "/query/train", retry=True, body=body,
                                  params=_flags(save, include_data, hot_window))
        return self._training(payload, payload.get("query_id"), None)

    def query_realtime(self, query_id: str, index_key: str, index_value: Scalar,
                       request_rows: dict[str, list[dict[str, Any]]] | None = None, log: bool = False) -> pd.DataFrame:
        """One entity's rows of a saved query, from hot data, typed like its training result
        (`NotFound`, code ``entity_not_found``, when it has none).

        `request_rows` ({source: [row, …]}) supply the rows of the request sources the query reads;
        `log=True` also appends them to those sources."""
        body = {"query_id": query_id, "index_key": index_key, "index_value": _scalar(index_value),
                **_request(request_rows, log)}
        payload = self._http.call("POST", "/query/realtime", retry=not log, body=body)
        return records_frame(payload["data"], self._schema("queries", query_id))

    def extract_train(self, query_id: str, etl_path: str | os.PathLike[str] | None = None, *,
                      repo: str | None = None, ref: str | None = None, path: str | None = None,
                      name: str | None = None, save: bool = False, include_data: bool = True,
                      arrow: bool = False, hot_window: bool = False, allow_mismatch: bool = False
                      ) -> TrainingResult:
        """Run an ETL from git on a saved query's result; `save` registers it (`etl_id`) after the
        service replayed training entities through serving: a mismatch raises `TrainServeMismatch`
        (its ``details["consistency"]`` is the report) unless `allow_mismatch`.

        Give `etl_path` (a file in a local repository, ``git+<url>@<ref>#<path>``, or an
        http(s) URL) or `repo` and `path` (and optionally `ref`).
        """
        structured = any(part is not None for part in (repo, ref, path))
        if (etl_path is not None) == structured or (structured and (repo is None or path is None)):
            raise ValueError("give either etl_path or repo and path (and optionally ref)")
        body: dict[str, Any] = {"query_id": query_id}
        if etl_path is not None:
            body["etl_path"] = os.fspath(etl_path)
        else:
            body["etl"] = {"repo": repo, "path": path, **({"ref": ref} if ref else {})}
        if name is not None:
            body["name"] = name
        accept = {"allow_mismatch": "true"} if allow_mismatch else {}
        if arrow:
            table, headers = self._http.call("POST", "/extract/train", retry=True, body=body,
                                             params={**_flags(save, True, hot_window), **accept, "format": "arrow"})
            return TrainingResult(query_id, headers.get("X-Etl-Id"), None, table.to_pandas())
        payload = self._http.call("POST", "/extract/train", retry=True, body=body,
                                  params={**_flags(save, include_data, hot_window), **accept})
        return self._training(payload, query_id, payload.get("etl_id"))

    def extract_realtime(self, query_id: str, etl_id: str, index_key: str, index_value: Scalar,
                         request_rows: dict[str, list[dict[str, Any]]] | None = None, log: bool = False
                         ) -> pd.DataFrame:
        """One entity's features from hot data, schema-checked by the service; warnings in ``.attrs``
        (`request_rows` and `log` as for `query_realtime`)."""
        body = {"query_id": query_id, "etl_id": etl_id, "index_key": index_key,
                "index_value": _scalar(index_value), **_request(request_rows, log)}
        payload = self._http.call("POST", "/extract/realtime", retry=not log, body=body)
        frame = records_frame(payload["data"], self._schema("etls", etl_id))
        if payload.get("warnings"):
            frame.attrs["warnings"] = payload["warnings"]
        return frame

    def queries(self, offset: int = 0, limit: int = 50) -> Page:
        """A page of saved queries."""
        return _page(self._http.call("GET", "/queries", retry=True, params={"offset": offset, "limit": limit}))

    def query(self, query_id: str) -> dict[str, Any]:
        """One saved query: its SQL, schema and who saved it when."""
        return self._http.call("GET", f"/queries/{quote(query_id, safe='')}", retry=True)

    def etls(self, offset: int = 0, limit: int = 50, query_id: str | None = None) -> Page:
        """A page of registered ETLs (without code), optionally only those of `query_id`."""
        params: dict[str, Any] = {"offset": offset, "limit": limit}
        if query_id is not None:
            params["query_id"] = query_id
        return _page(self._http.call("GET", "/etls", retry=True, params=params))

    def etl(self, etl_id: str) -> dict[str, Any]:
        """One ETL: its source (repository, commit, path), code and schema."""
        return self._http.call("GET", f"/etls/{quote(etl_id, safe='')}", retry=True)

    def plan_query(self, sql: str) -> dict[str, Any]:
        """``{query_id, exists, schema}`` of `sql`, checked as a save would check it; nothing is saved."""
        return self._http.call("POST", "/query/plan", retry=True, body={"query": sql})

    def plan_etl(self, query_id: str, location: dict[str, Any]) -> dict[str, Any]:
        """``{etl_id, exists, source, code_sha256}`` of the ETL at `location` (``{"etl_path": …}`` or
        ``{"etl": {repo, ref, path}}``); nothing is run or saved."""
        return self._http.call("POST", "/extract/plan", retry=True, body={"query_id": query_id, **location})

    def skew(self, etl_id: str) -> dict[str, Any]:
        """Training vs serving statistics per feature of an ETL, with the flagged features."""
        return self._http.call("GET", f"/etls/{quote(etl_id, safe='')}/skew", retry=True)

    # -- feature sets --------------------------------------------------------------------------

    def create_feature_set(self, name: str, query_id: str, etl_id: str, features: list[str] | None = None,
                           index_key: str | None = None, description: str = "",
                           tags: list[str] | None = None) -> dict[str, Any]:
        """A new version of `name` (or its newest version when the definition is unchanged)."""
        body: dict[str, Any] = {"name": name, "query_id": query_id, "etl_id": etl_id, "description": description,
                                "tags": list(tags or [])}
        if features is not None:
            body["features"] = list(features)
        if index_key is not None:
            body["index_key"] = index_key
        return self._http.call("POST", "/feature-sets", retry=True, body=body)

    def feature_sets(self, offset: int = 0, limit: int = 50) -> Page:
        """The newest version of each feature set."""
        return _page(self._http.call("GET", "/feature-sets", retry=True,
                                     params={"offset": offset, "limit": limit}))

    def feature_set_versions(self, name: str) -> list[dict[str, Any]]:
        """Every version of a feature set, oldest first, with its stage."""
        return self._http.call("GET", f"/feature-sets/{quote(name, safe='')}", retry=True)["versions"]

    def set_stage(self, name: str, version: int, stage: str | None) -> dict[str, Any]:
        """Mark a version "production" or "staging", or clear its stage with None."""
        return self._http.call("PUT", f"/feature-sets/{quote(name, safe='')}/versions/{int(version)}/stage",
                               retry=True, body={"stage": stage or "none"})

    def feature_set_realtime(self, name: str, index_value: Scalar, version: int | None = None,
                             request_rows: dict[str, list[dict[str, Any]]] | None = None, log: bool = False
                             ) -> pd.DataFrame:
        """One entity's features of a feature set (default: its production version, else the newest)."""
        body: dict[str, Any] = {"index_value": _scalar(index_value), **_request(request_rows, log)}
        if version is not None:
            body["version"] = int(version)
        payload = self._http.call("POST", f"/feature-sets/{quote(name, safe='')}/realtime", retry=not log, body=body)
        frame = records_frame(payload["data"], payload.get("schema"))
        frame.attrs.update(version=payload["version"], warnings=payload.get("warnings", []))
        return frame

    def feature_set_train(self, name: str, version: int | None = None, arrow: bool = False) -> pd.DataFrame:
        """The training set of a feature-set version, its features only (`arrow`: streamed, no row limit)."""
        body = {} if version is None else {"version": int(version)}
        if arrow:
            table, headers = self._http.call("POST", f"/feature-sets/{quote(name, safe='')}/train", retry=True,
                                             body=body, params={"format": "arrow"})
            frame = table.to_pandas()
            frame.attrs["version"] = int(headers["X-Feature-Set-Version"])
            return frame
        payload = self._http.call("POST", f"/feature-sets/{quote(name, safe='')}/train", retry=True, body=body)
        frame = records_frame(payload["data"], payload.get("schema"))
        frame.attrs["version"] = payload["version"]
        return frame

    # -- point-in-time training sets and exports ----------------------------------------------

    def training_set(self, spine: pd.DataFrame | Any = None, index_key: str = "", time: str | None = None, *,
                     spine_query: str | None = None, query: str | None = None, query_id: str | None = None,
                     etl_path: str | os.PathLike[str] | None = None, feature_set: str | None = None,
                     version: int | None = None, time_zone: str | None = None, save: bool = False,
                     export: dict[str, Any] | None = None, progress: bool = False) -> pd.DataFrame | dict[str, Any]:
        """A point-in-time training set: for each row of `spine` (a DataFrame or Arrow table with the key
        column `index_key`, the as-of time column `time` and any labels), what serving returned for its
        key at its time; without `time`, as of now (batch scoring). The answer keeps every spine row in
        order, its columns first, then the features (nulls where nothing existed yet). Instead of
        `spine`, `spine_query` selects the spine from the sources (read-only SQL, run by the service).

        Of `query` (SQL), `query_id` with `etl_path` (an ETL; `save` registers it, fitted on these rows)
        and `feature_set` (with `version`), give one. With `export` ({path: 'x.parquet'} under the
        service's EXPORT_DIR, or {table: 'name'}) the set is written there instead and the finished job
        is returned (`progress` prints rows written to stderr while it runs).
        """
        if (spine is None) == (spine_query is None) or not index_key:
            raise ValueError("give index_key and one of spine (a DataFrame or Arrow table) or spine_query")
        path, body = self._training_target(query, query_id, etl_path, feature_set, version)
        rows = {"query": spine_query} if spine_query is not None else {"spine_id": self.upload_spine(spine)}
        body["spine"] = {"index_key": index_key, **rows,
                         **({"time": time} if time is not None else {}),
                         **({"time_zone": time_zone} if time_zone is not None else {})}
        params = {"save": "true"} if save else {}
        if export is not None:
            job = self._http.call("POST", path, retry=False, body={**body, "export": export}, params=params)
            return self.wait_for_job(job["job_id"], progress=progress)
        table, _ = self._http.call("POST", path, retry=True, body=body, params={**params, "format": "arrow"})
        return table.to_pandas()

    def upload_spine(self, spine: pd.DataFrame | Any) -> str:
        """Upload a training spine (DataFrame or Arrow table) once; its `spine_id` for training calls."""
        answer = self._http.call("POST", "/spines", retry=True, body=next(iter(arrow_chunks(spine, None))),
                                 content_type=ARROW_STREAM)
        return answer["spine_id"]

    def job(self, job_id: str) -> dict[str, Any]:
        """A background job (an export): its status, rows written, and result or error."""
        return self._http.call("GET", f"/jobs/{quote(job_id, safe='')}", retry=True)

    def wait_for_job(self, job_id: str, progress: bool = False, poll_seconds: float = 0.5,
                     timeout: float | None = None) -> dict[str, Any]:
        """Poll a job until it ends; its final state. A failed job raises its error (the service's class)."""
        import sys
        import time as clock

        from client.errors import error_from_body

        deadline = None if timeout is None else clock.monotonic() + timeout
        while True:
            job = self.job(job_id)
            if progress:
                print(f"\r{job_id}: {job['status']}, {job['progress']['rows_written']:,} rows written",
                      end="", file=sys.stderr, flush=True)
            if job["status"] != "running":
                if progress:
                    print(file=sys.stderr)
                if job["status"] == "failed":
                    raise error_from_body(job["error"])
                return job
            if deadline is not None and clock.monotonic() > deadline:
                raise TimeoutError(f"job {job_id} still running after {timeout} s")
            clock.sleep(poll_seconds)

    @staticmethod
    def _training_target(query: str | None, query_id: str | None, etl_path: Any, feature_set: str | None,
                         version: int | None) -> tuple[str, dict[str, Any]]:
        """The training endpoint and body for a query, an ETL or a feature set."""
        if sum(x is not None for x in (query, etl_path, feature_set)) != 1 or (etl_path is None) != (query_id is None):
            raise ValueError("give one of query, query_id with etl_path, or feature_set")
        if query is not None:
            return "/query/train", {"query": query}
        if etl_path is not None:
            return "/extract/train", {"query_id": query_id, "etl_path": os.fspath(etl_path)}
        return f"/feature-sets/{quote(feature_set, safe='')}/train", {} if version is None else {"version": version}

    # -- sources -------------------------------------------------------------------------------

    def declare_source(self, name: str, *, columns: list[dict[str, Any]] | None = None, entity_keys: list[str],
                       event_time: str, table: str | None = None, created_time: str | None = None,
                       hot_window_seconds: int | None = None, kind: str = "table", description: str = "",
                       tags: Iterable[str] = (), owner: str = "") -> dict[str, Any]:
        """Declare source `name` with `columns` (``{name, type, nullable?}``), or without them adopt the
        warehouse table `table` (default: `name`) as it is; the stored version's record.

        The same definition again answers its newest version (so this is retried); a compatible change
        makes the next version; an incompatible one is `SourceIncompatible` (details: ``diff``).
        """
        body: dict[str, Any] = {"name": name, "entity_keys": list(entity_keys), "event_time": event_time,
                                "kind": kind, "description": description, "tags": list(tags), "owner": owner}
        optional = {"columns": None if columns is None else [dict(column) for column in columns], "table": table,
                    "created_time": created_time, "hot_window_seconds": hot_window_seconds}
        body.update({key: value for key, value in optional.items() if value is not None})  # None: the default
        return self._http.call("POST", "/sources", retry=True, body=body)

    def sources(self, offset: int = 0, limit: int = 50) -> Page:
        """A page of sources (the newest version of each), by name."""
        return _page(self._http.call("GET", "/sources", retry=True, params={"offset": offset, "limit": limit}))

    def source(self, name: str) -> dict[str, Any]:
        """One source: its newest version, its versions, and its rows in the warehouse and the realtime store."""
        return self._http.call("GET", _source_path(name), retry=True)

    def ingest(self, name: str, frame: pd.DataFrame, *, batch_id: str | None = None,
               chunk_rows: int = CHUNK_ROWS) -> dict[str, Any]:
        """Write a DataFrame's rows into source `name`, sent as an Arrow IPC stream (see `client.ingest`).

        A frame of more than `chunk_rows` rows goes in calls of that many rows, each its own transaction
        with batch id ``f"{batch_id}:{i}"``; the answer is their sum. With a `batch_id` a call is retried
        and a batch written before writes nothing (``duplicate``); without one it is never retried. If a
        call fails, calling again with the same `batch_id` writes only the chunks not written yet.
        """
        chunked = len(frame) > chunk_rows
        answers = []
        for i, body in enumerate(arrow_chunks(frame, chunk_rows)):  # encoded one chunk at a time
            part = f"{batch_id}:{i}" if chunked and batch_id is not None else batch_id
            answers.append(self._http.call("POST", _source_path(name, "rows"), retry=part is not None,
                                           params=None if part is None else {"batch_id": part}, body=body,
                                           content_type=ARROW_STREAM))
        return summed(answers, batch_id)

    def ingest_rows(self, name: str, rows: list[dict[str, Any]], batch_id: str | None = None) -> dict[str, Any]:
        """Write rows (dicts keyed by column; datetimes need a zone) into source `name` as JSON; retried only
        with a `batch_id`."""
        body = {"rows": json_rows(rows), **({"batch_id": batch_id} if batch_id is not None else {})}
        return self._http.call("POST", _source_path(name, "rows"), retry=batch_id is not None, body=body)

    def load(self, name: str, path: str, format: str | None = None, batch_id: str | None = None) -> dict[str, Any]:
        """Bulk-load a Parquet or CSV file (or folder) under the service's LOAD_DIR into source `name`;
        retried only with a `batch_id`."""
        body = {"path": path, **({"format": format} if format else {}),
                **({"batch_id": batch_id} if batch_id is not None else {})}
        return self._http.call("POST", _source_path(name, "load"), retry=batch_id is not None, body=body)

    def _training(self, payload: dict[str, Any], query_id: str | None, etl_id: str | None) -> TrainingResult:
        schema = payload.get("schema")
        saved_id = payload.get("etl_id") or payload.get("query_id")
        if saved_id and schema:
            self._schemas[saved_id] = schema
        data = payload.get("data")
        return TrainingResult(query_id, etl_id, schema, None if data is None else records_frame(data, schema),
                              payload.get("warnings", []))

    def _schema(self, kind: str, record_id: str) -> list[Column] | None:
        if record_id not in self._schemas:
            record = self.query(record_id) if kind == "queries" else self.etl(record_id)
            self._schemas[record_id] = record.get("schema") or []
        return self._schemas[record_id]


def _flags(save: bool, include_data: bool, hot_window: bool = False) -> dict[str, str]:
    flags = {"save": str(bool(save)).lower(), "include_data": str(bool(include_data)).lower()}
    return {**flags, "hot_window": "true"} if hot_window else flags


def _request(request_rows: dict[str, list[dict[str, Any]]] | None, log: bool) -> dict[str, Any]:
    """The request-data fields of a realtime call (none when there are no rows and no log)."""
    fields: dict[str, Any] = {}
    if request_rows is not None:
        fields["request_rows"] = {name: json_rows(rows) for name, rows in request_rows.items()}
    if log:
        fields["log"] = True
    return fields


def _scalar(value: Any) -> Any:
    """A JSON-ready entity key: numpy/pandas scalars become Python ones."""
    return value.item() if hasattr(value, "item") and not isinstance(value, (str, bytes)) else value


def _source_path(name: str, *rest: str) -> str:
    return "/".join(["/sources", quote(name, safe=""), *rest])


def _page(payload: dict[str, Any]) -> Page:
    return Page(payload["items"], payload["total"], payload["offset"], payload["limit"])
