"""The same saved query computing the same values on the realtime engine as on the warehouse engine.

The warehouse (DuckDB or PostgreSQL) decides what a query means. `match_warehouse_numerics` rewrites a
typed tree so the realtime engine (SQLite, or DuckDB under a PostgreSQL warehouse) rounds, divides and
takes remainders as the warehouse does; `unequal_constructs` names what no rewrite makes equal, which
is refused when the query is saved. tests/test_engine_parity.py checks both on every shipped pair.
"""
from __future__ import annotations

from typing import Any, Callable

from sqlglot import exp

_Type = exp.DataType.Type
_ARITHMETIC = (exp.Add, exp.Sub, exp.Mul, exp.Mod, exp.Div)


def numeric_kind(node: exp.Expression, dialect: str) -> str | None:
    """What `node` computes in `dialect`: "integer", "exact" (DECIMAL/NUMERIC: a literal such as 2.5 is
    one), "double", or None (not a number, or unknown). sqlglot types 2.5 as DOUBLE; both engines do not."""
    if isinstance(node, exp.Literal) and not node.is_string:
        text = node.this.lower()
        if "e" in text and dialect != "postgres":  # PostgreSQL's 2.5e0 is NUMERIC too
            return "double"
        return "exact" if "." in text or "e" in text else "integer"
    if isinstance(node, (exp.Paren, exp.Neg, exp.Abs)) or _is_plain_round(node):
        return numeric_kind(node.this, dialect)
    if isinstance(node, exp.Cast):
        return _kind_of_type(node.to)
    if isinstance(node, exp.IntDiv):
        return "integer"
    if isinstance(node, exp.Div) and dialect == "duckdb":  # DuckDB's / is float division
        return "double"
    if isinstance(node, _ARITHMETIC):
        return _combined([node.left, node.right], dialect)
    if isinstance(node, exp.Coalesce):
        return _combined([node.this, *node.expressions], dialect)
    if isinstance(node, exp.Case):
        return _combined([branch.args["true"] for branch in node.args.get("ifs", [])] + [node.args.get("default")],
                         dialect)
    return _kind_of_type(node.type)


def _is_plain_round(node: exp.Expression) -> bool:
    """``ROUND(x)`` without a number of decimals."""
    return isinstance(node, exp.Round) and not node.args.get("decimals")


def _combined(operands: list[exp.Expression | None], dialect: str) -> str | None:
    """The kind of an operation on `operands`: a double wins over an exact number, which wins over an integer."""
    kinds = {numeric_kind(operand, dialect) for operand in operands
             if operand is not None and not isinstance(operand, exp.Null)}
    for kind in ("double", "exact", "integer"):
        if kind in kinds:
            return kind if kinds <= {"double", "exact", "integer"} else None
    return None


def _kind_of_type(data_type: exp.DataType | None) -> str | None:
    if data_type is None:
        return None
    if data_type.this in exp.DataType.INTEGER_TYPES:
        return "integer"
    if data_type.this in (_Type.DECIMAL, _Type.BIGDECIMAL):
        return "exact"
    return "double" if data_type.this in exp.DataType.REAL_TYPES else None


def match_warehouse_numerics(typed: exp.Expression, warehouse: str, realtime: str) -> bool:
    """Rewrite `typed` (annotated, in the `warehouse` dialect) in place so `realtime` computes what the
    warehouse does; True if anything changed. Nothing changes when both are the same engine.

    - ``CAST(x AS INTEGER)``: a double rounds half to even (DuckDB, PostgreSQL; SQLite truncates), an
      exact number half away from zero (``ROUND(x)``), whatever type the realtime engine gives x;
    - ``ROUND(x)`` of a double rounds half to even on PostgreSQL (DuckDB and SQLite: away from zero);
    - PostgreSQL's ``/`` of two integers truncates: DuckDB's ``//`` (SQLite's ``/`` already does);
    - DuckDB's ``/`` by zero is an infinity (or NaN for 0/0), SQLite's NULL: there, ``x * 9e999`` (SQLite's
      infinity times x; 0 times it is NULL, as NaN reaches pandas);
    - ``%`` of a float on SQLite is ``fs_fmod`` (its ``%`` truncates the operands to integers)."""
    if warehouse == realtime:
        return False
    rewrites = [(node, rewrite) for node in typed.walk(bfs=True)
                if (rewrite := _numeric_rewrite(node, warehouse, realtime)) is not None]
    for node, rewrite in reversed(rewrites):  # the deepest first: an outer rewrite copies rewritten operands
        rewrite(node)
    return bool(rewrites)


