"""CLIPTextEncodeSDXL and CLIPTextEncodeSDXLRefiner: what each encoder gets, the padding of the
shorter prompt, and the size and aesthetic-score conditioning (formula tests)."""

from __future__ import annotations

import pytest

from tests.nodes.diffusion import tiny


@pytest.fixture(scope="module")
def sdxl_prompt_ckpt(models_dir):
    return tiny.save_sdxl(models_dir / "checkpoints" / "tiny-sdxl-prompts")


def _encode(registry, models_dir, node_type, inputs, checkpoint="tiny-sdxl-prompts"):
    from nodeflow.executor import Executor
    from nodeflow.graph import Graph
    from nodeflow.settings import Settings

    graph = Graph()
    graph.add_node("diffusion.LoadCheckpoint", "checkpoint", {"path": checkpoint})
    graph.add_node(node_type, "prompt", inputs)
    graph.connect("checkpoint.clip", "prompt.clip")
    return Executor(registry, Settings(models_dirs=[models_dir])).run(graph, ["prompt", "checkpoint"])


def _ok(result):
    assert result.ok, {k: str(v) for k, v in result.failed.items()}
    return result.outputs["prompt"]["conditioning"], result.outputs["checkpoint"]["clip"]


def test_sdxl_prompt_gives_each_encoder_its_text_and_the_sizes(registry, models_dir, sdxl_prompt_ckpt,
                                                              torch_threads):
    import torch

    from nodeflow.nodes.diffusion.conditioning import encode_sdxl
    from nodeflow.nodes.diffusion.sdxl_prompts import time_ids

    same, clip = _ok(_encode(registry, models_dir, "diffusion.CLIPTextEncodeSDXL", {
        "text_g": "a red circle", "text_l": "a red circle", "width": 2048, "height": 1536,
        "crop_w": 64, "crop_h": 32, "target_width": 1024, "target_height": 768}))
    plain = encode_sdxl(clip, "a red circle", 0, "comfy")
    assert torch.equal(same.embeds, plain.embeds) and torch.equal(same.pooled, plain.pooled)
    assert time_ids(same, 1024, 1024, refiner=False, negative=False) == [1536, 2048, 32, 64, 768, 1024]

    long_l = ", ".join(f"word {i}" for i in range(30))  # two chunks for CLIP-L, one for G
    mixed, _ = _ok(_encode(registry, models_dir, "diffusion.CLIPTextEncodeSDXL",
                           {"text_g": "a blue star", "text_l": long_l}))
    assert mixed.embeds.shape == (1, 154, 64)
    only_l = encode_sdxl(clip, long_l, 0, "comfy").embeds[..., :32]
    only_g = encode_sdxl(clip, "a blue star", 0, "comfy")
    empty_g = encode_sdxl(clip, "", 0, "comfy").embeds[..., 32:]
    assert torch.equal(mixed.embeds[..., :32], only_l)
    assert torch.equal(mixed.embeds[:, :77, 32:], only_g.embeds[..., 32:])
    assert torch.equal(mixed.embeds[:, 77:, 32:], empty_g)  # G padded with the empty prompt
    assert torch.equal(mixed.pooled, only_g.pooled)  # the pooled embedding is G's
    assert time_ids(mixed, 512, 768, refiner=False, negative=False) == [1024, 1024, 0, 0, 1024, 1024]
    assert time_ids(plain, 512, 768, refiner=False, negative=False) == [768, 512, 0, 0, 768, 512]


def test_refiner_prompt_uses_openclip_g_and_the_aesthetic_score(registry, models_dir, sdxl_prompt_ckpt,
                                                               torch_threads):
    import torch

    from nodeflow.nodes.diffusion.conditioning import encode_sdxl
    from nodeflow.nodes.diffusion.sdxl_prompts import time_ids

    cond, clip = _ok(_encode(registry, models_dir, "diffusion.CLIPTextEncodeSDXLRefiner",
                             {"text": "a red circle", "ascore": 2.5, "width": 800, "height": 600}))
    full = encode_sdxl(clip, "a red circle", 0, "comfy")
    assert torch.equal(cond.embeds, full.embeds[..., 32:]) and torch.equal(cond.pooled, full.pooled)
    assert time_ids(cond, 1024, 1024, refiner=True, negative=True) == [600, 800, 0, 0, 2.5]
    unscored = type(cond)(cond.embeds, "sdxl")
    assert time_ids(unscored, 64, 64, refiner=True, negative=True)[-1] == 2.5
    assert time_ids(unscored, 64, 64, refiner=True, negative=False)[-1] == 6.0


def test_sdxl_prompt_errors_are_located(registry, models_dir, sd_ckpt, sdxl_prompt_ckpt, torch_threads):
    from nodeflow.graph import Graph
    from nodeflow.settings import Settings
    from nodeflow.validate import GraphValidator

    result = _encode(registry, models_dir, "diffusion.CLIPTextEncodeSDXL",
                     {"text_g": "a", "text_l": "a"}, checkpoint="tiny-sd")
    assert not result.ok and result.failed["prompt"].location.socket == "clip"
    graph = Graph()
    graph.add_node("diffusion.LoadCheckpoint", "checkpoint", {"path": "tiny-sdxl-prompts"})
    graph.add_node("diffusion.CLIPTextEncodeSDXL", "prompt", {"width": 512, "crop_w": 512,
                                                             "text_g": "embedding:missing-one"})
    graph.connect("checkpoint.clip", "prompt.clip")
    problems = {(p.location.node, p.location.socket): p.message
                for p in GraphValidator(registry, Settings(models_dirs=[models_dir])).validate(graph)}
    assert "outside the original width" in problems[("prompt", "crop_w")]
    assert "missing-one" in problems[("prompt", "text_g")]
