"""The built-in image, value and math nodes, run through the executor as a user would."""

import numpy as np
import pytest
from PIL import Image

from nodeflow.executor import Executor
from nodeflow.graph import Graph
from nodeflow.settings import Settings


@pytest.fixture
def picture(tmp_path):
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, size=(30, 40, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(tmp_path / "in.png")
    return tmp_path / "in.png", pixels


def run(registry, graph, outputs, tmp_path):
    result = Executor(registry, Settings(out_dir=tmp_path / "out", base_dir=tmp_path)).run(graph, outputs)
    assert result.ok, result.failed
    return result


def test_load_gives_float_rgb_and_alpha_mask(registry, tmp_path):
    rgba = np.zeros((4, 5, 4), dtype=np.uint8)
    rgba[..., 0] = 255
    rgba[..., 3] = 255
    rgba[1, 2, 3] = 0
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    g = Graph()
    g.add_node("image.Load", "load", {"path": str(tmp_path / "a.png")})
    out = run(registry, g, ["load"], tmp_path).outputs["load"]
    assert out["image"].shape == (1, 4, 5, 3) and out["image"].dtype == np.float32
    assert out["image"][0, 0, 0].tolist() == [1.0, 0.0, 0.0]
    assert out["mask"].shape == (1, 4, 5) and out["mask"][0, 1, 2] == 1.0 and out["mask"].sum() == 1.0


def test_load_rejects_a_file_that_is_not_a_picture(registry, tmp_path):
    (tmp_path / "notes.png").write_text("hello")
    g = Graph()
    g.add_node("image.Load", "load", {"path": str(tmp_path / "notes.png")})
    result = Executor(registry).run(g, ["load"])
    error = result.failed["load"]
    assert error.location.socket == "path" and "not a picture" in str(error)


def test_save_round_trips_pixels_and_embeds_the_graph(registry, picture, tmp_path):
    path, pixels = picture
    g = Graph()
    g.add_node("image.Load", "load", {"path": str(path)})
    g.add_node("image.Save", "save", {"prefix": "sub/pic"})
    g.connect("load.image", "save.image")
    result = run(registry, g, None, tmp_path)
    (written,) = result.files
    assert written == tmp_path / "out" / "sub" / "pic_00001.png"
    with Image.open(written) as im:
        assert np.array_equal(np.asarray(im), pixels)
        assert "nodeflow" in im.text and "nodeflow-version" in im.text
    assert set(Graph.load(written).nodes) == {"load", "save"}


def test_resize_crop_invert_blend(registry, picture, tmp_path):
    path, pixels = picture
    g = Graph()
    g.add_node("image.Load", "load", {"path": str(path)})
    g.add_node("image.Resize", "resize", {"width": 20, "height": 15, "method": "area"})
    g.add_node("image.Crop", "crop", {"x": 10, "y": 5, "width": 8, "height": 6})
    g.add_node("image.Invert", "invert")
    g.add_node("image.Blend", "half", {"factor": 0.5})
    g.add_node("image.Blend", "diff", {"factor": 1.0, "mode": "difference"})
    g.connect("load.image", "resize.image")
    g.connect("load.image", "crop.image")
    g.connect("load.image", "invert.image")
    g.connect("load.image", "half.a")
    g.connect("invert.image", "half.b")
    g.connect("load.image", "diff.a")
    g.connect("load.image", "diff.b")
    out = run(registry, g, ["resize", "crop", "invert", "half", "diff"], tmp_path).outputs
    original = pixels.astype(np.float32) / 255
    expected_area = original.reshape(15, 2, 20, 2, 3).mean(axis=(1, 3))
    assert np.allclose(out["resize"]["image"][0], expected_area, atol=1e-5)
    assert np.array_equal(out["crop"]["image"][0], original[5:11, 10:18])
    assert np.allclose(out["invert"]["image"][0], 1 - original)
    assert np.allclose(out["half"]["image"], 0.5)
    assert np.allclose(out["diff"]["image"], 0.0)


def test_blend_of_different_sizes_names_the_socket(registry, picture, tmp_path):
    path, _ = picture
    g = Graph()
    g.add_node("image.Load", "load", {"path": str(path)})
    g.add_node("image.Resize", "small", {"width": 8, "height": 8})
    g.add_node("image.Blend", "blend")
    g.connect("load.image", "blend.a")
    g.connect("load.image", "small.image")
    g.connect("small.image", "blend.b")
    result = Executor(registry).run(g, ["blend"])
    assert result.failed["blend"].location.socket == "b"
    assert "image.Resize" in str(result.failed["blend"])


def test_values_and_add(registry, tmp_path):
    g = Graph()
    g.add_node("value.Int", "i", {"value": 2})
    g.add_node("value.Float", "f", {"value": 0.25})
    g.add_node("math.Add", "add")
    g.connect("i.value", "add.a")
    g.connect("f.value", "add.b")
    g.add_node("value.Seed", "seed", {"seed": 2**64 - 1})
    g.add_node("value.String", "text", {"value": "a red circle"})
    out = run(registry, g, ["add", "seed", "text"], tmp_path).outputs
    assert out == {"add": {"sum": 2.25}, "seed": {"seed": 2**64 - 1}, "text": {"value": "a red circle"}}
