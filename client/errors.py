"""The client's errors: the service's own error family, rebuilt from its JSON bodies.

A non-2xx response ``{"code", "message", "details"}`` becomes the class in
`common.errors` with that code, so client and server share one family
(``except common.errors.NotFound`` and ``except client.NotFound`` are the
same thing). A few classes exist only on this side: `SchemaMismatch` adds
`diff`, `ServiceError` carries a code this client does not know,
`UnexpectedResponse` a body that is not the error shape (a proxy's page), `IncompleteStream` an
Arrow stream cut before its end marker, and
`ServiceUnreachable`/`ServiceTimeout` a service that never answered.
"""
from __future__ import annotations

from typing import Any

import requests

from common import errors
from common.errors import FeatureStoreError


class SchemaMismatch(errors.SchemaMismatch):
    """Serving output differs from the training schema (409); `diff` holds missing, extra, type_changed."""

    @property
    def diff(self) -> dict[str, Any]:
        return {key: self.details.get(key, []) for key in ("missing", "extra", "type_changed")}


class ServiceError(FeatureStoreError):
    """An error whose code this client does not know; `code` and `status` are the service's."""

    def __init__(self, message: str, details: dict[str, Any] | None = None, code: str | None = None,
                 status: int = 500):
        super().__init__(message, details, code)
        self.status = status


class UnexpectedResponse(FeatureStoreError):
    """The response was not the service's JSON (e.g. a proxy's error page); `text` is its start."""

    code = "unexpected_response"

    def __init__(self, status: int, text: str, content_type: str = ""):
        super().__init__(f"HTTP {status} with a {content_type or 'untyped'} body, not the service's JSON",
                         {"content_type": content_type})
        self.status, self.text = status, text


class IncompleteStream(FeatureStoreError):
    """An Arrow stream that ended without the service's end marker: the connection was cut mid-stream."""

    code = "incomplete_stream"

    def __init__(self, message: str, rows: int):
        super().__init__(message, {"rows_received": rows})
        self.status = 200


class ServiceUnreachable(FeatureStoreError, ConnectionError):
    """No answer from the service after every attempt (`attempts`); `status` is 0: no HTTP exchange."""

    status, code = 0, "service_unreachable"

    def __init__(self, message: str, attempts: int, cause: BaseException | None = None):
        super().__init__(message, {"attempts": attempts, "cause": repr(cause) if cause else None})
        self.attempts = attempts


class ServiceTimeout(ServiceUnreachable, TimeoutError):
    """The service accepted the request but sent no response within the timeout (never retried)."""

    code = "service_timeout"


def _server_classes() -> dict[str, type[FeatureStoreError]]:
    found: dict[str, type[FeatureStoreError]] = {}
    pending = [FeatureStoreError]
    while pending:
        cls = pending.pop()
        if cls.__module__ == errors.__name__:
            found.setdefault(cls.code, cls)
        pending.extend(cls.__subclasses__())
    return found


# Codes the service sends with a class of another code (same status and meaning).
_ALIASES = {"entity_not_found": errors.NotFound, "source_not_found": errors.NotFound,
            "query_timeout": errors.InvalidQuery, "etl_timeout": errors.EtlFailed,
            "etl_worker_died": errors.EtlFailed}


def error_class(code: str) -> type[FeatureStoreError] | None:
    """The class for an error code, None when this client does not know it."""
    classes = {**_server_classes(), **_ALIASES, SchemaMismatch.code: SchemaMismatch}
    return classes.get(code)


def error_from_response(response: requests.Response) -> FeatureStoreError:
    """The exception for a non-2xx response: its code's class, else `ServiceError`/`UnexpectedResponse`."""
    content_type = response.headers.get("Content-Type", "")
    try:
        body = response.json() if "json" in content_type else None
    except ValueError:
        body = None
    if not (isinstance(body, dict) and isinstance(body.get("code"), str)):
        return UnexpectedResponse(response.status_code, response.text[:2000], content_type)
    return error_from_body(body, response.status_code)


def error_from_body(body: dict[str, Any], status: int | None = None) -> FeatureStoreError:
    """The exception for the one error shape `body` with HTTP `status` (also an Arrow stream's error marker, or
    a failed job's error: then `status` defaults to the class's own)."""
    code, message = body["code"], str(body.get("message") or body["code"])
    details = body.get("details") if isinstance(body.get("details"), dict) else {}
    cls = error_class(code)
    if cls is None:
        return ServiceError(message, details, code, status or 500)
    error = cls.__new__(cls)  # past a custom __init__ (BackendUnavailable takes backend, cause)
    FeatureStoreError.__init__(error, message, details, code)
    error.status = status or cls.status
    return error
