"""Smoke runs of the adapter trainers (train_lora, train_controlnet) on a tiny base pipeline:
a couple of steps, whose outputs load through nodeflow's own nodes and hold the EMA weights.
They check formats, wiring and the shared step loop, not quality."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from training import evaluate, world

TEST_SEED = 20_250_801  # held out from every training stream
ADAPTER = ["--steps", "2", "--pool", "8", "--val", "4", "--batch", "4", "--threads", "1"]


def _scenes(n: int = 12):
    return evaluate.prompts(n, TEST_SEED)


def _load_checkpoint(base):
    from nodeflow.nodes.diffusion.loaders import LoadCheckpoint
    from nodeflow.testing import run_node

    return run_node(LoadCheckpoint, path=str(base))


@pytest.mark.parametrize("targets", ["attn", "all"])
def test_lora_training_smoke_run_loads_through_load_lora(tmp_path, tiny_base, capsys, targets):

    import torch
    from safetensors import safe_open

    from nodeflow.nodes.diffusion.lora import LoadLoRA
    from nodeflow.testing import run_node
    from training import train_lora

    out = tmp_path / "outlined.safetensors"
    # a large learning rate so two steps move lora_B (zero at init) visibly
    train_lora.main(["--base", str(tiny_base), "--out", str(out), *ADAPTER,
                     "--lr", "1e-2", "--ema", "0", "--log-every", "1", "--targets", targets])
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert report["steps"] == 2 and report["out"] == str(out)
    assert math.isfinite(report["loss"]) and math.isfinite(report["heldout_loss_end"])
    assert out.is_file() and not list(tmp_path.glob(".*tmp*"))
    with safe_open(str(out), "pt") as f:
        keys = list(f.keys())
        assert json.loads(f.metadata()["nodeflow_training"])["rank"] == 8
        assert all(f.get_tensor(k).dtype == torch.float16 for k in keys)
    assert any(k.startswith("unet.") and ".attn2.to_k.lora_A." in k for k in keys)
    # resnet convolutions are adapted only with --targets all
    assert any(k.startswith("unet.") and ".resnets.0.conv1.lora_A." in k for k in keys) == (targets == "all")
    assert any(k.startswith("text_encoder.text_model.") for k in keys)

    ckpt = _load_checkpoint(tiny_base)
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


def test_controlnet_training_smoke_run_loads_and_samples_through_the_nodes(tmp_path, tiny_base, capsys):

    from nodeflow.nodes.diffusion.loaders import LoadControlNet
    from nodeflow.testing import run_graph, run_node
    from training import train_controlnet

    out = tmp_path / "edges"
    train_controlnet.main(["--base", str(tiny_base), "--out", str(out), *ADAPTER, "--log-every", "1"])
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert report["steps"] == 2 and report["conditioning_embedding_out_channels"] == [16, 32, 64]
    assert math.isfinite(report["loss"]) and math.isfinite(report["heldout_loss_end"])
    assert (out / "config.json").is_file() and (out / "diffusion_pytorch_model.safetensors").is_file()
    assert json.loads((out / "training.json").read_text())["steps"] == 2
    assert not list(tmp_path.glob(".*tmp*"))

    net = run_node(LoadControlNet, path=str(out))["controlnet"]
    assert net.family == "sd1"
    assert net.model.config.cross_attention_dim == 32  # the tiny text encoder's width
    assert list(net.model.config.conditioning_embedding_out_channels) == [16, 32, 64]

    scene = _scenes(1)[0]
    edges = tmp_path / "edges.png"
    world.edge_map(scene).save(edges)
    nodes = {
        "checkpoint": {"type": "diffusion.LoadCheckpoint", "inputs": {"path": str(tiny_base)}},
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


def _weights(path):
    from safetensors.torch import load_file

    return load_file(str(path / "diffusion_pytorch_model.safetensors" if path.is_dir() else path))


@pytest.mark.parametrize("script", ["train_lora", "train_controlnet"])
def test_the_saved_weights_are_the_moving_average(tmp_path, tiny_base, script):
    import importlib

    import torch

    main = importlib.import_module(f"training.{script}").main
    suffix = ".safetensors" if script == "train_lora" else ""
    live, average = tmp_path / f"live{suffix}", tmp_path / f"average{suffix}"
    args = ["--base", str(tiny_base), *ADAPTER, "--lr", "1e-2", "--fp32"]
    main([*args, "--out", str(live), "--ema", "0"])
    main([*args, "--out", str(average), "--ema", "0.99"])
    a, b = _weights(live), _weights(average)
    assert a.keys() == b.keys()
    moved = [k for k in a if not torch.equal(a[k], b[k])]
    # two steps of the same run; the average lags behind the weights it follows
    assert moved, "the EMA weights equal the live ones"
    assert all(torch.isfinite(b[k]).all() for k in b)
