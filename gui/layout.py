"""Positions for nodes that have none (hand-written or generated graphs): by the graph's layers,
left to right, using each node's real size; long graphs wrap into bands so Fit All shows them."""

from __future__ import annotations

import math

import networkx as nx

from nodeflow.graph import Graph

GAP_X = 70.0
GAP_Y = 40.0
BAND_GAP = 120.0
ASPECT = 16 / 9
"""Bands of layers are stacked until the whole layout is about this wide for its height."""
DEFAULT_SIZE = (200.0, 100.0)


def layers(graph: Graph) -> list[list[str]]:
    """The graph's nodes in layers: every link goes from an earlier layer to a later one.

    A source node (no inputs linked) sits just before its first consumer, so a loader stays
    next to what it feeds; within a layer nodes follow their parents' order, so links cross little.
    """
    g = nx.DiGraph()
    g.add_nodes_from(graph.nodes)
    g.add_edges_from((ln.src, ln.dst) for ln in graph.links if ln.src in graph.nodes and ln.dst in graph.nodes)
    try:
        generations = [list(gen) for gen in nx.topological_generations(g)]
    except nx.NetworkXUnfeasible:  # a cycle (the validator reports it): one layer per strong component
        cond = nx.condensation(g)
        generations = [[n for c in gen for n in cond.nodes[c]["members"]]
                       for gen in nx.topological_generations(cond)]
    layer = {n: i for i, gen in enumerate(generations) for n in gen}
    order = {n: i for i, n in enumerate(graph.nodes)}
    for n in graph.nodes:
        succ = [layer[s] for s in g.successors(n) if s != n]
        if not any(True for _ in g.predecessors(n)) and succ:
            layer[n] = max(layer[n], min(succ) - 1)
    count = max(layer.values(), default=-1) + 1
    out: list[list[str]] = [[] for _ in range(count)]
    for n in graph.nodes:
        out[layer[n]].append(n)
    # Order each layer by its parents' places (barycentre), keeping file order for ties; then the
    # sources again by their children's places, so a loader sits beside what it feeds.
    rank: dict[str, float] = {}
    for members in out:
        def key(n: str, last: float = float(len(members))) -> tuple[float, int]:
            ps = [rank[p] for p in g.predecessors(n) if p in rank]
            return (sum(ps) / len(ps) if ps else last, order[n])
        members.sort(key=key)
        rank.update((n, float(i)) for i, n in enumerate(members))
    for members in out:
        def key2(n: str) -> tuple[float, int]:
            if any(True for _ in g.predecessors(n)):
                return (rank[n], order[n])
            cs = [rank[c] for c in g.successors(n)]
            return (sum(cs) / len(cs) if cs else rank[n], order[n])
        members.sort(key=key2)
        rank.update((n, float(i)) for i, n in enumerate(members))
    return out


def auto_positions(graph: Graph, sizes: dict[str, tuple[float, float]]) -> dict[str, tuple[float, float]]:
    """Place every node without an editor ``pos``; ``sizes`` are the nodes' real (width, height).

    When no node has a position, the whole graph is laid out by layers. Otherwise the new nodes go
    into the columns of their layers, below every node already placed there, so nothing overlaps.
    """
    missing = [n for n in graph.nodes if not _has_pos(graph, n)]
    if not missing:
        return {}
    cols = layers(graph)
    if len(missing) == len(graph.nodes):
        return _packed(graph, cols, sizes)
    # Mixed: a column per layer to the right of x = 0, each new node below whatever occupies it.
    placed = [(*node_pos(graph, n), *sizes.get(n, DEFAULT_SIZE)) for n in graph.nodes if _has_pos(graph, n)]  # type: ignore[misc]
    out: dict[str, tuple[float, float]] = {}
    x = 0.0
    missing_set = set(missing)
    for members in cols:
        new = [n for n in members if n in missing_set]
        width = max((sizes.get(n, DEFAULT_SIZE)[0] for n in members), default=0.0)
        if new:
            right = x + max(sizes.get(n, DEFAULT_SIZE)[0] for n in new)
            y = max((py + ph + GAP_Y for px, py, pw, ph in placed if px < right and px + pw > x), default=0.0)
            for n in new:
                w, h = sizes.get(n, DEFAULT_SIZE)
                out[n] = (x, y)
                placed.append((x, y, w, h))
                y += h + GAP_Y
        x += width + GAP_X
    return out


