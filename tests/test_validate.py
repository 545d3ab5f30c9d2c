"""Every validation error kind, reported at once and located by file, node and socket."""

import json

import pytest

from nodeflow.graph import parse_graph_text
from nodeflow.settings import Settings
from nodeflow.validate import GraphValidator

from .helpers import make_registry

REG = make_registry()


def problems_of(doc, tmp_path=None):
    graph, problems = parse_graph_text(json.dumps(doc), "g.json")
    if graph is not None:
        settings = Settings(base_dir=tmp_path) if tmp_path else Settings()
        problems += GraphValidator(REG, settings).validate(graph)
    return problems


def doc(nodes, links=()):
    return {"format": "nodeflow.graph", "version": 1, "nodes": nodes,
            "links": [{"from": a, "to": b} for a, b in links]}


def one(problems, code):
    found = [p for p in problems if p.code == code]
    assert len(found) == 1, problems
    return found[0]


def test_valid_graph_has_no_problems():
    assert problems_of(doc({"a": {"type": "value.Int", "inputs": {"value": 2}},
                            "b": {"type": "math.Add", "inputs": {"b": 1.5}}},
                           [("a.value", "b.a")])) == []


def test_unknown_type_suggests_close_names():
    p = one(problems_of(doc({"r": {"type": "image.Resise", "inputs": {}}})), "unknown_type")
    assert p.location.node == "r" and "image.Resize" in p.message
    assert str(p).startswith("g.json, node 'r'")


def test_bad_node_id():
    p = one(problems_of(doc({"bad id!": {"type": "value.Int", "inputs": {}}})), "node_id")
    assert "bad id!" in p.message


def test_unknown_input_and_output():
    problems = problems_of(doc({"a": {"type": "value.Int", "inputs": {"valeu": 1}},
                                "b": {"type": "math.Add", "inputs": {}}},
                               [("a.number", "b.a")]))
    p = one(problems, "unknown_input")
    assert (p.location.node, p.location.socket) == ("a", "valeu")
    p = one(problems, "unknown_output")
    assert (p.location.node, p.location.socket) == ("a", "number") and "Outputs: value" in p.message


def test_missing_required_input():
    p = one(problems_of(doc({"s": {"type": "image.Resize", "inputs": {}}})), "missing_input")
    assert (p.location.node, p.location.socket) == ("s", "image")
    assert "link an output to it" in p.message


def test_link_to_missing_node():
    p = one(problems_of(doc({"b": {"type": "math.Add", "inputs": {}}}, [("ghost.value", "b.a")])),
            "missing_node")
    assert "ghost" in p.message


def test_type_mismatch_names_both_types():
    problems = problems_of(doc({"t": {"type": "value.String", "inputs": {}},
                                "b": {"type": "math.Add", "inputs": {}}},
                               [("t.value", "b.a")]))
    p = one(problems, "type_mismatch")
    assert (p.location.node, p.location.socket) == ("b", "a")
    assert "STRING" in p.message and "FLOAT" in p.message


def test_subtype_link_is_accepted():
    assert problems_of(doc({"i": {"type": "value.Int", "inputs": {}},
                            "b": {"type": "math.Add", "inputs": {}}}, [("i.value", "b.a")])) == []


def test_generic_passthrough_takes_its_input_type():
    ok = doc({"i": {"type": "value.Int", "inputs": {}}, "r": {"type": "util.Reroute", "inputs": {}},
              "b": {"type": "math.Add", "inputs": {}}}, [("i.value", "r.value"), ("r.value", "b.a")])
    assert problems_of(ok) == []
    bad = doc({"i": {"type": "value.String", "inputs": {}}, "r": {"type": "util.Reroute", "inputs": {}},
               "b": {"type": "math.Add", "inputs": {}}}, [("i.value", "r.value"), ("r.value", "b.a")])
    p = one(problems_of(bad), "type_mismatch")
    assert p.location.node == "b" and "STRING" in p.message


def test_two_links_into_one_input():
    p = one(problems_of(doc({"x": {"type": "value.Float", "inputs": {}},
                             "y": {"type": "value.Float", "inputs": {}},
                             "b": {"type": "math.Add", "inputs": {}}},
                            [("x.value", "b.a"), ("y.value", "b.a")])), "duplicate_link")
    assert (p.location.node, p.location.socket) == ("b", "a") and "x.value" in p.message


