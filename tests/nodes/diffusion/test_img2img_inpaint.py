"""Image-to-image and inpainting graphs equal the diffusers pipelines."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from tests.nodes.diffusion import tiny

PROMPT = "a green triangle on a white background"


def _scheduler(pipe, sampler: str):
    import diffusers

    from nodeflow.nodes.diffusion.sample import SAMPLERS

    class_name, overrides = SAMPLERS[sampler]
    pipe.scheduler = getattr(diffusers, class_name).from_config(pipe.scheduler.config, **overrides)


@pytest.mark.parametrize("sampler,denoise", [("euler", 0.6), ("euler_ancestral", 0.75), ("ddim", 0.5)])
def test_img2img_matches_pipeline(registry, models_dir, sd_ckpt, sd_pipe, pictures, torch_threads,
                                  sampler, denoise):
    import torch
    from diffusers import StableDiffusionImg2ImgPipeline

    graph = tiny.load_graph(
        "img2img", checkpoint={"path": "tiny-sd"}, positive={"text": PROMPT},
        image={"path": str(pictures["picture"])}, resize={"width": 32, "height": 32},
        sampler={"sampler": sampler, "steps": 4, "seed": 3, "denoise": denoise})
    ours = tiny.run_graph(registry, graph, models_dir, ["decode"]).outputs["decode"]["image"]

    pipe = StableDiffusionImg2ImgPipeline(**sd_pipe.components)
    _scheduler(pipe, sampler)
    ref = pipe(PROMPT, image=Image.open(pictures["picture"]), strength=denoise, num_inference_steps=4,
               guidance_scale=7.5, negative_prompt="", generator=torch.Generator("cpu").manual_seed(3),
               output_type="np").images
    assert ours.shape == ref.shape
    assert np.abs(ours - ref).max() <= 1e-5


@pytest.mark.parametrize("ckpt,sampler,denoise", [
    ("tiny-sd", "euler", 1.0), ("tiny-sd", "euler_ancestral", 0.7),
    ("tiny-sd-inpaint", "euler", 1.0), ("tiny-sd-inpaint", "dpmpp_2m_sde", 0.8),
])
def test_inpaint_matches_pipeline(registry, models_dir, sd_ckpt, inpaint_ckpt, pictures, torch_threads,
                                  ckpt, sampler, denoise):
    import torch
    from diffusers import StableDiffusionInpaintPipeline

    graph = tiny.load_graph(
        "inpaint", checkpoint={"path": ckpt}, positive={"text": PROMPT},
        image={"path": str(pictures["picture"])}, resize={"width": 32, "height": 32},
        mask_image={"path": str(pictures["mask_rgba"])},
        sampler={"sampler": sampler, "steps": 4, "seed": 5, "denoise": denoise})
    ours = tiny.run_graph(registry, graph, models_dir, ["decode"]).outputs["decode"]["image"]

    pipe = StableDiffusionInpaintPipeline.from_pretrained(models_dir / "checkpoints" / ckpt,
                                                          safety_checker=None,
                                                          requires_safety_checker=False)
    _scheduler(pipe, sampler)
    ref = pipe(PROMPT, image=Image.open(pictures["picture"]),
               mask_image=Image.open(pictures["mask_l"]), height=32, width=32, strength=denoise,
               num_inference_steps=4, guidance_scale=7.5, negative_prompt="",
               generator=torch.Generator("cpu").manual_seed(5), output_type="np").images
    assert np.abs(ours - ref).max() <= 1e-5
    # The kept area really is kept in latent space: far from the mask the picture survives.
    if ckpt == "tiny-sd" and denoise == 1.0:
        assert not np.allclose(ours, 0)
