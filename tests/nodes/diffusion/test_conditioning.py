"""Prompt encoding beyond the pipelines' reach: long prompts, clip skip, a separate VAE."""

from __future__ import annotations

import numpy as np

from tests.nodes.diffusion import tiny

LONG = ", ".join(f"a detailed word number {i}" for i in range(30))  # ~150 tokens


def _encode(registry, models_dir, text, clip_skip=0):
    from nodeflow.executor import Executor
    from nodeflow.graph import Graph
    from nodeflow.settings import Settings

    graph = Graph()
    graph.add_node("diffusion.LoadCheckpoint", "checkpoint", {"path": "tiny-sd"})
    graph.add_node("diffusion.TextEncode", "positive", {"text": text, "clip_skip": clip_skip})
    graph.connect("checkpoint.clip", "positive.clip")
    result = Executor(registry, Settings(models_dirs=[models_dir])).run(graph, ["positive", "checkpoint"])
    assert result.ok, result.failed
    return result.outputs["positive"]["conditioning"], result.outputs["checkpoint"]["clip"]


def test_long_prompts_are_encoded_in_chunks_without_losing_words(registry, models_dir, sd_ckpt,
                                                                 torch_threads):
    import torch

    cond, clip = _encode(registry, models_dir, LONG)
    tokens = len(clip.tokenizer(LONG, add_special_tokens=False).input_ids)
    chunks = -(-tokens // 75)
    assert chunks >= 2 and cond.embeds.shape == (1, 77 * chunks, 32)
    changed, _ = _encode(registry, models_dir, LONG + ", and a cat")  # words past token 77
    assert not torch.equal(cond.embeds[:, 77:], changed.embeds[:, 77:])
    assert torch.equal(cond.embeds[:, :77], changed.embeds[:, :77])


def test_long_prompt_samples_against_a_short_negative(registry, models_dir, sd_ckpt, torch_threads):
    graph = tiny.load_graph("txt2img", checkpoint={"path": "tiny-sd"}, positive={"text": LONG},
                            latent={"width": 32, "height": 32}, sampler={"steps": 2})
    image = tiny.run_graph(registry, graph, models_dir, ["decode"]).outputs["decode"]["image"]
    assert image.shape == (1, 32, 32, 3) and np.isfinite(image).all()


def test_clip_skip_uses_an_earlier_layer_normalised(registry, models_dir, sd_ckpt, torch_threads):
    import torch

    text = "a red circle"
    cond, clip = _encode(registry, models_dir, text, clip_skip=1)
    te = clip.text_encoder
    ids = clip.tokenizer(text, padding="max_length", max_length=77, return_tensors="pt").input_ids
    with torch.no_grad():
        hidden = te(ids, output_hidden_states=True).hidden_states
        expected = te.final_layer_norm(hidden[-2])
    assert torch.equal(cond.embeds, expected)
    plain, _ = _encode(registry, models_dir, text)
    assert not torch.equal(plain.embeds, cond.embeds)


def test_separate_vae_decodes_like_the_checkpoints_own(registry, models_dir, sd_ckpt, torch_threads):
    import shutil

    shutil.copytree(sd_ckpt / "vae", models_dir / "vae" / "tiny-vae", dirs_exist_ok=True)
    graph = tiny.load_graph("txt2img", checkpoint={"path": "tiny-sd"}, latent={"width": 32, "height": 32},
                            sampler={"steps": 2, "seed": 8})
    own = tiny.run_graph(registry, graph, models_dir, ["decode"]).outputs["decode"]["image"]
    graph.add_node("diffusion.LoadVAE", "vae", {"path": "tiny-vae"})
    graph.disconnect("decode.vae")
    graph.connect("vae.vae", "decode.vae")
    other = tiny.run_graph(registry, graph, models_dir, ["decode"]).outputs["decode"]["image"]
    assert other.tobytes() == own.tobytes()
