"""The graph file format has one declaration: the published JSON Schema and the reader agree.

Many valid documents built from the format's rules, and mutations of them, are given both to
a JSON Schema validator (with the schema `nodeflow schema` prints) and to the reader: the
reader accepts exactly what the schema accepts, and refuses the rest with located nodeflow
problems, never a traceback.
"""

from __future__ import annotations

import json
import re
from typing import Any

import jsonschema
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nodeflow.cli import main
from nodeflow.errors import GraphInvalid
from nodeflow.graph import Graph, parse_graph_data, parse_graph_text
from nodeflow.schema import graph_json_schema

from .conftest import REPO


def _ecma_pattern(validator: Any, pattern: str, instance: Any, schema: Any) -> Any:
    # JSON Schema patterns are ECMA-262 regular expressions, where "$" is the end of the text;
    # Python's re.search would also let "$" match before a final newline ("id\n").
    if validator.is_type(instance, "string"):
        python = pattern[:-1] + r"\Z" if pattern.endswith("$") else pattern
        if not re.search(python, instance):
            yield jsonschema.ValidationError(f"{instance!r} does not match {pattern!r}")


SCHEMA = graph_json_schema()
Validator = jsonschema.validators.extend(jsonschema.Draft202012Validator, {"pattern": _ecma_pattern})
VALIDATOR = Validator(SCHEMA)


