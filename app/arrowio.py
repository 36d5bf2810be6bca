"""Training sets as Arrow IPC streams: batch by batch, never the whole result as Python objects.

A client asks with ``?format=arrow`` or ``Accept: application/vnd.apache.arrow.stream``
and reads the body with ``pyarrow.ipc.open_stream`` (the Python client does).
"""
from __future__ import annotations

import io
from typing import Iterable, Iterator

import pandas as pd
import pyarrow as pa
from flask import Response, request, stream_with_context

ARROW_STREAM = "application/vnd.apache.arrow.stream"
BATCH_ROWS = 65_536
JSON_OR_ARROW = ["application/json", ARROW_STREAM]  # `produces` of every operation that can stream Arrow


def wants_arrow() -> bool:
    """Whether the request asks for Arrow (``format=arrow`` or the Accept header)."""
    return request.args.get("format") == "arrow" or ARROW_STREAM in request.headers.get("Accept", "")


def frame_batches(frame: pd.DataFrame, rows: int = BATCH_ROWS) -> tuple[pa.Schema, Iterator[pa.RecordBatch]]:
    """A DataFrame as Arrow record batches (its schema, then the batches)."""
    table = pa.Table.from_pandas(frame, preserve_index=False)
    return table.schema, iter(table.to_batches(max_chunksize=rows))


def ipc_stream(schema: pa.Schema, batches: Iterable[pa.RecordBatch]) -> Iterator[bytes]:
    """The Arrow IPC stream of `batches`, one chunk of bytes per batch."""
    sink = io.BytesIO()
    with pa.ipc.new_stream(sink, schema) as writer:
        yield _drain(sink)
        for batch in batches:
            writer.write_batch(batch)
            yield _drain(sink)
    yield _drain(sink)


def _drain(sink: io.BytesIO) -> bytes:
    data = sink.getvalue()
    sink.seek(0)
    sink.truncate()
    return data


def arrow_response(schema: pa.Schema, batches: Iterable[pa.RecordBatch], headers: dict[str, str]) -> Response:
    """A streamed Arrow IPC response; ids and counts travel in headers."""
    return Response(stream_with_context(ipc_stream(schema, batches)), mimetype=ARROW_STREAM, headers=headers)
