"""What every namespace shares: body and parameter parsing, the JSON representation, errors."""
from __future__ import annotations

import logging
import re
from typing import Any

import jsonschema
from flask import current_app, make_response, request
from flask_restx import Api, Model, Namespace, fields
from werkzeug.exceptions import HTTPException

from app import jsonio
from app.service import FeatureService
from common.errors import FeatureStoreError, InvalidInput, PositionNotApplied

log = logging.getLogger(__name__)
ID_PATTERN = {"query": re.compile(r"^q_[0-9a-f]{16}$"), "etl": re.compile(r"^e_[0-9a-f]{16}$")}


class NullableString(fields.String):
    """A string that may be null (Swagger 2.0 spells it x-nullable)."""

    def schema(self) -> dict[str, Any]:
        return {**super().schema(), "x-nullable": True}


class NullableList(fields.List):
    """A list that may be null."""

    def schema(self) -> dict[str, Any]:
        return {**super().schema(), "x-nullable": True}


class NullableInteger(fields.Integer):
    """An integer that may be null."""

    def schema(self) -> dict[str, Any]:
        return {**super().schema(), "x-nullable": True}


ERROR_FIELDS = {"code": fields.String(required=True, example="invalid_input"),
                "message": fields.String(required=True),
                "details": fields.Raw(required=True, description="structured context; {} when none")}
REQUEST_FIELDS = {
    "request_rows": fields.Raw(description="rows for the request sources the query reads: {source: [row, …]}; "
                                           "they stand in for that source's rows in this request only"),
    "log": fields.Boolean(default=False, description="also append the request rows to their sources"),
}


SPINE_FIELDS = {
    "spine": fields.Raw(description=(
        "point-in-time training: {index_key, time?, time_zone?, and one of rows: [{…}], spine_id (from POST "
        "/spines) or query: 'SELECT …'}. Each spine row gets what serving returned for its key at its time "
        "(no time column: as of now); the answer keeps every spine row, in order, its columns first")),
}


def spine_spec(body: dict[str, Any]) -> Any:
    """The request's spine (None without one); `hot_window` does not combine with it."""
    from app.spine import parse_spec

    if body.get("spine") is None:
        return None
    if query_flag("hot_window", False):
        raise InvalidInput("hot_window does not combine with a spine: each spine row is cut by the windows "
                           "as of its own time")
    return parse_spec(body["spine"])


def request_data(body: dict[str, Any]) -> Any:
    """The request rows of a realtime call (None when it has none)."""
    from app.service import RequestData

    if "request_rows" not in body and not body.get("log"):
        return None
    return RequestData(body.get("request_rows"), bool(body.get("log", False)))


MIN_POSITION_HEADER = "X-Min-Position"
MIN_POSITION = {"min_position": {"description": "a change-feed position (an ingest or publish answer's "
                                                "`position`): wait, up to MIN_POSITION_WAIT_SECONDS, until this "
                                                "process serves it, else 503 (also as the X-Min-Position header)",
                                 "type": "integer", "minimum": 0, "in": "query"}}


def wait_for_min_position() -> None:
    """Read-your-writes: hold a realtime request until its process has applied the `min_position` it asks
    for (query parameter, or the X-Min-Position header); 503 `position_not_applied` past the wait limit."""
    raw = request.args.get("min_position", request.headers.get(MIN_POSITION_HEADER))
    if raw is None:
        return
    if not raw.isascii() or not raw.isdigit() or len(raw) > 18:
        raise InvalidInput("min_position must be a non-negative integer (an ingest answer's position)",
                           {"parameter": "min_position", "value": raw[:40]})
    sources = service().sources
    seconds = current_app.config["MIN_POSITION_WAIT_SECONDS"]
    if not sources.wait_for(int(raw), seconds):
        raise PositionNotApplied(f"this process has not applied feed position {raw} within {seconds} s; retry",
                                 {"min_position": int(raw), "applied": sources.progress().position})


PAGING = {"offset": {"description": "rows to skip", "type": "integer", "minimum": 0, "default": 0},
          "limit": {"description": "page size", "type": "integer", "minimum": 1, "maximum": 500, "default": 50}}


def with_errors(ns: Namespace) -> Any:
    """Declare the one error shape as every operation's default response (a class decorator)."""
    return ns.response("default", "an error: {code, message, details}", ns.model("Error", ERROR_FIELDS))


class Scalar(fields.Raw):
    """A JSON string, number or boolean (an entity key value); the schema leaves the type open."""

    __schema_type__ = None
    __schema_example__ = "5f2b…"


