"""ControlNet preprocessors: weight-free ones work out of the box; the others name the missing file."""

from __future__ import annotations

from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]


def _run(registry, node_type, inputs, tmp_path, models=None):
    from nodeflow.executor import Executor
    from nodeflow.graph import Graph
    from nodeflow.settings import Settings

    graph = Graph()
    graph.add_node("image.Load", "load", {"path": str(REPO / "graphs" / "assets" / "pattern.png")})
    graph.add_node(node_type, "pre", inputs)
    graph.connect("load.image", "pre.image")
    settings = Settings(models_dirs=[models] if models else [], out_dir=tmp_path)
    return Executor(registry, settings).run(graph, ["pre"])


def test_canny_keeps_the_picture_size_and_finds_edges(registry, tmp_path):
    result = _run(registry, "control.Canny", {"resolution": 128}, tmp_path)
    edges = result.outputs["pre"]["image"]
    assert edges.shape == (1, 128, 192, 3) and edges.dtype == np.float32
    assert set(np.unique(edges.round(2))) > {0.0} and edges.max() == 1.0


def test_shuffle_is_fixed_by_its_seed(registry, tmp_path):
    a = _run(registry, "control.ContentShuffle", {"seed": 1, "resolution": 128}, tmp_path)
    b = _run(registry, "control.ContentShuffle", {"seed": 1, "resolution": 128}, tmp_path)
    c = _run(registry, "control.ContentShuffle", {"seed": 2, "resolution": 128}, tmp_path)
    assert a.outputs["pre"]["image"].tobytes() == b.outputs["pre"]["image"].tobytes()
    assert a.outputs["pre"]["image"].tobytes() != c.outputs["pre"]["image"].tobytes()


def test_lineart_standard_needs_no_weights(registry, tmp_path):
    result = _run(registry, "control.LineartStandard", {"resolution": 128}, tmp_path)
    assert result.outputs["pre"]["image"].shape == (1, 128, 192, 3)


def test_weighted_annotator_names_the_missing_file(registry, tmp_path):
    from nodeflow.graph import Graph
    from nodeflow.settings import Settings
    from nodeflow.validate import GraphValidator

    (tmp_path / "annotators" / "Annotators").mkdir(parents=True)
    (tmp_path / "annotators" / "Annotators" / "sk_model.pth").write_bytes(b"")
    graph = Graph()
    graph.add_node("control.HED", "hed", {"path": "Annotators"})
    graph.add_node("control.Lineart", "lineart", {"path": "Annotators"})
    problems = GraphValidator(registry, Settings(models_dirs=[tmp_path])).validate(graph)
    messages = {(p.location.node, p.location.socket): p.message for p in problems
                if p.location.socket == "path"}
    assert "has no ControlNetHED.pth" in messages[("hed", "path")]
    assert "has no sk_model2.pth" in messages[("lineart", "path")]
