"""Named feature sets: /feature-sets, versions, stages, realtime and training by name."""
from __future__ import annotations

import re
from typing import Any

from flask import current_app
from flask_restx import Namespace, Resource, fields

from app.api.common import (MIN_POSITION, PAGING, REQUEST_FIELDS, SPINE_FIELDS, NullableString, Scalar, checked_id,
                            json_body, page_dict, paging, request_data, spine_spec, wait_for_min_position, with_errors)
from app.api.jobs import EXPORT_FIELDS, export_answer
from app.arrowio import JSON_OR_ARROW, arrow_response, frame_batches, wants_arrow
from app.auth import SCIENTIST, SERVING, allow, caller
from app.feature_sets import FeatureSets
from app.jsonio import frame_records
from catalog.base import FeatureSetRecord
from checks.schema import frame_schema
from common.errors import InvalidInput, NotFound

ns = Namespace("feature-sets", description="Stable names for (query, ETL, features), versioned and staged")
NAMESPACES = [ns]
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")

create_request = ns.model("FeatureSetCreate", {
    "name": fields.String(required=True, min_length=1, max_length=100, pattern=NAME.pattern),
    "query_id": fields.String(required=True, min_length=1, max_length=64),
    "etl_id": fields.String(required=True, min_length=1, max_length=64),
    "features": fields.List(fields.String(max_length=200), max_items=1000,
                            description="output columns of the ETL to serve (default: all)"),
    "index_key": fields.String(min_length=1, max_length=200,
                               description="the entity key column (default: the query's first)"),
    "description": fields.String(max_length=2000),
    "tags": fields.List(fields.String(max_length=100), max_items=50),
})
version_model = ns.model("FeatureSetVersion", {
    "name": fields.String, "version": fields.Integer, "query_id": fields.String, "etl_id": fields.String,
    "index_key": fields.String, "features": fields.List(fields.String), "description": fields.String,
    "tags": fields.List(fields.String), "created_by": fields.String, "created_at": fields.String,
    "stage": NullableString(description="production, staging or null"),
    "etl_consistency": fields.Raw(description="the ETL's registration replay, in short: consistent, "
                                              "accepted_mismatch, mismatched_columns, entities_checked (null if "
                                              "never replayed)"),
})
realtime_request = ns.model("FeatureSetRealtime", {
    "index_value": Scalar(required=True),
    "version": fields.Integer(min=1, description="default: the production version, else the newest"),
    **REQUEST_FIELDS,
})
train_request = ns.model("FeatureSetTrain", {"version": fields.Integer(min=1), **SPINE_FIELDS, **EXPORT_FIELDS})
stage_request = ns.model("FeatureSetStage", {
    "stage": fields.String(required=True, enum=["production", "staging", "none"],
                           description="'none' clears the version's stage"),
})


def feature_sets() -> FeatureSets:
    return current_app.extensions["feature_sets"]


def checked_name(name: str) -> str:
    if not NAME.fullmatch(name):
        raise InvalidInput(f"{name[:100]!r} is not a valid feature set name", {"pattern": NAME.pattern})
    return name


def _version(record: FeatureSetRecord) -> dict[str, Any]:
    """A version as the API shows it, with its ETL's consistency (allow_mismatch shows here too)."""
    return {**record.to_dict(), "etl_consistency": _consistency(record.etl_id)}


def _consistency(etl_id: str) -> dict[str, Any] | None:
    try:
        report = (current_app.extensions["feature_service"].get_etl(etl_id).extra or {}).get("consistency")
    except NotFound:
        return None
    if not report or not report.get("replayed"):
        return None
    return {"consistent": report["consistent"], "accepted_mismatch": bool(report.get("accepted_mismatch")),
            "mismatched_columns": report["mismatched_columns"], "entities_checked": report["entities_checked"]}


@ns.route("")
@with_errors(ns)
class FeatureSetList(Resource):
    @ns.expect(create_request)
    @ns.response(201, "a new version", version_model)
    @ns.response(200, "the definition equals the newest version, which is returned", version_model)
    @ns.response(400, "features or index_key not columns of the ETL/query, or the ETL belongs to another query")
    @ns.response(404, "unknown query or ETL")
    @allow(*SCIENTIST)
    def post(self):
        """Create version 1 of a name, or its next version; versions are immutable."""
        body = json_body(create_request)
        record, created = feature_sets().create(
            checked_name(body["name"]), checked_id("query", body["query_id"]), checked_id("etl", body["etl_id"]),
            body.get("features"), body.get("index_key"), body.get("description", ""), body.get("tags", []),
            caller())
        return _version(record), 201 if created else 200

    @ns.doc(params=PAGING)
    @ns.response(200, "the newest version of each name, alphabetical", ns.model("FeatureSetPage", {
        "items": fields.List(fields.Nested(version_model)), "total": fields.Integer, "offset": fields.Integer,
        "limit": fields.Integer}))
    @allow(*SCIENTIST)
    def get(self):
        """List feature sets (newest version of each)."""
        offset, limit = paging()
        return page_dict(feature_sets().catalog.list_feature_sets(offset, limit), _version)