@pytest.mark.parametrize("inputs, fragment", [
    ({"width": "wide"}, "expected an integer"),
    ({"width": 1.5}, "expected an integer"),
    ({"width": 0}, "below the minimum 1"),
    ({"width": 100000}, "above the maximum 16384"),
    ({"method": "sharpest"}, "not one of the choices"),
])
def test_bad_literal_values(inputs, fragment):
    problems = problems_of(doc({"s": {"type": "image.Resize", "inputs": inputs},
                                "l": {"type": "value.Int", "inputs": {}}}))
    p = one(problems, "bad_value")
    assert p.location.socket == next(iter(inputs)) and fragment in p.message


def test_cycle_names_its_nodes():
    problems = problems_of(doc({"a": {"type": "math.Add", "inputs": {}},
                                "b": {"type": "math.Add", "inputs": {}},
                                "c": {"type": "math.Add", "inputs": {}}},
                               [("a.sum", "b.a"), ("b.sum", "c.a"), ("c.sum", "a.a")]))
    p = one(problems, "cycle")
    assert "a -> b -> c -> a" in p.message


def test_missing_file_names_the_places_searched(tmp_path):
    p = one(problems_of(doc({"l": {"type": "image.Load", "inputs": {"path": "nope.png"}}}), tmp_path),
            "missing_file")
    assert p.location.socket == "path" and "nope.png" in p.message and str(tmp_path) in p.message


def test_every_problem_is_reported_at_once():
    problems = problems_of(doc({
        "a": {"type": "image.Resise", "inputs": {}},
        "s": {"type": "image.Resize", "inputs": {"width": -1}},
        "b": {"type": "math.Add", "inputs": {"c": 1}},
    }, [("ghost.x", "b.a")]))
    assert {p.code for p in problems} >= {"unknown_type", "bad_value", "missing_input",
                                         "unknown_input", "missing_node"}
    assert all(p.location.file == "g.json" for p in problems)


def test_node_specific_checks_are_reported():
    p = one(problems_of(doc({"s": {"type": "image.Save", "inputs": {"prefix": "../escape"}}},)),
            "node_check")
    assert p.location.socket == "prefix"


# --- values that arrive through links ---------------------------------------------------------

def latent_fed_by(*chain, value=100_000, links=()):
    """value.Int -> (chain of constant nodes) -> EmptyLatent.width."""
    nodes = {"w": {"type": "value.Int", "inputs": {"value": value}},
             "latent": {"type": "diffusion.EmptyLatent", "inputs": {"height": 64}}}
    src = "w.value"
    all_links = list(links)
    for i, type_id in enumerate(chain):
        nodes[f"c{i}"] = {"type": type_id, "inputs": {}}
        all_links.append((src, f"c{i}.value"))
        src = f"c{i}.value"
    all_links.append((src, "latent.width"))
    return doc(nodes, all_links)


@pytest.mark.parametrize("chain", [(), ("util.Reroute",), ("util.Reroute", "util.Reroute")])
def test_a_constant_through_value_nodes_and_reroutes_is_checked_like_a_literal(chain):
    p = one(problems_of(latent_fed_by(*chain)), "bad_value")
    assert (p.location.node, p.location.socket) == ("latent", "width")
    assert "100000" in p.message and "8192" in p.message and "arrives from" in p.message


def test_a_constant_computed_by_arithmetic_is_checked():
    nodes = {"a": {"type": "value.Float", "inputs": {"value": 3.0}},
             "add": {"type": "math.Add", "inputs": {"b": 20000.0}},
             "busy": {"type": "test.Busy", "inputs": {}}}
    p = one(problems_of(doc(nodes, [("a.value", "add.a"), ("add.sum", "busy.seconds")])), "bad_value")
    assert (p.location.node, p.location.socket) == ("busy", "seconds")
    assert "20003.0" in p.message and "maximum 10" in p.message


def test_a_node_check_sees_constants_that_arrive_through_links():
    # EmptyLatent's own check wants a multiple of 8.
    p = one(problems_of(latent_fed_by("util.Reroute", value=100)), "node_check")
    assert (p.location.node, p.location.socket) == ("latent", "width") and "8" in p.message


def test_values_in_range_through_links_are_fine():
    assert problems_of(latent_fed_by("util.Reroute", value=64)) == []
