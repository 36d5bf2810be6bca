"""A saved query as of each row of a spine: the point-in-time rewrite.

For a spine of rows ``(key k, time t)`` the rewritten statement returns, for each spine row, the
rows the saved query returns for ``index_key = k`` when every source holds only the rows with
``event_time <= t`` (and ``> t - hot_window`` for a source with a window): what serving at time t
returns. One statement for the whole spine, run by the warehouse:

- every source the query reads first (the FROM of a scope) is joined to the spine on the entity key
  and the time cut, so it carries the spine row's id (``_fs_sid``) and time;
- every other source of that scope takes the time cut in its join condition, against the carried time;
- every subquery that reads sources carries the id too, and joins, GROUP BY and window partitions
  gain it, so nothing mixes two spine rows;
- the spine is LEFT JOINed to the result on (id, key): every spine row is kept, in the spine's order.

Pushing the key down into each source is what keeps the work proportional to the entities' own rows;
it is sound only where a key's output rows depend on that key's source rows alone, so constructs that
break that (a window or aggregate not partitioned by the key, a subquery expression over a source,
LIMIT, RIGHT/FULL joins, a source reached by no equality with the key) are refused, never rewritten wrong.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import sqlglot
from sqlglot import exp
from sqlglot.errors import SqlglotError
from sqlglot.optimizer.qualify import qualify

from common.errors import PointInTimeUnsupported
from sql.prepared import ROW_ALIAS, PreparedQuery
from sql.types import SQLGLOT as SQLGLOT_TYPES

SPINE = "_fs_spine"
SID, KEY, AS_OF, AS_OF_EPOCH = "_fs_sid", "_fs_key", "_fs_t", "_fs_te"
CARRIED = (SID, AS_OF, AS_OF_EPOCH)  # the spine columns every rewritten scope carries along
RESULT = "_fs_q"


@dataclass(frozen=True)
class SourceCut:
    """What the rewrite needs of a source: where its rows are and how they are cut in time."""

    table: str  # the warehouse table (``schema.table`` allowed)
    columns: tuple[tuple[str, str], ...]  # (column, logical type)
    event_time: str
    hot_window_seconds: int | None
    newest_only: str | None = None  # the condition (on _fs_row) keeping only a row's newest version, if any

    @property
    def epoch(self) -> bool:
        """Whether the event time is epoch seconds (else a timestamp)."""
        return dict(self.columns)[self.event_time] != "timestamp"


def point_in_time_sql(prepared: PreparedQuery, index_key: str, sources: dict[str, SourceCut], dialect: str, *,
                      as_of_now: bool = False, keep_unmatched: bool = True) -> str:
    """The statement answering the saved query for every spine row (see the module docstring).

    The spine is a table named SPINE with columns SID, KEY, AS_OF (timestamp) and AS_OF_EPOCH
    (seconds). The output is SID, then the query's columns, ordered by SID; with `keep_unmatched`, a
    spine row the query has no rows for is one row of nulls (else it is left out). With `as_of_now`
    the spine's time is now and rows newer than it are kept (serving has no upper bound).
    """
    return _rewritten(prepared, index_key, tuple(sorted(sources.items())), dialect, as_of_now, keep_unmatched)


@lru_cache(maxsize=256)
def _rewritten(prepared: PreparedQuery, index_key: str, sources: tuple, dialect: str, as_of_now: bool,
               keep_unmatched: bool) -> str:
    sources = dict(sources)
    tree = _qualified(prepared, sources)
    names = [select.alias_or_name for select in output_selects(tree)]
    if index_key not in names:
        raise PointInTimeUnsupported(f"index_key {index_key!r} is not an output column of the query",
                                     {"index_key": index_key, "columns": names})
    body = _Rewriter(sources, as_of_now).query(inline_ctes(tree), index_key)
    select = exp.select(_col(SPINE, SID), *[_col(RESULT, name) for name in names])
    on = exp.and_(_col(RESULT, SID).eq(_col(SPINE, SID)), _col(RESULT, index_key).eq(_col(SPINE, KEY)))
    select = select.from_(exp.table_(SPINE, quoted=True)).join(
        body.subquery(RESULT), on=on, join_type="left" if keep_unmatched else "inner")
    return select.order_by(_col(SPINE, SID)).sql(dialect=dialect, comments=False)


def output_names(prepared: PreparedQuery, sources: dict[str, SourceCut]) -> list[str]:
    """The query's output columns, stars expanded against the sources."""
    return list(_output_names(prepared, tuple(sorted(sources.items()))))


@lru_cache(maxsize=256)
def _output_names(prepared: PreparedQuery, sources: tuple) -> tuple[str, ...]:
    return tuple(select.alias_or_name for select in output_selects(_qualified(prepared, dict(sources))))


def _col(table: str, name: str) -> exp.Column:
    return exp.column(name, table=table, quoted=True)


