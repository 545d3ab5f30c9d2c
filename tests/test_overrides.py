"""Overrides from the command line (--set), a server request (set) and a sweep (--sweep) are
found, checked and reported by one function: the same input, the same located words."""

from __future__ import annotations

import json

import pytest

from nodeflow.errors import GraphInvalid
from nodeflow.graph import Graph
from nodeflow.overrides import apply_overrides
from nodeflow.registry import load_registry
from nodeflow.sweeps.spec import parse_sweeps

REGISTRY = load_registry()


def two_adds() -> Graph:
    return Graph.loads(json.dumps({"format": "nodeflow.graph", "version": 1, "nodes": {
        "first": {"type": "math.Add", "inputs": {"a": 1, "b": 2}},
        "second": {"type": "math.Add", "inputs": {"b": 3}}},
        "links": [{"from": "first.sum", "to": "second.a"}]}), "adds.json")


def problems_of(call: object) -> list[tuple[str, str | None, str | None, str]]:
    with pytest.raises(GraphInvalid) as caught:
        call()  # type: ignore[operator]
    return [(p.code, p.location.node, p.location.socket, p.message) for p in caught.value.problems]


def test_text_and_values_set_inputs_by_their_declared_types() -> None:
    graph = two_adds()
    apply_overrides(graph, REGISTRY, ["first.a=40"])
    apply_overrides(graph, REGISTRY, {"first.b": 0.5, "second.b": "7"}, "set")
    assert graph.nodes["first"].inputs == {"a": 40, "b": 0.5}
    assert graph.nodes["second"].inputs["b"] == 7


@pytest.mark.parametrize(("ref", "code", "words"), [
    ("nowhere.a", "usage", "the graph has no node 'nowhere' (nodes: first, second)"),
    ("first.q", "usage", "no input 'q' (inputs that take values: a, b)"),
    ("second.a", "usage", "this input is fed by a link from first.sum; set that node's input instead"),
])
def test_the_same_mistake_reads_the_same_from_every_door(ref: str, code: str, words: str) -> None:
    from_cli = problems_of(lambda: apply_overrides(two_adds(), REGISTRY, [f"{ref}=1"]))
    from_request = problems_of(lambda: apply_overrides(two_adds(), REGISTRY, {ref: 1}, "set"))
    from_sweep = problems_of(lambda: parse_sweeps(two_adds(), REGISTRY, [f"{ref}=1..3"]))
    assert from_cli[0][0] == from_request[0][0] == from_sweep[0][0] == code
    assert from_cli[0][3] == f"--set: {words}"
    assert from_request[0][3] == f"set: {words}"
    assert from_sweep[0][3] == "--sweep: " + words.replace("set that", "sweep that")


def test_every_problem_is_reported_and_nothing_is_set() -> None:
    graph = two_adds()
    found = problems_of(lambda: apply_overrides(graph, REGISTRY, ["first.a=2", "first.b=x", "oops"]))
    assert [(code, node, socket) for code, node, socket, _ in found] == [
        ("bad_value", "first", "b"), ("usage", None, None)]
    assert found[1][3] == "--set 'oops': use --set NODE.INPUT=VALUE"
    assert graph.nodes["first"].inputs == {"a": 1, "b": 2}
