"""SQL checks and rewrites, done once per saved query with sqlglot.

sqlglot parses the text into a tree, so "a single read-only SELECT/WITH" is a
check on the tree, not a regular expression, and the point lookup used in
serving is built as a tree around the saved query rather than by pasting text
(a trailing ``-- comment`` or ``;`` cannot break it).
"""
from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Mapping

import pandas as pd
import sqlglot
from sqlglot import exp
from sqlglot.errors import SqlglotError
from sqlglot.tokens import TokenType
from sqlglot.optimizer.annotate_types import annotate_types
from sqlglot.optimizer.normalize_identifiers import normalize_identifiers
from sqlglot.optimizer.qualify import qualify

from common.errors import InvalidQuery
from sql.guards import is_refused, refused_message
from sql.parity import extract_as_strftime, match_warehouse_numerics, text_of_booleans, unequal_constructs
from sql.types import SQLGLOT as SQLGLOT_TYPES

logging.getLogger("sqlglot").setLevel(logging.ERROR)

REALTIME_DIALECT = "duckdb"
LOOKUP_ALIAS = "_fs_query"
ROW_ALIAS = "_fs_row"  # a filtered source's table inside `sql_with_tables`

# Nodes that write, change state or reach outside the query; none may appear anywhere in the tree.
_FORBIDDEN = tuple(
    getattr(exp, name) for name in (
        "Insert", "Update", "Delete", "Merge", "Create", "Drop", "Alter", "TruncateTable", "Command",
        "Pragma", "Set", "Attach", "Detach", "Copy", "Install", "Use", "Into", "Transaction", "Commit",
        "Rollback", "Grant", "Revoke", "Describe", "Show", "Analyze", "Load", "Cache", "Uncache",
        "Placeholder", "Parameter", "Lock",
    ) if hasattr(exp, name)
)
_READ_ONLY_ROOTS = (exp.Select, exp.SetOperation)


@dataclass(frozen=True, eq=False)  # hashed by identity: cheap as a cache key on the request path
class PreparedQuery:
    """A validated query: its tree, its identity hash, and the text each engine runs."""

    tree: exp.Expression
    dialect: str
    sql_hash: str

    def sql_for(self, dialect: str) -> str:
        """The query as `dialect` runs it (comments dropped, syntax transpiled if needed)."""
        return self.tree.sql(dialect=dialect, comments=False)

    def output_types(self, tables: dict[str, list[tuple[str, str]]]) -> list[tuple[str, str | None]] | None:
        """Each output column's logical type, inferred from the tables' column types (None: unknown).

        None as a whole when the query cannot be typed against `tables` (an unknown table, say).
        """
        return _output_types(self, tuple((t, tuple(c)) for t, c in tables.items()))

    @property
    def selects_star(self) -> bool:
        """Whether the outermost SELECT list has a ``*`` (its columns follow the tables')."""
        return any(isinstance(select, exp.Star) or (isinstance(select, exp.Column) and isinstance(select.this, exp.Star))
                   for select in self.tree.selects)

    def table_names(self) -> list[str]:
        """The tables the query reads (``schema.table`` when qualified), CTE names left out, sorted."""
        return _table_names(self)

    def join_columns(self, tables: dict[str, list[tuple[str, str]]]) -> set[tuple[str, str]]:
        """(table, column) pairs compared by the query's join conditions: the columns worth indexing."""
        return _join_columns(self, tuple((t, tuple(c)) for t, c in tables.items()))

    def sql_with_tables(self, dialect: str, tables: dict[str, str],
                        filters: dict[str, exp.Expression] | None = None) -> str:
        """The query as `dialect` runs it, reading each table `name` from `tables[name]` instead (a
        source adopted from a warehouse table of another name), and only the rows of `filters[name]`
        (a condition on that table's columns, which may name it `ROW_ALIAS`) where given; the name stays the
        alias."""
        filters = filters or {}
        if not filters and not any(name != table for name, table in tables.items()):
            return self.sql_for(dialect)
        tree = normalize_identifiers(self.tree.copy(), dialect=self.dialect)  # FROM CLICKS reads clicks
        ctes = {cte.alias_or_name for cte in tree.find_all(exp.CTE)}
        for node in list(tree.find_all(exp.Table)):
            name = _qualified_name(node)
            if name not in tables or name in ctes or (tables[name] == name and name not in filters):
                continue
            schema, _, table = tables[name].rpartition(".")
            alias = node.alias or node.name
            source = exp.table_(table, db=schema or None, quoted=True)
            if name in filters:  # the filter reads the table as _fs_row
                rows = exp.table_(table, db=schema or None, quoted=True, alias=exp.to_identifier(ROW_ALIAS))
                node.replace(exp.select("*").from_(rows).where(filters[name].copy()).subquery(alias))
            else:
                node.replace(exp.table_(table, db=schema or None, quoted=True, alias=alias))
        return tree.sql(dialect=dialect, comments=False)

    def point_lookup_sql(self, index_key: str, dialect: str = REALTIME_DIALECT,
                         tables: dict[str, list[tuple[str, str]]] | None = None) -> str:
        """The query filtered to one entity: ``SELECT * FROM (query) WHERE "key" = ?``.

        With the tables' column types, rewritten to mean in `dialect` what it means in the warehouse
        (`as_realtime_semantics`: for SQLite, timestamp literals become the UTC text it keeps timestamps as)."""
        tree = self.tree.copy() if tables is None else as_realtime_semantics(self, tables, dialect)
        return lookup_around(tree, index_key).sql(dialect=dialect, comments=False)

    def realtime_sql(self, dialect: str, tables: dict[str, list[tuple[str, str]]]) -> str:
        """The query as the `dialect` realtime store runs it (`as_realtime_semantics`)."""
        return as_realtime_semantics(self, tables, dialect).sql(dialect=dialect, comments=False)

    def unequal_constructs(self, dialect: str, tables: dict[str, list[tuple[str, str]]]) -> list[str]:
        """What the realtime `dialect` would compute otherwise than the warehouse, with no rewrite that makes
        it equal (`sql.parity.unequal_constructs`): such a query is refused when it is saved."""
        typed = _typed(self, tables)
        return [] if typed is None else unequal_constructs(typed, self.dialect, dialect)

    def sqlite_sql(self, tables: dict[str, list[tuple[str, str]]]) -> str:
        """The query as the SQLite realtime store runs it (timestamp literals as its stored text)."""
        return self.realtime_sql("sqlite", tables)


