"""Training spines uploaded once and named by id: POST /spines."""
from __future__ import annotations

import pyarrow as pa
from flask import current_app, request
from flask_restx import Namespace, Resource, fields

from app.api.common import json_body, service, with_errors
from app.arrowio import ARROW_STREAM
from app.auth import SCIENTIST, allow
from app.spine import rows_table
from common.errors import InvalidInput
from sources.rows import ipc_batches

ns = Namespace("spines", description="Training spines (entity key, as-of time, labels …) for point-in-time training")
NAMESPACES = [ns]

upload_request = ns.model("SpineRows", {"rows": fields.Raw(required=True, description="a list of row objects")})
upload_answer = ns.model("SpineUpload", {
    "spine_id": fields.String(description="pass as spine.spine_id to a training request"),
    "rows": fields.Integer, "columns": fields.List(fields.String),
    "expires_in_seconds": fields.Integer(description="how long the upload is kept (SPINE_TTL_SECONDS)"),
})


@ns.route("")
@with_errors(ns)
class SpineUpload(Resource):
    @ns.expect(upload_request)
    @ns.response(201, "kept; name it by spine_id", upload_answer)
    @ns.response(400, "not an Arrow IPC stream or a list of row objects")
    @ns.response(413, "body larger than MAX_INGEST_BYTES")
    @allow(*SCIENTIST)
    def post(self):
        """Upload a spine: an Arrow IPC stream (Content-Type: application/vnd.apache.arrow.stream) or JSON {rows}."""
        limit = current_app.config["MAX_INGEST_BYTES"]
        request.max_content_length = limit
        if request.mimetype == ARROW_STREAM:
            batches = list(ipc_batches(request.stream, limit))
            if not batches:
                raise InvalidInput("the Arrow stream has no record batch")
            table = pa.Table.from_batches(batches)
        else:
            rows = json_body(upload_request)["rows"]
            if not isinstance(rows, list):
                raise InvalidInput("rows must be a list of objects")
            table = rows_table(rows)
        uploads = service().spine_uploads
        max_rows = service().options.max_spine_rows
        if table.num_rows > max_rows:
            raise InvalidInput(f"the spine has {table.num_rows} rows; at most {max_rows}",
                               {"rows": table.num_rows, "max_rows": max_rows}, code="spine_too_large")
        spine_id = uploads.save(table)
        return {"spine_id": spine_id, "rows": table.num_rows, "columns": table.column_names,
                "expires_in_seconds": int(uploads.ttl)}, 201
