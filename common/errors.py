"""One error family for the whole service.

Every error the service raises on purpose is a `FeatureStoreError` with a stable
`code`, an HTTP `status`, a human `message` and structured `details`. The API
turns any of them into the single JSON shape ``{"code", "message", "details"}``;
the Python client turns that JSON back into the same classes.
"""
from __future__ import annotations

import re
from typing import Any

# CSI sequences (colours, underline: sqlglot underlines the failing token), OSC strings, two-byte escapes.
_ANSI_ESCAPE = re.compile(r"\x1b(?:\[[0-?]*[ -/]*[@-~]|\][^\x07\x1b]*(?:\x07|\x1b\\)?|[@-Z\\-_])")


def plain_text(text: str) -> str:
    """`text` without ANSI terminal escape sequences, fit for a JSON message or a log line."""
    return _ANSI_ESCAPE.sub("", text) if "\x1b" in text else text


class FeatureStoreError(Exception):
    """Base of every deliberate error; carries what the JSON body needs (the message as plain text)."""

    status: int = 500
    code: str = "internal_error"

    def __init__(self, message: str, details: dict[str, Any] | None = None, code: str | None = None):
        message = plain_text(message)
        super().__init__(message)
        self.message = message
        self.details = details or {}
        if code:
            self.code = code

    def to_dict(self) -> dict[str, Any]:
        return {"code": self.code, "message": self.message, "details": self.details}


class InvalidInput(FeatureStoreError):
    """The request is malformed or asks for something that cannot be done (400)."""

    status, code = 400, "invalid_input"


class InvalidQuery(InvalidInput):
    """The SQL is not a single read-only SELECT/WITH statement, or the engine rejects it (400)."""

    code = "invalid_query"


class PointInTimeUnsupported(InvalidQuery):
    """The saved query uses a construct the point-in-time rewrite cannot answer exactly (400)."""

    code = "point_in_time_unsupported"


class InvalidEtl(InvalidInput):
    """The ETL source cannot be located, fetched or loaded (400)."""

    code = "invalid_etl"


class ResultTooLarge(InvalidInput):
    """A JSON response would exceed the configured row limit (400)."""

    code = "result_too_large"


class NotFound(FeatureStoreError):
    """An id names nothing in the catalog, or an entity has no hot rows (404)."""

    status, code = 404, "not_found"


class SchemaMismatch(FeatureStoreError):
    """Serving output differs from the training schema (409); details carry the diff."""

    status, code = 409, "schema_mismatch"


class SourceIncompatible(FeatureStoreError):
    """A new definition under an existing source name that is not a compatible change (409); details carry
    the name, the newest version, the diff (``source_diff``) and the saved queries that read the source."""

    status, code = 409, "source_incompatible"


class ExportExists(FeatureStoreError):
    """An export's file or table exists already, and the request did not ask to replace it (409)."""

    status, code = 409, "export_exists"


class TrainServeMismatch(FeatureStoreError):
    """Replayed through the serving path, training entities got other features than in training (409);
    details carry the consistency report (per-column mismatch rates and examples)."""

    status, code = 409, "train_serve_mismatch"


class EtlFailed(FeatureStoreError):
    """The ETL code raised or returned something that is not a DataFrame (422)."""

    status, code = 422, "etl_failed"


class ExpectationsFailed(FeatureStoreError):
    """Features break the ETL's declared expectations (422); details list each violation."""

    status, code = 422, "expectations_failed"


class EtlTampered(FeatureStoreError):
    """Stored ETL code no longer matches its recorded sha256: refused, never run (500)."""

    status, code = 500, "etl_tampered"


class UpstreamUnavailable(FeatureStoreError):
    """A git or HTTP remote holding ETL code could not be reached (502)."""

    status, code = 502, "upstream_unavailable"


class BackendUnavailable(FeatureStoreError):
    """The catalog, warehouse or realtime store cannot be reached (503)."""

    status, code = 503, "backend_unavailable"

    def __init__(self, backend: str, cause: BaseException | str):
        super().__init__(f"{backend} is unavailable: {cause}", {"backend": backend})


class PositionNotApplied(FeatureStoreError):
    """A realtime request's min_position was not applied by the process that got it in time (503: retry)."""

    status, code = 503, "position_not_applied"