def lookup_around(tree: exp.Expression, index_key: str) -> exp.Select:
    """``SELECT * FROM (tree) WHERE "key" = ?``: the rows of `tree` for one entity."""
    column = exp.column(index_key, table=LOOKUP_ALIAS, quoted=True)
    return exp.select("*").from_(tree.subquery(LOOKUP_ALIAS)).where(column.eq(exp.Placeholder()))


@dataclass(frozen=True)
class QueryLimits:
    """How complex a query may be before it is parsed: parsing and typing cost grows with the tokens, and
    faster than linearly with chained set operations (5,200 UNION ALL branches took 53 s of CPU)."""

    max_tokens: int = 20_000
    max_set_operations: int = 100
    max_depth: int = 64

    @classmethod
    def from_settings(cls, settings: Mapping[str, Any]) -> "QueryLimits":
        return cls(settings["MAX_QUERY_TOKENS"], settings["MAX_QUERY_SET_OPERATIONS"], settings["MAX_QUERY_DEPTH"])


_limits = QueryLimits()
_SET_OPERATIONS = frozenset({TokenType.UNION, TokenType.INTERSECT, TokenType.EXCEPT})


def set_query_limits(limits: QueryLimits) -> None:
    """The limits `prepare_query` applies in this process (the app sets them from its settings at start)."""
    global _limits
    _limits = limits


def prepare_query(sql: str, dialect: str = REALTIME_DIALECT) -> PreparedQuery:
    """Parse and check `sql`; raise InvalidQuery unless it is one read-only SELECT/WITH statement.

    Its size and complexity are checked first, on sqlglot's tokens (linear and cheap), so that a query
    too costly to parse and type is refused before any of that work."""
    if not isinstance(sql, str) or not sql.strip():
        raise InvalidQuery("query must be a non-empty SQL string")
    _check_cost(sql, dialect, _limits)
    return _prepare(sql, dialect)


@lru_cache(maxsize=1024)  # a saved query is served many times: its tokens are counted once
def _check_cost(sql: str, dialect: str, limits: QueryLimits) -> None:
    """Raise InvalidQuery if `sql` has more tokens, set operations or parenthesis depth than `limits` allow."""
    try:
        tokens = sqlglot.tokenize(sql, read=dialect)
    except Exception as error:  # noqa: BLE001 - e.g. an unterminated string: it could not parse either
        raise InvalidQuery(f"query does not parse: {str(error)[:200]}", {"dialect": dialect}) from None
    set_operations = depth = deepest = 0
    for token in tokens:
        if token.token_type in _SET_OPERATIONS:
            set_operations += 1
        elif token.token_type == TokenType.L_PAREN:
            depth += 1
            deepest = max(deepest, depth)
        elif token.token_type == TokenType.R_PAREN:
            depth -= 1
    for found, most, what, setting in ((len(tokens), limits.max_tokens, "tokens", "MAX_QUERY_TOKENS"),
                                       (set_operations, limits.max_set_operations, "UNION/INTERSECT/EXCEPT "
                                        "operations", "MAX_QUERY_SET_OPERATIONS"),
                                       (deepest, limits.max_depth, "levels of nested parentheses", "MAX_QUERY_DEPTH")):
        if found > most:
            raise InvalidQuery(f"the query is too complex to accept: {found} {what}, at most {most}",
                               {"limit": setting, "max": most, "found": found})


