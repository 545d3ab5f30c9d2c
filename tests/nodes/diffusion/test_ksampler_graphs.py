"""diffusion.KSampler in the shipped graphs' places: inpainting with a noise mask (4- and
9-channel models), ControlNets, progress and previews."""

from __future__ import annotations

import numpy as np
import pytest

from tests.nodes.diffusion import tiny


def as_ksampler(graph, node: str = "sampler", **values):
    """The graph with its diffusion.Sample replaced by a diffusion.KSampler wired the same way."""
    old = graph.node(node)
    inputs = {"seed": old.inputs.get("seed", 0), "steps": old.inputs.get("steps", 20),
              "cfg": old.inputs.get("cfg", 7.5), "sampler_name": "euler", "scheduler": "normal",
              "denoise": old.inputs.get("denoise", 1.0), **values}
    links = [(ln.src, ln.src_socket, ln.dst, ln.dst_socket) for ln in graph.links]
    graph.remove_node(node)
    graph.add_node("diffusion.KSampler", node, inputs)
    rename = {"latent": "latent_image"}
    for src, src_socket, dst, dst_socket in links:
        if dst == node:
            graph.connect(f"{src}.{src_socket}", f"{node}.{rename.get(dst_socket, dst_socket)}")
        elif src == node:
            graph.connect(f"{node}.latent", f"{dst}.{dst_socket}")
    return graph


@pytest.mark.parametrize("checkpoint", ["tiny-sd", "tiny-sd-inpaint"])
def test_inpainting_keeps_the_unmasked_latent(registry, models_dir, sd_ckpt, inpaint_ckpt, pictures,
                                              torch_threads, checkpoint):
    graph = tiny.load_graph("inpaint", checkpoint={"path": checkpoint},
                            image={"path": str(pictures["picture"])},
                            resize={"width": 32, "height": 32},
                            mask_image={"path": str(pictures["mask_rgba"])})
    graph = as_ksampler(graph, steps=4, seed=5)
    result = tiny.run_graph(registry, graph, models_dir, ["sampler", "encode"])
    out = result.outputs["sampler"]["latent"].samples
    start = result.outputs["encode"]["latent"].samples
    # the mask repaints the middle 16×16 pixels (latent cells 4..11): the corners are kept
    for rows, cols in ((slice(0, 2), slice(0, 2)), (slice(14, 16), slice(14, 16))):
        assert (out[..., rows, cols] - start[..., rows, cols]).abs().max() <= 1e-4
    assert (out[..., 6:10, 6:10] - start[..., 6:10, 6:10]).abs().max() > 0.05


def test_controlnet_steers_the_ksampler(registry, models_dir, sd_ckpt, pictures,
                                                    torch_threads):
    tiny.save_controlnet(models_dir / "controlnet" / "tiny-canny-k", seed=1)

    def run(strength: float | None):
        graph = tiny.load_graph(
            "controlnet_canny", checkpoint={"path": "tiny-sd"}, latent={"width": 32, "height": 32},
            resize={"width": 32, "height": 32}, controlnet={"path": "tiny-canny-k"},
            canny={"low_threshold": 50, "high_threshold": 120, "resolution": 64},
            control={"strength": strength or 0.0, "start": 0.0, "end": 1.0})
        graph.set_input("image", "path", str(pictures["picture"]))
        if strength is None:  # no ControlNet at all
            graph.connect("positive.conditioning", "sampler.positive")
        graph = as_ksampler(graph, steps=3, seed=2)
        outputs = ["decode"] if strength is None else ["decode", "canny"]
        return tiny.run_graph(registry, graph, models_dir, outputs).outputs["decode"]["image"]

    without, off, on = run(None), run(0.0), run(0.9)
    assert np.abs(off - without).max() <= 1e-6  # strength 0: nothing added on either side
    assert np.abs(on - without).max() > 1e-3


def test_progress_and_previews_every_step(registry, models_dir, sd_ckpt, torch_threads):
    from nodeflow.events import NodePreview, NodeProgress
    from nodeflow.executor import Executor
    from nodeflow.settings import Settings

    graph = tiny.load_graph("txt2img", checkpoint={"path": "tiny-sd"},
                            latent={"width": 32, "height": 32})
    graph = as_ksampler(graph, steps=8, seed=1)
    events = []
    result = Executor(registry, Settings(models_dirs=[models_dir])).run(graph, ["decode"],
                                                                        on_event=events.append)
    assert result.ok
    steps = [e.done for e in events if isinstance(e, NodeProgress) and e.node == "sampler"]
    assert steps == list(range(1, 9))
    previews = [e.image for e in events if isinstance(e, NodePreview) and e.node == "sampler"]
    assert len(previews) == 2 and previews[0].shape == (1, 16, 16, 3)
