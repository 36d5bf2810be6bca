"""The feature service: the flows behind the endpoints, free of HTTP.

Train and serve share every step that can be shared: one SQL tree per saved
query (run on the warehouse for training, wrapped in a point lookup for
serving), one stored ETL source (verified by sha256, loaded once), one schema
function for both outputs. Records are immutable, so they are cached by id.
"""
from __future__ import annotations

import dataclasses
import hashlib
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import TYPE_CHECKING, Any, Callable, Iterator, Mapping, TypeVar

import pandas as pd

from catalog.base import Catalog, EtlRecord, Page, QueryRecord, utc_now
from app.replay import RegistrationReplay, ReplayOptions, TrainingRun
from app.serving_stats import ServingStats
from app.sources import SourceService
from app.spine import SpineSpec, SpineUploads
from app.training import PointInTime
from app.training_stream import BatchedTraining
from common.errors import (BackendUnavailable, ExpectationsFailed, FeatureStoreError, InvalidInput, InvalidQuery, NotFound,
                           ResultTooLarge, SchemaMismatch, TrainServeMismatch)
from common.frames import column_dtypes, column_names, unique_names
from etl.runner import EtlRunner, named_features
from etl.source import EtlFetcher, FetchedEtl
from checks.consistency import dtype_names, plain_value, rows_digest, shadow_mismatches, with_training_dtypes
from checks.expectations import check_expectations, validate_expectations
from checks.schema import SchemaPlan, compare_schemas, frame_schema, plan_allows, schema_plan, served_schema
from checks.skew import skew_report
from checks.stats import ServingWindow, frame_stats
from sql.prepared import PreparedQuery, prepare_query
from realtime.base import RealtimeStore
from warehouse import Warehouse

if TYPE_CHECKING:
    from app.distributed_transform import DaskEngine

K = TypeVar("K")
V = TypeVar("V")
SAMPLE_ROWS = 1000  # rows a save-only request reads to learn a query's schema


class _BoundedCache(OrderedDict[K, V]):
    """A small thread-safe LRU map for immutable records and prepared statements."""

    def __init__(self, size: int):
        super().__init__()
        self.size = size
        self.lock = threading.Lock()

    def get_or_make(self, key: K, make: Callable[[], V]) -> V:
        with self.lock:
            if key in self:
                self.move_to_end(key)
                return self[key]
        value = make()
        with self.lock:
            self[key] = value
            while len(self) > self.size:
                self.popitem(last=False)
        return value


@dataclass(frozen=True)
class ServiceOptions:
    """Limits and thresholds the service works with (from the settings)."""

    max_response_rows: int = 100_000
    max_publish_flows: int = 100_000
    max_spine_rows: int = 10_000_000
    skew_thresholds: dict[str, float] = field(default_factory=lambda: {
        "psi": 0.2, "mean_shift_std": 0.5, "null_rate_change": 0.1})
    skew_min_samples: int = 50

    @classmethod
    def from_settings(cls, settings: Mapping[str, Any]) -> "ServiceOptions":
        return cls(settings["MAX_RESPONSE_ROWS"], settings["MAX_PUBLISH_FLOWS"], settings["MAX_SPINE_ROWS"],
                   {"psi": settings["SKEW_PSI_THRESHOLD"], "mean_shift_std": settings["SKEW_MEAN_SHIFT_THRESHOLD"],
                    "null_rate_change": settings["SKEW_NULL_RATE_THRESHOLD"]}, settings["SKEW_MIN_SAMPLES"])


@dataclass(frozen=True)
class RequestData:
    """Rows the caller supplies for request sources (`{source: [row, …]}`), and whether to keep them."""

    rows: Any = None
    log: bool = False


@dataclass(frozen=True)
class EtlLocation:
    """Where to fetch ETL code: an `etl_path` string, or a structured repo/ref/path."""

    etl_path: str | None = None
    repo: str | None = None
    ref: str | None = None
    path: str | None = None


@dataclass(frozen=True)
class TrainingEtl:
    """An ETL fetched for a training run: its query, code, id, declarations and registration (if any)."""

    query: QueryRecord
    fetched: FetchedEtl
    etl_id: str
    expectations: dict[str, Any]
    policy: str
    prepared: PreparedQuery
    registered: EtlRecord | None

    @property
    def code(self) -> str:
        return self.fetched.code

    @property
    def code_sha256(self) -> str:
        return self.fetched.code_sha256


def query_id_of(prepared: PreparedQuery) -> str:
    """A query's id: derived from its normalized SQL, so the same query always has the same id."""
    return "q_" + prepared.sql_hash[:16]


def etl_id_of(query_id: str, code_sha256: str) -> str:
    """An ETL's id: derived from the query it runs on and its exact code."""
    return "e_" + hashlib.sha256(f"{query_id}:{code_sha256}".encode()).hexdigest()[:16]


