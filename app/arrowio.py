"""Training sets as Arrow IPC streams: batch by batch, never the whole result as Python objects.

A client asks with ``?format=arrow`` or ``Accept: application/vnd.apache.arrow.stream``
and reads the body with ``pyarrow.ipc.open_stream`` (the Python client does).

The status is sent before the rows, so an error after the first batch cannot change it. Instead
every stream ends with one empty record batch whose custom metadata ``featurestore.end`` is JSON:
``{"status": "ok", "rows": N}``, or ``{"status": "error", "rows": N, "http_status": 400, "error":
{code, message, details}}`` when the stream stopped early (a time limit, a failing database). A
stream without that last batch was cut (the connection dropped). The Python client checks both.
"""
from __future__ import annotations

import io
import json
from typing import Iterable, Iterator

import pandas as pd
import pyarrow as pa
from flask import Response, request, stream_with_context


ARROW_STREAM = "application/vnd.apache.arrow.stream"
BATCH_ROWS = 65_536
JSON_OR_ARROW = ["application/json", ARROW_STREAM]  # `produces` of every operation that can stream Arrow
END_KEY = "featurestore.end"  # custom metadata key of the last, empty, batch of every stream


def wants_arrow() -> bool:
    """Whether the request asks for Arrow (``format=arrow`` or the Accept header)."""
    return request.args.get("format") == "arrow" or ARROW_STREAM in request.headers.get("Accept", "")


def frame_batches(frame: pd.DataFrame, rows: int = BATCH_ROWS) -> tuple[pa.Schema, Iterator[pa.RecordBatch]]:
    """A DataFrame as Arrow record batches (its schema, then the batches)."""
    table = pa.Table.from_pandas(frame, preserve_index=False)
    return table.schema, iter(table.to_batches(max_chunksize=rows))


def ipc_stream(schema: pa.Schema, batches: Iterable[pa.RecordBatch]) -> Iterator[bytes]:
    """The Arrow IPC stream of `batches`, one chunk of bytes per batch, ended by the end marker batch.

    An error while reading `batches` ends the stream with an error marker instead of cutting it; when
    the client goes away (the generator is closed), `batches` is closed too, which stops its query.
    """
    from app.api.common import error_body  # here: the API imports the service, which streams through this module

    sink = io.BytesIO()
    rows = 0
    with pa.ipc.new_stream(sink, schema) as writer:
        yield _drain(sink)
        try:
            for batch in batches:
                writer.write_batch(batch)
                rows += batch.num_rows
                yield _drain(sink)
            end = {"status": "ok", "rows": rows}
        except Exception as error:  # noqa: BLE001 - every failure becomes the marker, in the one shape
            body, status = error_body(error)
            end = {"status": "error", "rows": rows, "http_status": status, "error": body}
        finally:
            close = getattr(batches, "close", None)
            if close is not None:
                close()
        writer.write_batch(empty_batch(schema), custom_metadata={END_KEY: json.dumps(end, default=str)})
    yield _drain(sink)


def empty_batch(schema: pa.Schema) -> pa.RecordBatch:
    """A batch of no rows of `schema`."""
    return pa.RecordBatch.from_arrays([pa.array([], type=field.type) for field in schema], schema=schema)


def _drain(sink: io.BytesIO) -> bytes:
    data = sink.getvalue()
    sink.seek(0)
    sink.truncate()
    return data


def arrow_response(schema: pa.Schema, batches: Iterable[pa.RecordBatch], headers: dict[str, str]) -> Response:
    """A streamed Arrow IPC response; ids and counts travel in headers."""
    return Response(stream_with_context(ipc_stream(schema, batches)), mimetype=ARROW_STREAM, headers=headers)
