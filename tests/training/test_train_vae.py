"""train_vae: a from-scratch run and the decoder fine-tune write VAEs that load, from the
shared step loop."""

from __future__ import annotations

import json
import math

import pytest


def test_from_scratch_run_writes_a_vae_with_its_latents_scaling_factor(tmp_path, capsys):
    import torch
    from diffusers import AutoencoderKL

    from nodeflow.nodes.diffusion.loaders import LoadVAE
    from nodeflow.testing import run_node
    from training import train_vae

    train_vae.main(["--steps", "2", "--batch", "2", "--out", str(tmp_path / "out"), "--threads", "1"])
    out = capsys.readouterr().out
    done = next(line for line in out.splitlines() if " done: " in line)
    assert "done: 2 steps" in done
    sf = float(done.rsplit("scaling_factor ", 1)[1])
    folder = tmp_path / "out" / "vae"
    config = json.loads((folder / "config.json").read_text())
    assert math.isfinite(sf) and sf > 0 and config["scaling_factor"] == pytest.approx(sf, rel=1e-3)
    assert not list((tmp_path / "out").glob(".*tmp*"))
    vae = AutoencoderKL.from_pretrained(folder)
    assert all(torch.isfinite(p).all() for p in vae.parameters())
    assert run_node(LoadVAE, path=str(folder))["vae"] is not None


def test_decoder_fine_tune_with_splices_keeps_the_encoder_and_saves_a_loadable_vae(tmp_path, capsys):
    import torch
    from diffusers import AutoencoderKL

    from training import train_vae

    torch.manual_seed(0)
    start = tmp_path / "start"
    train_vae.make_vae().save_pretrained(start, safe_serialization=True)
    train_vae.main(["--init", str(start), "--decoder-only", "--empty", "0.2", "--splice", "0.5",
                    "--steps", "3", "--batch", "4", "--out", str(tmp_path / "out"), "--threads", "1"])
    before = AutoencoderKL.from_pretrained(start)
    after = AutoencoderKL.from_pretrained(tmp_path / "out" / "vae")
    enc_b, enc_a = before.encoder.state_dict(), after.encoder.state_dict()
    assert all(torch.equal(enc_b[k], enc_a[k]) for k in enc_b)
    dec_b, dec_a = before.decoder.state_dict(), after.decoder.state_dict()
    assert any(not torch.equal(dec_b[k], dec_a[k]) for k in dec_b)
    assert "done: 3 steps" in capsys.readouterr().out


def test_splice_needs_decoder_only(tmp_path):
    from training import train_vae

    with pytest.raises(SystemExit, match="--splice needs --decoder-only"):
        train_vae.main(["--splice", "0.5", "--steps", "1", "--out", str(tmp_path)])
