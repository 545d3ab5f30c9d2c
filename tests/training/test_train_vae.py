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

    # With the latent overshoot penalty on: its term joins the loss (a loss that is not finite stops the run).
    train_vae.main(["--steps", "2", "--batch", "2", "--outlier", "2", "--out", str(tmp_path / "out"),
                    "--threads", "1"])
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
                    "--edge", "1", "--steps", "3", "--batch", "4", "--out", str(tmp_path / "out"), "--threads", "1"])
    before = AutoencoderKL.from_pretrained(start)
    after = AutoencoderKL.from_pretrained(tmp_path / "out" / "vae")
    enc_b, enc_a = before.encoder.state_dict(), after.encoder.state_dict()
    assert all(torch.equal(enc_b[k], enc_a[k]) for k in enc_b)
    dec_b, dec_a = before.decoder.state_dict(), after.decoder.state_dict()
    assert any(not torch.equal(dec_b[k], dec_a[k]) for k in dec_b)
    assert "done: 3 steps" in capsys.readouterr().out


def test_edge_loss_counts_errors_at_a_shapes_edge_and_not_in_flat_areas():
    import torch

    from training import train_vae

    x = -torch.ones(1, 3, 16, 16)
    x[..., 4:12, 4:12] = 1.0  # a square
    blurred = x.clone()
    blurred[..., 4, 4:12] = 0.0  # its top edge drawn half-way between the two colours
    stain = x.clone()
    stain[..., 14, 1] = 0.0  # the same error on one pixel of flat background
    assert train_vae.edge_loss(x, x).item() == 0.0
    assert train_vae.edge_loss(stain, x).item() == 0.0
    assert train_vae.edge_loss(blurred, x).item() > 0.1


def test_splice_needs_decoder_only(tmp_path):
    from training import train_vae

    with pytest.raises(SystemExit, match="--splice needs --decoder-only"):
        train_vae.main(["--splice", "0.5", "--steps", "1", "--out", str(tmp_path)])


def _shape_batch(size: int = 64, n: int = 4):
    """World pictures with plain cells of both colours: big filled shapes."""
    import numpy as np

    from training import train_vae, world

    scenes = [world.Scene(shape, colour, bg, 0.5, 0.5, 0.3)
              for shape, colour, bg in [("square", "red", "white"), ("circle", "yellow", "blue"),
                                        ("square", "green", "yellow"), ("circle", "white", "black")]]
    return train_vae.to_tensor(np.stack([world.render_array(s, size) for s in scenes[:n]]))


def test_overshoot_is_zero_for_codes_between_the_plain_cells_and_finds_a_spike_at_an_edge():
    import torch
    import torch.nn.functional as F

    from training import train_vae

    x = _shape_batch()
    # A code that is each cell's mean colour lies between the two colours' codes everywhere.
    z = torch.cat([F.avg_pool2d(x, 4), F.avg_pool2d(x, 4)[:, :1]], 1)
    assert train_vae.overshoot(z, x).abs().max().item() < 1e-2
    spiked = z.clone()
    spiked[1, 1, 4, 11] += 5.0  # the yellow circle's top-right edge, as the blemish does
    out = train_vae.overshoot(spiked, x)
    assert out[1, :, 4, 11].amax().item() > 1.0
    out[1, :, 4, 11] = 0  # only that cell is off the line between the two colours' codes
    assert out.abs().max().item() < 1e-2
    # A plain cell coding far out does not widen the range: it is caught itself (in a corner
    # of the background, where an encoder could park what it does not want to pay for).
    cornered = z.clone()
    cornered[1, 2, 0, 0] -= 5.0
    out = train_vae.overshoot(cornered, x)
    assert out[1, :, 0, 0].amax().item() > 1.0
    out[1, :, 0, 0] = 0  # it moves the background's mean code a little: far under the penalty's margin
    assert out.abs().max().item() < 0.2 * train_vae.OUTLIER_MARGIN
    # A plain picture has nothing to measure against: no overshoot, and no NaN in the gradient.
    flat = torch.full((1, 3, 64, 64), 0.3)
    zf = torch.randn(1, 4, 16, 16, requires_grad=True)
    assert train_vae.overshoot(zf, flat).abs().max().item() == 0.0
    (train_vae.overshoot(zf, x[:1]).square().mean() + zf.sum() * 0).backward()
    assert torch.isfinite(zf.grad).all()


