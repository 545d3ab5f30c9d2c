"""Graph validation: every problem at once, each located by file, node and socket."""

from __future__ import annotations

import difflib
from collections import deque
from collections.abc import Iterable, Mapping
from typing import Any

from nodeflow.errors import Location, Problem, UsageError
from nodeflow.graph import Graph, Link
from nodeflow.node import Node, check_literal, check_value, node_flag
from nodeflow.registry import NodeRegistry
from nodeflow.settings import Settings
from nodeflow.types import SocketType, TypeParam, UnionType, is_compatible, type_name

ResolvedType = SocketType | UnionType | None
"""A socket's concrete type; None when a generic's type cannot be known."""


class GraphValidator:
    """Checks a graph against the registry without running anything."""

    def __init__(self, registry: NodeRegistry, settings: Settings | None = None) -> None:
        self.registry = registry
        self.settings = settings or Settings()
        self.order: list[str] | None = None
        """After `validate`: every node in a topological order, when the links allow one."""
        self.warnings: list[Problem] = []
        """After `validate`: what does not stop a run but deserves a look (`flag_warnings`)."""

    def validate(self, graph: Graph) -> list[Problem]:
        file = graph.file_name
        problems: list[Problem] = []
        classes: dict[str, type[Node]] = {}
        self.warnings = []

        def add(code: str, message: str, node: str | None = None, socket: str | None = None) -> None:
            node_type = graph.nodes[node].type if node in graph.nodes else None
            problems.append(Problem(code, message, Location(file, node, node_type, socket)))

        for node in graph:
            cls = self.registry.get(node.type)
            if cls is None:
                add("unknown_type", f"unknown node type '{node.type}'. "
                    + _suggest(node.type, [c.id for c in self.registry.types()])
                    + " Install the pack that provides it, or load its folder with --plugins.",
                    node.id)
                continue
            classes[node.id] = cls
            if cls.deprecated or cls.experimental:
                self.warnings.append(flag_warning(cls, Location(file, node.id, cls.id)))
            if node.version is not None and _major(node.version) > _major(cls.version):
                add("node_version", f"the node was saved with {node.type} {node.version}, newer "
                    f"than the installed {cls.version}; update the pack that provides it", node.id)

        # Links: endpoints, sockets, duplicates.
        linked_inputs: dict[tuple[str, str], Link] = {}
        good_links: list[Link] = []
        for link in graph.links:
            ok = True
            src_cls, dst_cls = classes.get(link.src), classes.get(link.dst)
            known = (src_cls is not None and dst_cls is not None  # nearly every link: no more to see
                     and link.src_socket in src_cls.output_map and link.dst_socket in dst_cls.input_map)
            for end, node_id, socket in () if known else (("from", link.src, link.src_socket),
                                                          ("to", link.dst, link.dst_socket)):
                if node_id not in graph.nodes:
                    # Located at the end that exists, so the problem shows on that node.
                    other = (link.dst, link.dst_socket) if end == "from" else (link.src, link.src_socket)
                    known = other[0] in graph.nodes
                    add("missing_node", f"link {link.source} -> {link.target} refers to node "
                        f"'{node_id}', which is not in the graph",
                        other[0] if known else None, other[1] if known else None)
                    ok = False
                    continue
                cls = classes.get(node_id)
                if cls is None:
                    ok = False
                    continue
                names = cls.output_map if end == "from" else cls.input_map
                if socket not in names:
                    kind = "output" if end == "from" else "input"
                    add(f"unknown_{kind}", f"{cls.id} has no {kind} '{socket}' (link "
                        f"{link.source} -> {link.target}). {kind.capitalize()}s: "
                        f"{', '.join(names) or 'none'}.", node_id, socket)
                    ok = False
            if not ok:
                continue
            key = (link.dst, link.dst_socket)
            if key in linked_inputs:
                add("duplicate_link", f"two links feed this input: from "
                    f"{linked_inputs[key].source} and from {link.source}; an input takes one link",
                    link.dst, link.dst_socket)
                continue
            linked_inputs[key] = link
            good_links.append(link)

        # Literal inputs and required inputs.
        for node in graph:
            cls = classes.get(node.id)
            if cls is None:
                continue
            for name, value in node.inputs.items():
                spec = cls.input_map.get(name)
                if spec is None:
                    add("unknown_input", f"{cls.id} has no input '{name}'. Inputs: "
                        f"{', '.join(cls.input_map) or 'none'}.", node.id, name)
                    continue
                if (node.id, name) in linked_inputs:
                    add("value_and_link", f"input has both a value ({_short(value)}) and a link "
                        f"from {linked_inputs[(node.id, name)].source}; remove one", node.id, name)
                    continue
                why = check_literal(spec, value)
                if why:
                    add("bad_value", why, node.id, name)
            for spec in cls.inputs:
                if (spec.required and spec.name not in node.inputs
                        and (node.id, spec.name) not in linked_inputs):
                    how = "link an output to it" if not spec.accepts_literal else \
                        "give it a value or link an output to it"
                    add("missing_input", f"required input '{spec.name}' ({type_name(spec.type)}) "
                        f"is not set; {how}", node.id, spec.name)

        order, cyclic = kahn_order(list(graph.nodes), good_links)
        self.order = None if cyclic or len(good_links) != len(graph.links) else order
        if cyclic:
            for cycle in _describe_cycles(cyclic, good_links):
                add("cycle", "the graph has a cycle: " + " -> ".join(cycle + [cycle[0]])
                    + "; remove one of these links", cycle[0])

        problems += self._check_types(graph, classes, good_links, order)
        bad = {(p.location.node, p.location.socket) for p in problems}
        constants = constant_inputs(graph, classes, linked_inputs.values(), order,
                                    skip={n for n, _s in bad if n})
        for (node_id, socket), (value, link) in constants.items():
            why = check_value(classes[node_id].input_map[socket], value)
            if why:
                add("bad_value", f"the value that arrives from {link.source} {why}; change it "
                    f"there", node_id, socket)
        problems += self._check_nodes(graph, classes, linked_inputs, problems, constants)
        return problems

    def _check_types(self, graph: Graph, classes: dict[str, type[Node]], links: list[Link],
                     order: list[str]) -> list[Problem]:
        file = graph.file_name
        problems = []
        incoming: dict[str, list[Link]] = {}
        for link in links:
            incoming.setdefault(link.dst, []).append(link)
        out_types: dict[tuple[str, str], ResolvedType] = {}
        if len(order) != len(graph.nodes):
            ordered = set(order)
            order = order + [n for n in graph.nodes if n not in ordered]
        for node_id in order:
            cls = classes.get(node_id)
            if cls is None:
                continue
            bindings: dict[str, ResolvedType] = {}
            for link in incoming.get(node_id, ()):
                spec = cls.input_map[link.dst_socket]
                src_type = out_types.get((link.src, link.src_socket))
                if src_type is None:
                    continue
                target = spec.type
                if isinstance(target, TypeParam):
                    bound = bindings.get(target.name)
                    if bound is None:
                        bindings[target.name] = src_type
                        target = target.bound
                    else:
                        target = bound
                if target is not None and src_type is not target and not is_compatible(src_type, target):
                    problems.append(Problem(
                        "type_mismatch",
                        f"{link.source} gives {src_type.name} but this input takes "
                        f"{target.name}; link an output of type {target.name} instead",
                        Location(file, node_id, cls.id, link.dst_socket)))
            for out in cls.outputs:
                t = out.type
                out_types[(node_id, out.name)] = (bindings.get(t.name, t.bound)
                                                  if isinstance(t, TypeParam) else t)
        return problems

    def _check_nodes(self, graph: Graph, classes: dict[str, type[Node]],
                     linked: dict[tuple[str, str], Link], found: list[Problem],
                     constants: Mapping[tuple[str, str], tuple[Any, Link]]) -> list[Problem]:
        """Path inputs that do not exist and each node type's own checks (constants that arrive
        through links are checked as literals are)."""
        file = graph.file_name
        bad_sockets = {(p.location.node, p.location.socket) for p in found}
        problems = []
        for node in graph:
            cls = classes.get(node.id)
            if cls is None or not (_declares(cls, "check") or _reads_files(cls)):
                continue  # nothing more to check (most nodes of a large graph)
            values = literal_values(cls, node.inputs, (spec.name for spec in cls.inputs
                                                       if (node.id, spec.name) in linked or (node.id, spec.name) in bad_sockets))
            for spec in cls.inputs:
                arriving = constants.get((node.id, spec.name))
                if arriving is not None and (node.id, spec.name) not in bad_sockets:
                    values[spec.name] = arriving[0]
            for spec in cls.inputs:
                value = values.get(spec.name)
                if spec.path_kind and isinstance(value, str) and value:
                    if self.settings.resolve_path(spec.path_kind, value) is None:
                        problems.append(Problem(
                            "missing_file", self.settings.describe_search(spec.path_kind, value),
                            Location(file, node.id, cls.id, spec.name)))
                        bad_sockets.add((node.id, spec.name))
            values = {k: v for k, v in values.items() if (node.id, k) not in bad_sockets}
            try:
                for socket, message in cls.check(values, self.settings) or ():
                    problems.append(Problem("node_check", message,
                                            Location(file, node.id, cls.id, socket)))
            except Exception as exc:  # noqa: BLE001 - a buggy check must not hide the others
                problems.append(Problem("node_check", f"the node's own check failed: "
                                        f"{type(exc).__name__}: {exc}",
                                        Location(file, node.id, cls.id)))
        return problems