@lru_cache(maxsize=1024)
def _prepare(sql: str, dialect: str) -> PreparedQuery:
    if "\x00" in sql:
        raise InvalidQuery("query must not contain NUL characters")
    try:
        parsed = sqlglot.parse(sql, read=dialect)
    except SqlglotError as error:
        raise InvalidQuery(f"query does not parse: {error}", {"dialect": dialect}) from None
    except Exception as error:  # noqa: BLE001 - sqlglot can fail on odd input with other exceptions
        raise InvalidQuery(f"query does not parse: {type(error).__name__}", {"dialect": dialect}) from None
    # A comment after the last ';' comes back as a bare Semicolon: it is not a statement.
    statements = [s for s in parsed if s is not None and not isinstance(s, exp.Semicolon)]
    if len(statements) != 1:
        raise InvalidQuery(f"query must be exactly one statement, found {len(statements)}")
    tree = statements[0]
    if not isinstance(tree, _READ_ONLY_ROOTS):
        raise InvalidQuery(f"only SELECT/WITH queries are allowed, not {tree.key.upper()}",
                           {"statement": tree.key})
    for node in tree.walk():
        if isinstance(node, _FORBIDDEN):
            raise InvalidQuery(f"{node.key.upper()} is not allowed inside a query", {"construct": node.key})
        name = _refused_name(node)
        if name is not None:
            raise InvalidQuery(refused_message(name), {"function": name})
    names = [select.alias_or_name for select in tree.selects if not isinstance(select, exp.Star)]
    repeated = sorted({name for name in names if names.count(name) > 1 and name != "*"})
    if repeated:
        raise InvalidQuery(f"output column names must be distinct: {repeated}", {"columns": repeated})
    normalized = normalize_identifiers(tree.copy(), dialect=dialect).sql(dialect=dialect, comments=False)
    return PreparedQuery(tree, dialect, hashlib.sha256(normalized.encode()).hexdigest())


def _refused_name(node: exp.Expression) -> str | None:
    """The name `node` calls or reads if `sql.guards` refuses it (a function, table function or system view)."""
    if isinstance(node, exp.Anonymous):
        name = node.name
    elif isinstance(node, exp.Func):
        name = node.sql_name()
    elif isinstance(node, exp.Table) and isinstance(node.this, exp.Identifier):
        return node.name if is_refused(node.name, table=True) else None
    else:
        return None
    return name if is_refused(name) else None


_COMPARISONS = (exp.EQ, exp.NEQ, exp.GT, exp.GTE, exp.LT, exp.LTE)


def as_sqlite_semantics(prepared: PreparedQuery, tables: dict[str, list[tuple[str, str]]]) -> exp.Expression:
    """A copy of the tree that means on SQLite what it means in the warehouse: every timestamp literal — ``TIMESTAMPTZ '…'``, a cast of a string to a
    timestamp, or a string compared with a timestamp column — is the ISO text SQLite stores timestamps as
    (UTC, microseconds), so that SQLite's text comparison orders them as the warehouse does. Literals
    without an offset are UTC (the warehouse session's zone); casts of floats to integers round as the warehouse
    does, as do divisions and remainders (`sql.parity.match_warehouse_numerics`); the text of a boolean is
    'true'/'false' and EXTRACT is `strftime` (`sql.parity`). A tree that cannot be typed stays as it is."""
    tree = prepared.tree.copy()
    typed = _typed(prepared, tables)
    if typed is None:
        return tree
    changed = False
    for node in list(typed.find_all(exp.Cast)):
        if isinstance(node.this, exp.Literal) and node.this.is_string and _is_temporal(node.to):
            changed |= _replace_with_text(node, node.this.this)
    for node in list(typed.find_all(*_COMPARISONS)):
        for column, other in ((node.left, node.right), (node.right, node.left)):
            if _is_temporal(column.type) and isinstance(other, exp.Literal) and other.is_string:
                changed |= _replace_with_text(other, other.this)
    changed |= match_warehouse_numerics(typed, prepared.dialect, "sqlite")
    changed |= text_of_booleans(typed)
    changed |= extract_as_strftime(typed)
    return typed if changed else tree


