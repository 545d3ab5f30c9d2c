"""SD3 and Flux ControlNets (graphs/sd3_controlnet.json, graphs/flux_controlnet.json) give
StableDiffusion3ControlNetPipeline's and FluxControlNetPipeline's pixels."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.nodes.diffusion import tiny as sd_tiny
from tests.nodes.flow import tiny
from tests.nodes.flow.conftest import SPLIT_NAMES
from tests.nodes.flow.test_txt2img import PROMPT, SIZE, close, run

STRENGTH = 0.8


@pytest.fixture(scope="module")
def control(flow_models: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    picture = tmp_path_factory.mktemp("control") / "edges.png"
    sd_tiny.picture(SIZE, SIZE, seed=11).save(picture)
    return {"picture": picture,
            "sd3": tiny.save_controlnet(flow_models / "controlnet" / "tiny-sd3-controlnet", "sd3", 3),
            "flux": tiny.save_controlnet(flow_models / "controlnet" / "tiny-flux-controlnet", "flux", 4)}


def reference(pipe_cls: str, net_cls: str, base: Any, net: Path, picture: Path, **kwargs: Any) -> Any:
    import diffusers
    import torch
    from PIL import Image

    controlnet = getattr(diffusers, net_cls).from_pretrained(net)
    pipe = getattr(diffusers, pipe_cls).from_pipe(base, controlnet=controlnet)
    torch.manual_seed(7)  # the SD3 pipeline encodes the control image with torch's global generator
    return pipe(PROMPT, control_image=Image.open(picture).convert("RGB"), height=SIZE, width=SIZE,
                num_inference_steps=2, controlnet_conditioning_scale=STRENGTH,
                generator=torch.Generator("cpu").manual_seed(7), output_type="np", **kwargs).images


def test_sd3_controlnet_matches_pipeline(registry, flow_models, sd3_parts, sd3_pipe, control, torch_threads):
    graph = sd_tiny.load_graph(
        "sd3_controlnet", checkpoint={"path": "tiny-sd3"}, positive={"text": PROMPT},
        latent={"width": SIZE, "height": SIZE}, sampler={"steps": 2, "cfg": 7.0, "seed": 7},
        control_image={"path": str(control["picture"])}, controlnet={"path": "tiny-sd3-controlnet"},
        apply={"strength": STRENGTH})
    ours = run(registry, graph, flow_models)
    ref = reference("StableDiffusion3ControlNetPipeline", "SD3ControlNetModel", sd3_pipe,
                    control["sd3"], control["picture"], guidance_scale=7.0, negative_prompt="")
    assert close(ours, ref) <= 1
    graph.set_input("apply", "strength", 0.0)
    assert close(ours, run(registry, graph, flow_models)) > 3  # the ControlNet steers the picture


def test_flux_controlnet_matches_pipeline(registry, flow_models, flux_parts, flux_pipe, control, torch_threads):
    names = SPLIT_NAMES["flux"]
    graph = sd_tiny.load_graph(
        "flux_controlnet", unet={"path": names["model"]},
        clip={"encoder1": names["clip_l"], "encoder2": names["t5"]}, vae={"path": names["vae"]},
        positive={"text": PROMPT}, latent={"width": SIZE, "height": SIZE}, sampler={"steps": 2, "seed": 7},
        control_image={"path": str(control["picture"])}, controlnet={"path": "tiny-flux-controlnet"},
        apply={"strength": STRENGTH})
    ours = run(registry, graph, flow_models)
    ref = reference("FluxControlNetPipeline", "FluxControlNetModel", flux_pipe, control["flux"],
                    control["picture"], guidance_scale=3.5)
    assert close(ours, ref) <= 1
    graph.set_input("apply", "strength", 0.0)
    assert close(ours, run(registry, graph, flow_models)) > 3  # the ControlNet steers the picture
