"""Finding and reading model files: name resolution, safetensors headers, located errors."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from nodeflow.api import NodeInputError, Settings, safetensors_header

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt")

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


def checked_model_path(values: Mapping[str, Any], settings: Settings, socket: str, kind: str,
                       what: str) -> tuple[list[tuple[str | None, str]], Path | None]:
    """Validation of a model path input given as a literal: its problems, and the file or folder
    it names when it has none (None when there are problems or no literal), for a node's own
    further checks of that file."""
    problems = list(check_path_input(dict(values), settings, socket, kind, what))
    name = values.get(socket)
    if problems or not isinstance(name, str) or not name:
        return problems, None
    return problems, settings.resolve_path(kind, name)


def lora_file(ctx: Any, path: str) -> Path:
    """The LoRA file a node's `path` input names: a .safetensors file, or a folder holding exactly
    one; a located error otherwise."""
    found = resolve(ctx, "path", "loras", path)
    if found.is_dir():
        candidates = sorted(found.glob("*.safetensors"))
        if len(candidates) != 1:
            raise NodeInputError("path", f"{found} is a folder; give the LoRA's .safetensors file")
        found = candidates[0]
    problem = check_weights_file(found, "LoRA")
    if problem:
        raise NodeInputError("path", problem)
    return found


def load_safetensors(path: Path, socket: str) -> dict[str, Any]:
    """All tensors of a safetensors file on the CPU, or a located error."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(str(path), device="cpu")
    except (OSError, SafetensorError) as exc:
        raise NodeInputError(socket, f"cannot read {path}: {exc}",
                             hint="Check that the file is a complete .safetensors file.") from None