def constant_inputs(graph: Graph, classes: Mapping[str, type[Node]], links: Iterable[Link],
                    order: Iterable[str], skip: Iterable[str] = ()) -> dict[tuple[str, str], tuple[Any, Link]]:
    """Values known before anything runs that arrive through links into inputs that are
    checked (declared ranges, choices or files, or a node's own `check` or
    `estimate_memory`): what `Node.constant` nodes (value nodes, reroutes, arithmetic)
    compute from literals and from other constants.

    Returns ``(node, input) -> (value, link)``. Only what such inputs need is computed (a long
    chain of arithmetic feeding nothing checked costs nothing); nodes in ``skip`` (with
    problems), nodes on cycles and nodes whose computation fails are left out.
    """
    ordered = set(order)
    skipped = set(skip)
    into: dict[str, list[Link]] = {}
    for ln in links:
        into.setdefault(ln.dst, []).append(ln)
    memo: dict[str, dict[str, Any] | None] = {}

    def outputs_of(root: str) -> dict[str, Any] | None:
        stack = [root]
        while stack:  # iterative: a 100,000-node chain of constants is fine
            n = stack[-1]
            if n in memo:
                stack.pop()
                continue
            cls = classes.get(n)
            if cls is None or not cls.constant or n in skipped or n not in ordered:
                memo[n] = None
                stack.pop()
                continue
            feeds = into.get(n, ())
            waiting = [ln.src for ln in feeds if ln.src not in memo]
            if waiting:
                stack.extend(waiting)
                continue
            stack.pop()
            memo[n] = _compute_constant(graph, n, cls, feeds, memo)
        return memo[root]

    arriving: dict[tuple[str, str], tuple[Any, Link]] = {}
    for dst, feeds in into.items():
        cls = classes.get(dst)
        if cls is None:
            continue
        for ln in feeds:
            if not checked_input(cls, ln.dst_socket):
                continue
            outputs = outputs_of(ln.src)
            if outputs is not None and ln.src_socket in outputs:
                arriving[(dst, ln.dst_socket)] = (outputs[ln.src_socket], ln)
    return arriving


