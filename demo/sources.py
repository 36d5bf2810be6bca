"""The demo's four tables as declared sources: the demo is one example of sources, not a special case."""
from __future__ import annotations

from dataclasses import replace
from typing import Any

from catalog.base import SourceRecord
from demo.flows import TABLES
from sources.definition import parse_source

_KEYS = {"users": ["user_id"], "quotes": ["quote_id"], "transactions": ["user_id", "ref_id"],
         "policies": ["user_id", "quote_id"]}
_EVENT_TIMES = {"users": "creation_date", "quotes": "creation_date", "transactions": "transaction_time",
                "policies": "purchase_time"}


def demo_source_declarations() -> list[dict[str, Any]]:
    """POST /v1.0/sources bodies for users, quotes, transactions and policies (epoch-second event times,
    no hot window: the realtime store keeps all of the demo's history)."""
    return [{"name": table, "columns": [{"name": c, "type": t} for c, t in columns], "entity_keys": _KEYS[table],
             "event_time": _EVENT_TIMES[table], "description": f"demo insurance flows: {table}",
             "tags": ["demo"], "owner": "demo"} for table, columns in TABLES.items()]


def demo_sources() -> list[SourceRecord]:
    """The four demo sources as version-1 records (for stores used without the service: tests, benchmarks)."""
    return [replace(parse_source(body, created_by="demo", created_at="2024-01-01T00:00:00.000+00:00"), version=1)
            for body in demo_source_declarations()]


def with_demo_tables(warehouse: Any = None, realtime: Any = None) -> list[SourceRecord]:
    """Create the demo's tables in `warehouse` (those missing) and register them in `realtime`."""
    sources = demo_sources()
    for source in sources:
        if warehouse is not None and warehouse.table_columns(source.table) is None:
            warehouse.create_table(source)
        if realtime is not None:
            realtime.register(source)
    return sources