@ns.route("/<string:name>")
@with_errors(ns)
class FeatureSetVersions(Resource):
    @ns.response(200, "every version with its stage", ns.model("FeatureSetVersions", {
        "name": fields.String, "versions": fields.List(fields.Nested(version_model))}))
    @ns.response(404, "unknown name")
    @allow(*SCIENTIST)
    def get(self, name: str):
        """All versions of a feature set, oldest first, with their stage."""
        return {"name": name, "versions": [_version(r) for r in feature_sets().versions(checked_name(name))]}


@ns.route("/<string:name>/versions/<int:version>/stage")
@with_errors(ns)
class FeatureSetStage(Resource):
    @ns.expect(stage_request)
    @ns.response(200, "the version with its new stage", version_model)
    @ns.response(404, "unknown name or version")
    @allow(*SCIENTIST)
    def put(self, name: str, version: int):
        """Mark a version production or staging (taking the mark from the other versions), or clear it."""
        stage = json_body(stage_request)["stage"]
        return _version(feature_sets().set_stage(checked_name(name), version, None if stage == "none" else stage))


@ns.route("/<string:name>/realtime")
@with_errors(ns)
class FeatureSetRealtime(Resource):
    @ns.expect(realtime_request)
    @ns.response(200, "the entity's features of the set", ns.model("FeatureSetRows", {
        "name": fields.String, "version": fields.Integer, "schema": fields.List(fields.Raw),
        "data": fields.List(fields.Raw), "warnings": fields.List(fields.Raw)}))
    @ns.response(404, "unknown name or version, or no hot rows for the entity")
    @ns.response(409, "serving output differs from the training schema")
    @ns.response(503, "min_position not applied by this process in time (position_not_applied): retry")
    @ns.doc(params=MIN_POSITION)
    @allow(*SERVING)
    def post(self, name: str):
        """One entity's features by feature-set name (default: the production version, else the newest)."""
        wait_for_min_position()
        body = json_body(realtime_request)
        record, frame, warnings = feature_sets().realtime(checked_name(name), body["index_value"],
                                                          body.get("version"), request_data(body))
        return {"name": record.name, "version": record.version, "schema": feature_sets().schema(record),
                "data": frame_records(frame), "warnings": warnings}


@ns.route("/<string:name>/train")
@with_errors(ns)
class FeatureSetTrain(Resource):
    @ns.expect(train_request)
    @ns.produces(JSON_OR_ARROW)
    @ns.doc(params={"format": {"description": "'arrow': stream the features as Arrow IPC (no row limit; the version "
                                              "in X-Feature-Set-Version); also Accept: application/vnd.apache.arrow.stream",
                               "type": "string", "enum": ["json", "arrow"], "default": "json"}})
    @ns.response(200, "the training set of the version", ns.model("FeatureSetTrainingSet", {
        "name": fields.String, "version": fields.Integer, "schema": fields.List(fields.Raw),
        "data": fields.List(fields.Raw)}))
    @ns.response(202, "export: the job writing the training set (see `GET /jobs/<job_id>`)")
    @ns.response(404, "unknown name or version")
    @allow(*SCIENTIST)
    def post(self, name: str):
        """The training set of a version: its ETL and fitted state over the warehouse, its features only."""
        body = json_body(train_request)
        spine = spine_spec(body)
        sets = feature_sets()  # the job runs outside this request
        exported = export_answer(body, lambda: frame_batches(sets.training_set(
            checked_name(name), body.get("version"), row_limit=False, spine=spine)[1]))
        if exported:
            return exported
        arrow = wants_arrow()
        record, frame = feature_sets().training_set(checked_name(name), body.get("version"), row_limit=not arrow,
                                                    spine=spine)
        if arrow:
            return arrow_response(*frame_batches(frame), {"X-Feature-Set-Version": str(record.version)})
        schema = frame_schema(frame) if body.get("spine") is not None else feature_sets().schema(record)
        return {"name": record.name, "version": record.version, "schema": schema, "data": frame_records(frame)}