def checked_input(cls: type[Node], socket: str) -> bool:
    """Is what arrives at this input checked before the run (a declared range, choices or
    file, or the node's own `check` or `estimate_memory`)?"""
    known = _CHECKED.get((cls, socket))
    if known is None:  # asked once per link of every run: worked out once per type and input
        spec = cls.input_map.get(socket)
        known = spec is not None and (
            spec.min is not None or spec.max is not None or spec.choices is not None
            or bool(spec.path_kind) or _declares(cls, "check") or _declares(cls, "estimate_memory"))
        _CHECKED[(cls, socket)] = known
    return known


_CHECKED: dict[tuple[type[Node], str], bool] = {}


def _compute_constant(graph: Graph, n: str, cls: type[Node], feeds: Iterable[Link],
                      memo: Mapping[str, dict[str, Any] | None]) -> dict[str, Any] | None:
    feeds = list(feeds)
    kwargs = literal_values(cls, graph.nodes[n].inputs, (ln.dst_socket for ln in feeds))
    for ln in feeds:
        source = memo.get(ln.src)
        if source is None or ln.src_socket not in source:
            return None  # something not constant flows in
        kwargs[ln.dst_socket] = source[ln.src_socket]
    if any(spec.name not in kwargs for spec in cls.inputs if spec.required):
        return None
    try:
        raw = cls().run(None, **kwargs)
    except Exception:  # noqa: BLE001 - it will fail, located, when it runs
        return None
    if isinstance(raw, Mapping):
        return dict(raw)
    return {cls.outputs[0].name: raw} if len(cls.outputs) == 1 else None


