import json

import pytest

from nodeflow import graph as graph_mod
from nodeflow.errors import GraphInvalid
from nodeflow.graph import Graph, parse_graph_text

from .conftest import REPO


@pytest.mark.parametrize("name", ["resize.json", "image_effects.json"])
def test_round_trip_is_byte_identical(name):
    text = (REPO / "graphs" / name).read_text()
    assert Graph.loads(text).dumps() == text


def test_save_then_load_keeps_everything(tmp_path):
    g = Graph()
    g.add_node("image.Load", "load", {"path": "in.png"})
    g.add_node("image.Resize", "small", {"width": 256, "height": 256})
    g.connect("load.image", "small.image")
    g.set_layout("load", pos=[10, 20])
    g.meta["title"] = "Ünïcode title"
    path = g.save(tmp_path / "g.json")
    again = Graph.load(path)
    assert again.dumps() == g.dumps()
    assert path.read_text().startswith('{\n  "format": "nodeflow.graph",\n  "version": 1,')
    assert again.links[0].source == "load.image" and again.links[0].target == "small.image"
    assert again.editor == {"load": {"pos": [10, 20]}}


def test_newer_version_is_a_clear_error():
    text = json.dumps({"format": "nodeflow.graph", "version": 99, "nodes": {}})
    with pytest.raises(GraphInvalid) as info:
        Graph.loads(text, "future.json")
    message = str(info.value)
    assert "future.json" in message and "version 99" in message and "update nodeflow" in message


def test_older_versions_go_through_migrations(monkeypatch):
    # Pretend the current format is 2 and version 1 stored inputs under "params".
    def v1_to_v2(doc):
        for node in doc["nodes"].values():
            node["inputs"] = node.pop("params")
        return doc

    monkeypatch.setattr(graph_mod, "VERSION", 2)
    monkeypatch.setitem(graph_mod.MIGRATIONS, 1, v1_to_v2)
    old = {"format": "nodeflow.graph", "version": 1,
           "nodes": {"a": {"type": "value.Int", "params": {"value": 3}}}}
    g = Graph.loads(json.dumps(old))
    assert g.nodes["a"].inputs == {"value": 3}
    assert g.to_json()["version"] == 2


def test_malformed_json_names_line_and_column():
    graph, problems = parse_graph_text('{\n  "format": "nodeflow.graph",\n  "version": 1,\n  "nodes": {,}\n}',
                                       "bad.json")
    assert graph is None
    (p,) = problems
    assert p.code == "json" and p.location.line == 4 and p.location.column == 13
    assert str(p).startswith("bad.json:4:13: malformed JSON")


def test_not_a_graph_file():
    _, problems = parse_graph_text('{"hello": 1}', "x.json")
    assert "not a nodeflow graph file" in problems[0].message


def test_png_without_graph_is_a_clear_error(tmp_path):
    from PIL import Image

    from nodeflow.errors import GraphFileError

    path = tmp_path / "plain.png"
    Image.new("RGB", (4, 4)).save(path)
    with pytest.raises(GraphFileError, match="carries no nodeflow graph"):
        Graph.load(path)
