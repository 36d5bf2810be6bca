"""Saved queries: POST /query/train, POST /query/realtime, GET /queries[/<id>]."""
from __future__ import annotations

from flask_restx import Namespace, Resource, fields

from app.api.common import MIN_POSITION, wait_for_min_position
from app.api.common import (PAGING, REQUEST_FIELDS, SPINE_FIELDS, spine_spec, request_data, NullableList, NullableString, Scalar, checked_id, json_body, page_dict, paging,
                             query_flag, service, with_errors)
from app.auth import SCIENTIST, SERVING, allow, caller
from app.api.jobs import EXPORT_FIELDS, export_answer
from app.arrowio import JSON_OR_ARROW, arrow_response, wants_arrow
from app.jsonio import frame_records
from catalog.base import QueryRecord

query_ns = Namespace("query", description="Run SQL on the warehouse (train) or on hot data (realtime)")
queries_ns = Namespace("queries", description="Saved queries in the catalog")
NAMESPACES = [query_ns, queries_ns]

column = query_ns.model("Column", {"name": fields.String, "type": fields.String(
    description="logical type: integer, float, boolean, string, timestamp, interval, binary, null, mixed")})
train_request = query_ns.model("QueryTrainRequest", {
    "query": fields.String(required=True, min_length=1, max_length=100_000,
                           description="one read-only SELECT/WITH statement", example="SELECT * FROM users"),
    "query_name": fields.String(max_length=200, description="a name to find it by"),
    **SPINE_FIELDS, **EXPORT_FIELDS,
})
train_response = query_ns.model("QueryTrainResponse", {
    "query_id": NullableString(description="null unless save=true"),
    "schema": fields.List(fields.Nested(column)),
    "data": NullableList(fields.Raw, description="result rows; null when include_data=false"),
})
plan_response = query_ns.model("QueryPlan", {
    "query_id": fields.String, "exists": fields.Boolean, "schema": fields.List(fields.Nested(column)),
})
realtime_request = query_ns.model("QueryRealtimeRequest", {
    "query_id": fields.String(required=True, min_length=1, max_length=64),
    "index_key": fields.String(required=True, min_length=1, max_length=200, description="an output column of the query"),
    "index_value": Scalar(required=True, description="the entity's key (always a bound parameter)"),
    **REQUEST_FIELDS,
})
rows_response = query_ns.model("RowsResponse", {"data": fields.List(fields.Raw)})
query_record = queries_ns.model("QueryRecord", {
    "query_id": fields.String, "name": fields.String, "sql": fields.String, "sql_hash": fields.String,
    "schema": fields.List(fields.Nested(column)), "created_by": fields.String, "created_at": fields.String,
})
query_page = queries_ns.model("QueryPage", {
    "items": fields.List(fields.Nested(query_record)), "total": fields.Integer,
    "offset": fields.Integer, "limit": fields.Integer,
})
FLAGS = {"save": {"description": "keep the query in the catalog", "type": "boolean", "default": False},
         "include_data": {"description": "return the rows", "type": "boolean", "default": True},
         "hot_window": {"description": "read only the rows each source's hot window holds now, as serving "
                                       "does (default: all rows)", "type": "boolean", "default": False},
         "format": {"description": "'arrow': stream the rows as Arrow IPC (no row limit; ids in X-Query-Id / "
                                   "X-Etl-Id headers); also Accept: application/vnd.apache.arrow.stream",
                    "type": "string", "enum": ["json", "arrow"], "default": "json"}}


@query_ns.route("/train")
@with_errors(query_ns)
class QueryTrain(Resource):
    @query_ns.expect(train_request)
    @query_ns.doc(params=FLAGS)
    @query_ns.produces(JSON_OR_ARROW)
    @query_ns.response(200, "the result, and the query id when saved", train_response)
    @query_ns.response(202, "export: the job writing the rows (see `GET /jobs/<job_id>`)")
    @query_ns.response(400, "not a single read-only SELECT, or the warehouse rejected it")
    @allow(*SCIENTIST)
    def post(self):
        """Run a query on the warehouse; with save=true keep it (same SQL, same id)."""
        body = json_body(train_request)
        spine = spine_spec(body)
        save, hot_window, who = query_flag("save", False), query_flag("hot_window", False), caller()
        svc = service()  # the job runs outside this request
        exported = export_answer(body, lambda: svc.query_batches(
            body["query"], body.get("query_name"), save, who, hot_window=hot_window, spine=spine)[1:])
        if exported:
            return exported
        if wants_arrow():
            record, schema, batches = service().query_batches(body["query"], body.get("query_name"),
                                                              query_flag("save", False), caller(),
                                                              hot_window=query_flag("hot_window", False), spine=spine)
            return arrow_response(schema, batches, {"X-Query-Id": record.query_id} if record else {})
        include_data = query_flag("include_data", True)
        record, schema, frame = service().train_query(body["query"], body.get("query_name"),
                                                      query_flag("save", False), include_data, caller(),
                                                      hot_window=query_flag("hot_window", False), spine=spine)
        answer = {"query_id": record.query_id if record else None, "schema": schema,
                  "data": frame_records(frame) if frame is not None else None}
        warnings = service().query_warnings(body["query"]) if record else []
        return {**answer, "warnings": warnings} if warnings else answer


@query_ns.route("/plan")
@with_errors(query_ns)
class QueryPlan(Resource):
    @query_ns.expect(train_request)
    @query_ns.response(200, "what saving would do: the id, whether it exists, the schema", plan_response)
    @query_ns.response(400, "the query would be refused")
    @allow(*SCIENTIST)
    def post(self):
        """Check a query as a save would, and say its id and whether it is saved, without saving."""
        return service().plan_query(json_body(train_request)["query"])


@query_ns.route("/realtime")
@with_errors(query_ns)
class QueryRealtime(Resource):
    @query_ns.expect(realtime_request)
    @query_ns.response(200, "the entity's rows from hot data", rows_response)
    @query_ns.response(404, "unknown query_id, or no hot rows for the entity (entity_not_found)")
    @query_ns.response(409, "serving output differs from the training schema")
    @query_ns.response(503, "min_position not applied by this process in time (position_not_applied): retry")
    @query_ns.doc(params=MIN_POSITION)
    @allow(*SERVING)
    def post(self):
        """Run a saved query on the realtime store for one entity."""
        wait_for_min_position()
        body = json_body(realtime_request)
        frame = service().realtime_query(checked_id("query", body["query_id"]), body["index_key"],
                                         body["index_value"], request_data(body))
        return {"data": frame_records(frame)}


@queries_ns.route("")
@with_errors(queries_ns)
class QueryList(Resource):
    @queries_ns.doc(params=PAGING)
    @queries_ns.response(200, "a page of saved queries, newest first", query_page)
    @allow(*SCIENTIST)
    def get(self):
        """List saved queries."""
        offset, limit = paging()
        return page_dict(service().list_queries(offset, limit), QueryRecord.to_dict)


@queries_ns.route("/<string:query_id>")
@with_errors(queries_ns)
class QueryItem(Resource):
    @queries_ns.response(200, "the saved query", query_record)
    @queries_ns.response(404, "unknown query_id")
    @allow(*SCIENTIST)
    def get(self, query_id: str):
        """Read one saved query."""
        return service().get_query(checked_id("query", query_id)).to_dict()