def _packed(graph: Graph, cols: list[list[str]], sizes: dict[str, tuple[float, float]]
            ) -> dict[str, tuple[float, float]]:
    """Each connected part laid out by layers, the parts placed in rows (shelves) about ASPECT wide."""
    g = nx.Graph()
    g.add_nodes_from(graph.nodes)
    g.add_edges_from((ln.src, ln.dst) for ln in graph.links if ln.src in graph.nodes and ln.dst in graph.nodes)
    parts = list(nx.connected_components(g))
    if len(parts) == 1:
        return _layered(cols, sizes)
    order = {n: i for i, n in enumerate(graph.nodes)}
    parts.sort(key=lambda part: min(order[n] for n in part))
    laid = []
    for part in parts:
        pos = _layered([[n for n in c if n in part] for c in cols if any(n in part for n in c)], sizes)
        w = max(x + sizes.get(n, DEFAULT_SIZE)[0] for n, (x, _y) in pos.items())
        h = max(y + sizes.get(n, DEFAULT_SIZE)[1] for n, (_x, y) in pos.items())
        laid.append((pos, w, h))
    area = sum((w + GAP_X) * (h + BAND_GAP) for _pos, w, h in laid)
    row_width = max(max(w for _pos, w, _h in laid), math.sqrt(area * ASPECT))
    out: dict[str, tuple[float, float]] = {}
    x = top = row_h = 0.0
    for pos, w, h in laid:
        if x > 0 and x + w > row_width:
            x, top, row_h = 0.0, top + row_h + BAND_GAP, 0.0
        out.update((n, (x + px, top + py)) for n, (px, py) in pos.items())
        x += w + GAP_X * 2
        row_h = max(row_h, h)
    return out


def _layered(cols: list[list[str]], sizes: dict[str, tuple[float, float]]) -> dict[str, tuple[float, float]]:
    widths = [max(sizes.get(n, DEFAULT_SIZE)[0] for n in c) if c else 0.0 for c in cols]
    heights = [sum(sizes.get(n, DEFAULT_SIZE)[1] + GAP_Y for n in c) - GAP_Y if c else 0.0 for c in cols]
    per_band = _layers_per_band(widths, heights)
    out: dict[str, tuple[float, float]] = {}
    top = 0.0
    for start in range(0, len(cols), per_band):
        x = 0.0
        band = range(start, min(len(cols), start + per_band))
        for i in band:
            y = top
            for n in cols[i]:
                out[n] = (x, y)
                y += sizes.get(n, DEFAULT_SIZE)[1] + GAP_Y
            x += widths[i] + GAP_X
        top += max(heights[i] for i in band) + BAND_GAP
    return out


def _layers_per_band(widths: list[float], heights: list[float]) -> int:
    """How many layers side by side make the layout closest to ASPECT (all of them if short)."""
    n = len(widths)
    if n <= 8:
        return max(1, n)
    best, best_err = n, math.inf
    for bands in range(1, n + 1):
        k = math.ceil(n / bands)
        if bands > 1 and math.ceil(n / (bands - 1)) == k:
            continue
        w = max(sum(widths[s:s + k]) + GAP_X * (len(widths[s:s + k]) - 1) for s in range(0, n, k))
        h = sum(max(heights[s:s + k]) + BAND_GAP for s in range(0, n, k))
        err = abs(math.log(max(w, 1.0) / max(h, 1.0) / ASPECT))
        if err < best_err:
            best, best_err = k, err
        if w / max(h, 1.0) < ASPECT / 4:
            break
    return best


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


MAX_STRETCH = 3.0
STRETCH_LIMIT = 600
"""Stretching compares every pair of nodes: graphs larger than this are only pushed apart."""


def stretch(rects: dict[str, tuple[float, float, float, float]], gap_x: float = 30.0,
            gap_y: float = 30.0) -> tuple[float, float]:
    """How much to widen and heighten a placed layout so that its nodes, at their real sizes, stop
    overlapping: (sx, sy), each at least 1 and at most MAX_STRETCH.

    A layout drawn for smaller nodes (a ComfyUI workflow's positions, or a file saved before its
    nodes grew) keeps its shape this way: two nodes side by side are moved apart sideways, two
    nodes one above the other vertically, instead of everything being pushed down one column.
    ``rects`` are (x, y, width, height) per node.
    """
    items = list(rects.values())
    if len(items) > STRETCH_LIMIT:
        return 1.0, 1.0
    sx = sy = 1.0
    for i, (ax, ay, aw, ah) in enumerate(items):
        for bx, by, bw, bh in items[i + 1:]:
            if ax >= bx + bw or bx >= ax + aw or ay >= by + bh or by >= ay + ah:
                continue  # apart already
            dx, dy = abs(bx - ax), abs(by - ay)
            left_w = aw if ax <= bx else bw
            top_h = ah if ay <= by else bh
            # Separate along the axis the two are already further apart on (relative to size).
            if dx / max(left_w, 1.0) >= dy / max(top_h, 1.0):
                if dx > 0:
                    sx = max(sx, (left_w + gap_x) / dx)
            elif dy > 0:
                sy = max(sy, (top_h + gap_y) / dy)
    return min(sx, MAX_STRETCH), min(sy, MAX_STRETCH)
