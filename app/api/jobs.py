"""Background jobs (exports of training sets): GET /jobs/<job_id>, and the `export` field of training requests."""
from __future__ import annotations

from typing import Any, Callable

from flask import current_app
from flask_restx import Namespace, Resource, fields

from app.api.common import with_errors
from app.auth import SCIENTIST, allow
from app.exports import Batches, ExportJobs, parse_target
from common.errors import InvalidInput

ns = Namespace("jobs", description="Background jobs: exports of training sets of any size")
NAMESPACES = [ns]

EXPORT_FIELDS = {"export": fields.Raw(description=(
    "write the training set instead of returning it: {path: 'dir/name.parquet'} (under EXPORT_DIR) or "
    "{table: 'name'} (a new warehouse table), optional overwrite: true. Answers 202 with a job; "
    "`GET /jobs/<job_id>` shows progress and, when done, where and how many rows"))}
job_model = ns.model("Job", {
    "job_id": fields.String, "kind": fields.String, "status": fields.String(enum=["running", "succeeded", "failed"]),
    "created_at": fields.String, "finished_at": fields.String, "progress": fields.Raw(description="{rows_written}"),
    "target": fields.Raw, "result": fields.Raw(description="{path | table, rows, format, bytes?, seconds}"),
    "error": fields.Raw(description="{code, message, details} when failed"),
})


def export_jobs() -> ExportJobs:
    return current_app.extensions["export_jobs"]


def export_answer(body: dict[str, Any], make: Callable[[], Batches]) -> tuple[dict[str, Any], int] | None:
    """With an `export` in `body`, the 202 answer of the job writing `make()`'s batches; else None."""
    if body.get("export") is None:
        return None
    target = parse_target(body["export"])
    return export_jobs().submit(target, make).to_dict(), 202


@ns.route("/<string:job_id>")
@with_errors(ns)
class JobItem(Resource):
    @ns.response(200, "the job's state and progress; its result once it succeeded", job_model)
    @ns.response(404, "unknown job (jobs are kept in memory until the server restarts)")
    @allow(*SCIENTIST)
    def get(self, job_id: str):
        """A job: running (rows written so far), succeeded (where, how many rows) or failed (the error)."""
        if len(job_id) > 40:
            raise InvalidInput("not a job id")
        return export_jobs().get(job_id).to_dict()
