"""Source declarations: validation, and which changes make a compatible next version.

Names become SQL identifiers, so they are checked here once (lower-case letters,
digits and underscores, a letter first, at most 63 characters, nothing the
service reserves for itself) and quoted by the stores everywhere they are used.
"""
from __future__ import annotations

import re
from typing import Any, Mapping

from catalog.base import SOURCE_KINDS, SourceRecord
from common.errors import InvalidInput
from sql.types import LOGICAL_TYPES

IDENTIFIER = re.compile(r"[a-z][a-z0-9_]{0,62}")
RESERVED_PREFIXES = ("_fs", "fs_", "sqlite_", "pg_", "duckdb_")
KEY_TYPES = ("integer", "string")
TIME_TYPES = ("timestamp", "integer")  # timestamptz, or epoch seconds (the demo's tables)
MAX_COLUMNS = 1000
MAX_HOT_WINDOW_SECONDS = 100 * 366 * 86400
MAX_TEXT = 10_000
FIELDS = {"name", "table", "columns", "entity_keys", "event_time", "created_time", "hot_window_seconds", "kind",
          "description", "tags", "owner"}


def check_identifier(name: Any, what: str) -> str:
    """`name` if it is a safe SQL identifier, else InvalidInput naming `what`."""
    if not isinstance(name, str) or not IDENTIFIER.fullmatch(name) or name.startswith(RESERVED_PREFIXES):
        raise InvalidInput(f"{what} {name!r} is not a valid name: use lower-case letters, digits and underscores, "
                           f"a letter first, at most 63 characters, not starting with {', '.join(RESERVED_PREFIXES)}",
                           {"field": what, "value": name if isinstance(name, str) else repr(name)})
    return name


def check_table_name(table: Any) -> str:
    """A warehouse table: an identifier, optionally schema-qualified (``analytics.clicks``)."""
    if not isinstance(table, str) or not 0 < table.count(".") + 1 <= 2:
        raise InvalidInput(f"table {table!r} must be a name or schema.name", {"field": "table"})
    for part in table.split("."):
        check_identifier(part, "table")
    return table


def parse_source(body: Mapping[str, Any], *, created_by: str, created_at: str) -> SourceRecord:
    """Validate a declaration with columns (version 0: the catalog assigns the real one)."""
    unknown = sorted(set(body) - FIELDS)
    if unknown:
        raise InvalidInput(f"unknown field(s) in the source: {unknown}", {"fields": unknown})
    name = check_identifier(body.get("name"), "name")
    columns = _columns(body.get("columns"))
    types = {c["name"]: c["type"] for c in columns}
    keys = body.get("entity_keys")
    if not isinstance(keys, list) or not keys or len(set(map(str, keys))) != len(keys):
        raise InvalidInput("entity_keys must be a non-empty list of distinct column names", {"field": "entity_keys"})
    for key in keys:
        _check_column_of(key, types, KEY_TYPES, "entity_keys")
    event_time = _check_column_of(body.get("event_time"), types, TIME_TYPES, "event_time")
    created_time = body.get("created_time")
    if created_time is not None:
        _check_column_of(created_time, types, TIME_TYPES, "created_time")
    required = {*keys, event_time}
    columns = [dict(c, nullable=False) if c["name"] in required else c for c in columns]
    kind = body.get("kind", "table")
    if kind not in SOURCE_KINDS:
        raise InvalidInput(f"kind must be one of {list(SOURCE_KINDS)}", {"field": "kind"})
    return SourceRecord(
        name=name, version=0, table=check_table_name(body.get("table") or name), columns=columns,
        entity_keys=list(keys), event_time=event_time, created_time=created_time,
        hot_window_seconds=_hot_window(body.get("hot_window_seconds")), kind=kind,
        description=_text(body.get("description", ""), "description"), tags=_tags(body.get("tags", [])),
        owner=_text(body.get("owner", ""), "owner"), created_by=created_by, created_at=created_at)