def test_schema_command_prints_the_generated_schema(capsys):
    assert main(["schema"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed == SCHEMA
    jsonschema.Draft202012Validator.check_schema(printed)
    # What tools that validate graph files rely on stays as it was published.
    assert printed["$id"] == "https://nodeflow.dev/schema/graph-v1.json"
    assert printed["title"] == "nodeflow graph file"
    assert printed["required"] == ["format", "version", "nodes"]
    assert printed["properties"]["format"]["const"] == "nodeflow.graph"


@pytest.mark.parametrize("path", sorted((REPO / "graphs").glob("*.json")), ids=lambda p: p.name)
def test_every_example_graph_is_valid_for_both(path):
    doc = json.loads(path.read_text())
    assert VALIDATOR.is_valid(doc)
    graph, problems = parse_graph_text(path.read_text(), str(path))
    assert problems == [] and graph is not None
    assert VALIDATOR.is_valid(graph.to_json())


def test_the_schema_refuses_node_ids_the_reader_refuses():
    doc = {"format": "nodeflow.graph", "version": 1, "nodes": {"bad id": {"type": "image.Load"}}}
    assert not VALIDATOR.is_valid(doc)
    assert not jsonschema.Draft202012Validator(SCHEMA).is_valid(doc)


# --- documents ----------------------------------------------------------------------------
LETTERS = "abcxyzABCXYZ"
WORD = LETTERS + "019_"
node_ids = st.text(WORD + "-", min_size=1, max_size=6)
names = st.builds(str.__add__, st.sampled_from(LETTERS), st.text(WORD, max_size=4))  # identifiers
type_ids = st.lists(names, min_size=2, max_size=3).map(".".join)
sockets = st.builds(str.__add__, st.sampled_from(LETTERS + "_"), st.text(WORD, max_size=4))
literals = st.one_of(st.none(), st.booleans(), st.integers(), st.integers(-10**30, 10**30),
                     st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=6))
json_values = st.recursive(literals, lambda children: st.one_of(
    st.lists(children, max_size=3), st.dictionaries(st.text(max_size=5), children, max_size=3)),
    max_leaves=8)


@st.composite
def valid_documents(draw: Any) -> dict[str, Any]:
    ids = draw(st.lists(node_ids, max_size=5, unique=True))
    nodes: dict[str, Any] = {}
    for node_id in ids:
        node: dict[str, Any] = {"type": draw(type_ids)}
        if draw(st.booleans()):
            node["version"] = draw(st.sampled_from(["1.0.0", "2.1.3", "x"]))
        if draw(st.booleans()):
            node["inputs"] = draw(st.dictionaries(st.text(max_size=6), literals, max_size=4))
        nodes[node_id] = node
    ends = st.sampled_from(ids) if ids else node_ids
    doc: dict[str, Any] = {"format": "nodeflow.graph", "version": draw(st.sampled_from([1, 1.0])),
                           "nodes": nodes}
    if draw(st.booleans()):
        doc["links"] = [{"from": f"{a}.{x}", "to": f"{b}.{y}"} for a, x, b, y in draw(st.lists(
            st.tuples(ends, sockets, ends, sockets), max_size=4))]
    if draw(st.booleans()):
        doc["editor"] = {n: {"pos": [draw(st.floats(-1e3, 1e3)), draw(st.floats(-1e3, 1e3))]}
                         for n in ids}
        doc["editor"]["@frames"] = {"frames": [{"title": "g", "rect": [0, 0, 300, 200]}]}
    if draw(st.booleans()):
        doc["meta"] = draw(st.dictionaries(st.text(max_size=6), json_values, max_size=3))
    return doc


def _places(value: Any, at: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every path into a JSON value."""
    out = [at]
    if isinstance(value, dict):
        for key, child in value.items():
            out += _places(child, (*at, key))
    elif isinstance(value, list):
        for i, child in enumerate(value):
            out += _places(child, (*at, i))
    return out


def _near_misses(text: str) -> list[str]:
    """Strings one small slip away from ``text``."""
    return [text + "\n", text + " ", "", text + ".", "." + text, text.replace(".", ""),
            text.replace(".", ". "), "9" + text, text + "@"]


@st.composite
def mutated_documents(draw: Any) -> Any:
    doc: Any = draw(valid_documents())
    for _ in range(draw(st.integers(1, 3))):
        at = draw(st.sampled_from(_places(doc)))
        if not at:
            if draw(st.integers(0, 9)) == 0:
                doc = draw(json_values)
            continue
        parent = doc
        for step in at[:-1]:
            parent = parent[step]
        key, value = at[-1], parent[at[-1]]
        what = draw(st.sampled_from(["replace", "slip", "drop", "add", "rename"]))
        if what == "replace":
            parent[key] = draw(st.one_of(json_values, st.sampled_from([0, 2, 1.5, True, "1", [], {}])))
        elif what == "slip" and isinstance(value, str):
            parent[key] = draw(st.sampled_from(_near_misses(value)))
        elif what == "drop":
            del parent[key]
        elif what == "add" and isinstance(value, dict):
            value[draw(st.sampled_from(["extra", "type", "inputs", "version", "from", "to", "links"]))] = \
                draw(json_values)
        elif what == "add" and isinstance(value, list):
            value.append(draw(json_values))
        elif what == "rename" and isinstance(parent, dict):
            new = draw(st.sampled_from(_near_misses(key)))
            if new not in parent:
                parent[new] = parent.pop(key)
    return doc


# --- the two judges ------------------------------------------------------------------------
def judge(doc: Any) -> None:
    """The reader accepts ``doc`` exactly when the schema does, and says why it refuses it."""
    text = json.dumps(doc, indent=1)
    graph, problems = parse_graph_text(text, "fuzz.json")
    schema_errors = list(VALIDATOR.iter_errors(doc))
    reader_accepts = graph is not None and not problems
    assert reader_accepts == (not schema_errors), (
        f"reader problems: {[str(p) for p in problems]}; schema errors: "
        f"{[(list(e.absolute_path), e.message) for e in schema_errors]}")
    if reader_accepts:
        assert graph is not None
        again = Graph.loads(graph.dumps())  # what the reader built saves as a valid file
        assert again.dumps() == graph.dumps()
        assert VALIDATOR.is_valid(json.loads(graph.dumps()))
        return
    with pytest.raises(GraphInvalid):  # a nodeflow error, printed without a traceback
        Graph.loads(text, "fuzz.json")
    lines = text.split("\n")
    for p in problems:
        assert p.message and p.location.file == "fuzz.json" and str(p).startswith("fuzz.json")
        if p.location.line is not None and p.code != "link":  # links are list items: any value
            assert lines[p.location.line - 1][p.location.column - 1] == '"', str(p)  # at the key
    # A problem inside one node is reported on that node.
    inside = {tuple(e.absolute_path)[:2] for e in schema_errors}
    if all(len(path) == 2 and path[0] == "nodes" for path in inside):
        assert {path[1] for path in inside} <= {p.location.node for p in problems}


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(valid_documents())
def test_valid_documents_are_accepted_by_both(doc):
    assert VALIDATOR.is_valid(doc)
    judge(doc)


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated_documents())
def test_mutated_documents_are_judged_alike(doc):
    judge(doc)


# --- what a user reads ---------------------------------------------------------------------
def problems_of(doc: Any) -> list[str]:
    graph, problems = parse_graph_data(doc, "g.json")  # a document without text: no lines
    return [str(p) for p in problems]


HEAD = {"format": "nodeflow.graph", "version": 1}


def test_an_input_holding_a_list_is_named_with_its_node_and_socket():
    (message,) = problems_of({**HEAD, "nodes": {"crop": {"type": "image.Crop",
                                                          "inputs": {"width": [64, 64]}}}})
    assert message.startswith("g.json, node 'crop', socket 'width': the input holds a list")
    assert "links" in message


def test_refusals_name_what_is_wrong_and_where():
    doc = {**HEAD, "nodes": {"a": {"type": "Load", "inputs": {}},
                             "b": {"type": "image.Load", "version": None, "color": 1},
                             "c d": {"type": "image.Load"}},
           "links": [{"from": "a.image", "to": "b"}, {"from": "a.image"}], "extras": 1}
    assert problems_of(doc) == [
        "g.json, node 'a': unknown node type \"Load\": a node type id has the form 'pack.Name', "
        "such as \"image.Load\"",
        "g.json, node 'b': 'version' of a node must be a string like \"1.0.0\", not null",
        "g.json, node 'b': unknown key 'color' in the node (allowed: type, version, inputs)",
        "g.json, node 'c d': bad node id 'c d': use only letters, digits, '_' and '-'",
        "g.json: link #1: 'b' is not of the form node.socket",
        "g.json: link #2 must be {\"from\": \"node.output\", \"to\": \"node.input\"}, "
        "got {\"from\": \"a.image\"}",
        "g.json: unknown top-level key 'extras' (allowed: format, version, nodes, links, editor, meta)",
    ]


def test_problems_in_a_file_name_its_line_and_column():
    text = """{
  "format": "nodeflow.graph", "version": 1,
  "nodes": {
    "crop": {"type": "image.Crop",
             "inputs": {"x": 0, "width": [64, 64]}},
    "c d": {"type": "image.Load"}
  },
  "links": [{"from": "crop.image", "to": "c d.image"}]
}
"""
    assert [str(p).split(": ")[0] for p in parse_graph_text(text, "g.json")[1]] == [
        "g.json:5:33, node 'crop', socket 'width'",
        "g.json:6:5, node 'c d'",
        "g.json:8:13",
    ]


def test_a_file_without_nodes_says_what_to_add():
    (message,) = problems_of(HEAD)
    assert "no 'nodes'" in message and '"nodes": {}' in message


def test_the_reader_keeps_the_good_parts_of_a_broken_document():
    # The editor pastes what it can of a fragment; the validator reports on the rest.
    doc = {**HEAD, "nodes": {"good": {"type": "image.Load", "inputs": {"path": "a.png", "bad": [1]}},
                             "bad": {"inputs": {}}},
           "links": [{"from": "good.image", "to": "other.image"}, {"from": 1, "to": "x.y"}]}
    graph, problems = parse_graph_text(json.dumps(doc), "g.json")
    assert graph is not None and len(problems) == 3
    assert list(graph.nodes) == ["good"] and graph.nodes["good"].inputs == {"path": "a.png"}
    assert [ln.source for ln in graph.links] == ["good.image"]


def test_version_written_as_1_0_is_version_1():
    graph = Graph.loads(json.dumps({**HEAD, "version": 1.0, "nodes": {}}))
    assert graph.to_json()["version"] == 1


def test_literal_types_survive_the_check():
    graph = Graph.loads(json.dumps({**HEAD, "nodes": {"a": {"type": "value.Int", "inputs": {
        "i": 1, "f": 1.0, "b": True, "n": None, "s": "1", "big": 10**30}}}}))
    assert [type(v) for v in graph.nodes["a"].inputs.values()] == [int, float, bool, type(None), str, int]


def test_validate_command_reports_a_list_input_without_a_traceback(tmp_path, capsys):
    path = tmp_path / "g.json"
    path.write_text(json.dumps({**HEAD, "nodes": {"v": {"type": "value.Int", "inputs": {"value": [1]}}}},
                               indent=2))
    assert main(["validate", str(path)]) == 2
    err = capsys.readouterr().err
    assert f"{path}:8:9, node 'v', socket 'value': the input holds a list" in err
    assert "Traceback" not in err
