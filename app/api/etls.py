"""ETLs: POST /extract/train, POST /extract/realtime, GET /etls[/<id>]."""
from __future__ import annotations

from typing import Any

from flask import request
from flask_restx import Namespace, Resource, fields

from app.api.common import MIN_POSITION, wait_for_min_position
from app.api.common import (PAGING, REQUEST_FIELDS, SPINE_FIELDS, spine_spec, request_data, NullableList, NullableString, Scalar, checked_id, json_body, page_dict, paging,
                             query_flag, service, with_errors)
from app.auth import SCIENTIST, SERVING, allow, caller
from app.api.queries import FLAGS, column
from app.api.jobs import EXPORT_FIELDS, export_answer
from app.arrowio import JSON_OR_ARROW, arrow_response, frame_batches, wants_arrow
from app.jsonio import frame_records
from app.service import EtlLocation, TrainingEtl
from catalog.base import EtlRecord
from common.errors import InvalidInput

extract_ns = Namespace("extract", description="Run a git-versioned ETL on a query's result")
etls_ns = Namespace("etls", description="Registered ETLs in the catalog")
NAMESPACES = [extract_ns, etls_ns]

etl_location = extract_ns.model("EtlLocation", {
    "repo": fields.String(required=True, min_length=1, max_length=2000, description="a clonable URL or local path"),
    "ref": fields.String(max_length=250, description="branch, tag or commit (default HEAD)"),
    "path": fields.String(required=True, min_length=1, max_length=1000, description="the .py file inside the repository"),
})
train_request = extract_ns.model("ExtractTrainRequest", {
    "query_id": fields.String(required=True, min_length=1, max_length=64),
    "etl_path": fields.String(max_length=4000, description=(
        "a path or file:// URL of a .py file in a local git repository, `git+<repo-url>@<ref>#<path>`, "
        "or an http(s) URL of a .py file")),
    "etl": fields.Nested(etl_location, description="structured alternative to etl_path"),
    "name": fields.String(max_length=200),
    **SPINE_FIELDS, **EXPORT_FIELDS,
})
train_response = extract_ns.model("ExtractTrainResponse", {
    "etl_id": NullableString(description="null unless save=true"),
    "schema": fields.List(fields.Nested(column)),
    "data": NullableList(fields.Raw, description="feature rows; null when include_data=false"),
})
realtime_request = extract_ns.model("ExtractRealtimeRequest", {
    "query_id": fields.String(required=True, min_length=1, max_length=64),
    "etl_id": fields.String(required=True, min_length=1, max_length=64),
    "index_key": fields.String(required=True, min_length=1, max_length=200),
    "index_value": Scalar(required=True),
    **REQUEST_FIELDS,
})
plan_model = extract_ns.model("EtlPlan", {
    "etl_id": fields.String, "exists": fields.Boolean, "code_sha256": fields.String,
    "source": fields.Raw(description="kind, url, repo, ref, commit, path"),
})
source = etls_ns.model("EtlSource", {name: NullableString for name in ("kind", "url", "repo", "ref", "commit", "path")})
etl_record = etls_ns.model("EtlRecord", {
    "etl_id": fields.String, "name": fields.String, "query_id": fields.String, "source": fields.Nested(source),
    "code_sha256": fields.String, "schema": fields.List(fields.Nested(column)), "created_by": fields.String,
    "created_at": fields.String, "code": fields.String(description="only when reading one ETL"),
})
etl_page = etls_ns.model("EtlPage", {"items": fields.List(fields.Nested(etl_record)), "total": fields.Integer,
                                     "offset": fields.Integer, "limit": fields.Integer})


def _location(body: dict[str, Any]) -> EtlLocation:
    etl = body.get("etl")
    if bool(body.get("etl_path")) == bool(etl):
        raise InvalidInput("give exactly one of etl_path or etl {repo, ref, path}")
    if etl:
        return EtlLocation(repo=etl["repo"], ref=etl.get("ref"), path=etl["path"])
    return EtlLocation(etl_path=body["etl_path"])


def _summary(record: EtlRecord) -> dict[str, Any]:
    data = record.to_dict()
    data.pop("code")
    return data


def _batched(svc: Any, etl: TrainingEtl, save: bool, hot_window: bool, spine: Any) -> Any:
    """An unsaved training set without a spine, its ETL run batch by batch, when that is safe
    (app/training_stream.py); else None (the whole frame, `train_etl`)."""
    return svc.batched_training.batches(etl, hot_window) if not save and spine is None else None


