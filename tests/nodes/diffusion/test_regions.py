"""Regional prompts: ConditioningSetArea / SetMask / Combine / Average / Concat, weighted in the
sampler as ComfyUI weights them, and measured on the demo model."""

from __future__ import annotations

import math

import pytest

from tests.nodes.diffusion import tiny

SD_CONFIG = {"beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear",
             "num_train_timesteps": 1000, "prediction_type": "epsilon"}
SIGMA = 4.0


@pytest.fixture(scope="module")
def model():
    from nodeflow.nodes.diffusion.types import DiffusionModel

    return DiffusionModel(tiny.sd_components()["unet"], SD_CONFIG, "sd1")


def prompt(seed: int):
    import torch

    from nodeflow.nodes.diffusion.types import Conditioning

    gen = torch.Generator().manual_seed(seed)
    return Conditioning(torch.randn(1, 77, 32, generator=gen), "sd1")


def run(node, **inputs):
    return node().run(None, **inputs)


def own_prediction(model, cond, x):
    """x̂₀ of one prompt on exactly the latent it is given (no regions)."""
    import torch

    from nodeflow.nodes.diffusion.sigmas import model_sampling

    ms = model_sampling(SD_CONFIG)
    with torch.no_grad():
        out = model.unet(x / math.sqrt(SIGMA ** 2 + 1), ms.timestep(SIGMA).repeat(x.shape[0]),
                         encoder_hidden_states=cond.embeds.repeat(x.shape[0], 1, 1)).sample
    return x - out * SIGMA


def positive_prediction(model, positive, x):
    import torch

    from nodeflow.nodes.diffusion.ksampler import GuidedDenoiser
    from nodeflow.nodes.diffusion.sigmas import model_sampling

    denoiser = GuidedDenoiser(model, model_sampling(SD_CONFIG), positive, prompt(99), 1.0,
                              tuple(x.shape), "cpu")
    with torch.no_grad():
        cond, uncond = denoiser.predictions(x, SIGMA)
    assert uncond is None  # cfg 1: no negative pass
    return cond


def test_an_area_prompt_runs_on_its_crop_weighted_and_feathered(model, torch_threads):
    """Area A (the left 64×64 of 128×64, strength 2) combined with a whole-picture prompt C:
    inside A the prediction is (2·A + C)/3 with A run on its crop alone; A's weight ramps down
    at its inner edge (over min(8, 8/4) = 2 cells: ×1, ×1/2); right of it only C acts."""
    import torch

    from nodeflow.nodes.diffusion.regions import ConditioningCombine, ConditioningSetArea

    a, c = prompt(1), prompt(2)
    area = run(ConditioningSetArea, conditioning=a, width=64, height=64, x=0, y=0, strength=2.0)
    positive = run(ConditioningCombine, conditioning_1=c, conditioning_2=area)
    x = torch.randn(1, 4, 8, 16, generator=torch.Generator().manual_seed(0)) * SIGMA
    got = positive_prediction(model, positive, x)
    pred_a = own_prediction(model, a, x[:, :, :, :8])
    pred_c = own_prediction(model, c, x)
    # weight 2 up to the last column, which the feather (2 cells wide here) halves: 2 × 1/2
    torch.testing.assert_close(got[..., :7], (2 * pred_a[..., :7] + pred_c[..., :7]) / 3, atol=1e-5, rtol=0)
    torch.testing.assert_close(got[..., 7], (pred_a[..., 7] + pred_c[..., 7]) / 2, atol=1e-5, rtol=0)
    torch.testing.assert_close(got[..., 8:], pred_c[..., 8:], atol=1e-5, rtol=0)


def test_an_area_in_fractions_is_the_same_box_in_pixels(model, torch_threads):
    import torch

    from nodeflow.nodes.diffusion.regions import (
        ConditioningCombine,
        ConditioningSetArea,
        ConditioningSetAreaPercentage,
    )

    a, c = prompt(5), prompt(6)
    x = torch.randn(1, 4, 8, 16, generator=torch.Generator().manual_seed(2)) * SIGMA
    px = run(ConditioningSetArea, conditioning=a, width=64, height=32, x=64, y=32, strength=1.5)
    frac = run(ConditioningSetAreaPercentage, conditioning=a, width=0.5, height=0.5, x=0.5, y=0.5,
               strength=1.5)
    got_px = positive_prediction(model, run(ConditioningCombine, conditioning_1=c, conditioning_2=px), x)
    got_frac = positive_prediction(model, run(ConditioningCombine, conditioning_1=c, conditioning_2=frac), x)
    torch.testing.assert_close(got_frac, got_px, atol=0, rtol=0)
    assert (got_px[..., 4:, 8:] - own_prediction(model, c, x)[..., 4:, 8:]).abs().max() > 1e-3


