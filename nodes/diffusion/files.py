"""Finding and reading model files: name resolution, safetensors headers, located errors."""

from __future__ import annotations

import json
import struct
import threading
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from nodeflow.errors import NodeInputError
from nodeflow.settings import Settings

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt")

LOAD_LOCK = threading.RLock()
"""Held while building models from files. diffusers and accelerate create modules with their
weights on the meta device by patching torch process-wide while they load, so two loads at
once (independent branches run concurrently) would leave each other's weights empty."""


def resolve(ctx: Any, socket: str, kind: str, name: str) -> Path:
    """The file or folder a model input names, or a located error saying where it was looked for."""
    found = ctx.settings.resolve_path(kind, name) if name else None
    if found is None:
        raise NodeInputError(socket, ctx.settings.describe_search(kind, name or "''"))
    return found


def safetensors_keys(path: Path) -> dict[str, Any]:
    """The header of a .safetensors file: tensor names to {dtype, shape, ...}; reads no weights.

    Raises ValueError when the file is not a safetensors file.
    """
    with open(path, "rb") as fh:
        head = fh.read(8)
        if len(head) != 8:
            raise ValueError("the file is too short to be a safetensors file")
        (size,) = struct.unpack("<Q", head)
        if size <= 1 or size > 100_000_000:
            raise ValueError("the file has no safetensors header")
        raw = fh.read(size)
    try:
        header = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise ValueError("the file has no safetensors header") from None
    if not isinstance(header, dict):
        raise ValueError("the file has no safetensors header")
    header.pop("__metadata__", None)
    return header


def check_weights_file(path: Path, what: str) -> str | None:
    """Why ``path`` cannot be a weights file of ``what``, or None (for validation)."""
    if path.is_dir():
        return None
    if path.suffix.lower() != ".safetensors":
        return (f"{path.name} is not a .safetensors file; nodeflow reads {what} weights only from "
                f"safetensors files (or diffusers folders), never from pickles. Convert it to "
                f".safetensors first")
    try:
        safetensors_keys(path)
    except (OSError, ValueError) as exc:
        return f"{path} is not a readable safetensors file ({exc})"
    return None


def check_path_input(values: dict[str, Any], settings: Settings, socket: str, kind: str,
                     what: str) -> Iterable[tuple[str | None, str]]:
    """Validation of a model path input given as a literal."""
    name = values.get(socket)
    if not isinstance(name, str) or not name:
        return
    found = settings.resolve_path(kind, name)
    if found is None:
        return  # the validator already reports a missing file with the places searched
    problem = check_weights_file(found, what)
    if problem:
        yield socket, problem


def load_safetensors(path: Path, socket: str) -> dict[str, Any]:
    """All tensors of a safetensors file on the CPU, or a located error."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(str(path), device="cpu")
    except (OSError, SafetensorError) as exc:
        raise NodeInputError(socket, f"cannot read {path}: {exc}",
                             hint="Check that the file is a complete .safetensors file.") from None
