"""Which sockets may be linked: socket types resolved on the live graph (no Qt here).

The validator stays the judge of a finished edit; this module answers the
editor's quick questions while a link is being dragged, with the same rules:
`is_compatible` for concrete types, and a generic (`TypeParam`) socket accepts
anything within its bound, or the type it is already bound to by another link.
"""

from __future__ import annotations

from nodeflow.api import Node, SocketType, TypeParam, UnionType, is_compatible
from nodeflow.graph import Graph
from nodeflow.registry import NodeRegistry

Concrete = SocketType | UnionType | None
"""A resolved socket type; None means "any" (an unbound generic without a bound)."""


class TypeResolver:
    """Resolves output types of a graph's nodes, following generics through links."""

    def __init__(self, graph: Graph, registry: NodeRegistry) -> None:
        self.graph = graph
        self.registry = registry
        self._incoming = graph.incoming()
        self._memo: dict[tuple[str, str], Concrete] = {}

    def node_class(self, node_id: str) -> type[Node] | None:
        node = self.graph.nodes.get(node_id)
        return self.registry.get(node.type) if node is not None else None

    def output_type(self, node_id: str, socket: str) -> Concrete:
        key = (node_id, socket)
        if key in self._memo:
            return self._memo[key]
        self._memo[key] = None  # breaks cycles
        cls = self.node_class(node_id)
        spec = cls.output_map.get(socket) if cls else None
        result: Concrete = None
        if spec is not None:
            if isinstance(spec.type, TypeParam):
                result = self.binding(node_id, spec.type)
            else:
                result = spec.type
        self._memo[key] = result
        return result

    def binding(self, node_id: str, param: TypeParam, skip: str | None = None) -> Concrete:
        """What ``param`` is bound to on a node by its linked inputs (else its bound)."""
        cls = self.node_class(node_id)
        if cls is not None:
            for spec in cls.inputs:
                if spec.name == skip or not isinstance(spec.type, TypeParam):
                    continue
                if spec.type.name != param.name:
                    continue
                link = self._incoming.get(node_id, {}).get(spec.name)
                if link is not None:
                    found = self.output_type(link.src, link.src_socket)
                    if found is not None:
                        return found
        return param.bound

    def input_type(self, node_id: str, socket: str) -> Concrete:
        """The type an input accepts now (a generic bound by a sibling link narrows to that)."""
        cls = self.node_class(node_id)
        spec = cls.input_map.get(socket) if cls else None
        if spec is None:
            return None
        if isinstance(spec.type, TypeParam):
            return self.binding(node_id, spec.type, skip=socket)
        return spec.type


def accepts(source: Concrete, target: Concrete) -> bool:
    """May a value of type ``source`` flow into a socket taking ``target``?"""
    if source is None or target is None:
        return True
    return is_compatible(source, target)


def upstream_of(graph: Graph, node_id: str) -> set[str]:
    """The node and every node it depends on (linking into one of these would make a cycle)."""
    parents: dict[str, list[str]] = {}
    for link in graph.links:
        parents.setdefault(link.dst, []).append(link.src)
    seen = {node_id}
    stack = [node_id]
    while stack:
        for p in parents.get(stack.pop(), ()):
            if p not in seen:
                seen.add(p)
                stack.append(p)
    return seen


def downstream_of(graph: Graph, node_id: str) -> set[str]:
    children: dict[str, list[str]] = {}
    for link in graph.links:
        children.setdefault(link.src, []).append(link.dst)
    seen = {node_id}
    stack = [node_id]
    while stack:
        for c in children.get(stack.pop(), ()):
            if c not in seen:
                seen.add(c)
                stack.append(c)
    return seen


def type_label(t: Concrete | TypeParam) -> str:
    if t is None:
        return "any"
    if isinstance(t, TypeParam):
        return t.bound.name if t.bound is not None else "any"
    return t.name


def refusal(graph: Graph, registry: NodeRegistry, source: str, target: str) -> str | None:
    """Why linking ``source`` (node.output) to ``target`` (node.input) is refused, or None.

    The reason is the validator's own message for the edited graph, so the editor
    refuses exactly what `nodeflow validate` would report.
    """
    from nodeflow.validate import GraphValidator

    src, src_socket = source.split(".", 1)
    dst, dst_socket = target.split(".", 1)
    if src == dst:
        return "a node cannot feed its own input"
    trial = graph.copy()
    trial.connect(source, target)
    trial.clear_input(dst, dst_socket)
    makes_cycle = dst in upstream_of(graph, src)
    cycle_message = None
    for problem in GraphValidator(registry).validate(trial):
        loc = problem.location
        if problem.code == "type_mismatch" and loc.node == dst and loc.socket == dst_socket:
            return problem.message
        if makes_cycle and problem.code == "cycle" and f"{src} -> {dst}" in problem.message:
            cycle_message = problem.message
    if makes_cycle:
        return cycle_message or f"'{dst}' already feeds '{src}'; this link would make a cycle"
    return None