def as_realtime_semantics(prepared: PreparedQuery, tables: dict[str, list[tuple[str, str]]],
                          dialect: str) -> exp.Expression:
    """A copy of the tree that means in the realtime `dialect` what it means in the warehouse: SQLite's
    (`as_sqlite_semantics`), or another engine's numerics (`sql.parity.match_warehouse_numerics`)."""
    if dialect == "sqlite":
        return as_sqlite_semantics(prepared, tables)
    tree = prepared.tree.copy()
    if dialect == prepared.dialect:
        return tree
    typed = _typed(prepared, tables)
    return typed if typed is not None and match_warehouse_numerics(typed, prepared.dialect, dialect) else tree


def _typed(prepared: PreparedQuery, tables: dict[str, list[tuple[str, str]]]) -> exp.Expression | None:
    """A qualified copy of the tree with sqlglot's types, from the tables' column types (None: it cannot be typed)."""
    schema = {table: {column: SQLGLOT_TYPES[kind] for column, kind in columns} for table, columns in tables.items()}
    try:
        return annotate_types(qualify(prepared.tree.copy(), schema=schema, dialect=prepared.dialect,
                                      validate_qualify_columns=False), schema=schema, dialect=prepared.dialect)
    except SqlglotError:
        return None


def _is_temporal(data_type: exp.DataType | None) -> bool:
    return data_type is not None and data_type.this in (exp.DataType.Type.TIMESTAMPTZ, exp.DataType.Type.TIMESTAMP,
                                                        exp.DataType.Type.TIMESTAMPLTZ)


def _replace_with_text(node: exp.Expression, text: str) -> bool:
    """Replace `node` with `text` as SQLite's stored timestamp text; False if `text` is not a timestamp."""
    try:
        stamp = pd.Timestamp(text)
    except (ValueError, TypeError):
        return False
    stamp = stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")
    node.replace(exp.Literal.string(stamp.strftime("%Y-%m-%d %H:%M:%S.%f")))
    return True


def _qualified_name(table: exp.Table) -> str:
    return f"{table.db}.{table.name}" if table.db else table.name


@lru_cache(maxsize=1024)
def _table_names(prepared: PreparedQuery) -> list[str]:
    tree = normalize_identifiers(prepared.tree.copy(), dialect=prepared.dialect)
    ctes = {cte.alias_or_name for cte in tree.find_all(exp.CTE)}
    return sorted({_qualified_name(t) for t in tree.find_all(exp.Table) if t.name and _qualified_name(t) not in ctes})


@lru_cache(maxsize=1024)
def _join_columns(prepared: PreparedQuery, tables: tuple) -> set[tuple[str, str]]:
    schema = {table: {column: SQLGLOT_TYPES[kind] for column, kind in columns} for table, columns in tables}
    try:
        qualified = qualify(prepared.tree.copy(), schema=schema, dialect=prepared.dialect, validate_qualify_columns=False)
    except SqlglotError:
        return set()
    aliases = {t.alias_or_name: t.name for t in qualified.find_all(exp.Table) if t.name in schema}
    pairs = set()
    for join in qualified.find_all(exp.Join):
        condition = join.args.get("on")
        for column in (condition.find_all(exp.Column) if condition is not None else ()):
            table = aliases.get(column.table)
            if table is not None and column.name in schema[table]:
                pairs.add((table, column.name))
    return pairs


_TYPE_FAMILIES = (
    ("boolean", {exp.DataType.Type.BOOLEAN}),
    ("integer", exp.DataType.INTEGER_TYPES),
    ("float", exp.DataType.REAL_TYPES),
    ("string", exp.DataType.TEXT_TYPES),
    ("timestamp", exp.DataType.TEMPORAL_TYPES),
)


@lru_cache(maxsize=1024)
def _output_types(prepared: PreparedQuery, tables: tuple) -> list[tuple[str, str | None]] | None:
    schema = {table: {column: SQLGLOT_TYPES[kind] for column, kind in columns} for table, columns in tables}
    try:
        typed = annotate_types(qualify(prepared.tree.copy(), schema=schema, dialect=prepared.dialect),
                               schema=schema, dialect=prepared.dialect)
    except SqlglotError:
        return None
    return [(select.alias_or_name, _duckdb_sum_widening(select, _logical(select.type), prepared.dialect))
            for select in typed.selects]


def _duckdb_sum_widening(select: exp.Expression, logical: str | None, dialect: str) -> str | None:
    """DuckDB sums integers into HUGEINT, which reaches pandas as float64: type it as DuckDB delivers it."""
    if dialect == "duckdb" and logical == "integer" and any(True for _ in select.find_all(exp.Sum)):
        return "float"
    return logical


def _logical(data_type: exp.DataType | None) -> str | None:
    if data_type is None:
        return None
    for logical, members in _TYPE_FAMILIES:
        if data_type.this in members:
            return logical
    return None
