"""Inpainting with SD3 and Flux (diffusion.VAEEncode → diffusion.SetLatentMask → flow.Sample):
Flux gives FluxInpaintPipeline's pixels; SD3 gives StableDiffusion3InpaintPipeline's latents
(that pipeline decodes without the VAE's shift factor, unlike its own encoder and every other
SD3 pipeline, so its pixels are not the reference; the latents are)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.nodes.diffusion import tiny as sd_tiny
from tests.nodes.flow.test_img2img import with_picture
from tests.nodes.flow.test_txt2img import _EXECUTORS, PROMPT, SIZE, close, flux_graph, run, sd3_graph


@pytest.fixture(scope="module")
def pictures(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from PIL import Image

    root = tmp_path_factory.mktemp("inpaint")
    paths = {"picture": root / "picture.png", "mask_l": root / "mask_l.png", "mask_rgba": root / "mask.png"}
    sd_tiny.picture(SIZE, SIZE, seed=5).save(paths["picture"])
    mask = sd_tiny.mask_picture(SIZE, SIZE)
    mask.save(paths["mask_l"])
    rgba = np.zeros((SIZE, SIZE, 4), dtype=np.uint8)
    rgba[..., 3] = 255 - np.asarray(mask)  # image.Load reads the transparent part as the mask
    Image.fromarray(rgba, "RGBA").save(paths["mask_rgba"])
    return paths


def with_mask(graph: Any, pictures: dict[str, Path], vae: str, denoise: float) -> Any:
    graph = with_picture(graph, pictures["picture"], vae, denoise)
    graph.add_node("image.Load", "mask_image", {"path": str(pictures["mask_rgba"])})
    graph.add_node("diffusion.SetLatentMask", "masked", {})
    graph.disconnect("sampler.latent")
    for source, target in (("encode.latent", "masked.latent"), ("mask_image.mask", "masked.mask"),
                           ("masked.latent", "sampler.latent")):
        graph.connect(source, target)
    return graph


def reference(cls_name: str, base: Any, pictures: dict[str, Path], strength: float, **kwargs: Any) -> Any:
    import diffusers
    import torch
    from PIL import Image

    pipe = getattr(diffusers, cls_name).from_pipe(base)
    return pipe(PROMPT, image=Image.open(pictures["picture"]).convert("RGB"),
                mask_image=Image.open(pictures["mask_l"]), strength=strength, height=SIZE, width=SIZE,
                num_inference_steps=4, generator=torch.Generator("cpu").manual_seed(7), **kwargs).images


@pytest.mark.parametrize("denoise", [1.0, 0.7])
def test_sd3_inpaint_matches_pipeline_latents(registry, flow_models, sd3_parts, sd3_pipe, pictures,
                                              torch_threads, denoise):
    graph = with_mask(sd3_graph(sampler={"steps": 4}), pictures, "checkpoint.vae", denoise)
    run(registry, graph, flow_models)  # through the shared executor, then its sampler output
    result = _EXECUTORS[(flow_models,)].run(graph, ["sampler"])
    ours = result.outputs["sampler"]["latent"].samples
    ref = reference("StableDiffusion3InpaintPipeline", sd3_pipe, pictures, denoise, guidance_scale=7.0,
                    negative_prompt="", output_type="latent")
    assert ours.shape == ref.shape
    assert float((ours - ref).abs().max()) <= 1e-4


def test_flux_inpaint_matches_pipeline(registry, flow_models, flux_parts, flux_pipe, pictures, torch_threads):
    ours = run(registry, with_mask(flux_graph(sampler={"steps": 4}), pictures, "vae.vae", 0.8), flow_models)
    ref = reference("FluxInpaintPipeline", flux_pipe, pictures, 0.8, guidance_scale=3.5, output_type="np")
    assert close(ours, ref) <= 1


@pytest.mark.parametrize("sampler", ["heun", "dpmpp_2m", "euler_ancestral"])
def test_comfyuis_other_samplers_keep_the_unmasked_area(registry, flow_models, flux_parts, pictures,
                                                        torch_threads, sampler):
    """With ComfyUI's semantics every sampler restores the unmasked area after each step: it ends as
    the encoded picture, as with euler, and only the masked area is repainted differently."""
    import torch

    def samples(name: str) -> Any:
        graph = with_mask(flux_graph(sampler={"steps": 4, "sampler": name, "scheduler": "simple",
                                              "semantics": "comfyui"}), pictures, "vae.vae", 0.8)
        run(registry, graph, flow_models)
        return _EXECUTORS[(flow_models,)].run(graph, ["sampler"]).outputs["sampler"]["latent"].samples

    ours, euler = samples(sampler), samples("euler")
    mask = torch.nn.functional.interpolate(torch.from_numpy(np.asarray(
        sd_tiny.mask_picture(SIZE, SIZE), dtype=np.float32) / 255)[None, None], size=ours.shape[-2:])[0, 0]
    keep = mask < 0.5
    assert keep.any() and (~keep).any()
    assert torch.equal(ours[..., keep], euler[..., keep])
    assert float((ours[..., ~keep] - euler[..., ~keep]).abs().max()) > 1e-3
