"""upscale.LoadModel and upscale.Upscale against spandrel's own call on the same tiny models."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import settings as hyp_settings
from hypothesis import strategies as st

from nodeflow.errors import Cancelled, NodeInputError
from nodeflow.events import CancelToken, NodeProgress
from nodeflow.executor import Executor
from nodeflow.graph import Graph
from nodeflow.nodes.upscale import LoadModel, Upscale
from nodeflow.nodes.upscale.tiling import plan_axis
from nodeflow.validate import GraphValidator

from .conftest import DirectContext, pattern


def spandrel_reference(path: Path, image: np.ndarray) -> np.ndarray:
    """spandrel's own call on one image, as an IMAGE array."""
    import spandrel
    import torch

    desc = spandrel.ModelLoader().load_from_file(path)
    x = torch.from_numpy(image[0].transpose(2, 0, 1).copy())[None]
    return desc(x)[0].numpy().transpose(1, 2, 0)[None]


@pytest.mark.parametrize("name, arch, scale", [
    ("esrgan-4x.safetensors", "ESRGAN", 4),
    ("esrgan-2x.pth", "ESRGAN", 2),
    ("compact-4x.pth", "RealESRGAN Compact", 4),
    ("swinir-2x.pth", "SwinIR", 2),
])
def test_untiled_output_equals_spandrel(torch_threads, ctx, upscale_models, name, arch, scale):
    image = pattern(24, 20)
    loaded = LoadModel().run(ctx, name)
    assert loaded["scale"] == scale
    assert loaded["architecture"].startswith(arch)
    out = Upscale().run(ctx, loaded["upscale_model"], image, 0, 32)
    assert out.shape == (1, 24 * scale, 20 * scale, 3) and out.dtype == np.float32
    np.testing.assert_array_equal(out, spandrel_reference(upscale_models / "upscale" / name, image))


def test_a_tile_larger_than_the_image_is_the_untiled_call(torch_threads, ctx, upscale_models):
    image = pattern(40, 36)
    model = LoadModel().run(ctx, "compact-4x.pth")["upscale_model"]
    out = Upscale().run(ctx, model, image, 512, 32)
    ref = spandrel_reference(upscale_models / "upscale" / "compact-4x.pth", image)
    np.testing.assert_array_equal(out, ref)


@pytest.mark.parametrize("name", ["esrgan-4x.safetensors", "compact-4x.safetensors"])
def test_tiled_matches_untiled_without_seams(torch_threads, ctx, name):
    """Overlap wider than the receptive field: tiles agree with the whole image to float rounding;
    a narrow overlap stays below one 8-bit level, so no seam can show in a saved picture."""
    image = pattern(100, 92, batch=2)
    model = LoadModel().run(ctx, name)["upscale_model"]
    whole = Upscale().run(ctx, model, image, 0, 0)
    tiled = Upscale().run(ctx, model, image, 40, 24)
    assert np.abs(tiled - whole).max() < 1e-5
    narrow = Upscale().run(ctx, model, image, 48, 12)
    assert np.abs(narrow - whole).max() < 1.0 / 255
    # The seam a naive tiler leaves (tiles cut edge to edge, no overlap) is visible.
    cut = Upscale().run(ctx, model, image, 48, 0)
    assert np.abs(cut - whole).max() > 1.0 / 255


@hyp_settings(max_examples=200, deadline=None)
@given(size=st.integers(1, 300), tile=st.integers(2, 128), overlap=st.integers(0, 127),
       scale=st.sampled_from([1, 2, 4]), multiple_of=st.sampled_from([1, 2, 8]))
