"""Fixtures: tiny checkpoints with random weights in a models folder, built once per session."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.nodes.diffusion import tiny


@pytest.fixture(scope="session")
def models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("models")
    for kind in ("checkpoints", "loras", "controlnet", "vae"):
        (root / kind).mkdir()
    return root


@pytest.fixture(scope="session")
def sd_ckpt(models_dir: Path) -> Path:
    return tiny.save_sd(models_dir / "checkpoints" / "tiny-sd")


@pytest.fixture(scope="session")
def sd_pipe(sd_ckpt: Path):
    from diffusers import StableDiffusionPipeline

    return StableDiffusionPipeline.from_pretrained(sd_ckpt, safety_checker=None,
                                                   requires_safety_checker=False)


@pytest.fixture(scope="session")
def inpaint_ckpt(models_dir: Path) -> Path:
    return tiny.save_sd(models_dir / "checkpoints" / "tiny-sd-inpaint", in_channels=9, seed=1)


@pytest.fixture(scope="session")
def pictures(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A 32×32 picture, and an inpainting mask as a PNG whose transparent part is the area to
    repaint (as image.Load reads masks), with the same mask as a greyscale picture."""
    import numpy as np
    from PIL import Image

    root = tmp_path_factory.mktemp("pictures")
    paths = {"picture": root / "picture.png", "mask_rgba": root / "mask.png",
             "mask_l": root / "mask_l.png"}
    tiny.picture().save(paths["picture"])
    mask = tiny.mask_picture()
    mask.save(paths["mask_l"])
    rgba = np.zeros((32, 32, 4), dtype=np.uint8)
    rgba[..., 3] = 255 - np.asarray(mask)
    Image.fromarray(rgba, "RGBA").save(paths["mask_rgba"])
    return paths
