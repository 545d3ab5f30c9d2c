"""Shared set-up of the training tests: one torch thread, torch's global flags restored, and
a tiny base pipeline (a few UNet steps on the shipped VAE) for the adapter trainers."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from training import common as C


@pytest.fixture(autouse=True)
def _one_thread(torch_threads):
    yield


@pytest.fixture(autouse=True)
def restore_torch_flags():
    """The training scripts switch on deterministic algorithms process-wide; undo that."""
    import torch

    before = torch.are_deterministic_algorithms_enabled()
    yield
    torch.use_deterministic_algorithms(before)


TINY_UNET = ["--steps", "2", "--batch", "4", "--pool", "32", "--text-hidden", "32", "--text-layers", "1",
             "--channels", "16,16,32", "--fp32", "--threads", "1"]


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory) -> tuple[Path, Path]:
    """(pipeline folder, training state folder) of a 2-step `train_unet` run on the shipped VAE:
    a real diffusers pipeline of ~270k parameters, written by the script itself."""
    import torch

    from training import train_unet

    root = tmp_path_factory.mktemp("tiny-base")
    out, work = root / "pipe", root / "work"
    out.mkdir()
    shutil.copytree(C.DEFAULT_OUT / "vae", out / "vae")
    threads, deterministic = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    try:
        train_unet.main(["--out", str(out), "--work", str(work), *TINY_UNET])
    finally:
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(deterministic)
    return out, work


@pytest.fixture
def tiny_base(tiny_run) -> Path:
    """The tiny pipeline folder, as a frozen base for the adapter trainers (read only)."""
    return tiny_run[0]
