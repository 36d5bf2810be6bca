"""The demo's sources on bare stores (no service): for tests of the warehouse and realtime stores."""
from __future__ import annotations

from catalog.base import SourceRecord
from dataclasses import replace

from demo.sources import demo_source_declarations
from realtime.base import RealtimeStore
from sources.definition import parse_source
from warehouse import Warehouse


def demo_sources() -> list[SourceRecord]:
    """The four demo sources as version-1 records."""
    return [replace(parse_source(body, created_by="test", created_at="2024-01-01T00:00:00.000+00:00"), version=1)
            for body in demo_source_declarations()]


def with_demo_tables(warehouse: Warehouse | None = None, realtime: RealtimeStore | None = None) -> list[SourceRecord]:
    """Create the demo's tables in `warehouse` (those missing) and register them in `realtime`."""
    sources = demo_sources()
    for source in sources:
        if warehouse is not None and warehouse.table_columns(source.table) is None:
            warehouse.create_table(source)
        if realtime is not None:
            realtime.register(source)
    return sources
