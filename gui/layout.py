"""Positions for nodes that have none (hand-written or generated graphs): layered, left to right."""

from __future__ import annotations

from nodeflow.graph import Graph

COLUMN = 280.0
ROW = 40.0


def auto_positions(graph: Graph, heights: dict[str, float], column: float = COLUMN) -> dict[str, tuple[float, float]]:
    """Place every node without an editor ``pos``: column = longest path from a source."""
    missing = [n for n in graph.nodes if not _has_pos(graph, n)]
    if not missing:
        return {}
    parents: dict[str, list[str]] = {}
    for link in graph.links:
        if link.src in graph.nodes and link.dst in graph.nodes:
            parents.setdefault(link.dst, []).append(link.src)
    depth: dict[str, int] = {}
    for start in graph.nodes:
        # Iterative longest-path depth; nodes on a cycle get the depth seen so far.
        stack = [(start, False)]
        visiting: set[str] = set()
        while stack:
            node, ready = stack.pop()
            if node in depth:
                continue
            if ready:
                visiting.discard(node)
                depth[node] = 1 + max((depth.get(p, 0) for p in parents.get(node, ())), default=-1)
                continue
            if node in visiting:
                continue
            visiting.add(node)
            stack.append((node, True))
            stack.extend((p, False) for p in parents.get(node, ()) if p not in depth and p not in visiting)
    placed_bottom: dict[int, float] = {}
    for n in graph.nodes:
        if _has_pos(graph, n):
            x, y = graph.editor[n]["pos"][:2]
            col = int(round(x / column))
            placed_bottom[col] = max(placed_bottom.get(col, 0.0), y + heights.get(n, 100.0) + ROW)
    out: dict[str, tuple[float, float]] = {}
    for n in missing:
        col = depth.get(n, 0)
        y = placed_bottom.get(col, 0.0)
        out[n] = (col * column, y)
        placed_bottom[col] = y + heights.get(n, 100.0) + ROW
    return out


def _has_pos(graph: Graph, node_id: str) -> bool:
    entry = graph.editor.get(node_id)
    pos = entry.get("pos") if isinstance(entry, dict) else None
    return (isinstance(pos, list | tuple) and len(pos) >= 2
            and all(isinstance(v, int | float) and not isinstance(v, bool) for v in pos[:2]))


def node_pos(graph: Graph, node_id: str) -> tuple[float, float] | None:
    if not _has_pos(graph, node_id):
        return None
    x, y = graph.editor[node_id]["pos"][:2]
    return float(x), float(y)
