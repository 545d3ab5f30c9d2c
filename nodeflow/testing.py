"""Helpers for testing node packs: run one node, or a graph, through the real executor."""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from nodeflow.errors import PluginError
from nodeflow.executor import Executor, RunResult
from nodeflow.graph import Graph
from nodeflow.node import Node, Output, RunContext
from nodeflow.registry import NodeRegistry, load_registry
from nodeflow.settings import Settings
from nodeflow.types import SocketType, TypeParam

_ANY = SocketType("TESTING_VALUE", description="A value fed to a generic input by nodeflow.testing.")
_ids = itertools.count()


def registry_with(*nodes: type[Node], installed: bool = True) -> NodeRegistry:
    """A registry of the installed packs (unless ``installed=False``) plus ``nodes``."""
    registry = load_registry(use_env=False) if installed else NodeRegistry()
    if nodes:
        info = registry.register_module("under-test", nodes, "nodeflow.testing")
        if info.error:  # a broken declaration fails the test that uses it, saying why
            raise PluginError(info.error)
    return registry


def run_graph(graph: Graph | dict[str, Any], nodes: Iterable[type[Node]] = (),
              outputs: Iterable[str] | None = None, out_dir: str | Path | None = None,
              registry: NodeRegistry | None = None) -> RunResult:
    """Validate and run a graph (a `Graph` or a graph-file dict); raise the first node failure."""
    if isinstance(graph, dict):
        import json

        graph = Graph.loads(json.dumps(graph))
    settings = Settings(out_dir=Path(out_dir) if out_dir else Path("out"))
    registry = registry or registry_with(*nodes)
    result = Executor(registry, settings).run(graph, outputs)
    if result.failed:
        raise next(iter(result.failed.values()))
    return result


def run_node(node: type[Node], **inputs: Any) -> dict[str, Any]:
    """Run one node with the given inputs: literals for value inputs, any Python value for
    the others (fed through a link, as in a real graph). Returns its outputs by name."""
    graph = Graph()
    feeders: list[type[Node]] = []
    literals: dict[str, Any] = {}
    for name, value in inputs.items():
        spec = node.input_map.get(name)
        if spec is not None and spec.accepts_literal:
            literals[name] = value
            continue
        feeder = _feeder(spec.type if spec is not None else _ANY, value)
        feeders.append(feeder)
        graph.add_node(feeder.id, f"feed_{name}")
    graph.add_node(node.id, "node", literals)
    for name in inputs:
        if name not in literals:
            graph.connect(f"feed_{name}.value", f"node.{name}")
    return run_graph(graph, [node, *feeders], ["node"]).outputs["node"]


def _feeder(declared: Any, value: Any) -> type[Node]:
    out_type = declared
    if isinstance(declared, TypeParam):
        out_type = declared.bound if declared.bound is not None else _ANY

    def run(self: Node, ctx: RunContext) -> Any:
        return value

    return type("Feed", (Node,), {
        "id": f"testing.Feed{next(_ids)}", "category": "testing", "deterministic": False,
        "inputs": (), "outputs": (Output("value", out_type, "The value under test."),), "run": run,
    })
