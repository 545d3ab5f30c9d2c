"""train_upscaler: a short run writes weights spandrel loads, and --vae trains on the pictures
a VAE hands the upscaler in the demo pipeline."""

from __future__ import annotations

import json

import numpy as np


def test_vae_round_trips_replace_the_chosen_share_of_low_pictures(tmp_path):
    import torch

    from training import train_upscaler, train_vae

    torch.manual_seed(0)
    train_vae.make_vae().save_pretrained(tmp_path / "vae", safe_serialization=True)
    degrade = train_upscaler.VaeRoundTrip(tmp_path / "vae")
    clean = train_upscaler.Pool(np.random.default_rng(3), 6)
    all_through = train_upscaler.Pool(np.random.default_rng(3), 6, degrade, 1.0)
    none_through = train_upscaler.Pool(np.random.default_rng(3), 6, degrade, 0.0)
    assert np.array_equal(none_through.low, clean.low) and np.array_equal(all_through.high, clean.high)
    # An untrained VAE's round trip is nothing like the picture; the target stays the clean render.
    assert np.array_equal(all_through.low, degrade(clean.low))
    assert not np.array_equal(all_through.low, clean.low)
    all_through.refresh(3)
    assert all_through.low.shape == clean.low.shape


def test_a_short_run_with_vae_round_trips_writes_loadable_weights_and_reports_both_psnrs(tmp_path, capsys):
    import torch
    from spandrel import ModelLoader

    from training import train_upscaler, train_vae

    torch.manual_seed(0)
    train_vae.make_vae().save_pretrained(tmp_path / "vae", safe_serialization=True)
    train_upscaler.main(["--steps", "2", "--batch", "2", "--pool", "4", "--eval-n", "2", "--filters", "8",
                         "--blocks", "2", "--vae", str(tmp_path / "vae"), "--out", str(tmp_path / "out"),
                         "--threads", "1"])
    done = next(line for line in capsys.readouterr().out.splitlines() if " done: " in line)
    report = json.loads(done.split(" done: ", 1)[1])
    assert report["steps"] == 2 and np.isfinite(report["vae_psnr_db"]) and np.isfinite(report["psnr_db"])
    descriptor = ModelLoader().load_from_file(str(tmp_path / "out" / train_upscaler.FILENAME))
    assert descriptor.scale == 4
    with torch.no_grad():
        assert descriptor.model(torch.rand(1, 3, 8, 8)).shape == (1, 3, 32, 32)
