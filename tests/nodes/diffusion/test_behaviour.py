"""What a user of the sampler and the graphs notices: progress, previews, cancellation, the cache
on a re-run, tiled decoding, and bad input rejected before anything runs."""

from __future__ import annotations

import numpy as np
import pytest

from tests.nodes.diffusion import tiny


def txt2img(**sampler):
    return tiny.load_graph("txt2img", checkpoint={"path": "tiny-sd"}, latent={"width": 32, "height": 32},
                           sampler={"steps": 8, "seed": 1, **sampler})


def test_progress_every_step_and_previews(registry, models_dir, sd_ckpt, torch_threads):
    from nodeflow.events import NodePreview, NodeProgress
    from nodeflow.executor import Executor
    from nodeflow.settings import Settings

    events = []
    executor = Executor(registry, Settings(models_dirs=[models_dir]))
    result = executor.run(txt2img(), ["decode"], on_event=events.append)
    assert result.ok
    progress = [e for e in events if isinstance(e, NodeProgress) and e.node == "sampler"]
    # step 0 says which scheduler settings the run uses, then one report per step
    assert [e.done for e in progress] == list(range(0, 9))
    assert "EulerDiscreteScheduler" in (progress[0].message or "")
    previews = [e.image for e in events if isinstance(e, NodePreview) and e.node == "sampler"]
    assert len(previews) == 2
    assert previews[0].shape == (1, 16, 16, 3) and previews[0].dtype == np.float32
    assert 0.0 <= previews[0].min() and previews[0].max() <= 1.0


def test_cancel_stops_between_steps(registry, models_dir, sd_ckpt, torch_threads):
    from nodeflow.events import CancelToken, NodeProgress
    from nodeflow.executor import Executor
    from nodeflow.settings import Settings

    token = CancelToken()
    seen = []

    def on_event(event):
        if isinstance(event, NodeProgress) and event.node == "sampler":
            seen.append(event.done)
            if event.done == 2:
                token.cancel()

    result = Executor(registry, Settings(models_dirs=[models_dir])).run(
        txt2img(), ["decode"], on_event=on_event, cancel=token)
    assert result.cancelled and seen == [0, 1, 2]


def test_changing_the_seed_reuses_loading_and_text_encoding(registry, models_dir, sd_ckpt, torch_threads):
    from nodeflow.executor import Executor
    from nodeflow.settings import Settings

    executor = Executor(registry, Settings(models_dirs=[models_dir]))
    graph = txt2img()
    first = tiny.run_graph(registry, graph, executor=executor, outputs=["decode"])
    graph.set_input("sampler", "seed", 2)
    second = tiny.run_graph(registry, graph, executor=executor, outputs=["decode"])
    assert {"checkpoint", "positive", "negative"} <= set(second.cached)
    assert set(second.ran) == {"sampler", "decode"}
    assert executor.models.loads == 1
    assert np.abs(first.outputs["decode"]["image"] - second.outputs["decode"]["image"]).max() > 1e-3


def test_tiled_decode_matches_diffusers_tiling(registry, models_dir, sd_ckpt, sd_pipe, torch_threads):
    import torch

    graph = tiny.load_graph("txt2img", checkpoint={"path": "tiny-sd"}, latent={"width": 96, "height": 64},
                            decode={"tiled": True}, sampler={"steps": 2, "seed": 3})
    ours = tiny.run_graph(registry, graph, models_dir, ["decode"]).outputs["decode"]["image"]
    sd_pipe.vae.enable_tiling()
    try:
        ref = sd_pipe("a red circle on a blue background", negative_prompt="", height=64, width=96,
                      num_inference_steps=2, generator=torch.Generator("cpu").manual_seed(3),
                      output_type="np").images
    finally:
        sd_pipe.vae.disable_tiling()
    assert ours.shape == (1, 64, 96, 3)
    assert np.abs(ours - ref).max() <= 1e-5


def test_bad_inputs_are_reported_at_validation_with_their_sockets(registry, models_dir, sd_ckpt):
    from nodeflow.settings import Settings
    from nodeflow.validate import GraphValidator

    graph = tiny.load_graph("txt2img", checkpoint={"path": "no-such-model"},
                            latent={"width": 500, "height": 512},
                            sampler={"sampler": "euler_a_typo", "steps": 20})
    graph.set_input("sampler", "scheduler", "karras")
    problems = GraphValidator(registry, Settings(models_dirs=[models_dir])).validate(graph)
    where = {(p.location.node, p.location.socket): p.message for p in problems}
    assert "not found" in where[("checkpoint", "path")]
    assert "divisible by 8" in where[("latent", "width")] and "496 or 504" in where[("latent", "width")]
    assert "euler_a_typo" in where[("sampler", "sampler")]

    graph = txt2img(sampler="ddim", scheduler="karras")
    problems = GraphValidator(registry, Settings(models_dirs=[models_dir])).validate(graph)
    assert [(p.location.socket, "Karras" in p.message) for p in problems] == [("scheduler", True)]


def test_denoise_below_one_on_an_empty_latent_is_a_located_error(registry, models_dir, sd_ckpt):
    from nodeflow.executor import Executor
    from nodeflow.settings import Settings

    result = Executor(registry, Settings(models_dirs=[models_dir])).run(txt2img(denoise=0.5), ["decode"])
    error = result.failed["sampler"]
    assert error.location.socket == "denoise" and "VAEEncode" in str(error)


def test_inpainting_checkpoint_without_a_mask_says_what_to_connect(registry, models_dir, inpaint_ckpt):
    from nodeflow.executor import Executor
    from nodeflow.settings import Settings

    graph = txt2img()
    graph.set_input("checkpoint", "path", "tiny-sd-inpaint")
    result = Executor(registry, Settings(models_dirs=[models_dir])).run(graph, ["decode"])
    error = result.failed["sampler"]
    assert error.location.socket == "latent" and "SetLatentMask" in str(error)


@pytest.mark.parametrize("name", ["txt2img", "img2img", "inpaint", "controlnet_canny", "lora",
                                  "sdxl_txt2img"])
def test_graph_files_describe_themselves(name):
    import json

    data = json.loads((tiny.REPO / "graphs" / f"{name}.json").read_text())
    assert data["meta"]["description"]
    assert {"checkpoint", "positive", "negative", "sampler", "decode", "save"} <= set(data["nodes"])