def test_overshoot_penalty_trains_the_encoder_towards_codes_within_range():
    """A few steps on one toy batch from the same random VAE: with the penalty the latents
    overshoot the plain cells' codes less than without it, and the reconstruction still learns."""
    import torch

    from training import train_vae

    x = _shape_batch(n=1)

    def train(weight: float) -> tuple[float, float]:
        torch.manual_seed(0)
        vae = train_vae.make_vae()
        opt = torch.optim.Adam(vae.parameters(), lr=2e-3)
        first = None
        for _ in range(6):
            post = vae.encode(x).latent_dist
            rec = torch.nn.functional.mse_loss(vae.decode(post.mean).sample, x)
            pen = train_vae.outlier_penalty(post.mean, x, margin=0.0)
            assert torch.isfinite(pen)
            first = rec.item() if first is None else first
            opt.zero_grad()
            (rec + weight * pen).backward()
            opt.step()
        with torch.no_grad():
            mu = vae.encode(x).latent_dist.mean
            rec = torch.nn.functional.mse_loss(vae.decode(mu).sample, x).item()
        assert rec < first
        return train_vae.overshoot(mu, x).square().mean().item(), rec

    plain, _ = train(0.0)
    penalised, _ = train(20.0)
    assert penalised < 0.5 * plain


def test_outlier_penalty_is_refused_with_decoder_only(tmp_path):
    from training import train_vae

    with pytest.raises(SystemExit, match="--outlier"):
        train_vae.main(["--init", str(tmp_path), "--decoder-only", "--outlier", "1", "--steps", "1",
                        "--out", str(tmp_path)])


def test_clean_registers_replaces_a_spiked_edge_cell_with_its_neighbours_and_leaves_the_rest():
    import torch
    import torch.nn.functional as F

    from training import train_vae

    x = _shape_batch()
    z = torch.cat([F.avg_pool2d(x, 4), F.avg_pool2d(x, 4)[:, :1]], 1)
    cleaned, mask = train_vae.clean_registers(z, x)
    assert mask.sum().item() == 0 and torch.equal(cleaned, z)  # nothing off the colours' line
    spiked = z.clone()
    spiked[1, :, 4, 11] += torch.tensor([5.0, -4.0, 3.0, 5.0])
    cleaned, mask = train_vae.clean_registers(spiked, x)
    assert mask[1, 0, 4, 11] == 1 and mask.sum().item() == 1
    neighbours = torch.cat([z[1, :, 3:6, 10:11], z[1, :, 3:6, 12:13], z[1, :, 3:4, 11:12], z[1, :, 5:6, 11:12]], 1)
    assert torch.allclose(cleaned[1, :, 4, 11], neighbours.flatten(1).mean(1), atol=1e-5)
    keep = torch.ones_like(z, dtype=torch.bool)
    keep[1, :, 4, 11] = False
    assert torch.equal(cleaned[keep], spiked[keep])


def test_anchored_fine_tune_trains_the_encoder_and_keeps_the_scaling_factor(tmp_path, capsys):
    import torch
    from diffusers import AutoencoderKL

    from training import train_vae

    torch.manual_seed(0)
    start = tmp_path / "start"
    vae = train_vae.make_vae()
    vae.register_to_config(scaling_factor=0.37)
    vae.save_pretrained(start, safe_serialization=True)
    train_vae.main(["--init", str(start), "--anchor", "3", "--worst", "1", "--empty", "0.2", "--steps", "3",
                    "--batch", "4", "--out", str(tmp_path / "out"), "--threads", "1"])
    assert "done: 3 steps" in capsys.readouterr().out
    after = AutoencoderKL.from_pretrained(tmp_path / "out" / "vae")
    assert after.config.scaling_factor == pytest.approx(0.37)
    enc_b, enc_a = vae.encoder.state_dict(), after.encoder.state_dict()
    assert any(not torch.equal(enc_b[k], enc_a[k]) for k in enc_b)
    with pytest.raises(SystemExit, match="--anchor"):
        train_vae.main(["--anchor", "1", "--steps", "1", "--out", str(tmp_path / "x")])
    with pytest.raises(SystemExit, match="--anchor"):
        train_vae.main(["--init", str(start), "--decoder-only", "--anchor", "1", "--steps", "1",
                        "--out", str(tmp_path / "x")])
