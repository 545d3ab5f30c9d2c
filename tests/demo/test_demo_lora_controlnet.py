"""The demo LoRA / ControlNet: their metrics on ground-truth renders, and smoke runs of their
training scripts whose outputs load through nodeflow's own nodes.

The training runs here are a couple of tiny steps on top of the shipped base pipeline; they
check formats and wiring, not quality.  (A quality floor for the shipped LoRA and ControlNet
belongs here once they exist.)
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from training import common as C
from training import control_eval, evaluate, world

BASE = C.DEFAULT_OUT
TEST_SEED = 20_250_801  # held out from every training stream


@pytest.fixture(autouse=True)
def _one_thread(torch_threads):
    yield


@pytest.fixture
def restore_torch_flags():
    """The training scripts switch on deterministic algorithms process-wide; undo that."""
    import torch

    before = torch.are_deterministic_algorithms_enabled()
    yield
    torch.use_deterministic_algorithms(before)


def _scenes(n: int = 12):
    return evaluate.prompts(n, TEST_SEED)


# --------------------------------------------------------------------------- metrics


def test_outlined_fraction_separates_outlined_from_filled_renders():
    scenes = _scenes()
    for locate in (True, False):
        outlined = [control_eval.outlined_fraction(world.render(s, outlined=True), s, locate=locate) for s in scenes]
        filled = [control_eval.outlined_fraction(world.render_array(s), s, locate=locate) for s in scenes]
        measured = [x for x in outlined if not math.isnan(x)]
        assert len(measured) >= len(scenes) - 2, outlined  # only tiny stars/triangles are unmeasurable
        assert min(measured) > 0.8, outlined
        assert np.nanmax(filled) < 0.2, filled
    # a plain background has no shape: undefined, not "outlined"
    blank = np.zeros((64, 64, 3), np.uint8) + 128
    assert math.isnan(control_eval.outlined_fraction(blank, scenes[0]))


def test_hollowness_separates_outlined_from_filled_circles_squares_and_triangles():
    scenes = [s for s in _scenes() if s.shape != "star"]  # a star's hull is hollow either way
    outlined = [control_eval.hollowness(world.render(s, outlined=True)) for s in scenes]
    filled = [control_eval.hollowness(world.render(s)) for s in scenes]
    assert max(filled) < 0.1, filled
    assert np.mean(outlined) > 0.3 and np.mean(outlined) > 3 * np.mean(filled) + 0.2, outlined
    # an outline broken open still counts, unlike outlined_fraction (which needs an interior)
    ring = world.render_array(scenes[0], outlined=True).copy()
    mask = world.coverage(scenes[0], outlined=True) > 0
    rows = np.nonzero(mask.any(axis=1))[0]
    ring[rows[0] : rows[0] + 4] = ring[0, 0]  # erase the top of the outline
    assert control_eval.hollowness(ring) > 0.3
    blank = np.zeros((64, 64, 3), np.uint8) + 128
    assert math.isnan(control_eval.hollowness(blank))


def test_edge_iou_of_ground_truth_renders():
    scenes = _scenes()
    own = [control_eval.edge_iou(world.render(s), s) for s in scenes]
    assert np.mean(own) > 0.9 and min(own) > 0.85, own
    assert control_eval.edge_iou(world.render_array(scenes[0]), scenes[0]) == own[0]  # arrays too
    other = [control_eval.edge_iou(world.render(s), scenes[(i + 1) % len(scenes)]) for i, s in enumerate(scenes)]
    assert np.mean(other) < 0.4, other
    left = world.Scene("circle", "red", "blue", 0.25, 0.25, 0.15)
    right = world.Scene("circle", "red", "blue", 0.75, 0.75, 0.15)
    assert control_eval.edge_iou(world.render(left), right) == 0.0
    assert control_eval.edge_iou(np.zeros((64, 64, 3), np.uint8), left) == 0.0


# --------------------------------------------------------------------------- training smoke runs


def _load_checkpoint():
    from nodeflow.nodes.diffusion.loaders import LoadCheckpoint
    from nodeflow.testing import run_node

    return run_node(LoadCheckpoint, path=str(BASE))


@pytest.mark.parametrize("targets", ["attn", "all"])
def test_lora_training_smoke_run_loads_through_load_lora(tmp_path, restore_torch_flags, capsys, targets):
    import json

    import torch
    from safetensors import safe_open

    from nodeflow.nodes.diffusion.lora import LoadLoRA
    from nodeflow.testing import run_node
    from training import train_lora

    out = tmp_path / "outlined.safetensors"
    # a large learning rate so two steps move lora_B (zero at init) visibly
    train_lora.main(["--out", str(out), "--steps", "2", "--pool", "8", "--val", "4", "--batch", "4",
                     "--lr", "1e-2", "--ema", "0", "--log-every", "1", "--threads", "1", "--targets", targets])
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert report["steps"] == 2 and report["out"] == str(out)
    assert out.is_file() and not list(tmp_path.glob(".*tmp*"))
    with safe_open(str(out), "pt") as f:
        keys = list(f.keys())
        assert json.loads(f.metadata()["nodeflow_training"])["rank"] == 8
        assert all(f.get_tensor(k).dtype == torch.float16 for k in keys)
    assert any(k.startswith("unet.") and ".attn2.to_k.lora_A." in k for k in keys)
    # resnet convolutions are adapted only with --targets all
    assert any(k.startswith("unet.") and ".resnets.0.conv1.lora_A." in k for k in keys) == (targets == "all")
    assert any(k.startswith("text_encoder.text_model.") for k in keys)

    ckpt = _load_checkpoint()
    on = run_node(LoadLoRA, model=ckpt["model"], clip=ckpt["clip"], path=str(out), strength_model=1.0, strength_clip=1.0)
    off = run_node(LoadLoRA, model=ckpt["model"], clip=ckpt["clip"], path=str(out), strength_model=0.0, strength_clip=0.0)
    assert on["model"].loras == (out.name,)

    gen = torch.Generator().manual_seed(0)
    x = torch.randn(2, 4, 16, 16, generator=gen)
    t = torch.tensor([999, 500])
    ids = ckpt["clip"].tokenizer(["a red outlined circle on a blue background"] * 2, padding="max_length",
                                 max_length=77, return_tensors="pt").input_ids
    with torch.no_grad():
        hidden = ckpt["clip"].text_encoder(ids).last_hidden_state
        base = ckpt["model"].unet(x, t, hidden).sample
        with_lora = on["model"].unet(x, t, hidden).sample
        at_zero = off["model"].unet(x, t, hidden).sample
        te_on = on["clip"].text_encoder(ids).last_hidden_state
        te_off = off["clip"].text_encoder(ids).last_hidden_state
    assert torch.equal(at_zero, base)
    assert (with_lora - base).abs().max() > 1e-4
    assert torch.equal(te_off, hidden)
    assert (te_on - hidden).abs().max() > 1e-4
    # the base model the nodes loaded is untouched
    with torch.no_grad():
        assert torch.equal(ckpt["model"].unet(x, t, hidden).sample, base)


def test_controlnet_training_smoke_run_loads_and_samples_through_the_nodes(tmp_path, restore_torch_flags, capsys):
    import json

    from nodeflow.nodes.diffusion.loaders import LoadControlNet
    from nodeflow.testing import run_graph, run_node
    from training import train_controlnet

    out = tmp_path / "edges"
    train_controlnet.main(["--out", str(out), "--steps", "2", "--pool", "8", "--val", "4", "--batch", "4",
                           "--log-every", "1", "--threads", "1"])
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert report["steps"] == 2 and report["conditioning_embedding_out_channels"] == [16, 32, 64]
    assert (out / "config.json").is_file() and (out / "diffusion_pytorch_model.safetensors").is_file()
    assert json.loads((out / "training.json").read_text())["steps"] == 2
    assert not list(tmp_path.glob(".*tmp*"))

    net = run_node(LoadControlNet, path=str(out))["controlnet"]
    assert net.family == "sd1"
    assert net.model.config.cross_attention_dim == 64
    assert list(net.model.config.conditioning_embedding_out_channels) == [16, 32, 64]

    scene = _scenes(1)[0]
    edges = tmp_path / "edges.png"
    world.edge_map(scene).save(edges)
    nodes = {
        "checkpoint": {"type": "diffusion.LoadCheckpoint", "inputs": {"path": str(BASE)}},
        "positive": {"type": "diffusion.TextEncode", "inputs": {"text": world.caption(scene), "clip_skip": 0}},
        "negative": {"type": "diffusion.TextEncode", "inputs": {"text": "", "clip_skip": 0}},
        "latent": {"type": "diffusion.EmptyLatent", "inputs": {"width": 64, "height": 64, "batch": 1}},
        "image": {"type": "image.Load", "inputs": {"path": str(edges)}},
        "controlnet": {"type": "diffusion.LoadControlNet", "inputs": {"path": str(out)}},
        "control": {"type": "diffusion.ApplyControlNet", "inputs": {"strength": 1.0, "start": 0.0, "end": 1.0}},
        "sampler": {"type": "diffusion.Sample", "inputs": {"seed": 3, "steps": 2, "cfg": 7.5, "sampler": "euler",
                                                           "scheduler": "normal", "denoise": 1.0}},
        "decode": {"type": "diffusion.VAEDecode", "inputs": {"tiled": False}},
    }
    links = [("checkpoint.clip", "positive.clip"), ("checkpoint.clip", "negative.clip"),
             ("positive.conditioning", "control.conditioning"), ("controlnet.controlnet", "control.controlnet"),
             ("image.image", "control.image"), ("control.conditioning", "sampler.positive"),
             ("negative.conditioning", "sampler.negative"), ("checkpoint.model", "sampler.model"),
             ("latent.latent", "sampler.latent"), ("sampler.latent", "decode.latent"),
             ("checkpoint.vae", "decode.vae")]
    graph = {"format": "nodeflow.graph", "version": 1, "nodes": nodes,
             "links": [{"from": a, "to": b} for a, b in links]}
    image = run_graph(graph, outputs=["decode"], out_dir=tmp_path).outputs["decode"]["image"]
    assert image.shape == (1, 64, 64, 3) and np.isfinite(image).all()
