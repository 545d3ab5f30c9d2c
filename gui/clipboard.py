"""Copy and paste of nodes as a graph fragment: an ordinary graph file holding the selection."""

from __future__ import annotations

import copy
from typing import Any

from nodeflow.graph import FORMAT, VERSION, Graph, Link, dumps_json, parse_graph_text

from .commands import NodeRecord

MIME = "application/x-nodeflow-graph"


def fragment_text(graph: Graph, node_ids: list[str]) -> str:
    """The selected nodes, the links among them and their layout, as graph-file text."""
    chosen = [n for n in node_ids if n in graph.nodes]
    keep = set(chosen)
    data: dict[str, Any] = {
        "format": FORMAT,
        "version": VERSION,
        "nodes": {n: graph.nodes[n].to_json() for n in chosen},
        "links": [ln.to_json() for ln in graph.links if ln.src in keep and ln.dst in keep],
        "editor": {n: copy.deepcopy(graph.editor[n]) for n in chosen if n in graph.editor},
        "meta": {},
    }
    return dumps_json(data)


def paste_records(graph: Graph, text: str, at: tuple[float, float] | None,
                  offset: tuple[float, float] = (30.0, 30.0)) -> tuple[list[NodeRecord], list[Link]] | None:
    """Records for the nodes of a fragment with fresh ids (None when the text is not a graph).

    With ``at`` the fragment's top-left lands there; otherwise it is shifted by ``offset``.
    """
    fragment, problems = parse_graph_text(text)
    if fragment is None or not fragment.nodes:
        return None
    taken = set(graph.nodes)
    rename: dict[str, str] = {}
    for old in fragment.nodes:
        new = old
        if new in taken:
            stem = old.rstrip("0123456789") or old
            n = 2
            while f"{stem}{n}" in taken:
                n += 1
            new = f"{stem}{n}"
        taken.add(new)
        rename[old] = new
    positions = {n: fragment.editor.get(n, {}).get("pos") for n in fragment.nodes}
    known = [p for p in positions.values() if isinstance(p, list) and len(p) >= 2]
    left = min((p[0] for p in known), default=0.0)
    top = min((p[1] for p in known), default=0.0)
    dx, dy = (at[0] - left, at[1] - top) if at is not None else offset
    records = []
    for i, (old, node) in enumerate(fragment.nodes.items()):
        layout = copy.deepcopy(fragment.editor.get(old, {})) if isinstance(fragment.editor.get(old), dict) else {}
        pos = positions.get(old)
        if isinstance(pos, list) and len(pos) >= 2:
            layout["pos"] = [round(pos[0] + dx, 1), round(pos[1] + dy, 1)]
        else:
            base = at or (0.0, 0.0)
            layout["pos"] = [base[0] + 30 * i, base[1] + 30 * i]
        records.append(NodeRecord(rename[old], node.type, copy.deepcopy(node.inputs), node.version, layout))
    links = [Link(rename[ln.src], ln.src_socket, rename[ln.dst], ln.dst_socket)
             for ln in fragment.links if ln.src in rename and ln.dst in rename]
    return records, links