def output_selects(node: exp.Expression) -> list[exp.Expression]:
    while isinstance(node, exp.SetOperation):
        node = node.this
    return node.selects


def _qualified(prepared: PreparedQuery, sources: dict[str, SourceCut]) -> exp.Expression:
    """The tree with every column qualified by its table and every star expanded (sqlglot's qualify)."""
    schema = {name: {column: SQLGLOT_TYPES[kind] for column, kind in cut.columns} for name, cut in sources.items()}
    try:
        return qualify(prepared.tree.copy(), schema=schema, dialect=prepared.dialect, quote_identifiers=True)
    except SqlglotError as error:
        raise PointInTimeUnsupported(f"the query could not be resolved against the sources: {error}") from None


def inline_ctes(tree: exp.Expression) -> exp.Expression:
    """The tree with each top-level CTE replaced by its body at every reference (one rewrite per use)."""
    with_ = tree.args.get("with_")
    if with_ is None:
        if any(True for _ in tree.find_all(exp.With)):
            raise PointInTimeUnsupported("WITH is supported only at the top of the query")
        return tree
    if with_.args.get("recursive"):
        raise PointInTimeUnsupported("recursive CTEs are not supported in point-in-time training")
    bodies: dict[str, exp.Expression] = {}
    for cte in with_.expressions:
        bodies[cte.alias_or_name] = _replace_references(cte.this.copy(), bodies)
    tree = tree.copy()
    tree.set("with_", None)
    if any(True for _ in tree.find_all(exp.With)):
        raise PointInTimeUnsupported("WITH is supported only at the top of the query")
    return _replace_references(tree, bodies)


def _replace_references(tree: exp.Expression, bodies: dict[str, exp.Expression]) -> exp.Expression:
    for table in list(tree.find_all(exp.Table)):
        if not table.db and table.name in bodies:
            table.replace(bodies[table.name].copy().subquery(table.alias_or_name, copy=False))
    return tree


