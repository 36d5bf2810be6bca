"""The REST API under /v1.0: one namespace module per resource."""
from __future__ import annotations

from flask import Blueprint
from flask_restx import Api

from app.api import etls, feature_sets, health, jobs, keys, publish, queries, sources, spines
from app.api.common import install_error_handlers, install_json_representation

API_PREFIX = "/v1.0"


# CommonMark (what Swagger UI renders): anything in angle brackets goes in a code span, or it is taken as HTML.
DESCRIPTION = ("Saved SQL queries and git-versioned ETLs, served from hot data with the exact code and schema they "
               "were trained with. Send an API key as `Authorization: Bearer <key>` (roles: admin, scientist, "
               "serving); an admin creates keys with `python -m app keys create --name <name> --role <role>` or "
               "`POST /v1.0/keys`.")


def build_blueprint() -> Blueprint:
    """The API blueprint with its namespaces, OpenAPI document and Swagger UI (at /v1.0/docs)."""
    blueprint = Blueprint("api", __name__, url_prefix=API_PREFIX)
    api = Api(blueprint, version="1.0", title="Feature store",
              description=DESCRIPTION, doc="/docs",
              authorizations={"bearer": {"type": "apiKey", "in": "header", "name": "Authorization"}},
              security="bearer")
    install_json_representation(api)
    install_error_handlers(api)
    for module in (sources, publish, queries, etls, feature_sets, spines, jobs, keys, health):
        for namespace in module.NAMESPACES:
            api.add_namespace(namespace)
    return blueprint
