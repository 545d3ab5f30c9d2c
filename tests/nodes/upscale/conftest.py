"""Tiny spandrel upscalers built from their architecture classes and saved to files."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from nodeflow.settings import Settings
from tests.helpers import DirectContext


def save_esrgan(path: Path, scale: int = 4, seed: int = 0) -> Path:
    """A 1-block RRDB ESRGAN with 8 filters (growth channels are 32, as spandrel assumes)."""
    import torch
    from spandrel.architectures.ESRGAN import ESRGAN

    torch.manual_seed(seed)
    model = ESRGAN(in_nc=3, out_nc=3, num_filters=8, num_blocks=1, scale=scale)
    _save(model.state_dict(), path)
    return path


def save_compact(path: Path, scale: int = 4, seed: int = 0, feat: int = 16, convs: int = 4) -> Path:
    """A Real-ESRGAN Compact (SRVGG) network: plain 3×3 convolutions and a pixel shuffle."""
    import torch
    from spandrel.architectures.Compact import Compact

    torch.manual_seed(seed)
    model = Compact(num_in_ch=3, num_out_ch=3, num_feat=feat, num_conv=convs, upscale=scale)
    # Random PReLU slopes and a bias towards mid-grey keep the output away from the clamp.
    with torch.no_grad():
        for p in model.parameters():
            if p.ndim == 1:
                p.uniform_(-0.1, 0.3)
    _save(model.state_dict(), path)
    return path


def save_swinir(path: Path, seed: int = 0) -> Path:
    """A 2x SwinIR with one tiny stage; spandrel gives it a 16-pixel minimum size."""
    import torch
    from spandrel.architectures.SwinIR import SwinIR

    torch.manual_seed(seed)
    model = SwinIR(upscale=2, img_size=16, window_size=4, embed_dim=12, depths=[1], num_heads=[2],
                   mlp_ratio=2, upsampler="pixelshuffledirect")
    _save({"params": model.state_dict()}, path)
    return path


def _save(state: dict[str, Any], path: Path) -> None:
    import torch

    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    else:
        torch.save(state, str(path))


@pytest.fixture(scope="session")
def upscale_models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A models folder whose 'upscale' subfolder holds tiny upscalers of several architectures."""
    root = tmp_path_factory.mktemp("models")
    folder = root / "upscale"
    save_esrgan(folder / "esrgan-4x.safetensors")
    save_esrgan(folder / "esrgan-2x.pth", scale=2, seed=1)
    save_compact(folder / "compact-4x.pth")
    save_compact(folder / "compact-4x.safetensors", seed=2)
    save_compact(folder / "compact-1x.safetensors", scale=1)
    save_swinir(folder / "swinir-2x.pth")
    return root


@pytest.fixture
def settings(upscale_models: Path, tmp_path: Path) -> Settings:
    return Settings(models_dirs=[upscale_models], out_dir=tmp_path / "out")


@pytest.fixture
def ctx(settings: Settings) -> DirectContext:
    return DirectContext(settings)


def pattern(height: int, width: int, batch: int = 1, seed: int = 0) -> Any:
    """A test picture: smooth gradients, sharp stripes and a little noise."""
    import numpy as np

    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    r = 0.5 + 0.4 * np.sin(x / 7.0) * np.cos(y / 11.0)
    g = ((x // 4 + y // 4) % 2).astype(np.float32) * 0.6 + 0.2
    b = np.clip(x / max(width - 1, 1) * 0.8 + 0.1, 0, 1)
    img = np.stack([r, g, b], axis=-1)[None].repeat(batch, axis=0)
    img = img + rng.normal(0, 0.02, img.shape).astype(np.float32)
    return np.clip(img, 0.0, 1.0).astype(np.float32)
