"""Text-to-image through graphs/txt2img.json equals StableDiffusionPipeline, for every sampler."""

from __future__ import annotations

import numpy as np
import pytest

from nodeflow.nodes.diffusion.sample import SAMPLERS
from tests.nodes.diffusion import tiny

PROMPT = "a red circle on a blue background"


def reference(pipe, sampler: str, schedule: str = "normal", seed: int = 7, steps: int = 3,
              cfg: float = 7.5, negative: str = "", size: int = 32, batch: int = 1, **extra):
    import diffusers
    import torch

    class_name, overrides = SAMPLERS[sampler]
    kwargs = dict(overrides)
    if schedule == "karras":
        kwargs["use_karras_sigmas"] = True
    base = pipe.scheduler.config
    pipe.scheduler = getattr(diffusers, class_name).from_config(base, **kwargs)
    try:
        out = pipe(PROMPT, negative_prompt=negative, height=size, width=size, num_inference_steps=steps,
                   guidance_scale=cfg, num_images_per_prompt=batch,
                   generator=torch.Generator("cpu").manual_seed(seed), output_type="np", **extra)
    finally:
        pipe.scheduler = diffusers.EulerDiscreteScheduler.from_config(base)
    return out.images


def graph(sampler: str, schedule: str = "normal", seed: int = 7, steps: int = 3, cfg: float = 7.5,
          size: int = 32, batch: int = 1, ckpt: str = "tiny-sd"):
    return tiny.load_graph(
        "txt2img", checkpoint={"path": ckpt}, positive={"text": PROMPT},
        latent={"width": size, "height": size, "batch": batch},
        sampler={"sampler": sampler, "scheduler": schedule, "seed": seed, "steps": steps, "cfg": cfg})


@pytest.mark.parametrize("sampler", list(SAMPLERS))
def test_each_sampler_gives_the_pipelines_pixels(registry, models_dir, sd_ckpt, sd_pipe, torch_threads,
                                                 sampler):
    steps = 4 if sampler == "pndm" else 3  # PNDM cannot plan 3 steps
    result = tiny.run_graph(registry, graph(sampler, steps=steps), models_dir, ["decode"])
    ours = result.outputs["decode"]["image"]
    ref = reference(sd_pipe, sampler, steps=steps)
    assert ours.shape == ref.shape == (1, 32, 32, 3)
    assert np.abs(ours - ref).max() <= 1e-5


@pytest.mark.parametrize("sampler", ["euler", "dpmpp_2m", "dpmpp_2m_sde"])
def test_karras_sigmas_match(registry, models_dir, sd_ckpt, sd_pipe, torch_threads, sampler):
    result = tiny.run_graph(registry, graph(sampler, "karras"), models_dir, ["decode"])
    ref = reference(sd_pipe, sampler, "karras")
    assert np.abs(result.outputs["decode"]["image"] - ref).max() <= 1e-5


def test_batch_and_no_guidance_match(registry, models_dir, sd_ckpt, sd_pipe, torch_threads):
    result = tiny.run_graph(registry, graph("euler_ancestral", batch=2, cfg=1.0), models_dir, ["decode"])
    ref = reference(sd_pipe, "euler_ancestral", batch=2, cfg=1.0)
    assert result.outputs["decode"]["image"].shape == (2, 32, 32, 3)
    assert np.abs(result.outputs["decode"]["image"] - ref).max() <= 1e-5


def test_same_graph_twice_gives_identical_bytes(registry, models_dir, sd_ckpt, torch_threads, tmp_path):
    from nodeflow.executor import Executor
    from nodeflow.settings import Settings

    outs = []
    for i in range(2):
        settings = Settings(models_dirs=[models_dir], out_dir=tmp_path / str(i))
        tiny.run_graph(registry, graph("euler_ancestral"), executor=Executor(registry, settings))
        outs.append(sorted((tmp_path / str(i)).glob("*.png")))
    assert len(outs[0]) == len(outs[1]) == 1
    from PIL import Image

    a, b = (np.asarray(Image.open(p[0])) for p in outs)
    assert a.tobytes() == b.tobytes()
