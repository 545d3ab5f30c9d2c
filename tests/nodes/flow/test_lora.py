"""LoRAs on SD3 and Flux (flow.LoadLoRA, graphs/*_lora.json) give the pipelines' pixels with the
same LoRA loaded by load_lora_weights."""

from __future__ import annotations

from typing import Any

import pytest

from tests.nodes.diffusion import tiny as sd_tiny
from tests.nodes.flow import tiny
from tests.nodes.flow.conftest import SPLIT_NAMES
from tests.nodes.flow.test_txt2img import PROMPT, SIZE, close, pipeline_pixels, run

STRENGTH = 0.7


@pytest.fixture(scope="module")
def loras(flow_models, sd3_parts, flux_parts) -> dict[str, Any]:
    return {family: tiny.make_lora(flow_models / "loras" / f"tiny-{family}-lora.safetensors", parts["parts"],
                                   family, seed=5)
            for family, parts in (("sd3", sd3_parts), ("flux", flux_parts))}


def with_lora(pipe: Any, path: Any) -> Any:
    pipe.load_lora_weights(str(path), adapter_name="style")
    pipe.set_adapters(["style"], [STRENGTH])
    return pipe


def lora_inputs(family: str) -> dict[str, Any]:
    return {"lora": {"path": f"tiny-{family}-lora.safetensors", "strength_model": STRENGTH,
                     "strength_clip": STRENGTH}}


def test_sd3_lora_matches_pipeline(registry, flow_models, sd3_parts, sd3_reference, loras, torch_threads):
    from diffusers import StableDiffusion3Pipeline

    graph = sd_tiny.load_graph("sd3_lora", checkpoint={"path": "tiny-sd3"}, positive={"text": PROMPT},
                               latent={"width": SIZE, "height": SIZE},
                               sampler={"steps": 2, "cfg": 7.0, "seed": 7}, **lora_inputs("sd3"))
    ours = run(registry, graph, flow_models)
    pipe = with_lora(StableDiffusion3Pipeline.from_pretrained(sd3_parts["folder"]), loras["sd3"])
    ref = pipeline_pixels(pipe, guidance_scale=7.0, negative_prompt="")
    assert close(ours, ref) <= 1
    assert close(ours, sd3_reference) > 10  # the LoRA changes the picture


def test_flux_lora_on_split_files_matches_pipeline(registry, flow_models, flux_parts, loras, torch_threads):
    from diffusers import FluxPipeline

    names = SPLIT_NAMES["flux"]
    graph = sd_tiny.load_graph(
        "flux_lora", unet={"path": names["model"]}, clip={"encoder1": names["clip_l"], "encoder2": names["t5"]},
        vae={"path": names["vae"]}, positive={"text": PROMPT}, latent={"width": SIZE, "height": SIZE},
        sampler={"steps": 2, "seed": 7}, **lora_inputs("flux"))
    ours = run(registry, graph, flow_models)
    pipe = with_lora(FluxPipeline.from_pretrained(flux_parts["folder"]), loras["flux"])
    assert close(ours, pipeline_pixels(pipe, guidance_scale=3.5)) <= 1
