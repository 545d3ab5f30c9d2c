"""Overriding a graph's input values from outside it: ``--set NODE.INPUT=VALUE`` on the command
line, a server request's ``set``, a sweep's ``--sweep NODE.INPUT=VALUES``.

Each names an input by ``NODE.INPUT``; `override_target` finds it or says, located, why it
cannot take a value (no such node or input, an input that takes only links, an input fed
by a link). `apply_overrides` parses and checks every override by the input's declared type
and sets them, or raises `GraphInvalid` listing every problem at once.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from nodeflow.errors import GraphInvalid, Location, Problem
from nodeflow.graph import Graph, split_ref
from nodeflow.node import Input, check_literal, parse_literal


def override_target(graph: Graph, registry: Any, node_id: str, socket: str, flag: str = "--set",
                    verb: str = "set") -> tuple[Input | None, Location, Problem | None]:
    """The input ``node_id.socket`` names, where it is, and why it cannot take a value from
    ``flag`` (None when it can). ``verb`` says what to do to the feeding node instead."""
    file = graph.file_name
    node = graph.nodes.get(node_id)
    if node is None:
        known = ", ".join(graph.nodes)
        return None, Location(file, node_id), Problem(
            "usage", f"{flag}: the graph has no node '{node_id}' (nodes: {known})", Location(file, node_id))
    cls = registry.get(node.type)
    loc = Location(file, node_id, node.type, socket)
    spec: Input | None = cls.input_map.get(socket) if cls else None
    if cls is None or spec is None:
        known = ", ".join(s.name for s in cls.inputs if s.accepts_literal) if cls else ""
        return None, loc, Problem("usage", f"{flag}: no input '{socket}'"
                                  + (f" (inputs that take values: {known})" if known else ""), loc)
    feeder = graph.link_into(node_id, socket)
    instead = (f"this input is fed by a link from {feeder.source}; {verb} that node's input instead"
               if feeder is not None else "")
    if not spec.accepts_literal:
        return None, loc, Problem("usage", f"{flag}: this input takes a link from another node, "
                                  f"not a value{f' ({instead})' if instead else ''}", loc)
    if instead:
        return None, loc, Problem("usage", f"{flag}: {instead}", loc)
    return spec, loc, None


def apply_overrides(graph: Graph, registry: Any, overrides: Iterable[str] | Mapping[str, Any],
                    flag: str = "--set") -> None:
    """Set input values on ``graph``: ``NODE.INPUT=VALUE`` texts, each parsed by the input's
    declared type (as ``--set``), or a map of ``NODE.INPUT`` to values (text parsed the same
    way, other values taken as they are). Every value is checked against its input's type,
    range and choices; `GraphInvalid` lists every problem, located, and sets nothing."""
    items: list[tuple[str, str, Any]] = []
    problems: list[Problem] = []
    pairs = (((ref, value, False) for ref, value in overrides.items()) if isinstance(overrides, Mapping)
             else ((item, None, True) for item in overrides))
    for ref, value, whole in pairs:
        text: str | None = value if isinstance(value, str) else None
        if whole:  # 'NODE.INPUT=VALUE'
            ref, eq, text = ref.partition("=")
            if not eq:
                problems.append(Problem("usage", f"{flag} {ref!r}: use {flag} NODE.INPUT=VALUE",
                                        Location(graph.file_name)))
                continue
        shown = f"{ref}={text}" if text is not None else ref
        try:
            node_id, socket = split_ref(ref)
        except ValueError as exc:
            problems.append(Problem("usage", f"{flag} {shown!r}: {exc}", Location(graph.file_name)))
            continue
        spec, loc, problem = override_target(graph, registry, node_id, socket, flag)
        if problem is not None or spec is None:
            problems += [problem] if problem is not None else []
            continue
        if text is not None:
            try:
                value = parse_literal(spec, text)
            except ValueError as exc:
                problems.append(Problem("bad_value", f"{flag}: {exc}", loc))
                continue
        why = check_literal(spec, value)
        if why:
            problems.append(Problem("bad_value", f"{flag}: {why}", loc))
            continue
        items.append((node_id, socket, value))
    if problems:
        raise GraphInvalid(problems, graph.file_name)
    for node_id, socket, value in items:
        graph.set_input(node_id, socket, value)


__all__ = ["apply_overrides", "override_target"]