def _declares(cls: type[Node], hook: str) -> bool:
    """Does the node type have its own classmethod ``hook`` (not the base class's)?"""
    known = _DECLARES.get((cls, hook))
    if known is None:
        known = getattr(getattr(cls, hook), "__func__", None) is not getattr(getattr(Node, hook), "__func__", None)
        _DECLARES[(cls, hook)] = known
    return known


_DECLARES: dict[tuple[type[Node], str], bool] = {}


def _reads_files(cls: type[Node]) -> bool:
    known = _DECLARES.get((cls, "path_kind"))
    if known is None:
        known = any(spec.path_kind for spec in cls.inputs)
        _DECLARES[(cls, "path_kind")] = known
    return known


def flag_warning(cls: type[Node], location: Location) -> Problem:
    """The warning for a node of a deprecated or experimental type (code ``deprecated`` or
    ``experimental``)."""
    flag = node_flag(cls)
    kind, note = flag if flag is not None else ("experimental", "")
    if kind == "deprecated":
        text = "this node type is deprecated: " + (
            note or "it may be removed from its pack; replace the node")
    else:
        text = "this node type is experimental: " + (
            note or "its inputs and results may change in a later version")
    return Problem(kind, text, location)


def flag_warnings(graph: Graph, registry: NodeRegistry) -> list[Problem]:
    """A warning for each node of the graph whose type is deprecated or experimental (they
    run as usual; `nodeflow validate` and `nodeflow run` print these)."""
    found = []
    for node in graph:
        cls = registry.get(node.type)
        if cls is not None and (cls.deprecated or cls.experimental):
            found.append(flag_warning(cls, Location(graph.file_name, node.id, cls.id)))
    return found


def output_nodes(graph: Graph, registry: NodeRegistry) -> list[str]:
    """The graph's output nodes (those that write files): what a run runs by default."""
    out = []
    for node in graph:
        cls = registry.get(node.type)
        if cls is not None and cls.output_node:
            out.append(node.id)
    return out


def nothing_requested(graph: Graph, registry: NodeRegistry) -> None:
    """Raise `UsageError` when a run with no outputs named would run nothing: the graph has
    no output node."""
    if output_nodes(graph, registry):
        return
    raise UsageError(
        "nothing to run: the graph has no output node (such as image.Save), and no --output "
        "was given", location=Location(graph.file_name),
        hint="Name the nodes to run with --output NODE (repeatable), or add an output node.")


