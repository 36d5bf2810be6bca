"""The lineage page: a server-rendered SVG graph source → query → ETL → feature set, every node a link.

The graph is read from the API: a source's `dependent_queries`, an ETL's `query_id` and every
version of a feature set (its `etl_id`). Columns are ordered by the mean position of each node's
parents, which keeps most edges from crossing.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from flask import request
from markupsafe import Markup, escape

from ui import Page, api, api_items, bp, page, segment
from ui.views import KINDS, TITLES, item_id, page_url

COLUMNS = tuple(KINDS)  # left to right
NODE_W, NODE_H, GAP, COLUMN_W, TOP = 190, 34, 14, 250, 34
LABEL_CHARS = 24
NOUNS = {"sources": "source", "queries": "query", "etls": "ETL", "feature-sets": "feature set"}
Node = tuple[str, str]  # (kind, id)


@dataclass
class Graph:
    """Nodes per column (kind -> id -> label) and edges between (kind, id) pairs."""

    nodes: dict[str, dict[str, str]] = field(default_factory=lambda: {kind: {} for kind in COLUMNS})
    edges: set[tuple[Node, Node]] = field(default_factory=set)
    refused: list[str] = field(default_factory=list)

    def edge(self, parent: Node, child: Node) -> None:
        if parent[1] in self.nodes[parent[0]] and child[1] in self.nodes[child[0]]:
            self.edges.add((parent, child))

    def connected(self, node: Node) -> set[Node]:
        """`node`, everything it is built from and everything built on it."""
        found = {node}
        for step in (lambda edge: edge, lambda edge: edge[::-1]):  # downstream, then upstream
            frontier = [node]
            while frontier:
                here = frontier.pop()
                for start, end in map(step, self.edges):
                    if start == here and end not in found:
                        found.add(end)
                        frontier.append(end)
        return found


def read_graph() -> Graph:
    """Every source, query, ETL and feature set the key may list, and how they depend on each other."""
    graph = Graph()
    listed = {}
    for kind in COLUMNS:
        status, items, _ = api_items("/" + kind)
        if status != 200:
            graph.refused.append(kind)
        listed[kind] = items
        graph.nodes[kind] = {item_id(kind, item): item.get("name") or item_id(kind, item) for item in items}
    for name in graph.nodes["sources"]:
        _, described = api("GET", "/sources/" + segment(name))
        for query_id in (described or {}).get("dependent_queries", []):
            graph.edge(("sources", name), ("queries", query_id))
    for etl in listed["etls"]:
        graph.edge(("queries", etl["query_id"]), ("etls", etl["etl_id"]))
    for name in graph.nodes["feature-sets"]:
        _, described = api("GET", "/feature-sets/" + segment(name))
        for version in (described or {}).get("versions", []):
            graph.edge(("etls", version["etl_id"]), ("feature-sets", name))
    return graph


def layout(graph: Graph) -> dict[Node, tuple[float, float]]:
    """The top-left corner of every node: one column per kind, ordered by the parents' mean row."""
    rows: dict[Node, float] = {}
    for kind in COLUMNS:
        def parents_row(node_id: str) -> float:
            seen = [rows[p] for p, c in graph.edges if c == (kind, node_id) and p in rows]
            return sum(seen) / len(seen) if seen else float("inf")
        ordered = sorted(graph.nodes[kind], key=lambda node_id: (parents_row(node_id), graph.nodes[kind][node_id]))
        rows.update({(kind, node_id): row for row, node_id in enumerate(ordered)})
    return {node: (10 + COLUMNS.index(node[0]) * COLUMN_W, TOP + row * (NODE_H + GAP)) for node, row in rows.items()}


def lineage_svg(graph: Graph, focus: Node | None = None) -> Markup:
    """The graph as an inline <svg>: nodes are links to their pages, edges are curves left to right;
    with a `focus`, what is not connected to it is dimmed."""
    where = layout(graph)
    lit = graph.connected(focus) if focus in where else set(where)
    rows = max([len(nodes) for nodes in graph.nodes.values()] + [1])
    width, height = 10 + len(COLUMNS) * COLUMN_W, TOP + rows * (NODE_H + GAP)
    parts = [f'<svg class="lineage" viewBox="0 0 {width} {height}" width="{width}" role="img" '
             f'aria-label="Lineage: sources, queries, ETLs and feature sets" xmlns="http://www.w3.org/2000/svg">'
             f'<title>Lineage</title>']
    parts += [f'<text class="heading" x="{10 + i * COLUMN_W}" y="20">{TITLES[kind]}</text>'
              for i, kind in enumerate(COLUMNS)]
    for parent, child in sorted(graph.edges):
        (x1, y1), (x2, y2) = where[parent], where[child]
        x1, y1, y2, middle = x1 + NODE_W, y1 + NODE_H / 2, y2 + NODE_H / 2, (x1 + NODE_W + x2) / 2
        dim = "" if parent in lit and child in lit else " dim"
        parts.append(f'<path class="edge{dim}" d="M{x1},{y1} C{middle},{y1} {middle},{y2} {x2},{y2}"/>')
    for node, (x, y) in sorted(where.items()):
        state = " focus" if node == focus else "" if node in lit else " dim"
        parts.append(_node(node, graph.nodes[node[0]][node[1]], x, y, state))
    parts.append("</svg>")
    return Markup("".join(parts))


def _node(node: Node, label: str, x: float, y: float, state: str) -> str:
    kind, node_id = node
    href = page_url(kind, node_id)
    text = label if len(label) <= LABEL_CHARS else label[:LABEL_CHARS - 1] + "…"
    return (f'<a href="{escape(href)}" class="node {kind}{state}" aria-label="{NOUNS[kind]} {escape(label)}">'
            f'<rect x="{x}" y="{y}" width="{NODE_W}" height="{NODE_H}" rx="6"/>'
            f'<text x="{x + 10}" y="{y + NODE_H / 2 + 5}">{escape(text)}</text><title>{escape(node_id)}</title></a>')


@bp.get("/lineage")
def lineage() -> Page:
    """The whole graph; `?focus=<kind>/<id>` (as the detail pages link) lights what is connected to one node."""
    graph = read_graph()
    kind, _, node_id = request.args.get("focus", "").partition("/")
    focus = (kind, node_id) if node_id in graph.nodes.get(kind, {}) else None
    return page("lineage.html", title="Lineage", svg=lineage_svg(graph, focus), refused=graph.refused,
                empty=not any(graph.nodes.values()), focus=focus and f"{NOUNS[kind]} {graph.nodes[kind][node_id]}")
