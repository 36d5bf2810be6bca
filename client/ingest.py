"""Rows for ``POST /sources/<name>/rows``: a DataFrame as Arrow IPC streams, JSON-ready rows, one answer of many."""
from __future__ import annotations

from typing import Any, Iterator

import pandas as pd

CHUNK_ROWS = 1_000_000  # rows per call of `FeatureStore.ingest`: each call is one transaction on the service


def arrow_chunks(frame: Any, chunk_rows: int | None = CHUNK_ROWS) -> Iterator[bytes]:
    """`frame` (a DataFrame or an Arrow table) as Arrow IPC streams of at most `chunk_rows` rows each (None:
    one stream; one empty stream for an empty frame).

    The index is not sent, NaN floats become nulls and tz-aware datetimes keep their zone (the service
    stores them in UTC); naive datetimes are sent as they are, and refused by the service.
    """
    import pyarrow as pa  # only clients that ingest frames need pyarrow

    if chunk_rows is not None and chunk_rows < 1:
        raise ValueError("chunk_rows must be at least 1")
    table = frame if isinstance(frame, pa.Table) else pa.Table.from_pandas(frame, preserve_index=False)
    chunk_rows = chunk_rows or max(table.num_rows, 1)
    for offset in range(0, max(table.num_rows, 1), chunk_rows):
        chunk = table.slice(offset, chunk_rows)
        sink = pa.BufferOutputStream()
        with pa.ipc.new_stream(sink, chunk.schema) as writer:
            writer.write_table(chunk)
        yield sink.getvalue().to_pybytes()


def json_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows as JSON objects: datetimes as ISO-8601 text, numpy scalars as Python ones, NaN, NaT and NA as null."""
    return [{key: _json_value(value) for key, value in row.items()} for row in rows]


def _json_value(value: Any) -> Any:
    if pd.api.types.is_scalar(value) and pd.isna(value):
        return None
    if hasattr(value, "isoformat"):
        return value.isoformat()
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):
        return value.item()
    return value


def summed(answers: list[dict[str, Any]], batch_id: str | None) -> dict[str, Any]:
    """The answer of an ingest sent in several calls: rows added up, the event-time range over all of them,
    `duplicate` only when every call was a duplicate; one answer is returned as it is."""
    if len(answers) == 1:
        return answers[0]
    times = {key: [a[key] for a in answers if a.get(key) is not None] for key in ("min_event_time", "max_event_time")}
    return {**answers[-1], "rows": sum(a["rows"] for a in answers),
            "realtime_rows": sum(a.get("realtime_rows", 0) for a in answers),
            "min_event_time": min(times["min_event_time"], key=_time_key, default=None),
            "max_event_time": max(times["max_event_time"], key=_time_key, default=None),
            "batch_id": batch_id, "duplicate": all(a.get("duplicate") for a in answers)}


def _time_key(value: Any) -> Any:
    """An answer's event time comparable with the others: ISO-8601 text as a timestamp, epoch seconds as is."""
    return pd.Timestamp(value) if isinstance(value, str) else value