def ancestry(graph: Graph, nodes: Iterable[str]) -> set[str]:
    """The nodes given and every node they depend on through links (cycles and links to
    missing nodes are fine: the walk is iterative and keeps to nodes in the graph)."""
    parents: dict[str, list[str]] = {}
    for ln in graph.links:
        parents.setdefault(ln.dst, []).append(ln.src)
    seen: set[str] = set()
    stack = [n for n in nodes if n in graph.nodes]
    while stack:
        n = stack.pop()
        if n in seen:
            continue
        seen.add(n)
        stack.extend(p for p in parents.get(n, ()) if p in graph.nodes)
    return seen


def split_problems(problems: Iterable[Problem], needed: set[str]) -> tuple[list[Problem], list[Problem]]:
    """(errors, warnings): problems on the nodes a run needs stop it; the others do not."""
    errors: list[Problem] = []
    warnings: list[Problem] = []
    for p in problems:
        (errors if p.location.node in needed else warnings).append(p)
    return errors, warnings


def literal_values(cls: type[Node], literals: Mapping[str, Any], skip: Iterable[str] = ()) -> dict[str, Any]:
    """The values a node's ``check`` and ``estimate_memory`` get: its literal inputs, and the
    defaults of its unset inputs, leaving out the sockets in ``skip`` (linked or invalid)."""
    skipped = set(skip)
    values: dict[str, Any] = {}
    for spec in cls.inputs:
        if spec.name in skipped:
            continue
        if spec.name in literals:
            values[spec.name] = literals[spec.name]
        elif spec.has_default:
            values[spec.name] = spec.default
    return values


def migrate_nodes(graph: Graph, registry: NodeRegistry) -> list[Problem]:
    """Bring nodes saved with an older major version of their type up to date, in place."""
    problems = []
    for node in graph:
        cls = registry.get(node.type)
        if cls is None or node.version is None or node.version == cls.version:
            continue
        if _major(node.version) < _major(cls.version):
            migrated = cls.migrate(node.version, dict(node.inputs))
            if migrated is None:
                problems.append(Problem(
                    "node_version",
                    f"the node was saved with {node.type} {node.version} and the installed "
                    f"{cls.version} has no migration from it; recreate the node or install a "
                    f"version of its pack that supports {node.version}",
                    Location(graph.file_name, node.id, node.type)))
                continue
            node.inputs = migrated
            node.version = cls.version
        elif _major(node.version) == _major(cls.version):
            node.version = cls.version
    return problems


def kahn_order(nodes: list[str], links: Iterable[Link]) -> tuple[list[str], set[str]]:
    """Kahn's algorithm: the order, and the nodes left over because they sit on or after a cycle."""
    indegree = dict.fromkeys(nodes, 0)
    children: dict[str, list[str]] = {}
    for link in links:
        if link.src in indegree and link.dst in indegree:
            children.setdefault(link.src, []).append(link.dst)
            indegree[link.dst] += 1
    ready = deque(n for n in nodes if indegree[n] == 0)
    order = []
    while ready:
        n = ready.popleft()
        order.append(n)
        for c in children.get(n, ()):
            indegree[c] -= 1
            if indegree[c] == 0:
                ready.append(c)
    return order, {n for n, d in indegree.items() if d > 0}


def _describe_cycles(remaining: set[str], links: Iterable[Link]) -> list[list[str]]:
    import networkx as nx

    g = nx.DiGraph()
    g.add_edges_from((ln.src, ln.dst) for ln in links if ln.src in remaining and ln.dst in remaining)
    cycles = []
    for component in nx.strongly_connected_components(g):
        sub = g.subgraph(component)
        if len(component) == 1 and not any(sub.has_edge(n, n) for n in component):
            continue
        edges = nx.find_cycle(sub)
        cycles.append([u for u, _v in edges])
    return sorted(cycles)


def _suggest(name: str, candidates: list[str]) -> str:
    close = difflib.get_close_matches(name, candidates, n=3, cutoff=0.6)
    return f"Did you mean {', '.join(repr(c) for c in close)}?" if close else ""


def _major(version: str) -> int:
    try:
        return int(version.split(".", 1)[0])
    except ValueError:
        return 0


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."

