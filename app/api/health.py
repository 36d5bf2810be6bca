"""GET /health: whether each backend answers."""
from __future__ import annotations

from flask_restx import Namespace, Resource, fields

from app.api.common import service, with_errors

ns = Namespace("health", description="Backend checks")
NAMESPACES = [ns]

check = ns.model("Check", {"ok": fields.Boolean, "error": fields.String})
health = ns.model("Health", {"status": fields.String(enum=["ok", "unavailable"]),
                             "checks": fields.Raw(description="catalog, warehouse, realtime, feed → Check; the "
                                                  "feed's also has applied (the position this process serves), "
                                                  "newest and behind (the entries between)")})


@ns.route("")
@with_errors(ns)
class Health(Resource):
    @ns.response(200, "every backend answers", health)
    @ns.response(503, "a backend does not answer: the error shape, details.checks as above")
    def get(self):
        """Ping the catalog, the warehouse, the realtime store and the change feed (with how far behind it
        this process is)."""
        report = service().health()
        down = [name for name, check in report["checks"].items() if not check["ok"]]
        if down:
            return {"code": "backend_unavailable", "message": f"unavailable: {', '.join(down)}",
                    "details": report}, 503
        return report
