"""SDXL text-to-image through graphs/sdxl_txt2img.json equals StableDiffusionXLPipeline."""

from __future__ import annotations

import numpy as np
import pytest

from tests.nodes.diffusion import tiny

PROMPT = "an astronaut riding a horse on the moon"


@pytest.fixture(scope="module")
def sdxl_ckpt(models_dir):
    return tiny.save_sdxl(models_dir / "checkpoints" / "tiny-sdxl")


@pytest.mark.parametrize("sampler,clip_skip", [("dpmpp_2m", 0), ("euler_ancestral", 1)])
def test_sdxl_matches_pipeline(  # the pipeline applies clip_skip to the prompt only
        registry, models_dir, sdxl_ckpt, torch_threads, sampler, clip_skip):
    import diffusers
    import torch

    from nodeflow.nodes.diffusion.sample import SAMPLERS

    graph = tiny.load_graph(
        "sdxl_txt2img", checkpoint={"path": "tiny-sdxl"}, positive={"text": PROMPT, "clip_skip": clip_skip},
        latent={"width": 32, "height": 32},
        sampler={"steps": 3, "seed": 4, "sampler": sampler})
    ours = tiny.run_graph(registry, graph, models_dir, ["decode"]).outputs["decode"]["image"]

    pipe = diffusers.StableDiffusionXLPipeline.from_pretrained(sdxl_ckpt, add_watermarker=False)
    class_name, overrides = SAMPLERS[sampler]
    pipe.scheduler = getattr(diffusers, class_name).from_config(pipe.scheduler.config, **overrides)
    ref = pipe(PROMPT, negative_prompt="blurry, low quality", height=32, width=32, num_inference_steps=3,
               guidance_scale=5.0, clip_skip=clip_skip or None,
               generator=torch.Generator("cpu").manual_seed(4), output_type="np").images
    assert ours.shape == ref.shape == (1, 32, 32, 3)
    assert np.abs(ours - ref).max() <= 1e-5


def test_sdxl_lora_matches_set_adapters(registry, models_dir, sdxl_ckpt, torch_threads):
    import diffusers
    import torch

    lora = tiny.make_lora(models_dir / "loras" / "xl-style.safetensors", tiny.sdxl_components(), seed=5)
    graph = tiny.load_graph("sdxl_txt2img", checkpoint={"path": "tiny-sdxl"}, positive={"text": PROMPT},
                            latent={"width": 32, "height": 32},
                            sampler={"steps": 3, "seed": 6, "sampler": "euler"})
    graph.add_node("diffusion.LoadLoRA", "lora", {"path": "xl-style.safetensors", "strength_model": 0.7,
                                                  "strength_clip": 0.7})
    for target in ("sampler.model", "positive.clip", "negative.clip"):
        graph.disconnect(target)
    graph.connect("checkpoint.model", "lora.model")
    graph.connect("checkpoint.clip", "lora.clip")
    graph.connect("lora.model", "sampler.model")
    graph.connect("lora.clip", "positive.clip")
    graph.connect("lora.clip", "negative.clip")
    ours = tiny.run_graph(registry, graph, models_dir, ["decode"]).outputs["decode"]["image"]

    pipe = diffusers.StableDiffusionXLPipeline.from_pretrained(sdxl_ckpt, add_watermarker=False)
    pipe.scheduler = diffusers.EulerDiscreteScheduler.from_config(pipe.scheduler.config)
    pipe.load_lora_weights(str(lora), adapter_name="style")
    pipe.set_adapters(["style"], adapter_weights=[0.7])
    ref = pipe(PROMPT, negative_prompt="blurry, low quality", height=32, width=32, num_inference_steps=3,
               guidance_scale=5.0, generator=torch.Generator("cpu").manual_seed(6), output_type="np").images
    assert np.abs(ours - ref).max() <= 1e-5


def test_sdxl_size_conditioning_matches_pipeline(registry, models_dir, sdxl_ckpt, torch_threads):
    """The prompt's original size, crop and target size reach the UNet as the pipeline's
    original_size, crops_coords_top_left and target_size do; the latent's size does not."""
    import diffusers
    import torch

    graph = tiny.load_graph("sdxl_txt2img", checkpoint={"path": "tiny-sdxl"},
                            latent={"width": 32, "height": 32},
                            sampler={"steps": 3, "seed": 8, "sampler": "euler"})
    sizes = {"width": 2048, "height": 1536, "crop_w": 128, "crop_h": 64, "target_width": 1024,
             "target_height": 768}
    for node_id, text in (("positive", PROMPT), ("negative", "blurry, low quality")):
        graph.remove_node(node_id)
        graph.add_node("diffusion.CLIPTextEncodeSDXL", node_id, {**sizes, "text_g": text, "text_l": text})
        graph.connect("checkpoint.clip", f"{node_id}.clip")
        graph.connect(f"{node_id}.conditioning", f"sampler.{node_id}")
    ours = tiny.run_graph(registry, graph, models_dir, ["decode"]).outputs["decode"]["image"]

    pipe = diffusers.StableDiffusionXLPipeline.from_pretrained(sdxl_ckpt, add_watermarker=False)
    pipe.scheduler = diffusers.EulerDiscreteScheduler.from_config(pipe.scheduler.config)

    def reference(**conditioning):
        return pipe(PROMPT, negative_prompt="blurry, low quality", height=32, width=32,
                    num_inference_steps=3, guidance_scale=5.0,
                    generator=torch.Generator("cpu").manual_seed(8), output_type="np",
                    **conditioning).images

    ref = reference(original_size=(1536, 2048), crops_coords_top_left=(64, 128), target_size=(768, 1024))
    assert np.abs(ours - ref).max() <= 1e-5
    # The sizes matter: the picture made from the latent's size differs.
    assert np.abs(ours - reference()).max() > 1e-3