class _Rewriter:
    """Rewrites one scope at a time; `query` returns the scope carrying CARRIED as its last columns."""

    def __init__(self, sources: dict[str, SourceCut], as_of_now: bool):
        self.sources = sources
        self.as_of_now = as_of_now

    def query(self, node: exp.Expression, key: str, times: bool = False) -> exp.Expression:
        """`node` (a SELECT or set operation) rewritten; `key` names its output column equal to the spine key.
        Its last column is the spine row id, then (with `times`) the spine row's times, when a scope above
        cuts a source of its own by them: carrying only what is used keeps joins and groups narrow."""
        if isinstance(node, exp.Subquery):
            return self.query(node.this, key, times)
        if isinstance(node, exp.SetOperation):
            _refuse_modifiers(node)
            position = [s.alias_or_name for s in output_selects(node.this)].index(key)
            node.set("this", self.query(node.this, key, times))
            node.set("expression", self.query(node.expression, output_selects(node.expression)[position].alias_or_name,
                                              times))
            return node
        if not isinstance(node, exp.Select):
            raise PointInTimeUnsupported(f"{node.key.upper()} is not supported in point-in-time training")
        return self._select(node, key, times)

    def _select(self, select: exp.Select, key: str, times: bool) -> exp.Select:
        _refuse_modifiers(select)
        items = self._items(select)
        anchor = items[0].alias_or_name
        key_column = self._key_column(select, key)
        equal_to_key = equal_columns(select, key_column)
        if key_column.table != anchor:
            anchors = [c for c in equal_to_key if c.table == anchor]
            if not anchors:
                raise PointInTimeUnsupported(
                    f"the key {key!r} must come from the first table of its FROM ({anchor!r}) or equal one of its "
                    "columns in a join condition", {"index_key": key})
            key_column = anchors[0]
        self._check_partitioned(select, key_column, equal_to_key)
        cuts_here = any(isinstance(item, exp.Table) for item in items[1:])  # joined sources cut by the times
        self._anchor(items[0], key_column.name, times or cuts_here)
        for join in select.args.get("joins") or []:
            self._join(join, anchor, equal_to_key)
        carried = [_col(anchor, name) for name in (CARRIED if times else CARRIED[:1])]
        if select.args.get("group"):
            select.args["group"].set("expressions", [*select.args["group"].expressions, *carried])
        elif has_aggregates(select):
            raise PointInTimeUnsupported("an aggregate without GROUP BY over a source is not supported: "
                                         "group by the key")
        for window in scope_windows(select):
            window.set("partition_by", [*(window.args.get("partition_by") or []), _col(anchor, SID)])
        select.set("expressions", [*select.expressions, *[column.copy() for column in carried]])
        return select

    def _items(self, select: exp.Select) -> list[exp.Expression]:
        from_ = select.args.get("from_")
        if from_ is None:
            raise PointInTimeUnsupported("a SELECT without FROM cannot be cut in time")
        items = [from_.this, *[join.this for join in select.args.get("joins") or []]]
        for item in items:
            if not isinstance(item, (exp.Table, exp.Subquery)) or (isinstance(item, exp.Table) and
                                                                   item.name not in self.sources):
                raise PointInTimeUnsupported(f"{item.sql()[:80]!r} is not a source or a subquery",
                                             {"construct": item.key})
        for part in ("expressions", "where", "having", "qualify", "order"):
            if reads_subquery(select.args.get(part)):
                raise PointInTimeUnsupported("subqueries inside expressions (IN, EXISTS, scalar) are not supported "
                                             "in point-in-time training: join them instead")
        return items

    def _key_column(self, select: exp.Select, key: str) -> exp.Column:
        for projection in select.expressions:
            if projection.alias_or_name == key:
                column = projection.unalias()
                if isinstance(column, exp.Column) and column.table:
                    return column
                break
        raise PointInTimeUnsupported(f"the key {key!r} must be a plain column of a source in every scope, "
                                     "so the spine's key can be pushed down to the rows", {"index_key": key})

    def _check_partitioned(self, select: exp.Select, key: exp.Column, equal: list[exp.Column]) -> None:
        """Refuse a scope whose rows for one key would depend on other keys' rows."""
        crossing = crossing_keys(select, {(c.table, c.name) for c in [key, *equal]})
        if isinstance(crossing, exp.Group):
            raise PointInTimeUnsupported("a GROUP BY must include the key so each key's rows stay its own")
        if crossing is not None:
            raise PointInTimeUnsupported("a window function must be PARTITION BY the key in point-in-time "
                                         "training (otherwise one key's features depend on other keys' rows)")

    def _anchor(self, item: exp.Expression, key: str, times: bool) -> None:
        """Join the scope's first item to the spine on the key and the time cut (a source), or rewrite it;
        it carries the spine row id, and its times when `times`."""
        if isinstance(item, exp.Subquery):
            item.set("this", self.query(item.this, key, times))
            return
        cut = self.sources[item.name]
        inner = "_fs_rows"
        condition = exp.and_(_col(inner, key).eq(_col(SPINE, KEY)), self._time_cut(inner, cut, SPINE))
        rows = (exp.select(exp.Column(this=exp.Star(), table=exp.to_identifier(inner, quoted=True)),
                           *[_col(SPINE, name) for name in (CARRIED if times else CARRIED[:1])])
                .from_(_warehouse_table(cut, inner))
                .join(exp.table_(SPINE, quoted=True), on=condition, join_type="inner"))
        item.replace(rows.subquery(item.alias_or_name))

    def _join(self, join: exp.Join, anchor: str, equal: list[exp.Column]) -> None:
        """Cut a joined source in time against the anchor's carried time; tie a joined subquery to its id."""
        side, kind = (join.side or "").upper(), (join.kind or "").upper()
        if side in ("RIGHT", "FULL") or kind not in ("", "INNER", "CROSS", "OUTER"):
            raise PointInTimeUnsupported(f"{(side + ' ' + kind).strip()} JOIN is not supported in "
                                         "point-in-time training (inner, LEFT and CROSS joins are)")
        item, alias = join.this, join.this.alias_or_name
        if isinstance(item, exp.Table):
            cut = self.sources[item.name]
            item.replace(_warehouse_table(cut, alias))
            extra = self._time_cut(alias, cut, anchor)
        else:
            keys = [c for c in equal if c.table == alias]
            if not keys:
                raise PointInTimeUnsupported(f"the subquery {alias!r} must be joined on the key (an equality with "
                                             "the key's column) so the spine's key can be pushed into it")
            item.set("this", self.query(item.this, keys[0].name))
            extra = _col(alias, SID).eq(_col(anchor, SID))
        condition = join.args.get("on")
        join.set("on", exp.and_(condition, extra) if condition is not None else extra)
        if kind == "CROSS":
            join.set("kind", None)

    def _time_cut(self, table: str, cut: SourceCut, spine: str) -> exp.Expression:
        """``event_time <= t`` (unless as of now) and ``event_time > t - window`` (a source with a window)."""
        column = _col(table, cut.event_time)
        as_of = _col(spine, AS_OF_EPOCH if cut.epoch else AS_OF)
        parts = [] if self.as_of_now else [column <= as_of]
        if cut.hot_window_seconds is not None:
            window = exp.Literal.number(cut.hot_window_seconds) if cut.epoch else \
                exp.Interval(this=exp.Literal.string(str(cut.hot_window_seconds)), unit=exp.var("SECOND"))
            parts.append(column > exp.Sub(this=as_of, expression=window))
        return exp.and_(*parts) if parts else exp.true()