def _not_saved(error: NotFound, save: str) -> NotFound:
    """An unknown id's 404, saying how ids come to exist: a run without save=true (or a plan) stores nothing."""
    return NotFound(f"{error.message}; an id exists once saved ({save}): a run without save=true stores "
                    "nothing, and the id a plan shows exists only after a save", error.details)


def _train_serve_mismatch(etl_id: str, report: dict[str, Any], advice: str) -> TrainServeMismatch:
    """The 409 of a replay that found differences: which columns, stage by stage, and the report (without
    its shadow sample) in the details."""
    parts = [f"{label} {report[field]}" for label, field in (
        ("features", "mismatched_columns"), ("query columns (warehouse vs realtime engine)", "query_mismatched_columns"),
        ("nondeterministic features", "nondeterministic_columns")) if report[field]]
    if report["column_order_mismatches"]:
        parts.append("the column order")
    return TrainServeMismatch("replayed through the serving path, training entities get other values than in "
                              f"training: {'; '.join(parts)}; {advice}",
                              {"etl_id": etl_id, "consistency": {k: v for k, v in report.items() if k != "shadow"}})


def _is_utc(zone: Any) -> bool:
    """True for UTC under any of its names (UTC, Etc/UTC, …): no offset in winter or summer."""
    return zone is not None and all(pd.Timestamp(day, tz=zone).utcoffset() == pd.Timedelta(0)
                                    for day in ("2026-01-01", "2026-07-01"))


def _coerce_index_value(value: Any, column_type: str, key: str) -> Any:
    """Turn `index_value` into the type of the key column, or raise InvalidInput."""
    try:
        if value is None:
            raise ValueError
        if column_type == "integer":
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise ValueError
            return int(value)
        if column_type == "float":
            if isinstance(value, bool):
                raise ValueError
            return float(value)
        if column_type == "boolean":
            if isinstance(value, bool):
                return value
            return {"true": True, "false": False}[str(value).lower()]
        if isinstance(value, (dict, list)):
            raise ValueError
        return str(value)
    except (ValueError, KeyError, OverflowError, TypeError):
        raise InvalidInput(f"index_value {value!r} is not a valid {column_type} for {key!r}",
                           {"index_key": key, "expected_type": column_type}) from None


