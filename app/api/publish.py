"""PUT /publish: generate demo flows into the warehouse and the realtime store."""
from __future__ import annotations

from flask_restx import Namespace, Resource, fields

from app.api.common import NullableInteger, query_int, service, with_errors
from app.auth import ADMIN, allow
from common.errors import InvalidInput

ns = Namespace("publish", description="Generate demo quote→bind→pay→policy flows")
NAMESPACES = [ns]

counts = ns.model("PublishCounts", {
    "n_flows": fields.Integer, "seed": NullableInteger,
    "written": fields.Raw(description="rows written per table", example={"users": 80, "quotes": 100}),
    "duplicate": fields.Boolean(description="true when this seed and n_flows were published before: nothing "
                                            "was written (every count 0)"),
    "position": fields.Integer(description="change-feed position of the rows: pass it as min_position to "
                                           "a realtime request to read them from any process"),
})


@ns.route("")
@with_errors(ns)
class Publish(Resource):
    @ns.doc(params={"n_flows": {"description": "how many flows to generate", "type": "integer", "required": True},
                    "seed": {"description": "seed for a reproducible batch; the same seed and n_flows again "
                                            "writes nothing (duplicate), with another n_flows is a 400",
                             "type": "integer"}})
    @ns.response(200, "rows written per table", counts)
    @ns.response(400, "n_flows missing or out of range, or the seed was published with another n_flows")
    @allow(*ADMIN)
    def put(self):
        """Generate N flows and write each to the warehouse and the realtime store."""
        fs = service()
        n_flows = query_int("n_flows", None, 1, fs.options.max_publish_flows)
        if n_flows is None:
            raise InvalidInput("query parameter n_flows is required", {"parameter": "n_flows"})
        seed = query_int("seed", None, 0, 2**32 - 1)
        return {"n_flows": n_flows, "seed": seed, **fs.publish(n_flows, seed)}
