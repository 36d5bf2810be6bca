"""Point lookups whose cost does not grow with the data: the entity key pushed into every source.

A lookup is ``SELECT * FROM (query) WHERE key = ?``. Engines push that filter through plain joins, but
not into a ``GROUP BY`` subquery, a CTE used twice or a window: those are computed over every row, for
each lookup. Here the equality goes down the tree instead, scope by scope: the key is the output column
``T.c`` (or ``COALESCE`` of columns a ``USING`` join equates); it reaches every source that the scope's
join conditions and WHERE clause equate with ``T.c`` (``a.user_id = b.user_id``, transitively); a source
table it reaches is read as ``(SELECT * FROM t WHERE t.c = ?)``, a derived table or inlined CTE is
rewritten the same way with its own output column. Wrapping the source, rather than adding to a WHERE,
is what keeps outer joins exact on either side: an ON-equality holds in every matched row, and a row a
lookup for ``v`` returns can only match rows whose column is ``v``.

A scope is left unfiltered where filtering would change the key's rows: a GROUP BY without the key, a
window not PARTITION BY it, an aggregate with no GROUP BY, LIMIT/OFFSET/FETCH or DISTINCT ON, a key
computed by an expression; so is a subquery the key reaches by no equality, and a subquery inside an
expression (IN, EXISTS, scalar). Each such source is a `Refusal` with the reason, shown when the query is
saved. The outer ``WHERE key = ?`` stays, so every lookup returns exactly the unpushed rows.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from sqlglot import exp
from sqlglot.errors import SqlglotError
from sqlglot.optimizer.qualify import qualify

from common.errors import PointInTimeUnsupported
from sql.point_in_time import (crossing_keys, cutting_modifier, equal_columns, has_aggregates, inline_ctes,
                               output_selects, reads_subquery)
from sql.prepared import ROW_ALIAS, PreparedQuery, as_realtime_semantics, lookup_around
from sql.types import SQLGLOT as SQLGLOT_TYPES

Tables = dict[str, list[tuple[str, str]]]


@dataclass(frozen=True)
class Refusal:
    """A source a lookup reads in full, and why the key could not be pushed into it."""

    source: str
    reason: str


@dataclass(frozen=True)
class PointLookup:
    """A point lookup's statement, how many times it binds the key value, the (source, column) pairs it
    filters by the key (worth an index) and the sources it leaves unfiltered."""

    sql: str
    parameters: int
    filtered: frozenset[tuple[str, str]]
    refusals: tuple[Refusal, ...]

    def bind(self, value: Any) -> tuple[Any, ...]:
        """The statement's parameters for a lookup of `value`."""
        return (value,) * self.parameters


def point_lookup(prepared: PreparedQuery, index_key: str, dialect: str, tables: Tables,
                 pushdown: bool = True) -> PointLookup:
    """The lookup of one `index_key` value as `dialect` runs it over `tables` (their column types), the key
    pushed into every source it can reach (`pushdown`), else only filtered on the outside."""
    frozen = tuple((name, tuple(columns)) for name, columns in sorted(tables.items()))
    return _point_lookup(prepared, index_key, dialect, frozen, pushdown)


@lru_cache(maxsize=1024)
def _point_lookup(prepared: PreparedQuery, index_key: str, dialect: str, tables: tuple,
                  pushdown: bool) -> PointLookup:
    tables = {name: list(columns) for name, columns in tables}
    tree = as_realtime_semantics(prepared, tables, dialect)
    pusher = _Pusher(set(tables))
    if pushdown:
        tree = pusher.pushed(tree, prepared.dialect, index_key, tables)
    lookup = lookup_around(tree, index_key)
    return PointLookup(lookup.sql(dialect=dialect, comments=False), sum(1 for _ in lookup.find_all(exp.Placeholder)),
                       frozenset(pusher.filtered), tuple(pusher.refused.values()))


