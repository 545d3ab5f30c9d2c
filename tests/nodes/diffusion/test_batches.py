"""Latent batches (RepeatLatentBatch, LatentFromBatch, LatentComposite) and PreviewImage.

Formula tests on random latents; a picture test of graphs/latent_batches.json on the demo
model (the pasted half shows the other prompt's colours, measured).
"""

from __future__ import annotations

import numpy as np
import pytest

from tests.nodes.diffusion import tiny
from tests.nodes.diffusion.test_resize_latent import _latent, _run


def test_repeat_latent_batch_repeats_the_whole_batch(registry):
    import torch

    latent = _latent(batch=2)
    out = _run(registry, "diffusion.RepeatLatentBatch", {"latent": latent}, {"amount": 3})
    assert out.batch == 6
    assert torch.equal(out.samples, torch.cat([latent.samples] * 3))


def test_latent_from_batch_takes_a_slice(registry):
    import torch

    from nodeflow.errors import NodeInputError

    latent = _latent(batch=4)
    out = _run(registry, "diffusion.LatentFromBatch", {"latent": latent}, {"batch_index": 1, "length": 2})
    assert out.batch == 2 and torch.equal(out.samples, latent.samples[1:3])
    tail = _run(registry, "diffusion.LatentFromBatch", {"latent": latent}, {"batch_index": 3, "length": 5})
    assert tail.batch == 1 and torch.equal(tail.samples, latent.samples[3:])
    with pytest.raises(NodeInputError) as err:
        _run(registry, "diffusion.LatentFromBatch", {"latent": latent}, {"batch_index": 4, "length": 1})
    assert err.value.socket == "batch_index"


def test_latent_composite_pastes_and_feathers_inner_edges(registry):
    import torch

    dst = _latent(width=64, height=64, batch=1, seed=1)  # 8×8 cells
    src = _latent(width=32, height=32, batch=1, seed=2)  # 4×4 cells
    hard = _run(registry, "diffusion.LatentComposite", {"destination": dst, "source": src},
                {"x": 16, "y": 8, "feather": 0})
    expected = dst.samples.clone()
    expected[:, :, 1:5, 2:6] = src.samples
    assert torch.equal(hard.samples, expected)
    assert torch.equal(dst.samples, _latent(width=64, height=64, batch=1, seed=1).samples)  # untouched

    # at the right edge, pasted past the border: cropped, and only the inner (left, top,
    # bottom) edges fade, over 2 cells: weights 1/2, then 1
    soft = _run(registry, "diffusion.LatentComposite", {"destination": dst, "source": src},
                {"x": 48, "y": 16, "feather": 16})
    columns = torch.tensor([0.5, 1.0])
    rows = torch.tensor([0.5, 1.0, 1.0, 0.5])
    mask = rows[:, None] * columns[None, :]  # 4 rows × the 2 columns that fit
    blended = src.samples[:, :, :, :2] * mask + dst.samples[:, :, 2:6, 6:8] * (1 - mask)
    assert torch.allclose(soft.samples[:, :, 2:6, 6:8], blended, atol=1e-6)
    assert torch.equal(soft.samples[:, :, :, :6], dst.samples[:, :, :, :6])


def test_composite_outside_the_destination_is_a_located_error(registry):
    from nodeflow.errors import NodeInputError
    from nodeflow.graph import Graph
    from nodeflow.validate import GraphValidator

    dst, src = _latent(width=64, height=64, batch=1), _latent(width=32, height=32, batch=1)
    with pytest.raises(NodeInputError) as err:
        _run(registry, "diffusion.LatentComposite", {"destination": dst, "source": src},
             {"x": 64, "y": 0, "feather": 0})
    assert err.value.socket == "x" and "outside" in str(err.value)
    graph = Graph()
    graph.add_node("diffusion.EmptyLatent", "a", {"width": 64, "height": 64, "batch": 1})
    graph.add_node("diffusion.LatentComposite", "paste", {"x": 12, "y": 0, "feather": 0})
    graph.connect("a.latent", "paste.destination")
    graph.connect("a.latent", "paste.source")
    problems = GraphValidator(registry).validate(graph)
    assert any(p.location.node == "paste" and p.location.socket == "x" and "multiple of 8" in p.message
               for p in problems)


@pytest.mark.slow
def test_latent_batches_graph_and_preview(registry, tmp_path, torch_threads):
    from nodeflow.nodes.image import preview_folder

    graph = tiny.load_graph("latent_batches", circles={"steps": 10}, squares={"steps": 10},
                            variations={"steps": 8})
    result = tiny.run_graph(registry, graph, outputs=["preview", "save", "decode_composite", "decode"],
                            out_dir=tmp_path)
    composite = result.outputs["decode_composite"]["image"][0]
    left, right = composite[:, :8].mean(axis=(0, 1)), composite[:, 48:].mean(axis=(0, 1))
    assert left[2] > left[0] + 0.2  # the circle picture's blue background on the left
    assert right[0] > right[2] + 0.2  # the red square's picture on the right
    saved = sorted(p.name for p in tmp_path.iterdir())
    assert saved == ["variations_00001.png", "variations_00002.png", "variations_00003.png"]
    variations = result.outputs["decode"]["image"]
    assert variations.shape == (3, 64, 64, 3)
    assert np.abs(variations[0] - variations[1]).max() > 0.05  # a different noise per copy
    previews = [p for p in result.files if p.parent == preview_folder()]
    assert len(previews) == 1 and previews[0].is_file()  # shown from the temporary folder only
    from PIL import Image

    shown = np.asarray(Image.open(previews[0]).convert("RGB"), dtype=np.float32) / 255
    assert np.abs(shown - composite).max() <= 1 / 255 + 1e-6


