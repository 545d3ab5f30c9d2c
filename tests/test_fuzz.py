"""Random and mutated graph files: the loader and validator only ever report nodeflow problems."""

import json

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nodeflow.graph import parse_graph_text
from nodeflow.validate import GraphValidator

from .conftest import REPO
from .helpers import make_registry

REG = make_registry()
BASE = json.loads((REPO / "graphs" / "image_effects.json").read_text())

scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=True),
                    st.text(max_size=12))
json_values = st.recursive(scalars, lambda children: st.one_of(
    st.lists(children, max_size=4), st.dictionaries(st.text(max_size=8), children, max_size=4)),
    max_leaves=12)
names = st.sampled_from(["load", "crop", "invert", "blend", "save", "ghost", "bad id", "", "x.y"])
sockets = st.sampled_from(["image", "a", "b", "x", "factor", "path", "nope", ""])


def check(text: str) -> None:
    graph, problems = parse_graph_text(text, "fuzz.json")
    if graph is not None:
        problems = problems + GraphValidator(REG).validate(graph)
        graph.dumps()
    for p in problems:
        assert p.message and str(p)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(json_values)
def test_random_documents(value):
    check(json.dumps(value))


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=200))
def test_random_text(text):
    check(text)


@st.composite
def mutated(draw):
    doc = json.loads(json.dumps(BASE))
    for _ in range(draw(st.integers(1, 6))):
        what = draw(st.sampled_from(["node_value", "node_type", "drop_node", "link", "top", "input",
                                     "version"]))
        node = draw(names)
        nodes = doc["nodes"] if isinstance(doc.get("nodes"), dict) else {}
        links = doc["links"] if isinstance(doc.get("links"), list) else []
        if what == "node_value" and node in nodes:
            nodes[node] = draw(json_values)
        elif what == "node_type" and isinstance(nodes.get(node), dict):
            nodes[node]["type"] = draw(st.one_of(json_values, st.sampled_from(
                ["image.Load", "math.Add", "util.Reroute", "value.Seed", "test.Slow"])))
        elif what == "drop_node":
            nodes.pop(node, None)
        elif what == "link":
            links.append(draw(st.one_of(
                json_values,
                st.builds(lambda a, b, c, d: {"from": f"{a}.{b}", "to": f"{c}.{d}"},
                          names, sockets, names, sockets))))
        elif what == "top":
            doc[draw(st.sampled_from(["nodes", "links", "editor", "meta", "extra"]))] = draw(json_values)
        elif what == "input" and isinstance(nodes.get(node), dict):
            nodes[node].setdefault("inputs", {})
            if isinstance(nodes[node]["inputs"], dict):
                nodes[node]["inputs"][draw(sockets)] = draw(json_values)
        elif what == "version":
            doc["version"] = draw(json_values)
    return doc


@settings(max_examples=400, deadline=None)
@given(mutated())
def test_mutated_graph_files(doc):
    check(json.dumps(doc))
