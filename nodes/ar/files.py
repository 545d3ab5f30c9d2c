"""Torch-free inspection of tokenizer and prior files, for validation and clear errors."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from nodeflow.api import safetensors_header

PRIOR_FORMAT = "nodeflow.ar_prior"
TOKENIZER_FORMAT = "nodeflow.vq_tokenizer"


def read_config(path: Path, fmt: str, config_name: str = "config.json") -> dict[str, Any]:
    """The config stored with a model: a folder's config.json, or a safetensors file's metadata.

    Raises ValueError saying what is wrong.
    """
    if path.is_dir():
        file = path / config_name
        if not file.is_file():
            raise ValueError(f"the folder {path} has no {config_name}")
        try:
            config = json.loads(file.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ValueError(f"{file} is not readable JSON ({exc})") from None
    else:
        if path.suffix.lower() != ".safetensors":
            raise ValueError(f"{path.name} is not a .safetensors file or a model folder")
        header = safetensors_header(path, metadata=True)
        meta = header.get("__metadata__") or {}
        if "config" not in meta:
            found = meta.get("format")
            kind = f" (its format is '{found}')" if found else ""
            raise ValueError(f"{path.name} has no config in its metadata{kind}")
        if meta.get("format", fmt) != fmt:
            raise ValueError(f"{path.name} is a '{meta['format']}' file, not '{fmt}'")
        try:
            config = json.loads(meta["config"])
        except json.JSONDecodeError as exc:
            raise ValueError(f"the config in {path.name} is not JSON ({exc})") from None
    if not isinstance(config, dict):
        raise ValueError(f"the config of {path.name} is not a JSON object")
    return config


def stored_elements(path: Path) -> int:
    """Numbers stored in a model's weights (a .safetensors file, or a folder's weight files),
    read from the headers; a count independent of the stored precision."""
    from nodeflow.api import weight_files

    files = weight_files(path) if path.is_dir() else [path]
    total = 0
    for file in files:
        if file.suffix.lower() != ".safetensors":
            total += file.stat().st_size // 2  # at least this many fp16 numbers
            continue
        for entry in safetensors_header(file).values():
            total += math.prod(int(n) for n in entry.get("shape", ()))
    return total


def check_declared_size(path: Path, declared: int, what: str) -> None:
    """Refuse a config that declares far more parameters than its file stores.

    Building the model allocates what the config declares before any weight is read, so a
    small file whose config asks for a huge model would exhaust memory; the declared count
    is compared with the stored one first. Raises ValueError with both figures.
    """
    stored = stored_elements(path)
    if declared > 1.5 * stored + 100_000:
        raise ValueError(
            f"{path.name} declares a {what} of about {declared:,} parameters "
            f"({_gb(declared * 4)} in float32) but stores only {stored:,} numbers; the config "
            f"does not match the weights, and building it would try to allocate {_gb(declared * 4)}")


def _gb(n: float) -> str:
    return f"{n / 1e9:.1f} GB" if n >= 1e8 else f"{n / 1e6:.1f} MB"


def _ints(value: Any, default: int = 0) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else default


def vq_parameters(config: dict[str, Any]) -> int:
    """A lower bound of the parameters of the VQModel a config declares (its 3×3 convolutions,
    attention and codebook), computed without building it."""
    widths = config.get("block_out_channels") or [64]
    if not isinstance(widths, list | tuple):
        raise ValueError("'block_out_channels' must be a list of channel counts")
    widths = [_ints(c) for c in widths]
    per_block = _ints(config.get("layers_per_block"), 1)
    convs = sum(9 * c * c for c in widths)
    total = 2 * convs * per_block + 2 * convs * (per_block + 1)  # encoder and decoder resnets
    last = widths[-1] if widths else 0
    total += 2 * (4 * 9 * last * last + 4 * last * last)  # the two mid blocks
    total += _ints(config.get("num_vq_embeddings"), 256) * _ints(config.get("vq_embed_dim"),
                                                                  _ints(config.get("latent_channels"), 3))
    return total


def prior_parameters(config: dict[str, Any]) -> int:
    """The parameters of the token prior a config declares, computed without building it."""
    dim, vocab = _ints(config.get("dim")), _ints(config.get("vocab_size"))
    length = _ints(config.get("height")) * _ints(config.get("width"))
    mlp = config.get("mlp_ratio", 4.0)
    ratio = float(mlp) if isinstance(mlp, int | float) and not isinstance(mlp, bool) and mlp > 0 else 4.0
    hidden = int(dim * ratio)
    block = 4 * dim * dim + 4 * dim + 2 * dim * hidden + hidden + dim + 4 * dim
    return (2 * vocab * dim + (_ints(config.get("num_classes")) + 1 + length) * dim
            + _ints(config.get("layers")) * block + 2 * dim)


def tokenizer_config(path: Path) -> dict[str, Any]:
    """The VQModel config of a tokenizer folder, pipeline folder (its 'vqvae') or single file."""
    if path.is_dir() and not (path / "config.json").is_file() and (path / "vqvae").is_dir():
        path = path / "vqvae"
    config = read_config(path, TOKENIZER_FORMAT)
    cls = config.get("_class_name", "VQModel")
    if cls != "VQModel":
        what = {"AutoencoderKL": "a VAE (continuous latents, no codebook)"}.get(cls, f"a {cls}")
        raise ValueError(f"{path.name} is {what}, not a VQ image tokenizer (VQModel)")
    check_declared_size(path, vq_parameters(config), "VQ tokenizer")
    return config


PRIOR_KEYS = ("vocab_size", "height", "width", "dim", "layers", "heads")


def prior_config(path: Path) -> dict[str, Any]:
    config = read_config(path, PRIOR_FORMAT)
    missing = [k for k in PRIOR_KEYS if not isinstance(config.get(k), int)]
    if missing:
        raise ValueError(f"{path.name} is not a token prior: its config lacks "
                         f"{', '.join(missing)}")
    check_declared_size(path, prior_parameters(config), "token prior")
    return config
