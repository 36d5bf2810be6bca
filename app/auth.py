"""API keys and roles.

A key looks like ``fs_<key_id>_<secret>``; the catalog stores only its sha256,
so a leaked catalog leaks no key. Each request's bearer token is hashed and
looked up in the catalog every time, so a revoked key stops working at once.

Roles: ``admin`` may do everything (manage keys, publish); ``scientist`` runs
ad-hoc and saved queries, registers ETLs, reads the catalog, manages feature
sets and reads training sets; ``serving`` may only call the realtime endpoints
by saved ids or feature-set names. ``/health`` and the API documents are open.
With ``AUTH=off`` (local development only) nothing is checked.
"""
from __future__ import annotations

import functools
import hashlib
import logging
import secrets
from typing import Any, Callable

from flask import current_app, g, request

from catalog.base import ApiKeyRecord, Catalog, utc_now
from common.errors import FeatureStoreError, InvalidInput

log = logging.getLogger("featurestore")
ROLES = ("admin", "scientist", "serving")
SCIENTIST = ("admin", "scientist")
SERVING = ("admin", "scientist", "serving")
ADMIN = ("admin",)


class Unauthorized(FeatureStoreError):
    """No valid API key (401)."""

    status, code = 401, "unauthorized"


class Forbidden(FeatureStoreError):
    """The key's role may not do this (403)."""

    status, code = 403, "forbidden"


def key_hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def create_key(catalog: Catalog, name: str, role: str, token: str | None = None) -> tuple[ApiKeyRecord, str]:
    """A new key of `role`: its record and the token, which is shown once and never stored."""
    if role not in ROLES:
        raise InvalidInput(f"role must be one of {list(ROLES)}", {"role": role})
    key_id = secrets.token_hex(6)
    token = token or f"fs_{key_id}_{secrets.token_urlsafe(32)}"
    record = catalog.save_api_key(ApiKeyRecord(key_id=key_id, name=name, role=role, key_hash=key_hash(token),
                                               created_at=utc_now()))
    return record, token


def ensure_admin_key(catalog: Catalog, token: str) -> ApiKeyRecord:
    """Register `token` (from ADMIN_KEY) as an admin key unless it is known; a revoked one stays revoked."""
    if len(token) < 16:
        raise InvalidInput("ADMIN_KEY must be at least 16 characters")
    existing = catalog.find_api_key(key_hash(token))
    return existing if existing else create_key(catalog, "bootstrap (ADMIN_KEY)", "admin", token)[0]


GET_A_KEY = ("an admin creates keys with `python -m app keys create --name NAME --role ROLE` on the server "
             "or POST /v1.0/keys (the first admin key: ADMIN_KEY at start)")


def bearer_token(header: str) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header value, or None."""
    scheme, _, token = header.partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


def missing_key() -> Unauthorized:
    """The error of a request that sends no API key."""
    return Unauthorized("send an API key as 'Authorization: Bearer <key>'; " + GET_A_KEY)


def authenticate(catalog: Catalog) -> ApiKeyRecord:
    """The active key behind the request's bearer token, or Unauthorized."""
    token = bearer_token(request.headers.get("Authorization", ""))
    if token is None:
        raise missing_key()
    record = catalog.find_api_key(key_hash(token))
    if record is None or record.revoked_at is not None:
        raise Unauthorized("the API key is unknown or revoked; " + GET_A_KEY)
    return record


def allow(*roles: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Let only keys of `roles` call the decorated handler (nothing is checked with AUTH=off)."""

    def decorate(handler: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(handler)
        def checked(*args: Any, **kwargs: Any) -> Any:
            if current_app.config["AUTH"] != "off":
                principal = authenticate(current_app.extensions["feature_service"].catalog)
                g.principal = principal
                if principal.role not in roles:
                    raise Forbidden(f"the {principal.role} role may not do this", {"role": principal.role,
                                                                                     "allowed": list(roles)})
            return handler(*args, **kwargs)

        checked.allowed_roles = roles  # type: ignore[attr-defined]
        return checked

    return decorate


def caller() -> str:
    """Who is asking, for `created_by`: the key's name and id, or 'anonymous' with AUTH=off."""
    principal = getattr(g, "principal", None)
    return f"{principal.name} ({principal.key_id})" if principal else "anonymous"
