"""ControlNet graphs (one, or two chained) equal StableDiffusionControlNetPipeline."""

from __future__ import annotations

import numpy as np
import pytest

from tests.nodes.diffusion import tiny

PROMPT = "a modern house by a lake"


@pytest.fixture(scope="module")
def controlnets(models_dir):
    folder = models_dir / "controlnet"
    return {"canny": tiny.save_controlnet(folder / "tiny-canny", seed=1),
            "other": tiny.save_controlnet(folder / "tiny-other", seed=2),
            "wide": tiny.save_controlnet(folder / "tiny-wide", seed=3, cross_attention_dim=64)}


def canny_graph(pictures):
    return tiny.load_graph(
        "controlnet_canny", checkpoint={"path": "tiny-sd"}, positive={"text": PROMPT},
        latent={"width": 32, "height": 32}, resize={"width": 32, "height": 32}, canny={"low_threshold": 50, "high_threshold": 120, "resolution": 64},
        controlnet={"path": "tiny-canny"}, control={"strength": 0.9, "start": 0.0, "end": 1.0},
        sampler={"steps": 4, "seed": 9, "sampler": "euler_ancestral"})


def reference(sd_pipe, nets, image, **kwargs):
    import torch
    from diffusers import ControlNetModel, EulerAncestralDiscreteScheduler, StableDiffusionControlNetPipeline

    models = [ControlNetModel.from_pretrained(n) for n in nets]
    pipe = StableDiffusionControlNetPipeline(
        **{k: v for k, v in sd_pipe.components.items() if k != "image_encoder"},
        controlnet=models if len(models) > 1 else models[0])
    pipe.scheduler = EulerAncestralDiscreteScheduler.from_config(sd_pipe.scheduler.config)
    return pipe(PROMPT, image=image, negative_prompt="blurry, low quality", height=32, width=32,
                num_inference_steps=4, guidance_scale=7.5,
                generator=torch.Generator("cpu").manual_seed(9), output_type="np", **kwargs).images


def test_canny_controlnet_matches_pipeline(registry, models_dir, sd_ckpt, sd_pipe, controlnets, pictures,
                                           torch_threads):
    result = tiny.run_graph(registry, canny_graph(pictures), models_dir, ["decode", "canny"])
    edges = result.outputs["canny"]["image"]
    assert edges.shape == (1, 32, 32, 3) and edges.max() > 0.2  # edges were found
    ref = reference(sd_pipe, [controlnets["canny"]], edges, controlnet_conditioning_scale=0.9)
    assert np.abs(result.outputs["decode"]["image"] - ref).max() <= 1e-5


def test_chained_controlnets_match_multi_controlnet(registry, models_dir, sd_ckpt, sd_pipe, controlnets,
                                                   pictures, torch_threads):
    graph = canny_graph(pictures)
    graph.add_node("diffusion.LoadControlNet", "controlnet2", {"path": "tiny-other"})
    graph.add_node("diffusion.ApplyControlNet", "control2", {"strength": 0.5, "start": 0.3, "end": 0.7})
    graph.disconnect("sampler.positive")
    graph.connect("control.conditioning", "control2.conditioning")
    graph.connect("controlnet2.controlnet", "control2.controlnet")
    graph.connect("canny.image", "control2.image")
    graph.connect("control2.conditioning", "sampler.positive")
    result = tiny.run_graph(registry, graph, models_dir, ["decode", "canny"])
    edges = result.outputs["canny"]["image"]
    ref = reference(sd_pipe, [controlnets["canny"], controlnets["other"]], [edges, edges],
                    controlnet_conditioning_scale=[0.9, 0.5], control_guidance_start=[0.0, 0.3],
                    control_guidance_end=[1.0, 0.7])
    assert np.abs(result.outputs["decode"]["image"] - ref).max() <= 1e-5


def test_controlnet_for_another_model_is_a_located_error(registry, models_dir, sd_ckpt, controlnets,
                                                         pictures, torch_threads):
    from nodeflow.executor import Executor
    from nodeflow.settings import Settings

    graph = canny_graph(pictures)
    graph.set_input("controlnet", "path", "tiny-wide")
    result = Executor(registry, Settings(models_dirs=[models_dir], base_dir=tiny.REPO / "graphs")).run(
        graph, ["decode"])
    error = result.failed["control"]
    assert error.location.socket == "controlnet" and "made for another model" in str(error)
