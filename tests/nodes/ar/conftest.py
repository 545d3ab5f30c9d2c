"""Tiny VQ tokenizers and token priors built from configs and saved to a models folder."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from nodeflow.settings import Settings
from tests.helpers import DirectContext

VQ_CONFIG: dict[str, Any] = {
    "in_channels": 3,
    "out_channels": 3,
    "down_block_types": ["DownEncoderBlock2D", "DownEncoderBlock2D"],
    "up_block_types": ["UpDecoderBlock2D", "UpDecoderBlock2D"],
    "block_out_channels": [8, 16],
    "layers_per_block": 1,
    "norm_num_groups": 8,
    "latent_channels": 4,
    "num_vq_embeddings": 32,
    "vq_embed_dim": 4,
    "sample_size": 16,
}

PRIOR_CONFIG: dict[str, Any] = {
    "vocab_size": 32, "height": 4, "width": 5, "dim": 32, "layers": 2, "heads": 2,
    "mlp_ratio": 2.0, "num_classes": 3, "class_names": ["red circle", "blue square", "star"],
}




def make_vq(seed: int = 0, **overrides: Any) -> Any:
    import torch
    from diffusers import VQModel

    torch.manual_seed(seed)
    vq = VQModel(**{**VQ_CONFIG, **overrides}).eval()
    with torch.no_grad():  # spread the codebook so that images use many codes
        vq.quantize.embedding.weight.normal_(0.0, 0.5)
    return vq


def make_prior(seed: int = 0, **overrides: Any) -> Any:
    import torch

    from nodeflow.nodes.ar.prior import TokenPrior

    torch.manual_seed(seed)
    prior = TokenPrior({**PRIOR_CONFIG, **overrides}).eval()
    with torch.no_grad():  # sharper random predictions than the small training init
        prior.head.weight.normal_(0.0, 0.5)
    return prior


@pytest.fixture(scope="session")
def ar_models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """models/tokenizers: vq (folder), vq.safetensors (same model, one file), vq-64 and
    vq-other (other codebooks); models/priors: prior.safetensors, prior-folder, prior-64."""
    from nodeflow.nodes.ar.prior import save_prior
    from nodeflow.nodes.ar.tokenizer import save_tokenizer_file

    root = tmp_path_factory.mktemp("models")
    tokenizers, priors = root / "tokenizers", root / "priors"
    priors.mkdir(parents=True)
    tokenizers.mkdir(parents=True)
    vq = make_vq()
    vq.save_pretrained(str(tokenizers / "vq"))
    save_tokenizer_file(vq, tokenizers / "vq.safetensors")
    save_tokenizer_file(make_vq(seed=1, num_vq_embeddings=64), tokenizers / "vq-64.safetensors")
    save_tokenizer_file(make_vq(seed=2), tokenizers / "vq-other.safetensors")
    prior = make_prior()
    save_prior(prior, priors / "prior.safetensors")
    save_prior(prior, priors / "prior-folder")
    save_prior(make_prior(seed=3, vocab_size=64), priors / "prior-64.safetensors")
    return root


@pytest.fixture
def settings(ar_models: Path, tmp_path: Path) -> Settings:
    return Settings(models_dirs=[ar_models], out_dir=tmp_path / "out")


@pytest.fixture
def ctx(settings: Settings) -> DirectContext:
    return DirectContext(settings)


def picture(height: int, width: int, batch: int = 1, seed: int = 0) -> Any:
    import numpy as np

    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    base = np.stack([np.sin(x / 3.0) * 0.4 + 0.5, (x + y) / (height + width), np.cos(y / 2.0) * 0.4 + 0.5], -1)
    img = base[None].repeat(batch, 0) + rng.normal(0, 0.05, (batch, height, width, 3))
    return np.clip(img, 0, 1).astype(np.float32)