def source_diff(old: SourceRecord, new: SourceRecord) -> dict[str, Any]:
    """How `new` differs from `old`: ``{"compatible": bool, ...}`` with what changed.

    Compatible: new nullable columns, a column becoming nullable, a longer (or no) hot window,
    description, tags and owner. Anything else changes the meaning of stored rows or of saved
    queries: a removed column, a type change, a new required column, other keys, event or created
    time, table or kind, a shorter hot window.
    """
    before = {c["name"]: c for c in old.columns}
    after = {c["name"]: c for c in new.columns}
    added = [name for name in after if name not in before]
    diff: dict[str, Any] = {
        "added": added,
        "removed": [name for name in before if name not in after],
        "type_changed": [{"column": n, "from": before[n]["type"], "to": after[n]["type"]}
                         for n in after if n in before and before[n]["type"] != after[n]["type"]],
        "required_added": [n for n in added if not after[n].get("nullable", True)],
        "made_required": [n for n in after if n in before and before[n].get("nullable", True)
                          and not after[n].get("nullable", True)],
        "changed": {f: {"from": getattr(old, f), "to": getattr(new, f)}
                    for f in ("table", "entity_keys", "event_time", "created_time", "kind")
                    if getattr(old, f) != getattr(new, f)},
    }
    if _window(new.hot_window_seconds) < _window(old.hot_window_seconds):
        diff["changed"]["hot_window_seconds"] = {"from": old.hot_window_seconds, "to": new.hot_window_seconds}
    diff["compatible"] = not any(diff[k] for k in ("removed", "type_changed", "required_added", "made_required",
                                                   "changed"))
    return diff


def _window(seconds: int | None) -> float:
    return float("inf") if seconds is None else seconds


def _columns(columns: Any) -> list[dict[str, Any]]:
    if not isinstance(columns, list) or not 0 < len(columns) <= MAX_COLUMNS:
        raise InvalidInput(f"columns must be a list of 1 to {MAX_COLUMNS} columns", {"field": "columns"})
    checked, seen = [], set()
    for column in columns:
        if not isinstance(column, dict) or set(column) - {"name", "type", "nullable"}:
            raise InvalidInput("each column is {name, type, nullable?}", {"field": "columns"})
        name = check_identifier(column.get("name"), "column")
        if name in seen:
            raise InvalidInput(f"column {name!r} is declared twice", {"column": name})
        seen.add(name)
        if column.get("type") not in LOGICAL_TYPES:
            raise InvalidInput(f"column {name!r} has type {column.get('type')!r}; types are {list(LOGICAL_TYPES)}",
                               {"column": name, "types": list(LOGICAL_TYPES)})
        nullable = column.get("nullable", True)
        if not isinstance(nullable, bool):
            raise InvalidInput(f"nullable of column {name!r} must be true or false", {"column": name})
        checked.append({"name": name, "type": column["type"], "nullable": nullable})
    return checked


def _check_column_of(name: Any, types: dict[str, str], allowed: tuple[str, ...], what: str) -> str:
    if not isinstance(name, str) or name not in types:
        raise InvalidInput(f"{what} names {name!r}, which is not a declared column", {"field": what})
    if types[name] not in allowed:
        raise InvalidInput(f"{what} column {name!r} is {types[name]}; it must be one of {list(allowed)}",
                           {"field": what, "column": name})
    return name


def _hot_window(seconds: Any) -> int | None:
    if seconds is None:
        return None
    if isinstance(seconds, bool) or not isinstance(seconds, int) or not 0 < seconds <= MAX_HOT_WINDOW_SECONDS:
        raise InvalidInput(f"hot_window_seconds must be a whole number of seconds between 1 and "
                           f"{MAX_HOT_WINDOW_SECONDS}, or null for everything", {"field": "hot_window_seconds"})
    return seconds


def _text(value: Any, what: str) -> str:
    if not isinstance(value, str) or len(value) > MAX_TEXT:
        raise InvalidInput(f"{what} must be a string of at most {MAX_TEXT} characters", {"field": what})
    return value


def _tags(tags: Any) -> list[str]:
    if not isinstance(tags, list) or len(tags) > 50 or not all(isinstance(t, str) and 0 < len(t) <= 100
                                                                 for t in tags):
        raise InvalidInput("tags must be a list of at most 50 strings of 1 to 100 characters", {"field": "tags"})
    return tags
