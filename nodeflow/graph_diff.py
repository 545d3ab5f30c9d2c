"""What changed between two states of a graph, so checking and keying redo only that.

An editor hands the executor a fresh copy of its graph for every run, a job server a
freshly parsed one for every request; nothing ties them to the previous run except
their content. `GraphSnapshot` keeps what a run's checks and keys depended on (node
types, versions and literal inputs, and the links) and tells which nodes of another
graph differ, at the cost of a comparison per node, against hashing and validating
every node again.
"""

from __future__ import annotations

from nodeflow.graph import Graph, Link

_NodeState = tuple[str, str | None, dict[str, object]]
"""A node's type, version and literal inputs (a plain tuple: one is made per node per run)."""


class GraphSnapshot:
    """The content of a graph at one moment (literal inputs are copied, one level deep)."""

    def __init__(self, graph: Graph) -> None:
        self.nodes: dict[str, _NodeState] = {n.id: (n.type, n.version, dict(n.inputs)) for n in graph}
        self.links: tuple[Link, ...] = graph.links

    def changed_nodes(self, graph: Graph) -> set[str] | None:
        """The nodes whose literal inputs differ in ``graph``; None when more than inputs
        changed (nodes added, removed or retyped, or links changed): then start over."""
        if len(graph.nodes) != len(self.nodes) or graph.links != self.links:
            return None
        changed = set()
        for node in graph:
            before = self.nodes.get(node.id)
            if before is None or before[0] != node.type or before[1] != node.version:
                return None
            inputs = before[2]
            if inputs != node.inputs or _types_differ(inputs, node.inputs):
                changed.add(node.id)
        return changed


def _types_differ(a: dict[str, object], b: dict[str, object]) -> bool:
    # 1 == 1.0 == True, but they are different inputs (and different cache keys).
    return any(type(v) is not type(b.get(k)) for k, v in a.items())
