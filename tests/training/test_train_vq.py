"""train_vq: a couple of steps with codebook re-seeding between them (the shared loop's
after-step hook) write a VQ tokenizer that nodeflow's LoadTokenizer reads."""

from __future__ import annotations

import json
import math

import pytest


@pytest.mark.slow  # ~25 s: the final held-out evaluation renders and round-trips 256 scenes
def test_steps_reseed_unused_codes_and_write_a_tokenizer_load_tokenizer_reads(tmp_path, capsys):
    from nodeflow.nodes.ar import LoadTokenizer
    from nodeflow.testing import run_node
    from training import train_vq

    out = tmp_path / "vq"
    train_vq.main(["--steps", "2", "--batch", "2", "--codes", "64", "--reseed-every", "1",
                   "--threads", "1", "--out", str(out)])
    lines = capsys.readouterr().out.splitlines()
    steps = [line for line in lines if " step " in line and "re-seeded" in line]
    assert [line.split()[2] for line in steps] == ["1", "2"]
    assert math.isfinite(float(steps[-1].split(" loss ")[1].split()[0]))
    # a batch of 2 pictures uses few of the 64 codes: the rest are moved onto its latents
    assert int(steps[0].split("(re-seeded ")[1].split(")")[0]) > 0
    report = json.loads(next(line for line in lines if " done: " in line).split(" done: ", 1)[1])
    assert report["steps"] == 2 and report["codebook_size"] == 64 and math.isfinite(report["psnr_db"])
    assert not list(tmp_path.glob(".*tmp*"))
    loaded = run_node(LoadTokenizer, path=str(out))
    assert loaded["codebook_size"] == 64 and loaded["downscale"] == 4