def _numeric_rewrite(node: exp.Expression, warehouse: str, realtime: str) -> Callable[[Any], None] | None:
    """The rewrite `match_warehouse_numerics` makes of `node`, if any."""
    if isinstance(node, exp.Cast) and node.to.this in exp.DataType.INTEGER_TYPES:
        kind = numeric_kind(node.this, warehouse)
        return _cast_rounding(kind) if kind in ("double", "exact") else None
    if _is_plain_round(node) and warehouse == "postgres" and numeric_kind(node.this, warehouse) == "double":
        return _round_half_even_node
    if isinstance(node, exp.Div) and (warehouse, realtime) == ("postgres", "duckdb"):
        return _integer_division if numeric_kind(node, warehouse) == "integer" else None
    if isinstance(node, exp.Div) and (warehouse, realtime) == ("duckdb", "sqlite"):
        return _float_division
    if isinstance(node, exp.Mod) and realtime == "sqlite" and numeric_kind(node, warehouse) in ("double", "exact"):
        return _float_remainder
    return None


def _cast_rounding(kind: str) -> Callable[[exp.Cast], None]:
    def rewrite(cast: exp.Cast) -> None:
        value = exp.Paren(this=cast.this.copy())
        cast.set("this", exp.Round(this=value) if kind == "exact" else half_even(value))
    return rewrite


def _round_half_even_node(node: exp.Round) -> None:
    node.replace(half_even(exp.Paren(this=node.this.copy())))


def _integer_division(node: exp.Div) -> None:
    node.replace(exp.IntDiv(this=node.left.copy(), expression=node.right.copy()))


def _float_division(node: exp.Div) -> None:
    infinite = exp.Mul(this=exp.Paren(this=node.left.copy()), expression=exp.Literal.number("9e999"))
    node.replace(exp.Paren(this=exp.Case(ifs=[exp.If(this=exp.EQ(this=exp.Paren(this=node.right.copy()),
                                                                   expression=exp.Literal.number(0)),
                                                        true=infinite)], default=node.copy())))


def _float_remainder(node: exp.Mod) -> None:
    node.replace(exp.Anonymous(this="fs_fmod", expressions=[node.left.copy(), node.right.copy()]))


def half_even(value: exp.Expression) -> exp.Expression:
    """`value` rounded half to even with functions every engine has: halves (``|x - CAST(x AS BIGINT)|``
    is 0.5 whether the cast truncates or rounds) become ``2 * ROUND(x / 2)``, the rest ``ROUND(x)``."""
    fraction = exp.Abs(this=exp.Sub(this=value.copy(), expression=exp.cast(value.copy(), "BIGINT")))
    even = exp.Mul(this=exp.Literal.number(2), expression=exp.Round(
        this=exp.Div(this=value.copy(), expression=exp.Literal.number("2.0"))))
    return exp.Case(ifs=[exp.If(this=exp.EQ(this=fraction, expression=exp.Literal.number("0.5")), true=even)],
                    default=exp.Round(this=value.copy()))


_TEXT_TYPES = exp.DataType.TEXT_TYPES
_TEMPORAL_TYPES = exp.DataType.TEMPORAL_TYPES


