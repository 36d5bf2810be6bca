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


def publish_flows(sources: Any, n_flows: int, seed: int | None = None) -> dict[str, int]:
    """Generate flows and ingest every table in one transaction per store; rows written per table."""
    declare_demo_sources(sources)
    frames = generate_flows(n_flows, seed=seed)
    rows = {name: rows_from_arrow(sources.get(name), pa.Table.from_pandas(frame, preserve_index=False).to_batches())
            for name, frame in frames.items()}
    sources.ingest_many(rows)
    return {name: table.num_rows for name, table in rows.items()}
