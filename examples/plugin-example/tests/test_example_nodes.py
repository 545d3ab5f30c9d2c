import json

import numpy as np
from nodeflow_example import ApplyPalette, ExtractPalette, PaletteToImage, Posterize

from nodeflow.graph import Graph
from nodeflow.registry import load_registry
from nodeflow.testing import run_graph, run_node
from nodeflow.validate import GraphValidator, migrate_nodes


def gradient():
    x = np.linspace(0, 1, 16, dtype=np.float32)
    return np.stack(np.broadcast_arrays(x[None, :], x[:, None], 0.5 * np.ones((16, 16), np.float32)),
                    -1)[None]


def test_posterize_keeps_only_the_requested_levels():
    out = run_node(Posterize, image=gradient(), levels=3)["image"]
    assert set(np.unique(out[..., 0]).round(4)) == {0.0, 0.5, 1.0}


def test_palette_round_trip():
    image = np.zeros((1, 4, 4, 3), np.float32)
    image[0, :, :2] = [1.0, 0.0, 0.0]
    image[0, :3, 2:] = [0.0, 0.0, 1.0]
    palette = run_node(ExtractPalette, image=image, colors=2)["palette"]
    assert palette.tolist() == [[1.0, 0.0, 0.0], [0.0, 0.0, 1.0]]
    noisy = np.clip(image + 0.1, 0, 1)
    recoloured = run_node(ApplyPalette, image=noisy, palette=palette)["image"]
    assert np.array_equal(recoloured[0, 0, 0], [1.0, 0.0, 0.0])
    swatches = run_node(PaletteToImage, palette=palette, swatch=5)["image"]
    assert swatches.shape == (1, 5, 10, 3) and swatches[0, 0, 7].tolist() == [0.0, 0.0, 1.0]


def test_palette_type_is_refused_where_an_image_is_expected():
    doc = {"format": "nodeflow.graph", "version": 1, "nodes": {
        "p": {"type": "example.ExtractPalette", "inputs": {}},
        "inv": {"type": "image.Invert", "inputs": {}}},
        "links": [{"from": "p.palette", "to": "inv.image"}]}
    problems = GraphValidator(load_registry(use_env=False)).validate(Graph.loads(json.dumps(doc)))
    assert any(p.code == "type_mismatch" and "PALETTE" in p.message for p in problems)


def test_a_graph_saved_with_version_1_is_migrated():
    doc = {"format": "nodeflow.graph", "version": 1, "nodes": {
        "post": {"type": "example.Posterize", "version": "1.0.0", "inputs": {"bits": 1}}}}
    graph = Graph.loads(json.dumps(doc))
    assert migrate_nodes(graph, load_registry(use_env=False)) == []
    assert graph.nodes["post"].inputs == {"levels": 2} and graph.nodes["post"].version == "2.0.0"


def test_the_pack_runs_in_a_graph(tmp_path):
    from PIL import Image

    Image.fromarray((gradient()[0] * 255).astype(np.uint8)).save(tmp_path / "g.png")
    doc = {"format": "nodeflow.graph", "version": 1, "nodes": {
        "load": {"type": "image.Load", "inputs": {"path": str(tmp_path / "g.png")}},
        "post": {"type": "example.Posterize", "inputs": {"levels": 2}},
        "save": {"type": "image.Save", "inputs": {"prefix": "poster"}}},
        "links": [{"from": "load.image", "to": "post.image"}, {"from": "post.image", "to": "save.image"}]}
    result = run_graph(doc, out_dir=tmp_path / "out")
    assert [p.name for p in result.files] == ["poster_00001.png"]