class _Pusher:
    """Pushes `column = ?` down one scope at a time, collecting the sources it has to leave unfiltered."""

    def __init__(self, sources: set[str]):
        self.sources = sources
        self.filtered: set[tuple[str, str]] = set()
        self.refused: dict[tuple[str, str], Refusal] = {}

    def pushed(self, tree: exp.Expression, dialect: str, index_key: str, tables: Tables) -> exp.Expression:
        """`tree` (qualified against `tables`, CTEs inlined) with the key pushed into its sources."""
        schema = {table: {column: SQLGLOT_TYPES[kind] for column, kind in columns} for table, columns in tables.items()}
        try:
            body = inline_ctes(qualify(tree.copy(), schema=schema, dialect=dialect, quote_identifiers=True))
        except (SqlglotError, PointInTimeUnsupported) as error:
            reason = error.message if isinstance(error, PointInTimeUnsupported) else "it could not be resolved"
            self.refuse(tree, f"the query's shape is not analysed ({reason.split(' in point-in-time')[0]})")
            return tree
        self.query(body, index_key)
        return body

    def refuse(self, node: exp.Expression, reason: str) -> None:
        """Leave every source under `node` unfiltered, for `reason`."""
        for table in node.find_all(exp.Table):
            if table.name in self.sources:
                self.refused.setdefault((table.name, reason), Refusal(table.name, reason))

    def query(self, node: exp.Expression, key: str) -> None:
        """Filter `node`'s sources so that only its rows whose output column `key` is the value remain."""
        if isinstance(node, exp.Subquery):
            return self.query(node.this, key)
        modifier = cutting_modifier(node)
        if modifier is not None:
            return self.refuse(node, f"{modifier.upper()} picks rows across keys, so it runs over every row")
        names = [select.alias_or_name for select in output_selects(node)] if isinstance(
            node, (exp.Select, exp.SetOperation)) else []
        if key not in names:
            return self.refuse(node, f"the key {key!r} is not an output column of {node.sql()[:60]!r}")
        if isinstance(node, exp.SetOperation):
            position = names.index(key)
            self.query(node.this, key)
            return self.query(node.expression, output_selects(node.expression)[position].alias_or_name)
        return self._select(node, key)

    def _select(self, select: exp.Select, key: str) -> None:
        projection = next(p for p in select.expressions if p.alias_or_name == key).unalias()
        columns = [projection.this, *projection.expressions] if isinstance(projection, exp.Coalesce) else [projection]
        if not all(isinstance(c, exp.Column) and c.table for c in columns):
            return self.refuse(select, f"the key is computed ({projection.sql()[:60]}), not a column of a source")
        same = {(c.table, c.name) for c in [columns[0], *equal_columns(select, columns[0], where=True)]}
        problem = self._cross_key_problem(select, same, columns)
        if problem is not None:
            return self.refuse(select, problem)
        for item in self._items(select):
            reached = sorted(name for table, name in same if table == item.alias_or_name)
            if isinstance(item, exp.Table) and reached and item.name in self.sources:
                self._filter(item, reached[0])
            elif isinstance(item, exp.Subquery) and reached:
                self.query(item.this, reached[0])
            elif isinstance(item, exp.Subquery):
                self.refuse(item, f"the key reaches no column of subquery {item.alias_or_name!r}: join it on the key")
        for part in ("expressions", "where", "having", "qualify"):
            if reads_subquery(select.args.get(part)):
                for node in _expression_subqueries(select.args[part]):
                    self.refuse(node, "a subquery inside an expression (IN, EXISTS, scalar) is not filtered by the "
                                      "key: join it on the key instead")

    def _filter(self, table: exp.Table, column: str) -> None:
        """Read `table` as ``(SELECT * FROM table AS _fs_row WHERE _fs_row.column = ?)``, keeping its alias."""
        self.filtered.add((table.name, column))
        rows = exp.table_(table.name, db=table.db or None, quoted=True, alias=exp.to_identifier(ROW_ALIAS))
        condition = exp.column(column, table=ROW_ALIAS, quoted=True).eq(exp.Placeholder())
        table.replace(exp.select("*").from_(rows).where(condition).subquery(
            exp.to_identifier(table.alias_or_name, quoted=True)))

    @staticmethod
    def _cross_key_problem(select: exp.Select, same: set[tuple[str, str]], key: list[exp.Column]) -> str | None:
        """Why filtering this scope's rows by the key would change the key's own rows, if it would."""
        if any((c.table, c.name) not in same for c in key):
            return "the key is a COALESCE of columns no join equates"
        crossing = crossing_keys(select, same)
        if isinstance(crossing, exp.Group):
            grouped = ", ".join(e.sql() for e in crossing.expressions)
            return f"an aggregate grouped by {grouped[:60]}, not by the key"
        if crossing is not None:
            return f"a window not partitioned by the key ({crossing.sql()[:60]})"
        if not select.args.get("group") and has_aggregates(select):
            return "an aggregate without GROUP BY reads every row: group by the key"
        return None

    @staticmethod
    def _items(select: exp.Select) -> list[exp.Expression]:
        from_ = select.args.get("from_")
        return [] if from_ is None else [from_.this, *[join.this for join in select.args.get("joins") or []]]


def _expression_subqueries(part: exp.Expression | list[exp.Expression]) -> list[exp.Expression]:
    nodes = part if isinstance(part, list) else [part]
    return [found for node in nodes for found in node.find_all(exp.Select, exp.SetOperation)]