def _warehouse_table(cut: SourceCut, alias: str) -> exp.Expression:
    """The source's warehouse rows as `alias`: its table, or only the newest versions of its rows."""
    schema, _, table = cut.table.rpartition(".")
    if cut.newest_only is None:
        return exp.table_(table, db=schema or None, quoted=True, alias=exp.to_identifier(alias, quoted=True))
    rows = exp.table_(table, db=schema or None, quoted=True, alias=exp.to_identifier(ROW_ALIAS))
    return exp.select("*").from_(rows).where(sqlglot.parse_one(cut.newest_only, read="duckdb")).subquery(
        exp.to_identifier(alias, quoted=True))


def _refuse_modifiers(node: exp.Expression) -> None:
    modifier = cutting_modifier(node)
    if modifier == "distinct on":
        raise PointInTimeUnsupported("DISTINCT ON is not supported in point-in-time training")
    if modifier is not None:
        raise PointInTimeUnsupported(f"{modifier.upper()} is not supported in point-in-time training "
                                     "(it would cut across entities)", {"construct": modifier})


def cutting_modifier(node: exp.Expression) -> str | None:
    """The modifier of `node` that picks rows across entities ("limit", "offset", "fetch", "distinct on"), if any."""
    for modifier in ("limit", "offset", "fetch"):
        if node.args.get(modifier) is not None:
            return modifier
    if isinstance(node, exp.Select) and isinstance(node.args.get("distinct"), exp.Distinct) \
            and node.args["distinct"].args.get("on") is not None:
        return "distinct on"
    return None


def equal_columns(select: exp.Select, key: exp.Column, where: bool = False) -> list[exp.Column]:
    """Columns of the scope that join conditions (and, with `where`, the WHERE clause) equate with `key`,
    transitively."""
    pairs = []
    conditions = [join.args.get("on") for join in select.args.get("joins") or []]
    if where and select.args.get("where") is not None:
        conditions.append(select.args["where"].this)
    for condition in conditions:
        for eq in _conjuncts(condition):
            if isinstance(eq, exp.EQ) and isinstance(eq.left, exp.Column) and isinstance(eq.right, exp.Column):
                pairs.append((eq.left, eq.right))
    found = {(key.table, key.name): key}
    changed = True
    while changed:
        changed = False
        for left, right in pairs:
            for a, b in ((left, right), (right, left)):
                if (a.table, a.name) in found and (b.table, b.name) not in found:
                    found[(b.table, b.name)] = b
                    changed = True
    return [column for ident, column in found.items() if ident != (key.table, key.name)]


def _conjuncts(condition: exp.Expression | None) -> list[exp.Expression]:
    if condition is None:
        return []
    if isinstance(condition, exp.And):
        return [*_conjuncts(condition.left), *_conjuncts(condition.right)]
    if isinstance(condition, exp.Paren):
        return _conjuncts(condition.this)
    return [condition]


def crossing_keys(select: exp.Select, key: set[tuple[str, str]]) -> exp.Group | exp.Window | None:
    """The GROUP BY or window of the scope that mixes rows of several keys (`key`: the (table, column) pairs
    equal to the key), if any: a GROUP BY without the key, a window not PARTITION BY it."""
    group = select.args.get("group")
    if group and not any(_is_one_of(g, key) for g in group.expressions):
        return group
    for window in scope_windows(select):
        if not any(_is_one_of(p, key) for p in window.args.get("partition_by") or []):
            return window
    return None


def _is_one_of(node: exp.Expression, columns: set[tuple[str, str]]) -> bool:
    return isinstance(node, exp.Column) and (node.table, node.name) in columns


def _in_scope(node: exp.Expression, select: exp.Select) -> bool:
    """Whether `node` belongs to `select` itself, not to a subquery inside it."""
    parent = node.parent
    while parent is not None and parent is not select:
        if isinstance(parent, (exp.Select, exp.SetOperation)):
            return False
        parent = parent.parent
    return parent is select


def scope_windows(select: exp.Select) -> list[exp.Window]:
    return [w for w in select.find_all(exp.Window) if _in_scope(w, select)]


def has_aggregates(select: exp.Select) -> bool:
    for projection in select.expressions:
        for node in projection.find_all(exp.AggFunc):
            if _in_scope(node, select) and not any(isinstance(p, exp.Window) for p in _ancestors(node, projection)):
                return True
    return False


def _ancestors(node: exp.Expression, top: exp.Expression) -> list[exp.Expression]:
    found, parent = [], node.parent
    while parent is not None and parent is not top.parent:
        found.append(parent)
        parent = parent.parent
    return found


def reads_subquery(part: exp.Expression | list[exp.Expression] | None) -> bool:
    nodes = part if isinstance(part, list) else [part] if part is not None else []
    return any(True for node in nodes for _ in node.find_all(exp.Select, exp.SetOperation))
