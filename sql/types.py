"""The one map between logical column types and each engine's types.

A source's columns, a query's schema and the schema checks speak logical types:
``integer``, ``float``, ``boolean``, ``string`` and ``timestamp`` (timezone-aware,
UTC). Every store creates, reads and introspects its tables through this module,
so a type means the same thing in the warehouse, the realtime store, sqlglot's
type inference and Arrow.
"""
from __future__ import annotations

import pyarrow as pa

LOGICAL_TYPES = ("integer", "float", "boolean", "string", "timestamp")

# logical type -> the column type each engine declares
DUCKDB = {"integer": "BIGINT", "float": "DOUBLE", "boolean": "BOOLEAN", "string": "VARCHAR",
          "timestamp": "TIMESTAMPTZ"}
POSTGRES = {"integer": "BIGINT", "float": "DOUBLE PRECISION", "boolean": "BOOLEAN", "string": "TEXT",
            "timestamp": "TIMESTAMPTZ"}
# SQLite keeps timestamps as ISO-8601 text in UTC (see `SQLITE_TIMESTAMP_FORMAT`), so text order is time order.
SQLITE = {"integer": "INTEGER", "float": "REAL", "boolean": "BOOLEAN", "string": "TEXT", "timestamp": "TIMESTAMP"}
# what sqlglot's type inference is told a column is
SQLGLOT = DUCKDB
ARROW = {"integer": pa.int64(), "float": pa.float64(), "boolean": pa.bool_(), "string": pa.large_string(),
         "timestamp": pa.timestamp("us", tz="UTC")}
SQLITE_TIMESTAMP_FORMAT = "%Y-%m-%d %H:%M:%S.%f"

# engine type names (upper case, without length or precision) -> logical type, for adopting tables
_INTROSPECTED = {
    "integer": ("BIGINT", "INTEGER", "INT", "INT8", "INT4", "INT2", "SMALLINT", "TINYINT", "HUGEINT", "UBIGINT",
                "UINTEGER", "USMALLINT", "UTINYINT", "INT64", "INT32", "INT16", "BIGSERIAL", "SERIAL"),
    "float": ("DOUBLE", "DOUBLE PRECISION", "REAL", "FLOAT", "FLOAT4", "FLOAT8", "DECIMAL", "NUMERIC"),
    "boolean": ("BOOLEAN", "BOOL"),
    "string": ("VARCHAR", "TEXT", "CHARACTER VARYING", "CHARACTER", "CHAR", "STRING", "BPCHAR", "UUID"),
    "timestamp": ("TIMESTAMPTZ", "TIMESTAMP WITH TIME ZONE"),
}
ENGINE_TO_LOGICAL = {name: logical for logical, names in _INTROSPECTED.items() for name in names}


def logical_of_engine_type(engine_type: str) -> str | None:
    """The logical type of a column type an engine reports (``VARCHAR(20)``, ``numeric(10,2)``), or None."""
    base = engine_type.upper().split("(", 1)[0].strip()
    return ENGINE_TO_LOGICAL.get(base)
