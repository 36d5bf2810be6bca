"""`publish`: demo flows through the same ingestion path as anyone's rows."""
from __future__ import annotations

from typing import Any

import pyarrow as pa

from demo.flows import generate_flows
from demo.sources import demo_source_declarations
from sources.rows import rows_from_arrow


def declare_demo_sources(sources: Any) -> None:
    """Declare the demo's four sources (idempotent)."""
    for declaration in demo_source_declarations():
        sources.declare(declaration, created_by="demo")


def publish_batch_id(n_flows: int, seed: int | None) -> str | None:
    """The ingestion batch id of a seeded publish: the same seed and size give the same flows (the same ids),
    so publishing them again is a retry the sources' batch ledger writes once. Unseeded: no id."""
    return None if seed is None else f"demo-publish:seed={seed}:n_flows={n_flows}"


def publish_flows(sources: Any, n_flows: int, seed: int | None = None) -> dict[str, Any]:
    """Generate flows and ingest every table in one transaction per store.

    Returns ``{"written": rows per table, "duplicate": bool}``: a seeded publish repeated with the same
    `n_flows` writes nothing (every count 0, ``duplicate`` true) instead of doubling the data."""
    declare_demo_sources(sources)
    frames = generate_flows(n_flows, seed=seed)
    rows = {name: rows_from_arrow(sources.get(name), pa.Table.from_pandas(frame, preserve_index=False).to_batches())
            for name, frame in frames.items()}
    answers = sources.ingest_many(rows, publish_batch_id(n_flows, seed))
    duplicate = any(answer.get("duplicate") for answer in answers.values())
    return {"written": {name: 0 if duplicate else table.num_rows for name, table in rows.items()},
            "duplicate": duplicate}
