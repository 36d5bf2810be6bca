"""API keys: create (the key is shown once), list, revoke. Admin only."""
from __future__ import annotations

import re
from typing import Any

from flask_restx import Namespace, Resource, fields

from app.api.common import NullableString, json_body, service, with_errors
from app.auth import ADMIN, ROLES, allow, create_key
from catalog.base import ApiKeyRecord, utc_now
from common.errors import InvalidInput

ns = Namespace("keys", description="API keys (admin only); only their hashes are stored")
NAMESPACES = [ns]
KEY_ID = re.compile(r"^[0-9a-f]{12}$")

create_request = ns.model("KeyCreate", {
    "name": fields.String(required=True, min_length=1, max_length=200, description="who or what uses it"),
    "role": fields.String(required=True, enum=list(ROLES)),
})
key_model = ns.model("Key", {
    "key_id": fields.String, "name": fields.String, "role": fields.String, "created_at": fields.String,
    "revoked_at": NullableString,
})
created_model = ns.inherit("CreatedKey", key_model, {
    "key": fields.String(description="the bearer token: shown only now, store it safely"),
})


def _public(record: ApiKeyRecord) -> dict[str, Any]:
    data = record.to_dict()
    data.pop("key_hash")
    return data


@ns.route("")
@with_errors(ns)
class KeyList(Resource):
    @ns.expect(create_request)
    @ns.response(201, "the new key, with its token (shown once)", created_model)
    @allow(*ADMIN)
    def post(self):
        """Create an API key of a role."""
        body = json_body(create_request)
        record, token = create_key(service().catalog, body["name"], body["role"])
        return {**_public(record), "key": token}, 201

    @ns.response(200, "every key, oldest first, without secrets", ns.model("KeyList", {
        "items": fields.List(fields.Nested(key_model))}))
    @allow(*ADMIN)
    def get(self):
        """List API keys."""
        return {"items": [_public(r) for r in service().catalog.list_api_keys()]}


@ns.route("/<string:key_id>")
@with_errors(ns)
class KeyItem(Resource):
    @ns.response(200, "the revoked key; it stops working at once", key_model)
    @ns.response(404, "unknown key id")
    @allow(*ADMIN)
    def delete(self, key_id: str):
        """Revoke an API key."""
        if not KEY_ID.fullmatch(key_id):
            raise InvalidInput(f"{key_id[:100]!r} is not a key id")
        return _public(service().catalog.revoke_api_key(key_id, utc_now()))
