"""LoRA: stacked LoRAs (peft and kohya layouts) equal load_lora_weights + set_adapters, and never
change the model other branches use."""

from __future__ import annotations

import numpy as np
import pytest

from tests.nodes.diffusion import tiny

PROMPT = "a portrait of a knight"


@pytest.fixture(scope="module")
def loras(models_dir):
    folder = models_dir / "loras"
    return {
        "style": tiny.make_lora(folder / "style.safetensors", tiny.sd_components(), seed=1),
        "detail": tiny.make_lora(folder / "detail.safetensors", tiny.sd_components(), seed=2,
                                 rank=2, kohya=True),
        "xl": tiny.make_lora(folder / "xl.safetensors", tiny.sdxl_components(), seed=3),
    }


def lora_graph(style: float = 0.8, detail: float = 0.5, seed: int = 11):
    return tiny.load_graph(
        "lora", checkpoint={"path": "tiny-sd"}, positive={"text": PROMPT},
        latent={"width": 32, "height": 32},
        lora={"path": "style.safetensors", "strength_model": style, "strength_clip": style},
        lora_detail={"path": "detail.safetensors", "strength_model": detail, "strength_clip": detail},
        sampler={"steps": 3, "seed": seed, "sampler": "euler"})


def test_stacked_loras_match_set_adapters(registry, models_dir, sd_ckpt, loras, torch_threads):
    import torch
    from diffusers import StableDiffusionPipeline

    ours = tiny.run_graph(registry, lora_graph(), models_dir, ["decode"]).outputs["decode"]["image"]
    pipe = StableDiffusionPipeline.from_pretrained(sd_ckpt, safety_checker=None,
                                                   requires_safety_checker=False)
    pipe.load_lora_weights(str(loras["style"]), adapter_name="style")
    pipe.load_lora_weights(str(loras["detail"]), adapter_name="detail")
    pipe.set_adapters(["style", "detail"], adapter_weights=[0.8, 0.5])
    ref = pipe(PROMPT, negative_prompt="blurry, low quality", height=32, width=32,
               num_inference_steps=3, guidance_scale=7.5,
               generator=torch.Generator("cpu").manual_seed(11), output_type="np").images
    assert np.abs(ours - ref).max() <= 1e-5
    plain = tiny.run_graph(registry, lora_graph(0.0, 0.0), models_dir, ["decode"])
    assert np.abs(plain.outputs["decode"]["image"] - ours).max() > 1e-3, "the LoRAs changed nothing"


def test_lora_branch_leaves_the_base_model_alone(registry, models_dir, sd_ckpt, loras, torch_threads):
    from nodeflow.executor import Executor
    from nodeflow.settings import Settings

    plain = tiny.load_graph("txt2img", checkpoint={"path": "tiny-sd"}, latent={"width": 32, "height": 32},
                            sampler={"steps": 3, "seed": 5})
    alone = tiny.run_graph(registry, plain, models_dir, ["decode"]).outputs["decode"]["image"]

    executor = Executor(registry, Settings(models_dirs=[models_dir]))
    tiny.run_graph(registry, lora_graph(), executor=executor, outputs=["decode"])
    beside = tiny.run_graph(registry, plain, executor=executor, outputs=["decode"])
    assert "checkpoint" in beside.cached or executor.models.loads == 1
    assert beside.outputs["decode"]["image"].tobytes() == alone.tobytes()


def test_lora_of_another_family_is_a_located_error(registry, models_dir, sd_ckpt, loras, torch_threads):
    from nodeflow.executor import Executor
    from nodeflow.settings import Settings

    graph = lora_graph()
    graph.set_input("lora", "path", "xl.safetensors")
    result = Executor(registry, Settings(models_dirs=[models_dir])).run(graph, ["decode"])
    error = result.failed["lora"]
    assert error.location.socket == "path"
    assert "xl.safetensors" in str(error) and "Stable Diffusion 1.x" in str(error)


def test_plain_and_lora_branches_in_one_graph(registry, models_dir, sd_ckpt, loras, torch_threads):
    graph = lora_graph()
    alone = tiny.run_graph(registry, lora_graph(), models_dir, ["decode"]).outputs["decode"]["image"]
    plain_only = tiny.load_graph("txt2img", checkpoint={"path": "tiny-sd"}, positive={"text": PROMPT},
                                 negative={"text": "blurry, low quality"},
                                 latent={"width": 32, "height": 32},
                                 sampler={"steps": 3, "seed": 11, "sampler": "euler"})
    reference = tiny.run_graph(registry, plain_only, models_dir, ["decode"]).outputs["decode"]["image"]
    # The same graph with a second, LoRA-free branch from the same checkpoint.
    for node_id, node_type in (("plain_positive", "diffusion.TextEncode"),
                               ("plain_negative", "diffusion.TextEncode"),
                               ("plain_sampler", "diffusion.Sample"), ("plain_decode", "diffusion.VAEDecode")):
        source = node_id.removeprefix("plain_")
        graph.add_node(node_type, node_id, dict(graph.nodes[source].inputs))
    graph.connect("checkpoint.clip", "plain_positive.clip")
    graph.connect("checkpoint.clip", "plain_negative.clip")
    graph.connect("checkpoint.model", "plain_sampler.model")
    graph.connect("plain_positive.conditioning", "plain_sampler.positive")
    graph.connect("plain_negative.conditioning", "plain_sampler.negative")
    graph.connect("latent.latent", "plain_sampler.latent")
    graph.connect("plain_sampler.latent", "plain_decode.latent")
    graph.connect("checkpoint.vae", "plain_decode.vae")
    both = tiny.run_graph(registry, graph, models_dir, ["decode", "plain_decode"]).outputs
    assert both["plain_decode"]["image"].tobytes() == reference.tobytes()
    assert both["decode"]["image"].tobytes() == alone.tobytes()