def text_of_booleans(typed: exp.Expression) -> bool:
    """Make the text of a boolean (a CAST to text, an operand of ``||``) 'true'/'false' on SQLite, as the
    warehouses print it (SQLite: '1'/'0'). True if anything changed."""
    booleans = [operand for node in typed.walk() for operand in _text_operands(node)
                if operand.type is not None and operand.type.this == _Type.BOOLEAN]
    for operand in booleans:
        value = exp.Paren(this=operand.copy())
        text = exp.Case(ifs=[exp.If(this=value.copy(), true=exp.Literal.string("true")),
                             exp.If(this=exp.Not(this=value.copy()), true=exp.Literal.string("false"))])
        operand.replace(text)
    return bool(booleans)


# EXTRACT fields whose SQLite strftime format gives the warehouses' number (DOW: 0 is Sunday on all three);
# SECOND is left out: DuckDB's is whole seconds, PostgreSQL's has the fraction.
_STRFTIME = {"YEAR": "%Y", "MONTH": "%m", "DAY": "%d", "HOUR": "%H", "MINUTE": "%M", "DOW": "%w", "DOY": "%j"}


def extract_as_strftime(typed: exp.Expression) -> bool:
    """Make ``EXTRACT(field FROM timestamp)`` run on SQLite (which has no EXTRACT) as the integer of its
    `strftime` of the stored UTC text; True if anything changed."""
    parts = [node for node in typed.find_all(exp.Extract) if node.this.name.upper() in _STRFTIME
             and node.expression.type is not None and node.expression.type.this in _TEMPORAL_TYPES]
    for node in parts:
        text = exp.Anonymous(this="strftime", expressions=[exp.Literal.string(_STRFTIME[node.this.name.upper()]),
                                                           node.expression.copy()])
        node.replace(exp.cast(text, "BIGINT"))
    return bool(parts)


def _text_operands(node: exp.Expression) -> list[exp.Expression]:
    """What `node` turns into text: the operand of a CAST to text, both sides of ``||``."""
    if isinstance(node, exp.Cast) and node.to.this in _TEXT_TYPES:
        return [node.this]
    return [node.left, node.right] if isinstance(node, exp.DPipe) else []


def unequal_constructs(typed: exp.Expression, warehouse: str, realtime: str) -> list[str]:
    """The constructs of `typed` (annotated, in the `warehouse` dialect) that `realtime` computes otherwise
    and no rewrite makes equal, each named once, in order of appearance.

    On SQLite: the text of a float (SQLite prints 15 significant digits, the warehouses the shortest text
    that reads back as the same double: 0.35000000000000003) and of a timestamp (SQLite keeps its own
    text, '2024-03-01 12:00:00.000000', the warehouses print '2024-03-01 12:00:00+00'), whether by a CAST
    to text or by ``||``; and a CAST of a column or expression to a timestamp or date (SQLite has no such
    type: its CAST reads the leading number of the text)."""
    if realtime != "sqlite" or warehouse == realtime:
        return []
    found: list[str] = []
    for node in typed.walk():
        if _casts_to_a_timestamp(node) and _TIMESTAMP_CAST not in found:
            found.append(_TIMESTAMP_CAST)
        how = "CAST to text" if isinstance(node, exp.Cast) else "|| (concatenation)"
        for operand in _text_operands(node):
            name = _text_gap(operand, warehouse)
            if name is not None and f"{how} of {name}" not in found:
                found.append(f"{how} of {name}")
    return found


_TIMESTAMP_CAST = "CAST of a value to a timestamp or date (SQLite has no such type: it would serve a number)"


def _casts_to_a_timestamp(node: exp.Expression) -> bool:
    """A CAST to a temporal type of anything but a string literal (literals are rewritten to SQLite's text)."""
    if not isinstance(node, exp.Cast) or node.to is None or node.to.this not in _TEMPORAL_TYPES:
        return False
    return not (isinstance(node.this, exp.Literal) and node.this.is_string)


def _text_gap(operand: exp.Expression, warehouse: str) -> str | None:
    if numeric_kind(operand, warehouse) in ("double", "exact") and not isinstance(operand, exp.Literal):
        return "a float"
    if operand.type is not None and operand.type.this in _TEMPORAL_TYPES:
        return "a timestamp"
    return None
