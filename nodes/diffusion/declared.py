"""Config folders that travel with model files, checked before anything is built from them.

A single-file checkpoint or ControlNet may bring its own diffusers config folder
(``model.config/``). Building the model allocates what those configs declare before a
weight is read, so a config declaring a huge architecture beside a small file would
exhaust memory, and a huge "config" file would be read whole. Here every file of such a
folder is size-checked by its directory entry (never read when too large or not a
regular file), and the parameters the configs declare (a lower bound, computed without
building anything) are compared with the numbers the weights file stores, as the AR
pack does for priors and tokenizers (`check_declared_size`).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from nodeflow.api import ModelError

MAX_CONFIG_BYTES = 8 * 1024 * 1024
"""Largest file a config folder may hold (configs are a few KB; CLIP's vocab.json is about 1 MB)."""
MAX_CONFIG_FILES = 200


def _size(n: int) -> str:
    return f"{n / 1e9:.1f} GB" if n >= 1e8 else f"{n / 1e6:.1f} MB"


def config_folder_problem(folder: Path) -> str | None:
    """Why the files of a config folder cannot be read safely, or None: each must be a regular
    file of at most `MAX_CONFIG_BYTES`; found from directory entries, nothing is read."""
    import stat

    count = 0
    for root, dirs, files in os.walk(folder):
        dirs.sort()
        for name in sorted(files):
            count += 1
            if count > MAX_CONFIG_FILES:
                return f"{folder} holds more than {MAX_CONFIG_FILES} files; it is not a config folder"
            file = Path(root) / name
            try:
                st = file.stat()
            except OSError as exc:
                return f"cannot read {file} ({exc.strerror or exc})"
            if not stat.S_ISREG(st.st_mode):
                return f"{file} is not a regular file"
            if st.st_size > MAX_CONFIG_BYTES:
                return (f"{file} is {_size(st.st_size)}, far larger than a config file "
                        f"({_size(MAX_CONFIG_BYTES)} at most); nodeflow does not read it")
    return None


def read_config_file(file: Path) -> dict[str, Any]:
    """A JSON config file read only when it is a regular file of a plausible size; ValueError
    saying what is wrong otherwise."""
    import stat

    st = file.stat()
    if not stat.S_ISREG(st.st_mode):
        raise ValueError(f"{file} is not a regular file")
    if st.st_size > MAX_CONFIG_BYTES:
        raise ValueError(f"{file} is {_size(st.st_size)}, far larger than a config file "
                         f"({_size(MAX_CONFIG_BYTES)} at most)")
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{file} is not readable JSON ({exc})") from None
    if not isinstance(data, dict):
        raise ValueError(f"{file} is not a JSON object")
    return data


def _count(value: Any, default: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        return default
    return int(value)


def _per_level(value: Any, levels: int, default: int) -> list[int]:
    if isinstance(value, list | tuple):
        return [_count(v, default) for v in value][:levels] + [default] * max(0, levels - len(value))
    return [_count(value, default)] * levels


def unet_parameters(config: Mapping[str, Any]) -> int:
    """A lower bound of the parameters of the UNet (or ControlNet, its down half) a config
    declares: the second 3×3 convolution of each resnet, and each down-path transformer
    layer's self-attention and feed-forward projections."""
    widths = [_count(c, 0) for c in (config.get("block_out_channels") or [320, 640, 1280, 1280])]
    levels = len(widths)
    per_level = _per_level(config.get("layers_per_block", 2), levels, 2)
    transformers = _per_level(config.get("transformer_layers_per_block", 1), levels, 1)
    down = config.get("down_block_types") or ["CrossAttnDownBlock2D"] * levels
    total = 0
    for i, c in enumerate(widths):
        attention = i < len(down) and "CrossAttn" in str(down[i])
        total += (9 * c * c + (12 * c * c * transformers[i] if attention else 0)) * per_level[i]
        if config.get("_class_name") != "ControlNetModel":
            total += 9 * c * c * (per_level[i] + 1)  # the up path's resnets
    last = widths[-1] if widths else 0
    return total + 2 * 9 * last * last


def text_encoder_parameters(config: Mapping[str, Any]) -> int:
    """A lower bound of a CLIP text encoder's parameters: token embeddings, and per layer the
    attention and MLP projections."""
    hidden = _count(config.get("hidden_size"), 0)
    inner = _count(config.get("intermediate_size"), 0)
    layers = _count(config.get("num_hidden_layers"), 0)
    return _count(config.get("vocab_size"), 0) * hidden + layers * (4 * hidden * hidden + 2 * hidden * inner)


def vae_parameters(config: Mapping[str, Any]) -> int:
    """A lower bound of an AutoencoderKL's parameters: one 3×3 convolution per resnet of its
    encoder and decoder."""
    widths = [_count(c, 0) for c in (config.get("block_out_channels") or [128, 256, 512, 512])]
    per = _count(config.get("layers_per_block", 2), 2)
    return sum(9 * c * c * (2 * per + 1) for c in widths)


_PARTS = (("unet", unet_parameters), ("text_encoder", text_encoder_parameters),
          ("text_encoder_2", text_encoder_parameters), ("vae", vae_parameters))


def declared_parameters(folder: Path) -> int:
    """The parameters a config folder declares (at least): a pipeline folder's unet, text
    encoders and VAE, or a model folder's one config.json. ValueError for unreadable configs."""
    if (folder / "config.json").is_file():
        return unet_parameters(read_config_file(folder / "config.json"))
    total = 0
    for part, count in _PARTS:
        file = folder / part / "config.json"
        if file.is_file():
            total += count(read_config_file(file))
    return total


def check_config_folder(weights: Path, folder: Path, what: str) -> None:
    """Refuse a config folder beside ``weights`` whose files are implausible, or whose configs
    declare far more parameters than the weights store; ModelError with the figures."""
    from nodeflow.nodes.ar.files import check_declared_size

    problem = config_folder_problem(folder)
    try:
        if problem is None:
            check_declared_size(weights, declared_parameters(folder), what)
            return
    except ValueError as exc:
        problem = str(exc)
    except OSError as exc:
        problem = f"cannot read {folder} ({exc.strerror or exc})"
    raise ModelError(f"the config folder of {weights.name} is refused: {problem}",
                     hint=f"Use the config folder made for this file, or remove {folder} to load the "
                          "file with the config nodeflow carries for its family.")
