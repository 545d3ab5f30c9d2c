"""Finding and reading model files: name resolution, safetensors headers, located errors."""

from __future__ import annotations

import threading
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from nodeflow.errors import NodeInputError
from nodeflow.models import safetensors_header
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


def check_weights_file(path: Path, what: str) -> str | None:
    """Why ``path`` cannot be a weights file of ``what``, or None (for validation)."""
    if path.is_dir():
        return None
    if path.suffix.lower() != ".safetensors":
        return (f"{path.name} is not a .safetensors file; nodeflow reads {what} weights only from "
                f"safetensors files (or diffusers folders), never from pickles. Convert it to "
                f".safetensors first")
    try:
        safetensors_header(path)
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
