"""Latent and image resizing (LatentUpscale/By, ImageScale/By) and the hires-fix graph.

Formula tests: the interpolation modes against torch, bislerp against hand-computed slerps,
lanczos against Pillow. Picture test: graphs/hires_fix.json on the demo model keeps the
prompt's colours at twice the size.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from tests.nodes.diffusion import tiny


def _run(registry, node_type, inputs, values, settings=None):
    """Run one CPU node's `run` on in-memory values (latents cannot be written in a graph file)."""
    cls = registry.get(node_type)
    return cls().run(_Ctx(settings), **inputs, **values)


class _Ctx:
    """What these CPU-only nodes use of a run context."""

    node_id = "n"

    def __init__(self, settings=None):
        from nodeflow.settings import Settings

        self.settings = settings or Settings()

    def progress(self, *args, **kwargs):
        pass

    def check_cancelled(self):
        pass

    def preview(self, image):
        pass


def _latent(width=32, height=24, batch=2, seed=0):
    import torch

    from nodeflow.nodes.diffusion.types import Latent

    gen = torch.Generator().manual_seed(seed)
    samples = torch.randn(batch, 4, height // 8, width // 8, generator=gen)
    return Latent(width=width, height=height, batch=batch, samples=samples)


@pytest.mark.parametrize("method", ["nearest-exact", "bilinear", "area", "bicubic"])
def test_latent_upscale_interpolates_like_torch(registry, method):
    import torch

    latent = _latent()
    out = _run(registry, "diffusion.LatentUpscale", {"latent": latent},
               {"upscale_method": method, "width": 64, "height": 40, "crop": "disabled"})
    expected = torch.nn.functional.interpolate(latent.samples, size=(5, 8), mode=method)
    assert (out.width, out.height, out.batch) == (64, 40, 2)
    assert torch.equal(out.samples, expected)


def test_latent_upscale_keeps_aspect_and_crops_centre(registry):
    import torch

    latent = _latent(width=64, height=32)  # 8×4 cells
    out = _run(registry, "diffusion.LatentUpscale", {"latent": latent},
               {"upscale_method": "nearest-exact", "width": 128, "height": 0, "crop": "disabled"})
    assert (out.width, out.height) == (128, 64)
    square = _run(registry, "diffusion.LatentUpscale", {"latent": latent},
                  {"upscale_method": "nearest-exact", "width": 32, "height": 32, "crop": "center"})
    assert torch.equal(square.samples, latent.samples[..., :, 2:6])  # the middle 4×4 cells


def test_bislerp_follows_the_great_circle(registry):
    import torch

    from nodeflow.nodes.diffusion.resample import bislerp

    a = torch.tensor([1.0, 0.0, 0.0, 0.0])
    b = torch.tensor([0.0, 3.0, 0.0, 0.0])  # orthogonal to a, three times as long
    samples = torch.stack([a, b], dim=-1).reshape(1, 4, 1, 2)
    out = bislerp(samples, 4, 1)[0, :, 0, :].T  # 4 output positions, sampled at 0, .25, .75, 1
    for got, t in zip(out, (0.0, 0.25, 0.75, 1.0), strict=True):
        length = 1 + 2 * t
        expected = torch.tensor([math.cos(t * math.pi / 2), math.sin(t * math.pi / 2), 0, 0]) * length
        assert torch.allclose(got, expected, atol=1e-5), (t, got)
    same = _latent()
    assert torch.allclose(bislerp(same.samples, 4, 3), same.samples, atol=1e-5)  # same size: itself
    up = _run(registry, "diffusion.LatentUpscaleBy", {"latent": same},
              {"upscale_method": "bislerp", "scale_by": 2.0})
    assert up.samples.shape == (2, 4, 6, 8) and (up.width, up.height) == (64, 48)
    # slerp keeps the vectors' lengths between their neighbours' (averaging would shrink them)
    lengths = up.samples.norm(dim=1)
    assert lengths.min() >= same.samples.norm(dim=1).min() - 1e-5


def test_upscaling_an_empty_latent_only_changes_its_size(registry):
    from nodeflow.nodes.diffusion.types import Latent

    out = _run(registry, "diffusion.LatentUpscaleBy", {"latent": Latent(64, 64, 3)},
               {"upscale_method": "bilinear", "scale_by": 1.5})
    assert out.is_empty and (out.width, out.height, out.batch) == (96, 96, 3)


def test_image_scale_matches_torch_and_pillow(registry):
    import torch
    from PIL import Image

    image = np.asarray(tiny.picture(32, 24), dtype=np.float32)[None] / 255.0
    out = _run(registry, "image.ImageScale", {"image": image},
               {"upscale_method": "bicubic", "width": 48, "height": 0, "crop": "disabled"})
    expected = torch.nn.functional.interpolate(torch.from_numpy(image).movedim(-1, 1), size=(36, 48),
                                               mode="bicubic").movedim(1, -1).numpy()
    assert out.shape == (1, 36, 48, 3) and np.array_equal(out, expected)
    lanczos = _run(registry, "image.ImageScaleBy", {"image": image},
                   {"upscale_method": "lanczos", "scale_by": 2.0})
    pil = Image.fromarray((image[0] * 255).astype(np.uint8)).resize((64, 48), Image.Resampling.LANCZOS)
    assert np.array_equal(lanczos[0], np.asarray(pil, dtype=np.float32) / 255.0)


def test_impossible_sizes_fail_validation(registry):
    from nodeflow.graph import Graph
    from nodeflow.validate import GraphValidator

    graph = Graph()
    graph.add_node("diffusion.EmptyLatent", "latent", {"width": 64, "height": 64, "batch": 1})
    graph.add_node("diffusion.LatentUpscale", "up", {"upscale_method": "bislerp", "width": 100,
                                                    "height": 0, "crop": "center"})
    graph.connect("latent.latent", "up.latent")
    problems = {(p.location.node, p.location.socket): p.message
                for p in GraphValidator(registry).validate(graph)}
    assert "not divisible by 8" in problems[("up", "width")]
    assert "needs both width and height" in problems[("up", "crop")]


@pytest.mark.slow
def test_hires_fix_graph_keeps_the_picture_at_twice_the_size(registry, tmp_path, torch_threads):
    from PIL import Image

    from training import evaluate

    graph = tiny.load_graph("hires_fix", first={"steps": 12}, second={"steps": 10})
    result = tiny.run_graph(registry, graph, outputs=["decode"], out_dir=tmp_path)
    image = result.outputs["decode"]["image"]
    assert image.shape == (1, 128, 128, 3)
    small = Image.fromarray((image[0] * 255).round().astype(np.uint8)).resize((64, 64), Image.Resampling.BOX)
    found = evaluate.analyse(np.asarray(small))
    assert (found.colour, found.background) == ("yellow", "blue"), found