def test_repeated_and_sliced_inpainting_latents_keep_their_picture_and_mask(registry, models_dir, sd_ckpt,
                                                                            pictures, torch_threads):
    import torch

    from tests.nodes.diffusion.test_outpaint import _inpaint_graph

    graph = _inpaint_graph("tiny-sd", pictures, grow=0)
    graph.add_node("diffusion.RepeatLatentBatch", "repeat", {"amount": 3})
    graph.add_node("diffusion.LatentFromBatch", "pick", {"batch_index": 1, "length": 2})
    graph.disconnect("sampler.latent")
    graph.connect("encode.latent", "repeat.latent")
    graph.connect("repeat.latent", "pick.latent")
    graph.connect("pick.latent", "sampler.latent")
    result = tiny.run_graph(registry, graph, models_dir, ["decode", "encode", "pick"])
    one, two = result.outputs["encode"]["latent"], result.outputs["pick"]["latent"]
    assert two.batch == 2 and two.mask.shape == (2, 32, 32) and np.array_equal(two.mask[1], one.mask[0])
    assert torch.equal(two.encoded.pixels[1], one.encoded.pixels[0])
    assert torch.equal(two.encoded.dist.mean[0], one.encoded.dist.mean[0])
    pictures_out = result.outputs["decode"]["image"]
    assert pictures_out.shape == (2, 32, 32, 3)
    # outside the mask both keep the original picture; inside, each copy got its own noise
    assert np.abs(pictures_out[0] - pictures_out[1]).max() > 1e-3


def _batch_graph(start: str, pictures, pick: int | None):
    """A graph sampling a batch of three 32×32 pictures (from an empty latent, from a first
    sampler's output, or from an encoded picture repeated), the whole batch or only item `pick`."""
    if start == "encoded":
        graph = tiny.load_graph("img2img", checkpoint={"path": "tiny-sd"},
                                image={"path": str(pictures["picture"])},
                                resize={"width": 32, "height": 32},
                                sampler={"steps": 4, "seed": 7, "denoise": 0.6})
        graph.add_node("diffusion.RepeatLatentBatch", "batch", {"amount": 3})
        graph.disconnect("sampler.latent")
        graph.connect("encode.latent", "batch.latent")
        source = "batch.latent"
    else:
        graph = tiny.load_graph("txt2img", checkpoint={"path": "tiny-sd"},
                                latent={"width": 32, "height": 32, "batch": 3},
                                sampler={"steps": 4, "seed": 7})
        source = "latent.latent"
        if start == "second_pass":
            graph.add_node("diffusion.Sample", "first", {"steps": 3, "seed": 1})
            for socket in ("model", "positive", "negative"):
                graph.connect(graph.link_into("sampler", socket).source, f"first.{socket}")
            graph.disconnect("sampler.latent")
            graph.connect("latent.latent", "first.latent")
            graph.set_input("sampler", "denoise", 0.6)
            source = "first.latent"
    if pick is not None:
        graph.add_node("diffusion.LatentFromBatch", "pick", {"batch_index": pick, "length": 1})
        graph.disconnect("sampler.latent")
        graph.connect(source, "pick.latent")
        source = "pick.latent"
    if graph.link_into("sampler", "latent") is None:
        graph.connect(source, "sampler.latent")
    return graph


@pytest.mark.parametrize("start", ["empty", "second_pass", "encoded"])
@pytest.mark.parametrize("sampler", ["diffusion.Sample", "diffusion.KSampler"])
def test_a_latent_taken_from_a_batch_gets_the_noise_it_had_there(registry, models_dir, sd_ckpt, pictures,
                                                                 torch_threads, start, sampler):
    """Sampling item k taken from a batch gives the picture item k gets when the whole batch is
    sampled (the batch_index a latent keeps decides its noise, as in ComfyUI)."""
    from tests.nodes.diffusion.test_ksampler_graphs import as_ksampler

    def pictures_of(pick):
        graph = _batch_graph(start, pictures, pick)
        if sampler == "diffusion.KSampler":
            graph = as_ksampler(graph)
        return tiny.run_graph(registry, graph, models_dir, ["decode"]).outputs["decode"]["image"]

    whole = pictures_of(None)
    assert whole.shape[0] == 3
    for k in (2, 1):
        alone = pictures_of(k)
        assert alone.shape[0] == 1
        assert np.abs(alone[0] - whole[k]).max() <= 1e-4, k
        assert np.abs(alone[0] - whole[0]).max() > 1e-2  # not the first picture's noise


def test_picking_from_a_picked_or_repeated_batch_keeps_counting_in_the_first_batch(registry):
    latent = _latent(batch=4)
    two = _run(registry, "diffusion.LatentFromBatch", {"latent": latent}, {"batch_index": 1, "length": 2})
    assert two.extra == {"batch_index": [1, 2], "noise_batch": 4}
    last = _run(registry, "diffusion.LatentFromBatch", {"latent": two}, {"batch_index": 1, "length": 1})
    assert last.extra == {"batch_index": [2], "noise_batch": 4}
    # copies of picked items are numbered past them, as ComfyUI numbers them
    copies = _run(registry, "diffusion.RepeatLatentBatch", {"latent": two}, {"amount": 2})
    assert copies.extra == {"batch_index": [1, 2, 3, 4], "noise_batch": 5}