def service() -> FeatureService:
    return current_app.extensions["feature_service"]


def json_body(model: Model, nullable: tuple[str, ...] = ()) -> dict[str, Any]:
    """The request's JSON object, validated against `model` (unknown fields refused); a null in one of
    the optional `nullable` fields means the same as leaving it out."""
    try:
        body = jsonio.strict_loads(request.get_data(cache=True) or b"null")
    except ValueError as error:  # orjson's JSONDecodeError is a ValueError too
        raise InvalidInput(f"the request body is not valid JSON: {str(error)[:200]}") from None
    if not isinstance(body, dict):
        raise InvalidInput("the request body must be a JSON object")
    body = {key: value for key, value in body.items() if value is not None or key not in nullable}
    errors = sorted(_validator(model).iter_errors(body), key=lambda e: list(e.path))
    if errors:
        raise InvalidInput("the request body is not valid", {"errors": [
            {"field": ".".join(str(p) for p in error.path) or None, "message": error.message[:300]}
            for error in errors[:20]]})
    return body


_validators: dict[str, jsonschema.Draft4Validator] = {}


def _validator(model: Model) -> jsonschema.Draft4Validator:
    """The model's JSON-schema validator, built once (models are module-level constants)."""
    validator = _validators.get(model.name)
    if validator is None:
        schema = {**model.__schema__, "additionalProperties": False, "definitions": _definitions(model)}
        validator = _validators[model.name] = jsonschema.Draft4Validator(schema)
    return validator


def _definitions(model: Model) -> dict[str, Any]:
    nested = {}
    for field in model.values():
        inner = getattr(field, "nested", None) or getattr(getattr(field, "container", None), "nested", None)
        if isinstance(inner, Model):
            nested[inner.name] = {**inner.__schema__, "additionalProperties": False}
    return nested


def query_flag(name: str, default: bool) -> bool:
    raw = request.args.get(name)
    if raw is None:
        return default
    value = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}.get(raw.lower())
    if value is None:
        raise InvalidInput(f"query parameter {name} must be true or false", {"parameter": name})
    return value


def query_int(name: str, default: int | None, low: int, high: int) -> int | None:
    raw = request.args.get(name)
    if raw is None:
        return default
    if not re.fullmatch(r"-?[0-9]{1,20}", raw):
        raise InvalidInput(f"query parameter {name} must be an integer", {"parameter": name})
    value = int(raw)
    if not low <= value <= high:
        raise InvalidInput(f"query parameter {name} must be between {low} and {high}",
                           {"parameter": name, "min": low, "max": high})
    return value


def checked_id(kind: str, value: Any) -> str:
    """An id of the right shape, else 400 (an unknown but well-formed id is a 404 later)."""
    if not isinstance(value, str) or not ID_PATTERN[kind].fullmatch(value):
        raise InvalidInput(f"{value!r} is not a valid {kind} id", {f"{kind}_id": str(value)[:100]})
    return value


def paging() -> tuple[int, int]:
    return query_int("offset", 0, 0, 10**9) or 0, query_int("limit", 50, 1, 500) or 50


def page_dict(page: Any, item: Any) -> dict[str, Any]:
    return {"items": [item(record) for record in page.items], "total": page.total,
            "offset": page.offset, "limit": page.limit}


def error_body(error: BaseException) -> tuple[dict[str, Any], int]:
    """The one error shape {code, message, details} and its HTTP status, for any exception."""
    if isinstance(error, FeatureStoreError):
        return error.to_dict(), error.status
    if isinstance(error, HTTPException):
        code = re.sub(r"\W+", "_", (error.name or "http_error").lower()).strip("_")
        return {"code": code, "message": error.description or error.name, "details": {}}, error.code or 500
    log.exception("unhandled error", exc_info=error)
    return {"code": "internal_error", "message": "the server failed; see its log", "details": {}}, 500


def install_error_handlers(api: Api) -> None:
    api.errorhandler(Exception)(error_body)


def install_json_representation(api: Api) -> None:
    @api.representation("application/json")
    def output_json(data: Any, code: int, headers: Any = None):  # noqa: ANN202
        # bounded while encoding: a body past MAX_RESPONSE_BYTES is refused (400) before it is built whole
        limit = current_app.config.get("MAX_RESPONSE_BYTES")
        response = make_response(jsonio.dumps(data) if limit is None else jsonio.dumps_bounded(data, limit), code)
        response.headers.extend(headers or {})
        response.mimetype = "application/json"
        return response
