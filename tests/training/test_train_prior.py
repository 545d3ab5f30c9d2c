"""train_prior on a one-layer prior over the shipped VQ tokenizer's codes: the file it writes
loads through nodeflow's LoadPrior, with the world's colours as its classes."""

from __future__ import annotations

from training import world


def test_two_steps_write_a_prior_that_load_prior_reads(tmp_path, capsys):
    import math

    import torch

    from nodeflow.nodes.ar import LoadPrior
    from nodeflow.testing import run_node
    from training import train_prior

    out = tmp_path / "prior.safetensors"
    train_prior.main(["--steps", "2", "--images", "16", "--dim", "32", "--layers", "1", "--batch", "4",
                      "--threads", "1", "--out", str(out)])
    done = next(line for line in capsys.readouterr().out.splitlines() if " done: " in line)
    assert "done: 2 steps" in done and math.isfinite(float(done.split(" loss ")[1].split(",")[0]))
    assert not list(tmp_path.glob(".*tmp*"))
    loaded = run_node(LoadPrior, path=str(out))
    assert loaded["classes"].splitlines() == list(world.COLOURS)
    prior = loaded["prior"]
    assert prior.grid == (16, 16) and prior.config["dim"] == 32
    assert all(torch.isfinite(p).all() for p in prior.parameters())