class FeatureService:
    """Queries, ETLs, publishing and health over the catalog, warehouse and realtime store."""

    def __init__(self, catalog: Catalog, warehouse: Warehouse, realtime: RealtimeStore, sources: SourceService,
                 fetcher: EtlFetcher, runner: EtlRunner, stats: ServingStats, options: ServiceOptions,
                 spine_uploads: SpineUploads | None = None, replay: ReplayOptions | None = None,
                 training_engine: DaskEngine | None = None):
        self.catalog = catalog
        self.sources = sources
        self.warehouse = warehouse
        self.realtime = realtime
        self.fetcher = fetcher
        self.runner = runner
        self.stats = stats
        self.options = options
        self._queries: _BoundedCache[str, QueryRecord] = _BoundedCache(1024)
        self._etls: _BoundedCache[str, EtlRecord] = _BoundedCache(1024)
        self._shadows: _BoundedCache[str, dict[str, dict[str, Any]]] = _BoundedCache(1024)
        self._schema_plans: _BoundedCache[tuple[int, tuple], tuple[list[dict[str, str]], SchemaPlan]] = \
            _BoundedCache(4096)
        self.spine_uploads = spine_uploads
        self.point_in_time = PointInTime(self, spine_uploads, options.max_spine_rows)
        self.batched_training = BatchedTraining(self)
        self.training_engine = training_engine  # None: a batch's transform runs here (app/distributed_transform.py)
        self.replay = RegistrationReplay(self, replay or ReplayOptions())

    # -- queries ---------------------------------------------------------------------------------

    def train_query(self, sql: str, name: str | None, save: bool, include_data: bool = True,
                    created_by: str = "anonymous", *, hot_window: bool = False, spine: SpineSpec | None = None
                    ) -> tuple[QueryRecord | None, list[dict[str, str]], pd.DataFrame | None]:
        """Run `sql` on the warehouse; with `save`, keep it (idempotently) with its output schema.

        Returns the stored record (None unless saved), the output schema and the rows (None
        unless `include_data`). With a `spine`, the rows are the query as of each spine row.
        """
        prepared = prepare_query(sql, self.warehouse.dialect)
        if save:
            self._check_declared(prepared)  # before the warehouse, which may not have the table at all
        if spine is not None:
            record, schema = self._query_for_spine(prepared, sql, name, save, created_by)
            keyed = self.point_in_time.spine(spine, schema, self.options.max_response_rows if include_data else None)
            frame = self.point_in_time.query_frame(prepared, keyed, self.options.max_response_rows)
            return record, frame_schema(frame), frame if include_data else None
        if include_data:
            frame = self.warehouse.query(self._training_sql(prepared, hot_window),
                                         max_rows=self.options.max_response_rows)
        else:
            frame = self._sample(prepared)
        schema = self._query_schema(prepared, frame)
        record = None
        if save:
            self._check_time_zones(frame)
            self._check_servable(prepared, schema)
            record = self.catalog.save_query(QueryRecord(
                query_id=query_id_of(prepared), name=name or "unnamed", sql=sql, sql_hash=prepared.sql_hash,
                schema=schema, created_by=created_by, created_at=utc_now()))
        return record, record.schema if record else schema, frame if include_data else None

    def query_batches(self, sql: str, name: str | None, save: bool, created_by: str = "anonymous", *,
                      hot_window: bool = False, spine: SpineSpec | None = None
                      ) -> tuple[QueryRecord | None, Any, Iterator[Any]]:
        """Like `train_query`, but the rows come as Arrow record batches straight from the warehouse,
        with no row limit: (the record if saved, the Arrow schema, the batches)."""
        prepared = prepare_query(sql, self.warehouse.dialect)
        if spine is not None:
            record, schema = self._query_for_spine(prepared, sql, name, save, created_by)
            return (record, *self.point_in_time.query_batches(prepared, self.point_in_time.spine(spine, schema)))
        record = self.train_query(sql, name, True, False, created_by)[0] if save else None
        schema, batches = self.warehouse.query_batches(self._training_sql(prepared, hot_window))
        return record, schema, batches

    def _query_for_spine(self, prepared: PreparedQuery, sql: str, name: str | None, save: bool, created_by: str
                         ) -> tuple[QueryRecord | None, list[dict[str, str]]]:
        """The query saved (if asked) and its output schema, learnt from a sample, before a spine runs it."""
        if save:
            record = self.train_query(sql, name, True, False, created_by)[0]
            return record, record.schema
        inferred = prepared.output_types(self._check_declared(prepared)) or []
        if inferred and all(kind is not None for _, kind in inferred):  # typed from the sources: no sample needed
            return None, [{"name": name, "type": kind} for name, kind in inferred]
        return None, self._query_schema(prepared, self._sample(prepared))

    def plan_query(self, sql: str) -> dict[str, Any]:
        """What saving `sql` would do, without saving: its id, whether it exists, its schema.

        Runs the same checks as a save (parse, a sample on the warehouse, the realtime store).
        """
        prepared = prepare_query(sql, self.warehouse.dialect)
        self._check_declared(prepared)
        sample = self._sample(prepared)
        schema = self._query_schema(prepared, sample)
        self._check_time_zones(sample)
        self._check_servable(prepared, schema)
        query_id = query_id_of(prepared)
        return {"query_id": query_id, "exists": self._exists(self.get_query, query_id), "schema": schema}

    def realtime_query(self, query_id: str, index_key: str, index_value: Any,
                       request: RequestData | None = None) -> pd.DataFrame:
        """The saved query over hot data for one entity, checked against its training schema.

        `request` supplies the rows of the request sources the query reads (and may log them)."""
        frame, rows = self._served_query(query_id, index_key, index_value, request)
        self._log_request(request, rows)
        return frame

    def _served_query(self, query_id: str, index_key: str, index_value: Any, request: RequestData | None,
                      dtypes: Mapping[str, str] | None = None) -> tuple[pd.DataFrame, dict[str, Any]]:
        """The checked lookup and the request rows it ran with (logged by the caller once all has succeeded);
        no rows for the entity is 404 `entity_not_found`. `dtypes`: what the caller casts the columns to."""
        record = self.get_query(query_id)
        frame, rows = self._lookup(record, index_key, index_value, request, dtypes)
        if frame.empty:  # query/realtime and extract/realtime answer an unknown entity alike
            raise NotFound(f"no hot rows for {index_key}={index_value!r} in the realtime store",
                           {"index_key": index_key, "index_value": index_value}, code="entity_not_found")
        trained = [column["name"] for column in record.schema]
        if len(frame.columns) > len(trained) and prepare_query(record.sql, self.warehouse.dialect).selects_star:
            # a compatible new column of a source widens SELECT *; the saved query's output is its saved schema
            frame = frame[[name for name in frame.columns if name in set(trained)]]
        self._check_schema(record.schema, frame, stage="query", ids={"query_id": query_id})
        return frame, rows

    def _log_request(self, request: RequestData | None, rows: dict[str, Any]) -> None:
        """Append a served request's rows to their sources when it asked (`log`): only after it succeeded."""
        if request is not None and request.log and rows:
            self.sources.ingest_many(rows)

    def get_query(self, query_id: str) -> QueryRecord:
        try:
            return self._queries.get_or_make(query_id, lambda: self._indexed(self.catalog.get_query(query_id)))
        except NotFound as error:
            raise _not_saved(error, "POST /v1.0/query/train?save=true") from None

    def list_queries(self, offset: int, limit: int) -> Page[QueryRecord]:
        return self.catalog.list_queries(offset, limit)

    # -- ETLs ------------------------------------------------------------------------------------

    def train_etl(self, query_id: str, location: EtlLocation, name: str | None, save: bool,
                  include_data: bool = True, created_by: str = "anonymous", row_limit: bool = True,
                  hot_window: bool = False, spine: SpineSpec | None = None, allow_mismatch: bool = False,
                  etl: TrainingEtl | None = None) -> tuple[EtlRecord | None, list[dict[str, str]], pd.DataFrame | None]:
        """Fetch the ETL, fit and run it on the query's full warehouse result (or, with a `spine`, on the
        query as of each spine row), check its expectations, and keep it with its state, schema and
        statistics. A save first replays training entities through serving (app/replay.py): a mismatch
        is 409 `train_serve_mismatch` with the report, unless `allow_mismatch` (then recorded). `etl`: the
        ETL `etl_to_train` fetched already for this request."""
        started, as_of = time.monotonic(), pd.Timestamp.now(tz="UTC")
        etl = etl or self.etl_to_train(query_id, location)
        query, fetched, etl_id, expectations, policy, prepared, registered = (
            etl.query, etl.fetched, etl.etl_id, etl.expectations, etl.policy, etl.prepared, etl.registered)
        if save and registered is not None and not allow_mismatch:
            self._refuse_accepted_mismatch(registered)
        if spine is not None:
            limit = self.options.max_response_rows if include_data and row_limit else None
            keyed = self.point_in_time.spine(spine, query.schema, limit)
            answer, features, state = self.point_in_time.etl_features(
                etl_id, fetched.code, fetched.code_sha256, prepared, keyed,
                registered.state if registered else None, expectations)
        else:
            raw = self.warehouse.query(self._training_sql(prepared, hot_window))
            state = registered.state if registered else self.runner.fit(etl_id, fetched.code, fetched.code_sha256,
                                                                        raw, as_of)
            answer = features = self._run_etl(etl_id, fetched.code, fetched.code_sha256, raw, state, as_of)
            violations = check_expectations(features, expectations)
            if violations:
                raise ExpectationsFailed(f"the training output breaks {len(violations)} expectation(s) of the ETL",
                                         {"stage": "train", "violations": violations})
        if include_data and row_limit and len(answer) > self.options.max_response_rows:
            raise ResultTooLarge(f"the training set has {len(answer)} rows, more than the "
                                 f"{self.options.max_response_rows} a JSON response may carry; "
                                 "save with include_data=false", {"rows": len(answer),
                                                                  "max_rows": self.options.max_response_rows})
        record = None
        schema = frame_schema(features)
        extra = self._training_extra(hot_window, spine)
        if spine is None:
            extra["input_dtypes"] = dtype_names(raw)  # serving hands the ETL these (checks/consistency.py)
        # before the replay: a registration quicker than CONSISTENCY_REPEAT_GAP_SECONDS computes them while
        # it would otherwise wait for the repeat pass
        training_stats = frame_stats(features) if save else None
        if save and registered is None and spine is None:
            extra["consistency"] = self._replayed(TrainingRun(
                etl_id, fetched.code, fetched.code_sha256, query, prepared, raw, features, state, as_of, started),
                allow_mismatch)
        if save:
            record = self.catalog.save_etl(EtlRecord(
                etl_id=etl_id, name=name or PurePosixPath(fetched.source.path or fetched.source.url).stem,
                query_id=query_id, source=fetched.source, code=fetched.code, code_sha256=fetched.code_sha256,
                schema=schema, created_by=created_by, created_at=utc_now(), state=state,
                expectations=expectations, serving_policy=policy, training_stats=training_stats,
                extra=extra))
        return record, frame_schema(answer) if spine else record.schema if record else schema, \
            answer if include_data else None

    def etl_to_train(self, query_id: str, location: EtlLocation) -> TrainingEtl:
        """The ETL fetched and loaded for a training run on a saved query, its declarations checked."""
        query = self.get_query(query_id)
        fetched = self.fetcher.fetch(location.etl_path, repo=location.repo, ref=location.ref, path=location.path)
        etl_id = etl_id_of(query_id, fetched.code_sha256)
        expectations, policy = self.runner.declarations(etl_id, fetched.code, fetched.code_sha256)
        validate_expectations(expectations)
        # A registered ETL keeps the state it was first fitted with (that is what serving uses), so
        # registering it again returns training rows computed with that state, never a refit.
        return TrainingEtl(query, fetched, etl_id, expectations, policy,
                           prepare_query(query.sql, self.warehouse.dialect), self._registered_etl(etl_id))

    def _replayed(self, training: TrainingRun, allow_mismatch: bool) -> dict[str, Any]:
        """The registration replay's report; 409 on a mismatch unless the caller accepts it (recorded)."""
        if self.replay.options.entities <= 0:
            return {"replayed": False, "reason": "CONSISTENCY_REPLAY_ENTITIES is 0"}
        report = self.replay.run(training)
        if report["replayed"] and not report["consistent"]:
            if not allow_mismatch:
                raise _train_serve_mismatch(training.etl_id, report, "fix the ETL or query, or pass "
                                            "allow_mismatch=true to register it anyway")
            report["accepted_mismatch"] = True
        return report

    @staticmethod
    def _refuse_accepted_mismatch(registered: EtlRecord) -> None:
        """Saving again an ETL registered despite a mismatch answers as its first save did, unless the
        request accepts the mismatch too."""
        report = (registered.extra or {}).get("consistency") or {}
        if report.get("accepted_mismatch"):
            raise _train_serve_mismatch(registered.etl_id, report, f"ETL {registered.etl_id} is registered with "
                                        "allow_mismatch=true; pass allow_mismatch=true to use it")

    @staticmethod
    def _training_extra(hot_window: bool, spine: SpineSpec | None) -> dict[str, Any]:
        """What the ETL record keeps of how its training set was made."""
        if spine is not None:
            return {"point_in_time": True}
        return {"hot_window": True} if hot_window else {}

    def plan_etl(self, query_id: str, location: EtlLocation) -> dict[str, Any]:
        """What registering an ETL would do, without running or saving it: its id, whether it exists,
        and the exact source (the query need not be saved yet)."""
        fetched = self.fetcher.fetch(location.etl_path, repo=location.repo, ref=location.ref, path=location.path)
        etl_id = etl_id_of(query_id, fetched.code_sha256)
        validate_expectations(self.runner.declarations(etl_id, fetched.code, fetched.code_sha256)[0])
        return {"etl_id": etl_id, "exists": self._exists(self.get_etl, etl_id),
                "source": dataclasses.asdict(fetched.source), "code_sha256": fetched.code_sha256}

    def etl_training_set(self, etl_id: str, spine: SpineSpec | None = None, max_rows: int | None = None
                         ) -> pd.DataFrame:
        """A registered ETL's training set now: its stored code and fitted state on the warehouse (with a
        `spine`, as of each spine row: the spine's columns, then the features; a spine longer than
        `max_rows` refused before it runs)."""
        etl = self.get_etl(etl_id)
        query = self.get_query(etl.query_id)
        prepared = prepare_query(query.sql, self.warehouse.dialect)
        if spine is not None:
            keyed = self.point_in_time.spine(spine, query.schema, max_rows)
            return self.point_in_time.etl_features(etl_id, etl.code, etl.code_sha256, prepared, keyed, etl.state,
                                                   etl.expectations)[0]
        raw = self.warehouse.query(self._training_sql(prepared, bool(etl.extra.get("hot_window"))))
        features = self._run_etl(etl_id, etl.code, etl.code_sha256, raw, etl.state)
        return features[[column["name"] for column in etl.schema if column["name"] in features.columns]]

    def realtime_etl(self, query_id: str, etl_id: str, index_key: str, index_value: Any,
                     request: RequestData | None = None) -> tuple[pd.DataFrame, list[dict[str, Any]]]:
        """One entity's features from hot data, by the stored ETL and state, checked against training.

        Returns the features in training column order and the expectation violations let through
        by a ``warn`` policy. Every outcome is counted in the ETL's serving statistics.
        """
        etl = self.get_etl(etl_id)
        if etl.query_id != query_id:
            raise InvalidInput(f"ETL {etl_id} was trained on query {etl.query_id}, not {query_id}",
                               {"etl_id": etl_id, "trained_query_id": etl.query_id})
        input_dtypes = etl.extra.get("input_dtypes") if etl.extra else None
        raw, request_rows = self._served_query(query_id, index_key, index_value, request, input_dtypes)
        raw = with_training_dtypes(raw, input_dtypes)
        features = self._run_etl(etl_id, etl.code, etl.code_sha256, raw, etl.state)
        if len(features) > self.options.max_response_rows:  # the lookup was bounded, the ETL's output too
            raise ResultTooLarge(f"the ETL returned {len(features)} rows for one entity, more than the "
                                 f"{self.options.max_response_rows} a response may carry",
                                 {"rows": len(features), "max_rows": self.options.max_response_rows})
        window = self.stats.window(etl_id)
        try:
            self._check_schema(etl.schema, features, stage="etl", ids={"query_id": query_id, "etl_id": etl_id})
        except SchemaMismatch:
            window.record(None, "schema_mismatch")
            raise
        names = [column["name"] for column in etl.schema]
        if list(features.columns) != names:  # reorder only when needed: a copy costs ~0.2 ms per request
            features = features[names]
        violations = check_expectations(features, etl.expectations)
        if violations:
            window.record(None, "expectation_violations")
            if etl.serving_policy == "reject":
                raise ExpectationsFailed(f"the served features break {len(violations)} expectation(s) of the ETL",
                                         {"stage": "serve", "etl_id": etl_id, "violations": violations})
        window.record(features, key=index_key)
        self._shadow_compare(etl, index_key, raw, features, window)
        self._log_request(request, request_rows)
        return features, violations

    def _shadow_compare(self, etl: EtlRecord, index_key: str, raw: pd.DataFrame, features: pd.DataFrame,
                        window: ServingWindow) -> None:
        """For a training entity of the ETL's shadow sample, count whether its served features equal its
        training rows (when its raw input is unchanged since registration)."""
        shadow = etl.extra.get("consistency", {}).get("shadow") if etl.extra else None
        if not shadow or shadow.get("index_key") != index_key or index_key not in raw.columns or raw.empty:
            return
        entries = self._shadows.get_or_make(etl.etl_id, lambda: {
            str(entry["value"]): entry for entry in shadow.get("entities", [])})
        entry = entries.get(str(plain_value(raw[index_key].iloc[0])))
        if entry is None:
            return
        if rows_digest(raw) != entry["input_sha256"]:
            window.record_shadow(None)
        else:
            window.record_shadow(shadow_mismatches(entry["features"], features))

    def skew(self, etl_id: str) -> dict[str, Any]:
        """Training statistics against the rolling window of what serving returned, per feature."""
        etl = self.get_etl(etl_id)
        report = skew_report(etl.training_stats, self.stats.report_window(etl_id), self.options.skew_thresholds,
                             self.options.skew_min_samples)
        return {"etl_id": etl_id, **report}

    def get_etl(self, etl_id: str) -> EtlRecord:
        try:
            return self._etls.get_or_make(etl_id, lambda: self.catalog.get_etl(etl_id))
        except NotFound as error:
            raise _not_saved(error, "POST /v1.0/extract/train?save=true") from None

    def list_etls(self, offset: int, limit: int, query_id: str | None = None) -> Page[EtlRecord]:
        return self.catalog.list_etls(offset, limit, query_id)

    # -- data and health -------------------------------------------------------------------------

    def publish(self, n_flows: int, seed: int | None = None) -> dict[str, Any]:
        """Generate `n_flows` demo flows and ingest them into the demo's declared sources (declared on
        first use), every table in one transaction per store: ``{"written", "duplicate"}`` (a seeded
        publish repeated with the same size writes nothing)."""
        from demo.publishing import publish_flows

        if not 1 <= n_flows <= self.options.max_publish_flows:
            raise InvalidInput(f"n_flows must be between 1 and {self.options.max_publish_flows}",
                               {"n_flows": n_flows, "max": self.options.max_publish_flows})
        return publish_flows(self.sources, n_flows, seed)

    def health(self) -> dict[str, Any]:
        """Each backend's state: ok, or the error that reaching it gave; the change feed's with how far this
        process has applied it."""
        checks = {}
        for name, backend in (("catalog", self.catalog), ("warehouse", self.warehouse),
                              ("realtime", self.realtime)):
            try:
                backend.ping()
                checks[name] = {"ok": True}
            except FeatureStoreError as error:
                checks[name] = {"ok": False, "error": error.message}
        feed = self.sources.feed_check()
        if feed is not None:
            checks["feed"] = feed
        return {"status": "ok" if all(c["ok"] for c in checks.values()) else "unavailable", "checks": checks}

    def close(self) -> None:
        """Save serving statistics, stop the evictor and ETL workers, and release every backend."""
        self.stats.stop()
        self.sources.stop()
        self.runner.close()
        if self.training_engine is not None:
            self.training_engine.close()
        for backend in (self.catalog, self.warehouse, self.realtime):
            backend.close()

    def index_saved_queries(self) -> None:
        """Index the realtime store on the columns every saved query joins on or is filtered by (on start)."""
        declared, offset = self.sources.tables(), 0
        while True:
            try:
                page = self.catalog.list_queries(offset, 200)
            except BackendUnavailable:
                return  # the catalog is down at start: queries saved later index their own columns
            for query in page.items:
                self._index_joins(query.sql, declared)
            offset += len(page.items)
            if not page.items or offset >= page.total:
                return

    def _index_joins(self, sql: str, declared: dict[str, list[tuple[str, str]]]) -> None:
        """Index the realtime store on the columns the query joins on or a pushed-down lookup filters by
        (idempotent)."""
        try:
            prepared = prepare_query(sql, self.warehouse.dialect)
            joined = prepared.join_columns(declared) | self.realtime.lookup_columns(prepared)
        except InvalidInput:
            return
        for table, column in joined:
            if table in self.realtime.sources:
                self.realtime.index(table, column)

    def _indexed(self, record: QueryRecord) -> QueryRecord:
        """A query read from the catalog, its join columns indexed here first: a serving process (WORKERS>1)
        did not see it saved, and a store restarted since indexes only what was saved before."""
        self._index_joins(record.sql, self.sources.tables())
        return record

    # -- shared steps ----------------------------------------------------------------------------

    def _sample(self, prepared: PreparedQuery) -> pd.DataFrame:
        """The first SAMPLE_ROWS rows of a query: enough to learn its schema without the whole result."""
        return self.warehouse.query(
            f"SELECT * FROM ({self._training_sql(prepared)}) AS _fs_sample LIMIT {SAMPLE_ROWS}")

    def _training_sql(self, prepared: PreparedQuery, hot_window: bool = False) -> str:
        """The query as the warehouse runs it, each source read from its warehouse table; with
        `hot_window`, only the rows each source's hot window holds now (what serving reads)."""
        filters = self.sources.row_filters(hot_window)
        return prepared.sql_with_tables(self.warehouse.dialect, self.sources.warehouse_tables(), filters)

    def query_warnings(self, sql: str) -> list[dict[str, Any]]:
        """Train/serve differences a saved query carries: each source it reads with a hot window
        (serving sees only the window, training every row unless asked to respect it), and each source
        a point lookup by a likely key reads in full (the realtime store's `lookup_scans`)."""
        prepared = prepare_query(sql, self.warehouse.dialect)
        warnings = []
        for name in prepared.table_names():
            source = self.sources.get(name) if name in self.sources.tables() else None
            if source is not None and source.hot_window_seconds is not None:
                warnings.append({
                    "code": "hot_window", "source": name, "hot_window_seconds": source.hot_window_seconds,
                    "message": f"serving reads only the last {source.hot_window_seconds} s of {name!r}; training "
                               "reads all of it unless the training request sets hot_window=true. Aggregates "
                               "over a longer history will differ."})
        return warnings + self._unbounded_lookup_warnings(prepared)

    def _unbounded_lookup_warnings(self, prepared: PreparedQuery) -> list[dict[str, Any]]:
        """A `lookup_not_key_bounded` warning for each source a lookup by a likely key reads in full: one the
        key could not be pushed into (with the reason), or one the store's plan scans."""
        warnings, seen = [], set()
        for key, refusals in self.realtime.lookup_refusals(prepared).items():
            for refusal in refusals:
                seen.add((key, refusal.source))
                warnings.append({"code": "lookup_not_key_bounded", "source": refusal.source, "index_key": key,
                                 "reason": refusal.reason,
                                 "message": f"a lookup by {key!r} reads every hot row of {refusal.source!r}: "
                                            f"{refusal.reason}. Its cost grows with the data, and it is stopped at "
                                            "LOOKUP_TIMEOUT_SECONDS"})
        for key, tables in self.realtime.lookup_scans(prepared).items():
            warnings += [{"code": "lookup_not_key_bounded", "source": name, "index_key": key,
                          "message": f"a lookup by {key!r} reads every hot row of {name!r} (a cartesian product, an "
                                     "aggregate or join no index on the key reaches): slow, and stopped at "
                                     "LOOKUP_TIMEOUT_SECONDS"} for name in tables if (key, name) not in seen]
        return warnings

    def _query_schema(self, prepared: PreparedQuery, frame: pd.DataFrame) -> list[dict[str, str]]:
        """The result's logical types; a column with no values to judge (say, no rows yet) takes the
        type sqlglot infers from the tables' declared types, so its key can still be served."""
        inferred = dict(prepared.output_types(self.sources.tables()) or [])
        return [dict(column, type=inferred.get(column["name"]) or "null") if column["type"] == "null" else column
                for column in frame_schema(frame)]

    def _registered_etl(self, etl_id: str) -> EtlRecord | None:
        try:
            return self.get_etl(etl_id)
        except NotFound:
            return None

    @staticmethod
    def _exists(get: Callable[[str], Any], record_id: str) -> bool:
        try:
            get(record_id)
            return True
        except NotFound:
            return False

    def _lookup(self, record: QueryRecord, index_key: str, index_value: Any, request: RequestData | None = None,
                dtypes: Mapping[str, str] | None = None) -> tuple[pd.DataFrame, dict[str, Any]]:
        types = {column["name"]: column["type"] for column in record.schema}
        if not isinstance(index_key, str) or index_key not in types:
            raise InvalidInput(f"index_key {index_key!r} is not an output column of query {record.query_id}",
                               {"index_key": index_key, "columns": list(types)})
        value = _coerce_index_value(index_value, types[index_key], index_key)
        prepared = prepare_query(record.sql, self.warehouse.dialect)
        rows = self.sources.request_tables(prepared.table_names(), request.rows if request else None)
        return self.realtime.lookup(prepared, index_key, value, self.options.max_response_rows, rows or None,
                                    dtypes), rows

    def _run_etl(self, etl_id: str, code: str, code_sha256: str, raw: pd.DataFrame,
                 state: dict[str, Any], as_of: Any = None) -> pd.DataFrame:
        return named_features(self.runner.run(etl_id, code, code_sha256, raw, state,
                                              pd.Timestamp.now(tz="UTC") if as_of is None else as_of))

    def _check_schema(self, trained: list[dict[str, str]], frame: pd.DataFrame, stage: str,
                      ids: dict[str, str]) -> None:
        """SchemaMismatch (409) unless `frame` matches `trained`: by the plan of its column layout when it
        has one (most columns are then judged by their dtype alone), else, and for the diff, in full."""
        names = column_names(frame)
        if len(frame) and unique_names(names):
            layout = tuple(zip(names, column_dtypes(frame)))
            plan = self._schema_plans.get_or_make((id(trained), layout),
                                                  lambda: (trained, schema_plan(trained, list(layout))))
            if plan[0] is trained and plan_allows(plan[1], trained, frame):
                return
        diff = compare_schemas(trained, served_schema(frame))
        if not diff.ok:
            raise SchemaMismatch(f"the serving output of the {stage} does not match its training schema",
                                 {"stage": stage, **ids, **diff.to_dict()})

    def _check_declared(self, prepared: PreparedQuery) -> dict[str, list[tuple[str, str]]]:
        """The declared sources' column types, unless the query reads a table that is not one (400)."""
        declared = self.sources.tables()
        undeclared = [name for name in prepared.table_names() if name not in declared]
        if undeclared:
            raise InvalidQuery(f"the query reads table(s) {undeclared} that are not declared sources; declare each "
                               "with POST /v1.0/sources (with columns, or adopting the warehouse table as it is) "
                               "before saving the query", {"undeclared_tables": undeclared})
        return declared

    def _check_time_zones(self, frame: pd.DataFrame) -> None:
        """Refuse, at save time, timestamp columns the realtime store would serve in another form: it serves
        every timestamp UTC-aware, so a column without a time zone (or in another zone) would reach the ETL
        with another dtype online than offline."""
        if not self.realtime.utc_timestamps_only:
            return
        columns = {str(name): str(dtype) for name, dtype in frame.dtypes.items()
                   if pd.api.types.is_datetime64_any_dtype(dtype) and not _is_utc(getattr(dtype, "tz", None))}
        if columns:
            raise InvalidQuery(
                f"timestamp column(s) {sorted(columns)} come from the warehouse without the UTC time zone, but the "
                "realtime store serves every timestamp UTC-aware, so the ETL would get another dtype online; select "
                "the source's timestamp column as it is (declared sources' timestamps are UTC-aware) and derive "
                "local times or dates in the ETL",
                {"constructs": [{"column": name, "dtype": dtype} for name, dtype in sorted(columns.items())]})

    def _check_servable(self, prepared: PreparedQuery, schema: list[dict[str, str]]) -> None:
        """Refuse, at save time, a query over undeclared tables, or one the realtime store cannot run or
        would type differently; index the columns it joins on."""
        declared = self._check_declared(prepared)
        request_sources = [name for name in prepared.table_names() if self.sources.get(name).kind != "table"]
        try:
            served_types = self.realtime.check(prepared)
        except InvalidInput as error:
            raise InvalidQuery("the query runs on the warehouse but not on the realtime store, so it could "
                               f"not be served: {error.message}", error.details) from None
        for table, column in sorted(prepared.join_columns(declared) | self.realtime.lookup_columns(prepared)):
            if table not in request_sources:
                self.realtime.index(table, column)
        served = [{"name": name, "type": kind} for name, kind in served_types or [] if kind is not None]
        diff = compare_schemas([c for c in schema if c["name"] in {s["name"] for s in served}], served)
        if diff.type_changed:
            raise InvalidQuery("the realtime store would return other types than the warehouse for this query; "
                               "add CASTs so both agree", {"type_changed": diff.type_changed})
