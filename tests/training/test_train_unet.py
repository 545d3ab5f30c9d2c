"""train_unet on a tiny UNet and text encoder: the pipeline it writes loads through nodeflow,
holds the EMA weights, and --resume continues the run from its saved state."""

from __future__ import annotations

import json
import shutil

import pytest

from tests.training.conftest import TINY_UNET


def _state(work):
    import torch

    return torch.load(work / "state.pt", weights_only=True)


def test_writes_a_pipeline_with_the_ema_weights_that_loads_through_load_checkpoint(tiny_run):
    import torch
    from diffusers import UNet2DConditionModel
    from transformers import CLIPTextModel

    from nodeflow.nodes.diffusion.loaders import LoadCheckpoint
    from nodeflow.testing import run_node

    out, work = tiny_run
    meta = json.loads((out / "training.json").read_text())
    assert meta["steps"] == 2 and meta["final"] is True
    assert meta["command"].startswith("python -m training.train_unet --out ")
    assert not list(out.parent.glob(".*tmp*"))

    state = _state(work)
    assert state["step"] == 2 and len(state["ema"]) == len(state["unet"]) + len(state["text_encoder"])
    unet = UNet2DConditionModel.from_pretrained(out / "unet")
    text_encoder = CLIPTextModel.from_pretrained(out / "text_encoder")
    saved = [p.detach() for m in (unet, text_encoder) for p in m.parameters()]
    live = [*state["unet"].values(), *state["text_encoder"].values()]
    assert len(saved) == len(state["ema"]) == len(live)
    # the shipped weights are the average (--fp32: exactly), which two steps moved off the live ones
    assert all(torch.equal(s, e) for s, e in zip(saved, state["ema"]))
    assert any(not torch.equal(e, w) for e, w in zip(state["ema"], live))

    ckpt = run_node(LoadCheckpoint, path=str(out))
    assert list(ckpt["model"].unet.config.block_out_channels) == [16, 16, 32]
    ids = ckpt["clip"].tokenizer(["a red circle on a blue background"], padding="max_length", max_length=77,
                                 return_tensors="pt").input_ids
    with torch.no_grad():
        hidden = ckpt["clip"].text_encoder(ids).last_hidden_state
        pred = ckpt["model"].unet(torch.zeros(1, 4, 16, 16), torch.tensor([500]), hidden).sample
    assert pred.shape == (1, 4, 16, 16) and torch.isfinite(pred).all()


def test_resume_continues_from_the_saved_state(tiny_run, tmp_path):
    import torch

    from training import train_unet

    src_out, src_work = tiny_run
    out, work = tmp_path / "pipe", tmp_path / "work"
    shutil.copytree(src_out, out)
    shutil.copytree(src_work, work)
    before = _state(work)
    args = ["--out", str(out), "--work", str(work), "--resume", *TINY_UNET]

    # the budget is already spent: nothing trains, and the state is the one it resumed from
    train_unet.main(args)
    same = _state(work)
    assert same["step"] == 2
    assert all(torch.equal(before["unet"][k], same["unet"][k]) for k in before["unet"])
    assert all(torch.equal(a, b) for a, b in zip(before["ema"], same["ema"]))

    # two more steps: the count, the optimiser's moments and the average carry on
    train_unet.main([*args, "--steps", "4"])
    after = _state(work)
    assert after["step"] == 4
    assert {int(s["step"]) for s in after["opt"]["state"].values()} == {4}
    assert json.loads((out / "training.json").read_text())["steps"] == 4
    assert any(not torch.equal(before["unet"][k], after["unet"][k]) for k in before["unet"])
    assert after["elapsed"] >= before["elapsed"]


def test_needs_the_vae_first(tmp_path):
    from training import train_unet

    with pytest.raises(SystemExit, match="vae not found: run training.train_vae first"):
        train_unet.main(["--out", str(tmp_path), "--work", str(tmp_path / "work"), *TINY_UNET])
