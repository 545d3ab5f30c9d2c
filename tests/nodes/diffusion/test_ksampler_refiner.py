"""SDXL base → refiner hand-over: diffusion.Sample with denoising_end / denoising_start equals
diffusers' StableDiffusionXLPipeline(denoising_end) → StableDiffusionXLImg2ImgPipeline
(denoising_start); KSamplerAdvanced chains base and refiner as ComfyUI does."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.nodes.diffusion import tiny

PROMPT = "an astronaut riding a horse on the moon"
NEGATIVE = "blurry, low quality"


def save_refiner(folder: Path, seed: int = 2) -> Path:
    """A tiny SDXL refiner: only the second text encoder, and a UNet conditioned on five size and
    score numbers (original h, w, crop top, left, aesthetic score)."""
    import torch
    from diffusers import (
        AutoencoderKL,
        EulerDiscreteScheduler,
        StableDiffusionXLImg2ImgPipeline,
        UNet2DConditionModel,
    )
    from transformers import CLIPTextModelWithProjection

    from nodeflow.nodes.diffusion.clip_vocab import clip_tokenizer

    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        block_out_channels=(32, 64), layers_per_block=1, sample_size=16, in_channels=4,
        out_channels=4, down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), attention_head_dim=(2, 4),
        use_linear_projection=True, addition_embed_type="text_time", addition_time_embed_dim=8,
        transformer_layers_per_block=(1, 2), projection_class_embeddings_input_dim=5 * 8 + 32,
        cross_attention_dim=32, norm_num_groups=8)
    vae = AutoencoderKL(block_out_channels=[16, 32], in_channels=3, out_channels=3,
                        down_block_types=["DownEncoderBlock2D"] * 2,
                        up_block_types=["UpDecoderBlock2D"] * 2, latent_channels=4, norm_num_groups=8,
                        sample_size=32)
    scheduler = EulerDiscreteScheduler(beta_start=0.00085, beta_end=0.012,
                                       beta_schedule="scaled_linear", steps_offset=1,
                                       timestep_spacing="leading")
    pipe = StableDiffusionXLImg2ImgPipeline(
        vae=vae.eval(), text_encoder=None, text_encoder_2=CLIPTextModelWithProjection(
            tiny.text_config(hidden_act="gelu")).eval(),
        tokenizer=None, tokenizer_2=clip_tokenizer("!"), unet=unet.eval(), scheduler=scheduler,
        requires_aesthetics_score=True, force_zeros_for_empty_prompt=False, add_watermarker=False)
    pipe.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def base_ckpt(models_dir):
    return tiny.save_sdxl(models_dir / "checkpoints" / "tiny-sdxl")


@pytest.fixture(scope="module")
def refiner_ckpt(models_dir):
    return save_refiner(models_dir / "checkpoints" / "tiny-sdxl-refiner")


def refiner_graph(sampler: str, hand_over: float, steps: int = 6):
    graph = tiny.load_graph("sdxl_refiner", base={"path": "tiny-sdxl"},
                            refiner={"path": "tiny-sdxl-refiner"},
                            latent={"width": 32, "height": 32})
    for node in ("base_positive", "refiner_positive"):
        graph.set_input(node, "text", PROMPT)
    for node in ("base_negative", "refiner_negative"):
        graph.set_input(node, "text", NEGATIVE)
    graph.set_input("base_sampler", "denoising_end", hand_over)
    graph.set_input("refiner_sampler", "denoising_start", hand_over)
    for node in ("base_sampler", "refiner_sampler"):
        for key, value in {"sampler": sampler, "steps": steps, "seed": 4, "cfg": 5.0}.items():
            graph.set_input(node, key, value)
    return graph


@pytest.mark.parametrize("sampler", ["euler", pytest.param("euler_ancestral", marks=pytest.mark.slow)])
def test_base_then_refiner_matches_diffusers(registry, models_dir, base_ckpt, refiner_ckpt,
                                             torch_threads, sampler):
    import diffusers
    import torch

    from nodeflow.nodes.diffusion.sample import SAMPLERS

    ours = tiny.run_graph(registry, refiner_graph(sampler, 0.6), models_dir,
                          ["decode"]).outputs["decode"]["image"]
    class_name, overrides = SAMPLERS[sampler]
    base = diffusers.StableDiffusionXLPipeline.from_pretrained(base_ckpt, add_watermarker=False)
    refiner = diffusers.StableDiffusionXLImg2ImgPipeline.from_pretrained(refiner_ckpt,
                                                                         add_watermarker=False)
    for pipe in (base, refiner):
        pipe.scheduler = getattr(diffusers, class_name).from_config(pipe.scheduler.config, **overrides)
    latents = base(PROMPT, negative_prompt=NEGATIVE, height=32, width=32, num_inference_steps=6,
                   guidance_scale=5.0, denoising_end=0.6, output_type="latent",
                   generator=torch.Generator("cpu").manual_seed(4)).images
    ref = refiner(PROMPT, negative_prompt=NEGATIVE, image=latents, num_inference_steps=6,
                  guidance_scale=5.0, denoising_start=0.6, output_type="np",
                  generator=torch.Generator("cpu").manual_seed(4)).images
    assert ours.shape == ref.shape == (1, 32, 32, 3)
    assert np.abs(ours - ref).max() <= 1e-5


def test_hand_over_range_is_checked(registry, models_dir):
    from nodeflow.settings import Settings
    from nodeflow.validate import GraphValidator

    graph = refiner_graph("euler", 0.6)
    graph.set_input("refiner_sampler", "denoising_end", 0.5)
    problems = GraphValidator(registry, Settings(models_dirs=[models_dir])).validate(graph)
    assert [(p.location.node, p.location.socket) for p in problems] == \
        [("refiner_sampler", "denoising_end")]


@pytest.mark.slow
def test_ksampler_advanced_chains_base_and_refiner(registry, models_dir, base_ckpt, refiner_ckpt,
                                                   torch_threads):
    """ComfyUI's way: KSamplerAdvanced on the base for steps 0–4 with the leftover noise, then on
    the refiner for 4–6 without adding noise (the refiner's five size-and-score numbers included)."""
    graph = refiner_graph("euler", 0.6)
    for node, model, start, end, first in (("base_sampler", "base", 0, 4, True),
                                           ("refiner_sampler", "refiner", 4, 10000, False)):
        graph.remove_node(node)
        graph.add_node("diffusion.KSamplerAdvanced", node, {
            "add_noise": first, "noise_seed": 4, "steps": 6, "cfg": 5.0, "sampler_name": "euler",
            "scheduler": "normal", "start_at_step": start, "end_at_step": end,
            "return_with_leftover_noise": first})
        graph.connect(f"{model}.model", f"{node}.model")
        graph.connect(f"{model}_positive.conditioning", f"{node}.positive")
        graph.connect(f"{model}_negative.conditioning", f"{node}.negative")
    graph.connect("latent.latent", "base_sampler.latent_image")
    graph.connect("base_sampler.latent", "refiner_sampler.latent_image")
    graph.connect("refiner_sampler.latent", "decode.latent")
    image = tiny.run_graph(registry, graph, models_dir, ["decode"]).outputs["decode"]["image"]
    assert image.shape == (1, 32, 32, 3) and np.isfinite(image).all()
    # the refiner's part counts: the same range with the refiner's steps skipped differs
    graph.set_input("refiner_sampler", "start_at_step", 6)
    graph.set_input("refiner_sampler", "steps", 7)
    other = tiny.run_graph(registry, graph, models_dir, ["decode"]).outputs["decode"]["image"]
    assert np.abs(other - image).max() > 1e-3
