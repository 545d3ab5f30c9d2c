"""Guidance control on diffusion.Sample and diffusion.KSampler: guidance only in an interval of
timesteps, and guidance rescale (against diffusers' pipelines and the formula)."""

from __future__ import annotations

import numpy as np
import pytest

from tests.nodes.diffusion import tiny
from tests.nodes.diffusion.test_ksampler import ksampler_graph

PROMPT = "a red circle on a blue background"


def sample_graph(**sampler):
    return tiny.load_graph("txt2img", checkpoint={"path": "tiny-sd"}, positive={"text": PROMPT},
                           latent={"width": 32, "height": 32},
                           sampler={"steps": 4, "seed": 11, "sampler": "euler", **sampler})


def image(registry, models_dir, graph):
    return tiny.run_graph(registry, graph, models_dir, ["decode"]).outputs["decode"]["image"]


def test_sample_guidance_rescale_matches_the_pipeline(registry, models_dir, sd_ckpt, sd_pipe,
                                                      torch_threads):
    import torch

    ours = image(registry, models_dir, sample_graph(guidance_rescale=0.7, cfg=9.0))
    ref = sd_pipe(PROMPT, negative_prompt="", height=32, width=32, num_inference_steps=4,
                  guidance_scale=9.0, guidance_rescale=0.7,
                  generator=torch.Generator("cpu").manual_seed(11), output_type="np").images
    assert np.abs(ours - ref).max() <= 1e-5
    plain = image(registry, models_dir, sample_graph(cfg=9.0))
    assert np.abs(plain - ours).max() > 1e-3  # and the rescale did something


def test_sample_guidance_interval(registry, models_dir, sd_ckpt, torch_threads):
    # timesteps of 4 Euler steps: 999, 666, 333, 0 (linspace spacing)
    never = image(registry, models_dir, sample_graph(guidance_min_t=1000.0))
    unguided = image(registry, models_dir, sample_graph(cfg=1.0))
    assert np.abs(never - unguided).max() <= 1e-6
    default = image(registry, models_dir, sample_graph())  # the interval [0, 1000]: every step
    late = image(registry, models_dir, sample_graph(guidance_max_t=500.0))  # guided at 333 and 0
    assert np.abs(late - default).max() > 1e-2
    early = image(registry, models_dir, sample_graph(guidance_min_t=500.0))  # guided at 999 and 666
    assert np.abs(early - unguided).max() > 1e-2 and np.abs(early - default).max() > 1e-4


def test_ksampler_guidance_interval_and_rescale(registry, models_dir, sd_ckpt, torch_threads):
    def run(**values):
        return image(registry, models_dir, ksampler_graph(**values))

    never = run(guidance_min_t=1000.0, steps=3)  # every timestep is below 1000
    assert np.abs(never - run(cfg=1.0, steps=3)).max() <= 1e-6
    rescaled = run(guidance_rescale=0.7, steps=3)
    assert np.abs(rescaled - run(steps=3)).max() > 1e-4  # float noise is ~1e-6


def test_rescale_in_v_space_follows_the_formula():
    import torch

    from nodeflow.nodes.diffusion.ksampler import rescale_guidance

    gen = torch.Generator().manual_seed(0)
    x = torch.randn(2, 4, 8, 8, generator=gen) * 3
    cond = torch.randn(2, 4, 8, 8, generator=gen)
    guided = cond * 4 + 1
    sigma = 2.0

    def v(x0):
        return (x / (sigma ** 2 + 1) - x0) * (sigma ** 2 + 1) ** 0.5 / sigma

    full = rescale_guidance(x, sigma, cond, guided, 1.0)
    # amount 1: the guided v-prediction scaled to the positive one's standard deviation
    assert torch.allclose(v(full).std(dim=(1, 2, 3)), v(cond).std(dim=(1, 2, 3)), rtol=1e-5)
    assert torch.allclose(v(full) / v(guided), (v(cond).std(dim=(1, 2, 3)) / v(guided).std(dim=(1, 2, 3)))
                          .view(2, 1, 1, 1).expand(2, 4, 8, 8), rtol=1e-4)
    assert torch.allclose(rescale_guidance(x, sigma, cond, guided, 0.0), guided, atol=1e-5)
    half = rescale_guidance(x, sigma, cond, guided, 0.5)
    assert torch.allclose(v(half), 0.5 * v(full) + 0.5 * v(guided), atol=1e-4)


@pytest.mark.parametrize("node", ["diffusion.Sample", "diffusion.KSampler"])
def test_empty_guidance_interval_is_rejected(registry, models_dir, node):
    from nodeflow.settings import Settings
    from nodeflow.validate import GraphValidator

    values = {"guidance_min_t": 700.0, "guidance_max_t": 200.0}
    graph = sample_graph(**values) if node == "diffusion.Sample" else ksampler_graph(**values)
    problems = GraphValidator(registry, Settings(models_dirs=[models_dir])).validate(graph)
    assert [(p.location.node, p.location.socket) for p in problems] == [("sampler", "guidance_max_t")]