@extract_ns.route("/train")
@with_errors(extract_ns)
class ExtractTrain(Resource):
    @extract_ns.expect(train_request)
    @extract_ns.doc(params={**FLAGS, "allow_mismatch": {
        "description": "with save=true: register even when the replay finds serving values that differ from "
                       "training (recorded in the ETL's consistency report)", "type": "boolean", "default": False}})
    @extract_ns.produces(JSON_OR_ARROW)
    @extract_ns.response(200, "the training set, and the ETL id when saved", train_response)
    @extract_ns.response(202, "export: the job writing the training set (see `GET /jobs/<job_id>`)")
    @extract_ns.response(400, "the ETL cannot be fetched or loaded")
    @extract_ns.response(404, "unknown query_id")
    @extract_ns.response(409, "save=true: replayed through serving, training entities got other values "
                              "(details: the consistency report); allow_mismatch=true registers it anyway")
    @extract_ns.response(422, "the ETL raised or returned something else than a DataFrame")
    @extract_ns.response(502, "the git or HTTP remote could not be reached")
    @allow(*SCIENTIST)
    def post(self):
        """Fetch an ETL from git, run it on the saved query's warehouse result; save=true registers it after
        replaying training entities through the serving path (the consistency report is kept with it)."""
        body = json_body(train_request)
        query_id, location, spine = checked_id("query", body["query_id"]), _location(body), spine_spec(body)
        save, hot_window, who = query_flag("save", False), query_flag("hot_window", False), caller()
        allow_mismatch, include_data = query_flag("allow_mismatch", False), query_flag("include_data", True)
        arrow = wants_arrow()  # every flag is read before the ETL is fetched: a bad one costs nothing
        svc = service()  # the job runs outside this request

        def exported_batches():  # noqa: ANN202
            etl = svc.etl_to_train(query_id, location)
            return _batched(svc, etl, save, hot_window, spine) or frame_batches(svc.train_etl(
                query_id, location, body.get("name"), save, True, who, row_limit=False, hot_window=hot_window,
                spine=spine, allow_mismatch=allow_mismatch, etl=etl)[2])

        exported = export_answer(body, exported_batches)
        if exported:
            return exported
        etl = svc.etl_to_train(query_id, location)
        streamed = _batched(svc, etl, save, hot_window, spine) if arrow else None
        if streamed is not None:
            return arrow_response(*streamed, {})
        record, schema, frame = svc.train_etl(
            query_id, location, body.get("name"), save, arrow or include_data, who,
            row_limit=not arrow, hot_window=hot_window, spine=spine, allow_mismatch=allow_mismatch, etl=etl)
        if arrow:
            return arrow_response(*frame_batches(frame), {"X-Etl-Id": record.etl_id} if record else {})
        return {"etl_id": record.etl_id if record else None, "schema": schema,
                "data": frame_records(frame) if frame is not None else None}


@extract_ns.route("/plan")
@with_errors(extract_ns)
class ExtractPlan(Resource):
    @extract_ns.expect(train_request)
    @extract_ns.response(200, "what registering would do: the id, whether it exists, the exact source", plan_model)
    @extract_ns.response(400, "the ETL cannot be fetched or loaded")
    @extract_ns.response(502, "the git or HTTP remote could not be reached")
    @allow(*SCIENTIST)
    def post(self):
        """Fetch and load an ETL, and say its id and whether it is registered, without running or saving it."""
        body = json_body(train_request)
        return service().plan_etl(checked_id("query", body["query_id"]), _location(body))


@extract_ns.route("/realtime")
@with_errors(extract_ns)
class ExtractRealtime(Resource):
    @extract_ns.expect(realtime_request)
    @extract_ns.response(200, "the entity's features, in training column order", extract_ns.model(
        "FeatureRows", {"data": fields.List(fields.Raw), "warnings": fields.List(fields.Raw, description=(
            "expectation violations let through by the ETL's 'warn' policy"))}))
    @extract_ns.response(404, "unknown id, or no hot rows for the entity")
    @extract_ns.response(409, "serving output differs from the training schema (details: the diff)")
    @extract_ns.response(422, "the ETL raised, or its expectations failed under the 'reject' policy")
    @extract_ns.response(503, "min_position not applied by this process in time (position_not_applied): retry")
    @extract_ns.doc(params=MIN_POSITION)
    @allow(*SERVING)
    def post(self):
        """One entity's features from hot data, by the saved query and ETL, schema-checked."""
        wait_for_min_position()
        body = json_body(realtime_request)
        frame, warnings = service().realtime_etl(checked_id("query", body["query_id"]),
                                                 checked_id("etl", body["etl_id"]), body["index_key"],
                                                 body["index_value"], request_data(body))
        return {"data": frame_records(frame), "warnings": warnings}


@etls_ns.route("")
@with_errors(etls_ns)
class EtlList(Resource):
    @etls_ns.doc(params={**PAGING, "query_id": {"description": "only ETLs trained on this query", "type": "string"}})
    @etls_ns.response(200, "a page of ETLs, newest first", etl_page)
    @allow(*SCIENTIST)
    def get(self):
        """List registered ETLs (without their code)."""
        query_id = request.args.get("query_id")
        offset, limit = paging()
        page = service().list_etls(offset, limit, checked_id("query", query_id) if query_id else None)
        return page_dict(page, _summary)


@etls_ns.route("/<string:etl_id>")
@with_errors(etls_ns)
class EtlItem(Resource):
    @etls_ns.response(200, "the ETL with its source code", etl_record)
    @etls_ns.response(404, "unknown etl_id")
    @allow(*SCIENTIST)
    def get(self, etl_id: str):
        """Read one ETL, its source code included."""
        return service().get_etl(checked_id("etl", etl_id)).to_dict()


@etls_ns.route("/<string:etl_id>/skew")
@with_errors(etls_ns)
class EtlSkew(Resource):
    @etls_ns.response(200, "per feature: training vs serving statistics, with flags past the thresholds",
                      etls_ns.model("SkewReport", {
                          "etl_id": fields.String, "outcomes": fields.Raw, "window_size": fields.Integer,
                          "min_samples": fields.Integer, "thresholds": fields.Raw,
                          "flagged": fields.List(fields.String), "features": fields.Raw}))
    @etls_ns.response(404, "unknown etl_id")
    @allow(*SCIENTIST)
    def get(self, etl_id: str):
        """Compare the training statistics with a rolling window of what serving returned."""
        return service().skew(checked_id("etl", etl_id))
