"""Planning: what the requested outputs need, each node's cache key, and what must run.

``graph_structure`` orders the nodes the requested outputs depend on and computes
their cache keys (`nodeflow.cache.node_key`): type, version, literal inputs, the
files the node's inputs name and its own `Node.fingerprint`, and the parents' keys.
``refresh_structure`` brings a remembered structure up to date with the outside
world before a run: it fingerprints the files again and re-keys only the nodes whose
files changed and what depends on them. ``plan_execution`` then walks back from the
requested nodes only as far as the cache does not reach.

Nothing here runs a node or starts a thread, so a remote worker can plan against its
own cache with these functions and run the plan however it likes.
"""

from __future__ import annotations

import heapq
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field

from nodeflow.cache import OutputCache, file_fingerprint, node_key
from nodeflow.errors import Location, UsageError
from nodeflow.graph import Graph, Link
from nodeflow.node import FingerprintContext, Node
from nodeflow.registry import NodeRegistry
from nodeflow.settings import Settings
from nodeflow.validate import kahn_order, literal_values


@dataclass
class Plan:
    """What a run will do: nodes to run in order, and nodes served from the cache."""

    order: list[str]
    """Every node the requested outputs depend on, in topological order."""
    keys: dict[str, str]
    to_run: list[str]
    cached: list[str]
    requested: list[str]
    classes: dict[str, type[Node]]
    incoming: dict[str, list[Link]]


@dataclass
class GraphStructure:
    """The parts of a plan that depend on the graph and the files it reads, not on the cache."""

    order: list[str]
    keys: dict[str, str]
    wanted: list[str]
    classes: dict[str, type[Node]]
    incoming: dict[str, list[Link]]
    deterministic: bool
    """Every node is deterministic (else the structure is not worth remembering)."""
    external: dict[str, str] = field(default_factory=dict)
    """Per node that reads from outside the graph: the fingerprint its key was made with."""
    out_dir: str = ""


_Structure = GraphStructure  # the name it had inside the executor


def topological_order(nodes: Iterable[str], links: Iterable[Link]) -> list[str]:
    """Kahn's algorithm, iterative (a 100,000-node chain is fine); raises on a cycle."""
    order, cyclic = kahn_order(list(nodes), links)
    if cyclic:
        raise UsageError("the graph has a cycle; run `nodeflow validate` to see it")
    return order


def reads_outside(cls: type[Node]) -> bool:
    """Does the node type read files (``path_kind`` inputs) or declare `Node.fingerprint`?"""
    cached = _READS_OUTSIDE.get(cls)
    if cached is None:
        hooked = getattr(cls.fingerprint, "__func__", None) is not _BASE_FINGERPRINT
        cached = hooked or any(spec.path_kind for spec in cls.inputs)
        _READS_OUTSIDE[cls] = cached
    return cached


_BASE_FINGERPRINT = Node.fingerprint.__func__  # type: ignore[attr-defined]
_READS_OUTSIDE: dict[type[Node], bool] = {}


def external_fingerprint(graph: Graph, node_id: str, cls: type[Node], settings: Settings,
                         linked: Iterable[str] = ()) -> str:
    """What the node reads from outside the graph, as one string for its key: each file named
    by a literal ``path_kind`` input (absolute path, size, mtime; bytes too for inputs declared
    ``hash_content``) and the node's own `Node.fingerprint`."""
    values = literal_values(cls, graph.nodes[node_id].inputs, linked)
    parts = []
    for spec in cls.inputs:
        value = values.get(spec.name)
        if spec.path_kind and isinstance(value, str) and value:
            found = settings.resolve_path(spec.path_kind, value)
            parts.append(f"{spec.name}={file_fingerprint(found, content=spec.hash_content)}"
                         if found is not None else f"{spec.name}=missing:{value}")
    if getattr(cls.fingerprint, "__func__", None) is not _BASE_FINGERPRINT:
        try:
            own = cls.fingerprint(FingerprintContext(node_id, settings), **values)
        except Exception:  # noqa: BLE001 - when it cannot tell, never serve a stale result
            own = uuid.uuid4().hex
        if own is not None:
            parts.append(f"fingerprint={own}")
    return "\x1e".join(parts)


