"""Image-to-image with SD3 and Flux (diffusion.VAEEncode → flow.Sample with denoise below 1) gives
StableDiffusion3Img2ImgPipeline's and FluxImg2ImgPipeline's pixels."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.nodes.diffusion import tiny as sd_tiny
from tests.nodes.flow.test_txt2img import PROMPT, SIZE, close, flux_graph, run, sd3_graph


@pytest.fixture(scope="module")
def picture(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("img2img") / "picture.png"
    sd_tiny.picture(SIZE, SIZE, seed=3).save(path)
    return path


def with_picture(graph: Any, picture: Path, vae: str, denoise: float) -> Any:
    graph.add_node("image.Load", "picture", {"path": str(picture)})
    graph.add_node("diffusion.VAEEncode", "encode", {"tiled": False})
    graph.disconnect("sampler.latent")
    graph.remove_node("latent")
    for source, target in (("picture.image", "encode.image"), (vae, "encode.vae"),
                           ("encode.latent", "sampler.latent")):
        graph.connect(source, target)
    graph.set_input("sampler", "denoise", denoise)
    return graph


def reference(cls_name: str, base: Any, picture: Path, strength: float, **kwargs: Any) -> Any:
    import diffusers
    import torch
    from PIL import Image

    pipe = getattr(diffusers, cls_name).from_pipe(base)
    return pipe(PROMPT, image=Image.open(picture).convert("RGB"), strength=strength, height=SIZE, width=SIZE,
                num_inference_steps=4, generator=torch.Generator("cpu").manual_seed(7), output_type="np",
                **kwargs).images


def test_sd3_img2img_matches_pipeline(registry, flow_models, sd3_parts, sd3_pipe, picture, torch_threads):
    graph = with_picture(sd3_graph(sampler={"steps": 4}), picture, "checkpoint.vae", 0.6)
    ours = run(registry, graph, flow_models)
    ref = reference("StableDiffusion3Img2ImgPipeline", sd3_pipe, picture, 0.6,
                    guidance_scale=7.0, negative_prompt="")
    assert close(ours, ref) <= 1


def test_flux_img2img_matches_pipeline(registry, flow_models, flux_parts, flux_pipe, picture, torch_threads):
    graph = with_picture(flux_graph(sampler={"steps": 4}), picture, "vae.vae", 0.5)
    ours = run(registry, graph, flow_models)
    ref = reference("FluxImg2ImgPipeline", flux_pipe, picture, 0.5, guidance_scale=3.5)
    assert close(ours, ref) <= 1