def test_tiles_cover_the_image_and_blend_weights_sum_to_one(size, tile, overlap, scale, multiple_of):
    tile = max(tile // multiple_of * multiple_of, multiple_of)
    overlap = min(overlap, tile - 1)
    axis = plan_axis(size, tile, overlap, scale, multiple_of)
    assert axis.length <= max(tile, size) and axis.starts[0] == 0
    assert axis.starts[-1] + axis.length == size
    for a, b in zip(axis.starts, axis.starts[1:], strict=False):
        assert a + axis.length - b >= min(overlap, axis.length) - 1  # neighbours share the overlap
    total = np.zeros(size * scale)
    for start, w in zip(axis.starts, axis.weights, strict=True):
        assert len(w) == axis.length * scale
        total[start * scale:(start + axis.length) * scale] += w
    np.testing.assert_allclose(total, 1.0, atol=1e-6)


def test_progress_per_tile_and_cancel(torch_threads, settings):
    image = pattern(64, 64)
    ctx = DirectContext(settings)
    model = LoadModel().run(ctx, "compact-4x.pth")["upscale_model"]
    Upscale().run(ctx, model, image, 32, 8)
    assert [e[:2] for e in ctx.events] == [(i, 9) for i in range(1, 10)]  # 3 × 3 tiles
    stopping = DirectContext(settings, models=ctx.models, cancel_after=2)
    with pytest.raises(Cancelled):
        Upscale().run(stopping, model, image, 32, 8)
    assert len(stopping.events) == 2


class _SmallMemoryModel:
    """Wraps a spandrel descriptor; fails like a GPU out of memory for inputs over a size."""

    def __init__(self, descriptor, limit: int) -> None:
        self.descriptor, self.limit, self.sizes = descriptor, limit, []

    def __call__(self, x):
        import torch

        self.sizes.append(tuple(x.shape[-2:]))
        if max(x.shape[-2:]) > self.limit:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return self.descriptor(x)

    def __getattr__(self, name):
        return getattr(self.descriptor, name)


def test_tile_size_falls_back_when_memory_runs_out(torch_threads, ctx):
    image = pattern(160, 150)
    model = LoadModel().run(ctx, "compact-4x.pth")["upscale_model"]
    small = dataclasses.replace(model, descriptor=_SmallMemoryModel(model.descriptor, 100))
    out = Upscale().run(ctx, small, image, 0, 32)
    assert max(max(s) for s in small.descriptor.sizes[1:]) <= 100
    assert [m for _d, _t, m in ctx.events if m] == ["out of memory; retrying with 80×80 tiles"]
    # The same as asking for 80×80 tiles (the overlap shrinks to a quarter tile) from the start.
    np.testing.assert_array_equal(out, Upscale().run(ctx, model, image, 80, 20))


def _graph(model_file: str, tile: int = 64, overlap: int = 16) -> Graph:
    graph = Graph()
    graph.add_node("upscale.LoadModel", "load", {"path": model_file})
    graph.add_node("upscale.Upscale", "up", {"tile": tile, "overlap": overlap})
    graph.connect("load.upscale_model", "up.upscale_model")
    return graph


def _problems(registry, settings, graph):
    return [(p.location.node, p.location.socket, p.message)
            for p in GraphValidator(registry, settings).validate(graph)
            if p.code != "missing_input"]


def test_tile_not_larger_than_overlap_is_caught_at_validation(registry, settings):
    problems = _problems(registry, settings, _graph("compact-4x.pth", tile=32, overlap=32))
    assert len(problems) == 1
    node, socket, message = problems[0]
    assert (node, socket) == ("up", "tile") and "larger than overlap" in message


def test_wrong_file_kinds_are_caught_at_validation(registry, settings, upscale_models, tmp_path):
    from safetensors.numpy import save_file

    folder = upscale_models / "upscale"
    save_file({"encoder.down_blocks.0.resnets.0.conv1.weight": np.zeros((4, 3, 3, 3), np.float32)},
              str(folder / "a-vae.safetensors"))
    (folder / "notes.pth").write_text("not a model")
    (folder / "picture.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    expected = {"a-vae.safetensors": "is a VAE, not an upscaler",
                "notes.pth": "not a PyTorch weights file",
                "picture.png": "not a weights file"}
    for name, words in expected.items():
        problems = _problems(registry, settings, _graph(name))
        assert [(n, s) for n, s, _m in problems] == [("load", "path")], name
        assert words in problems[0][2], problems


def _run(registry, settings, graph, image):
    """Run the graph with `image` fed to the upscaler by a one-off source node."""
    from nodeflow.node import Node, Output
    from nodeflow.registry import load_registry
    from nodeflow.types import IMAGE

    class Source(Node):
        """Gives the test's image."""

        id = "test_upscale.Source"
        outputs = (Output("image", IMAGE, "The image."),)

        def run(self, ctx):
            return image

    reg = load_registry(use_env=False)
    reg.register_module("test_upscale", [Source], "test")
    graph.add_node("test_upscale.Source", "src", {})
    graph.connect("src.image", "up.image")
    return Executor(reg, settings).run(graph, ["up"])


class _Payload:
    """Unpickling this would call a function: what a malicious .pth file does."""

    def __reduce__(self):
        return (print, ("unpickled!",))


@pytest.mark.parametrize("name, words", [
    ("compact-1x.safetensors", "restoration"),
    ("pickled.pth", "does not unpickle"),
    ("unknown.safetensors", "not a model architecture spandrel recognises"),
])
def test_files_that_are_not_upscalers_fail_naming_the_path(torch_threads, registry, settings,
                                                           upscale_models, name, words):
    import torch
    from safetensors.torch import save_file

    folder = upscale_models / "upscale"
    if name == "pickled.pth":
        torch.save({"weights": torch.zeros(2), "payload": _Payload()}, str(folder / name))
    elif name == "unknown.safetensors":
        save_file({"trunk.weight": torch.zeros(3, 3)}, str(folder / name))
    result = _run(registry, settings, _graph(name), pattern(16, 16))
    error = result.failed["load"]
    assert error.location.socket == "path" and words in error.message, str(error)


def test_image_smaller_than_the_model_minimum_is_a_located_error(torch_threads, registry, settings):
    result = _run(registry, settings, _graph("swinir-2x.pth"), pattern(8, 12))
    error = result.failed["up"]
    assert error.location.node == "up" and error.location.socket == "image"
    assert "12×8" in error.message and "16×16" in error.message


def test_graph_run_reuses_the_loaded_model_and_can_be_cancelled(torch_threads, registry, settings):
    image = pattern(64, 64)
    graph = _graph("esrgan-4x.safetensors", tile=32, overlap=8)
    token = CancelToken()
    seen = []

    def on_event(event):
        if isinstance(event, NodeProgress) and event.node == "up":
            seen.append(event)
            if len(seen) == 3:
                token.cancel()

    from nodeflow.node import Node, Output
    from nodeflow.registry import load_registry
    from nodeflow.types import IMAGE

    class Source(Node):
        """Gives the test's image."""

        id = "test_upscale.Source2"
        outputs = (Output("image", IMAGE, "The image."),)

        def run(self, ctx):
            return image

    reg = load_registry(use_env=False)
    reg.register_module("test_upscale2", [Source], "test")
    graph.add_node("test_upscale.Source2", "src", {})
    graph.connect("src.image", "up.image")
    executor = Executor(reg, settings)
    result = executor.run(graph, ["up"], on_event=on_event, cancel=token)
    assert result.cancelled and len(seen) == 3
    result = executor.run(graph, ["up"])
    assert result.ok and result.outputs["up"]["image"].shape == (1, 256, 256, 3)
    assert executor.models.loads == 1


def test_node_input_error_type_for_bad_model_value(ctx):
    with pytest.raises(NodeInputError) as info:
        Upscale().run(ctx, object(), pattern(8, 8), 0, 0)
    assert info.value.socket == "upscale_model"
