"""Torch-free inspection of tokenizer and prior files, for validation and clear errors."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from nodeflow.models import safetensors_header

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


def tokenizer_config(path: Path) -> dict[str, Any]:
    """The VQModel config of a tokenizer folder, pipeline folder (its 'vqvae') or single file."""
    if path.is_dir() and not (path / "config.json").is_file() and (path / "vqvae").is_dir():
        path = path / "vqvae"
    config = read_config(path, TOKENIZER_FORMAT)
    cls = config.get("_class_name", "VQModel")
    if cls != "VQModel":
        what = {"AutoencoderKL": "a VAE (continuous latents, no codebook)"}.get(cls, f"a {cls}")
        raise ValueError(f"{path.name} is {what}, not a VQ image tokenizer (VQModel)")
    return config


PRIOR_KEYS = ("vocab_size", "height", "width", "dim", "layers", "heads")


def prior_config(path: Path) -> dict[str, Any]:
    config = read_config(path, PRIOR_FORMAT)
    missing = [k for k in PRIOR_KEYS if not isinstance(config.get(k), int)]
    if missing:
        raise ValueError(f"{path.name} is not a token prior: its config lacks "
                         f"{', '.join(missing)}")
    return config