def test_a_mask_prompt_weights_by_the_mask_without_feathering(model, torch_threads):
    import torch

    from nodeflow.nodes.diffusion.regions import ConditioningCombine, ConditioningSetMask

    m, c = prompt(3), prompt(4)
    mask = torch.zeros(8, 16)
    mask[:, :8] = 1.0
    mask[:, 8:12] = 0.5
    masked = run(ConditioningSetMask, conditioning=m, mask=mask.numpy(), strength=1.0,
                 set_cond_area="default")
    positive = run(ConditioningCombine, conditioning_1=masked, conditioning_2=c)
    x = torch.randn(1, 4, 8, 16, generator=torch.Generator().manual_seed(1)) * SIGMA
    got = positive_prediction(model, positive, x)
    pred_m, pred_c = own_prediction(model, m, x), own_prediction(model, c, x)
    torch.testing.assert_close(got[..., :8], (pred_m[..., :8] + pred_c[..., :8]) / 2, atol=1e-5, rtol=0)
    torch.testing.assert_close(got[..., 8:12], (0.5 * pred_m[..., 8:12] + pred_c[..., 8:12]) / 1.5,
                               atol=1e-5, rtol=0)
    torch.testing.assert_close(got[..., 12:], pred_c[..., 12:], atol=1e-5, rtol=0)
    # 'mask bounds': the model sees only the mask's bounding box (here the left 12 columns)
    bounded = run(ConditioningSetMask, conditioning=m, mask=mask.numpy(), strength=1.0,
                  set_cond_area="mask bounds")
    got = positive_prediction(model, run(ConditioningCombine, conditioning_1=bounded,
                                         conditioning_2=c), x)
    crop = own_prediction(model, m, x[..., :12])
    torch.testing.assert_close(got[..., :8], (crop[..., :8] + pred_c[..., :8]) / 2, atol=1e-5, rtol=0)


def test_average_and_concat_follow_their_formulas():
    import torch

    from nodeflow.nodes.diffusion.regions import ConditioningAverage, ConditioningConcat
    from nodeflow.nodes.diffusion.types import Conditioning

    to = Conditioning(torch.ones(1, 154, 32), "sd1", pooled=torch.ones(1, 8))
    src = Conditioning(torch.full((1, 77, 32), 3.0), "sd1", pooled=torch.zeros(1, 8))
    out = run(ConditioningAverage, conditioning_to=to, conditioning_from=src, conditioning_to_strength=0.25)
    assert out.embeds.shape == (1, 154, 32)
    # first 77 tokens: 0.25·1 + 0.75·3; the rest: blended with zeros (the shorter one is padded)
    assert torch.allclose(out.embeds[:, :77], torch.tensor(2.5))
    assert torch.allclose(out.embeds[:, 77:], torch.tensor(0.25))
    assert torch.allclose(out.pooled, torch.tensor(0.25))
    cat = run(ConditioningConcat, conditioning_to=to, conditioning_from=src)
    assert cat.embeds.shape == (1, 231, 32) and torch.equal(cat.embeds[:, 154:], src.embeds)


def test_combined_prompts_of_different_encoders_are_refused():
    import torch

    from nodeflow.errors import NodeInputError
    from nodeflow.nodes.diffusion.regions import ConditioningCombine
    from nodeflow.nodes.diffusion.types import Conditioning

    with pytest.raises(NodeInputError) as err:
        run(ConditioningCombine, conditioning_1=prompt(1),
            conditioning_2=Conditioning(torch.zeros(1, 77, 64), "sdxl"))
    assert err.value.socket == "conditioning_2"


def test_sample_refuses_regions_and_names_the_node_to_use(registry, models_dir, sd_ckpt,
                                                         torch_threads):
    from nodeflow.executor import Executor
    from nodeflow.settings import Settings

    graph = tiny.load_graph("txt2img", checkpoint={"path": "tiny-sd"},
                            latent={"width": 32, "height": 32}, sampler={"steps": 2})
    graph.add_node("diffusion.ConditioningSetArea", "area", {"width": 16, "height": 16, "x": 0, "y": 0,
                                                             "strength": 1.0})
    graph.connect("positive.conditioning", "area.conditioning")
    graph.connect("area.conditioning", "sampler.positive")
    result = Executor(registry, Settings(models_dirs=[models_dir])).run(graph, ["sampler"])
    message = str(result.failed["sampler"])
    assert "positive" in message and "diffusion.KSampler" in message


def test_two_boxes_get_the_two_colours_their_prompts_ask_for(registry, torch_threads):
    """graphs/regions.json on the demo model: a red background asked for in the left box and a
    blue one in the right box; swapping the prompts swaps the colours."""
    import numpy as np

    from training.evaluate import nearest_colour

    def halves(left: str, right: str):
        graph = tiny.load_graph("regions", left={"text": left}, right={"text": right},
                                sampler={"steps": 12})
        image = tiny.run_graph(registry, graph, outputs=["decode"]).outputs["decode"]["image"][0]
        assert image.shape == (64, 128, 3)
        # the background colour of each box: the median of a ring 4 to 8 pixels inside its edges
        # (clear of the shape, which keeps a margin, and of the faint frame drawn at box edges)
        out = []
        for part in (image[:, :64], image[:, 64:]):
            ring = np.concatenate([part[4:8, 4:60].reshape(-1, 3), part[56:60, 4:60].reshape(-1, 3),
                                   part[8:56, 4:8].reshape(-1, 3), part[8:56, 56:60].reshape(-1, 3)])
            out.append(nearest_colour(np.median(ring, axis=0) * 255))
        return out

    assert halves("a yellow circle on a red background", "a white star on a blue background") == \
        ["red", "blue"]
    assert halves("a white star on a blue background", "a yellow circle on a red background") == \
        ["blue", "red"]
