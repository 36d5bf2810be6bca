"""`publish`: demo flows through the same ingestion path as anyone's rows."""
from __future__ import annotations

from typing import Any

import pyarrow as pa

from common.errors import InvalidInput
from demo.flows import generate_flows
from demo.sources import demo_source_declarations
from sources.rows import rows_from_arrow


def declare_demo_sources(sources: Any) -> None:
    """Declare the demo's four sources (idempotent)."""
    for declaration in demo_source_declarations():
        sources.declare(declaration, created_by="demo")


def publish_batch_id(seed: int | None) -> str | None:
    """The ingestion batch id of a seeded publish. A seed fixes the flows' ids (a larger `n_flows` draws the
    same first ones), so a seed is published once: again with the same `n_flows` it is a retry the sources'
    batch ledger writes once, with another it would repeat ids. Unseeded: no id."""
    return None if seed is None else f"demo-publish:seed={seed}"


def publish_flows(sources: Any, n_flows: int, seed: int | None = None) -> dict[str, Any]:
    """Generate flows and ingest every table in one transaction per store.

    Returns ``{"written": rows per table, "duplicate": bool, "position": the change feed's}``: a seeded publish repeated with the same
    `n_flows` writes nothing (every count 0, ``duplicate`` true) instead of doubling the data; with another
    `n_flows` it is refused (400), as its flows would repeat the first publish's ids."""
    declare_demo_sources(sources)
    frames = generate_flows(n_flows, seed=seed)
    rows = {name: rows_from_arrow(sources.get(name), pa.Table.from_pandas(frame, preserve_index=False).to_batches())
            for name, frame in frames.items()}
    answers = sources.ingest_many(rows, publish_batch_id(seed), note={"n_flows": n_flows})
    seen = next((answer for answer in answers.values() if answer.get("duplicate")), None)
    if seen is not None and seen.get("n_flows") != n_flows:
        raise InvalidInput(f"seed {seed} was published before with n_flows={seen.get('n_flows')}: the same seed "
                           f"with n_flows={n_flows} would write flows with the same ids again; nothing was "
                           "written: publish with another seed (or none)",
                           {"seed": seed, "n_flows": n_flows, "published_n_flows": seen.get("n_flows")})
    return {"written": {name: 0 if seen else table.num_rows for name, table in rows.items()},
            "duplicate": seen is not None, "position": max(answer["position"] for answer in answers.values())}
