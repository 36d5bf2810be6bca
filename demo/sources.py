"""The demo's four tables as declared sources: the demo is one example of sources, not a special case."""
from __future__ import annotations

from typing import Any

from demo.flows import TABLES

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
