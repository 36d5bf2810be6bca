"""Declared sources: /sources, their versions and row counts, ingestion (JSON or Arrow) and file loads."""
from __future__ import annotations

from typing import Any

from flask import current_app, request
from flask_restx import Namespace, Resource, fields

from app.api.common import PAGING, NullableInteger, NullableString, json_body, page_dict, paging, with_errors
from app.auth import SCIENTIST, allow, caller
from catalog.base import SourceRecord
from sources.definition import check_identifier
from sources.rows import ipc_batches, rows_from_arrow, rows_from_json

ns = Namespace("sources", description="Tables of raw events you own: declare or adopt, ingest, load, inspect")
NAMESPACES = [ns]
ARROW_STREAM = "application/vnd.apache.arrow.stream"

column = ns.model("SourceColumn", {
    "name": fields.String(required=True, max_length=63),
    "type": fields.String(required=True, enum=["integer", "float", "boolean", "string", "timestamp"]),
    "nullable": fields.Boolean(default=True, description="entity keys and event time are never null"),
})
declaration = ns.model("SourceDeclaration", {
    "name": fields.String(required=True, max_length=63, description="lower-case identifier; queries read it"),
    "table": fields.String(max_length=127, description="warehouse table (schema.table allowed); default: name"),
    "columns": fields.List(fields.Nested(column), max_items=1000,
                           description="omit to adopt an existing warehouse table as it is"),
    "entity_keys": fields.List(fields.String(max_length=63), required=True, min_items=1, max_items=10),
    "event_time": fields.String(required=True, max_length=63, description="a timestamp or epoch-seconds column"),
    "created_time": NullableString(max_length=63, description="ties on one event time: the newest created wins "
                                                                 "(stored for point-in-time training)"),
    "hot_window_seconds": NullableInteger(min=1, description="how far back the realtime store keeps rows; "
                                                             "null keeps everything"),
    "kind": fields.String(enum=["table", "request"], default="table"),
    "description": fields.String(max_length=10000),
    "tags": fields.List(fields.String(max_length=100), max_items=50),
    "owner": fields.String(max_length=200),
})
source_record = ns.inherit("Source", declaration, {
    "version": fields.Integer, "created_by": fields.String, "created_at": fields.String})
source_page = ns.model("SourcePage", {"items": fields.List(fields.Nested(source_record)), "total": fields.Integer,
                                      "offset": fields.Integer, "limit": fields.Integer})
class RowList(fields.Raw):
    """A JSON array of row objects; each row is checked against the source (one pass, in sources/rows.py)
    rather than by the request schema (another pass over every row)."""

    __schema_type__ = "array"


rows_request = ns.model("SourceRows", {
    "rows": RowList(required=True, description="objects keyed by column; timestamps as ISO-8601 with a zone "
                                               "offset"),
    "batch_id": fields.String(max_length=200, description="a retry with the same id writes nothing twice"),
})
load_request = ns.model("SourceLoad", {
    "path": fields.String(required=True, max_length=1000, description="a file or folder inside LOAD_DIR"),
    "format": fields.String(enum=["parquet", "csv"], description="default: from the file name"),
    "batch_id": fields.String(max_length=200),
})
ingest_answer = ns.model("IngestAnswer", {
    "source": fields.String, "version": fields.Integer, "rows": fields.Integer,
    "realtime_rows": fields.Integer(description="rows inside the hot window, now in the realtime store"),
    "min_event_time": fields.Raw, "max_event_time": fields.Raw, "batch_id": NullableString,
    "duplicate": fields.Boolean(description="true: this batch_id was written before; nothing was written now"),
    "position": fields.Integer(description="change-feed position of the rows: pass it as min_position to "
                                           "a realtime request to read them from any process"),
})


def sources() -> Any:
    return current_app.extensions["feature_service"].sources


@ns.route("")
@with_errors(ns)
class SourceList(Resource):
    @ns.expect(declaration)
    @ns.response(201, "declared: the new source, or its next (compatible) version", source_record)
    @ns.response(200, "the same definition as the newest version: that version", source_record)
    @ns.response(400, "invalid names, types or keys; a table to adopt that is missing or has unmapped types")
    @ns.response(409, "an incompatible change to an existing source: the diff and the queries that read it")
    @allow(*SCIENTIST)
    def post(self):
        """Declare a source (with columns), or adopt an existing warehouse table (without columns)."""
        body = json_body(declaration, nullable=("created_time", "hot_window_seconds", "table"))
        record, created = sources().declare(body, created_by=caller())
        return record.to_dict(), 201 if created else 200

    @ns.doc(params=PAGING)
    @ns.response(200, "a page of sources (newest version of each), by name", source_page)
    @allow(*SCIENTIST)
    def get(self):
        """List declared sources."""
        offset, limit = paging()
        return page_dict(sources().list(offset, limit), SourceRecord.to_dict)


@ns.route("/<string:name>")
@with_errors(ns)
class SourceItem(Resource):
    @ns.response(200, "the newest version, its versions, rows and event-time range in each store, and the "
                      "saved queries that read it")
    @ns.response(404, "no such source")
    @allow(*SCIENTIST)
    def get(self, name: str):
        """Read one source with its row counts."""
        return sources().describe(check_identifier(name, "source"))


@ns.route("/<string:name>/rows")
@with_errors(ns)
class SourceRows(Resource):
    @ns.expect(rows_request)
    @ns.doc(params={"batch_id": {"description": "with an Arrow body: the batch id", "type": "string"}})
    @ns.response(200, "written (or a duplicate batch, written before)", ingest_answer)
    @ns.response(400, "a row or column that does not fit the source: nothing written")
    @ns.response(404, "no such source")
    @ns.response(413, "body larger than MAX_INGEST_BYTES")
    @allow(*SCIENTIST)
    def post(self, name: str):
        """Ingest rows: JSON {rows: [...]} or an Arrow IPC stream (Content-Type: application/vnd.apache.arrow.stream)."""
        request.max_content_length = current_app.config["MAX_INGEST_BYTES"]
        source = sources().get(check_identifier(name, "source"))
        if request.mimetype == ARROW_STREAM:
            rows = rows_from_arrow(source, ipc_batches(request.stream, current_app.config["MAX_INGEST_BYTES"]))
            batch_id = request.args.get("batch_id")
        else:
            body = json_body(rows_request)
            rows, batch_id = rows_from_json(source, body["rows"]), body.get("batch_id")
        return sources().ingest(name, rows, batch_id)


@ns.route("/<string:name>/load")
@with_errors(ns)
class SourceLoad(Resource):
    @ns.expect(load_request)
    @ns.response(200, "loaded", ingest_answer)
    @ns.response(400, "a path outside LOAD_DIR, an unreadable file, or rows that do not fit: nothing written")
    @ns.response(404, "no such source")
    @allow(*SCIENTIST)
    def post(self, name: str):
        """Bulk-load Parquet or CSV file(s) from the load directory (LOAD_DIR)."""
        body = json_body(load_request)
        return sources().load_file(check_identifier(name, "source"), body["path"], body.get("format"),
                                   body.get("batch_id"))
