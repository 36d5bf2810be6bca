"""Bodies refused from the request line and headers alone, before any body is read or any key looked up.

`BodyPolicy` decides: a declared Content-Length over the route's limit is 413 (MAX_INGEST_BYTES for
``POST /sources/<name>/rows`` and ``POST /spines``, MAX_BODY_BYTES for every other route), and with AUTH on a body sent
to a protected route without a bearer token is 401. The production server (app/server.py) applies
it as soon as the headers have arrived, and to a chunked body as its bytes arrive, so a refused body
is never read to its end nor spooled; `BodyGuard` applies the same checks to any WSGI server.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Mapping

from werkzeug.http import HTTP_STATUS_CODES

from app import jsonio
from app.auth import bearer_token, missing_key
from common.errors import FeatureStoreError

API_PREFIX = "/v1.0"  # app.api.API_PREFIX (not imported: that builds the whole API)
OPEN_PATHS = {f"{API_PREFIX}/health", f"{API_PREFIX}/docs", f"{API_PREFIX}/swagger.json"}
INGEST_PATH = re.compile(rf"^{re.escape(API_PREFIX)}/(sources/[^/]+/rows|spines)/?$")  # bulk uploads


class BodyTooLarge(FeatureStoreError):
    """A request body over its route's limit (413)."""

    status, code = 413, "request_entity_too_large"


@dataclass(frozen=True)
class BodyPolicy:
    """The body limits and whether keys are required (from the settings)."""

    max_body_bytes: int
    max_ingest_bytes: int
    auth: bool

    @classmethod
    def from_settings(cls, settings: Mapping[str, Any]) -> "BodyPolicy":
        return cls(settings["MAX_BODY_BYTES"], settings["MAX_INGEST_BYTES"], settings["AUTH"] != "off")

    @property
    def largest(self) -> int:
        return max(self.max_body_bytes, self.max_ingest_bytes)

    def limit(self, path: str) -> int:
        """The most body bytes a request to `path` may send."""
        return self.max_ingest_bytes if INGEST_PATH.match(path) else self.max_body_bytes

    def refusal(self, path: str, content_length: int | None, chunked: bool, authorization: str
                ) -> FeatureStoreError | None:
        """Why a request with these headers is refused before its body is read (None: read it)."""
        if not chunked and not content_length:
            return None
        limit = self.limit(path)
        if content_length is not None and content_length > limit:
            return too_large(limit)
        if self.auth and needs_key(path) and bearer_token(authorization) is None:
            return missing_key()
        return None


def too_large(limit: int) -> BodyTooLarge:
    return BodyTooLarge(f"the request body is larger than {limit} bytes, the limit of this endpoint",
                        {"max_bytes": limit})


def needs_key(path: str) -> bool:
    """Whether `path` is an API route that takes a key (not the health check nor the API documents)."""
    return path.startswith(f"{API_PREFIX}/") and path.rstrip("/") not in OPEN_PATHS \
        and not path.startswith(f"{API_PREFIX}/swaggerui/")


def error_response(error: FeatureStoreError) -> tuple[str, list[tuple[str, str]], bytes]:
    """(status line, headers, body) of an error in the one JSON shape, closing the connection."""
    body = jsonio.dumps(error.to_dict())
    return (f"{error.status} {HTTP_STATUS_CODES.get(error.status, 'Error')}",
            [("Content-Type", "application/json"), ("Content-Length", str(len(body))), ("Connection", "close")],
            body)


class BodyGuard:
    """WSGI middleware: a request `BodyPolicy` refuses is answered before the app (and its key lookup) runs."""

    def __init__(self, app: Callable[..., Iterable[bytes]], policy: BodyPolicy):
        self.app, self.policy = app, policy

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        raw = environ.get("CONTENT_LENGTH") or ""
        chunked = "chunked" in environ.get("HTTP_TRANSFER_ENCODING", "").lower()
        length = int(raw) if raw.isdigit() else None
        refusal = self.policy.refusal(environ.get("PATH_INFO", ""), length, chunked,
                                      environ.get("HTTP_AUTHORIZATION", ""))
        if refusal is None:
            return self.app(environ, start_response)
        status, headers, body = error_response(refusal)
        start_response(status, headers)
        return [body]