def graph_structure(graph: Graph, registry: NodeRegistry, requested: Iterable[str] | None,
                    settings: Settings, order: list[str] | None = None) -> GraphStructure:
    """Order and cache keys of every node the requested outputs depend on. ``order``, a
    topological order of the whole graph (the validator's), spares sorting it again."""
    full_order = order
    nodes = graph.nodes
    get_class = registry.get
    if requested is None:
        wanted = [n for n, node in nodes.items()
                  if getattr(get_class(node.type), "output_node", False)]
    else:
        wanted = list(dict.fromkeys(requested))
        for n in wanted:
            if n not in nodes:
                raise UsageError(f"--output names node '{n}', which is not in the graph",
                                 location=Location(graph.file_name))
    incoming: dict[str, list[Link]] = {}
    links = graph.links
    for link in links:
        dst = link.dst
        if dst in incoming:
            incoming[dst].append(link)
        else:
            incoming[dst] = [link]

    # Everything the requested nodes depend on (iterative walk, never recursion); an
    # unknown type matters only if a requested output needs it.
    classes: dict[str, type[Node]] = {}
    stack = list(wanted)
    while stack:
        n = stack.pop()
        if n in classes:
            continue
        node = nodes[n]
        cls = get_class(node.type)
        if cls is None:
            raise UsageError(f"unknown node type '{node.type}'",
                             location=Location(graph.file_name, node.id, node.type))
        classes[n] = cls
        feeds = incoming.get(n)
        if feeds:
            stack.extend(link.src for link in feeds)
    if full_order is not None:
        order = list(full_order) if len(classes) == len(nodes) else [
            n for n in full_order if n in classes]
    else:
        order = topological_order((n for n in nodes if n in classes),
                                  (ln for ln in links if ln.dst in classes))
    needed_classes = {n: classes[n] for n in order}
    structure = GraphStructure(order, {}, wanted, needed_classes, incoming,
                               all(c.deterministic for c in set(needed_classes.values())),
                               out_dir=str(settings.out_dir.resolve()))
    keys, external = structure.keys, structure.external
    for n in order:
        cls = needed_classes[n]
        if reads_outside(cls):
            external[n] = external_fingerprint(
                graph, n, cls, settings, (ln.dst_socket for ln in incoming.get(n, ())))
        keys[n] = _key(graph, structure, n)
    return structure


def _key(graph: Graph, structure: GraphStructure, n: str) -> str:
    cls = structure.classes[n]
    if not cls.deterministic:
        return uuid.uuid4().hex
    keys = structure.keys
    feeds = structure.incoming.get(n)
    upstream = [(ln.dst_socket, keys[ln.src], ln.src_socket) for ln in feeds] if feeds else []
    extra = structure.external.get(n, "") if structure.external else ""
    if cls.output_node:
        extra = f"{structure.out_dir}\x1e{extra}"
    return node_key(cls.id, cls.version, graph.nodes[n].inputs, upstream, extra)


def refresh_structure(graph: Graph, structure: GraphStructure, settings: Settings) -> GraphStructure:
    """The structure with the files it reads fingerprinted again: nodes whose files (or own
    fingerprints) changed get new keys, and so does everything downstream of them; the rest
    keep theirs. Returns ``structure`` itself when nothing changed."""
    changed = []
    fresh: dict[str, str] = {}
    for n, before in structure.external.items():
        now = external_fingerprint(graph, n, structure.classes[n], settings,
                                   (ln.dst_socket for ln in structure.incoming.get(n, ())))
        fresh[n] = now
        if now != before:
            changed.append(n)
    if not changed:
        return structure
    updated = GraphStructure(structure.order, dict(structure.keys), structure.wanted,
                             structure.classes, structure.incoming, structure.deterministic,
                             fresh, structure.out_dir)
    rekey(graph, updated, changed)
    return updated


def rekey(graph: Graph, structure: GraphStructure, changed: Iterable[str]) -> set[str]:
    """Recompute, in place, the keys of the ``changed`` nodes and of their descendants whose
    keys change as a result; returns the nodes whose keys changed. Touches only those."""
    position = {n: i for i, n in enumerate(structure.order)}
    children: dict[str, list[str]] = {}
    for dst, links in structure.incoming.items():
        if dst in position:
            for ln in links:
                children.setdefault(ln.src, []).append(dst)
    heap = [(position[n], n) for n in set(changed) if n in position]
    heapq.heapify(heap)
    seen: set[str] = set()
    moved: set[str] = set()
    while heap:
        _pos, n = heapq.heappop(heap)
        if n in seen:
            continue
        seen.add(n)
        key = _key(graph, structure, n)
        if key != structure.keys.get(n):
            structure.keys[n] = key
            moved.add(n)
            for child in children.get(n, ()):
                heapq.heappush(heap, (position[child], child))
    return moved


def plan_execution(graph: Graph, registry: NodeRegistry, cache: OutputCache,
                   requested: Iterable[str] | None = None, *, settings: Settings | None = None,
                   force: Iterable[str] = (), structure: GraphStructure | None = None) -> Plan:
    """Work out which nodes the requested outputs need and which of those must run.

    ``requested`` defaults to every output node. ``force`` names nodes to run even if cached.
    ``structure`` reuses the keys computed for the same, unchanged graph.
    """
    if structure is None:
        structure = graph_structure(graph, registry, requested, settings or Settings())
    order, keys, wanted = structure.order, structure.keys, structure.wanted
    classes, incoming = structure.classes, structure.incoming

    # Walk back from the requested nodes as far as the cache does not reach.
    forced = set(force)
    must_run: set[str] = set()
    cached: list[str] = []
    seen: set[str] = set()
    stack = list(wanted)
    while stack:
        n = stack.pop()
        if n in seen:
            continue
        seen.add(n)
        if n not in forced and keys[n] in cache:
            cached.append(n)
            continue
        must_run.add(n)
        stack.extend(link.src for link in incoming.get(n, ()))
    to_run = [n for n in order if n in must_run] if len(must_run) != len(order) else list(order)
    return Plan(order, keys, to_run, cached, wanted, classes, incoming)


__all__ = ["GraphStructure", "Plan", "external_fingerprint", "graph_structure", "plan_execution",
           "reads_outside", "refresh_structure", "rekey", "topological_order"]
