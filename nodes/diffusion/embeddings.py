"""Textual-inversion embeddings named in prompts (``embedding:name``).

Files live in the models folder's ``embeddings/`` (``name``, ``name.safetensors``,
``name.pt`` or ``name.bin``). Layouts read:

- A1111 ``.safetensors``: ``emb_params`` (vectors, width);
- SDXL ``.safetensors``: ``clip_l`` and ``clip_g``, one set of vectors per text encoder;
- A1111 ``.pt``: ``string_to_param`` → ``{"*": vectors}``;
- diffusers ``learned_embeds``: ``{token: vector}``; or any file holding a single tensor.

Pickle files (``.pt``, ``.bin``) are read only with ``torch.load(weights_only=True)``; one
that needs more than plain tensors and containers is refused, never unpickled.
"""

from __future__ import annotations

from pathlib import Path, PurePosixPath
from typing import Any

from nodeflow.api import ModelError, Settings

KIND = "embeddings"
EXTENSIONS = ("", ".safetensors", ".pt", ".bin")


def find_embedding(settings: Settings, name: str) -> Path | None:
    """The embedding file ``name`` refers to in the models folders' embeddings/, or None."""
    if not is_safe_name(name):
        return None
    for ext in EXTENSIONS:
        found = settings.resolve_path(KIND, name + ext)
        if found is not None and found.is_file():
            return found
    return None


def is_safe_name(name: str) -> bool:
    """A name inside the embeddings folders: relative, with no '..' (prompts are untrusted)."""
    path = PurePosixPath(name.replace("\\", "/"))
    return bool(name) and not path.is_absolute() and ".." not in path.parts and ":" not in name


def missing_message(settings: Settings, name: str) -> str:
    if not is_safe_name(name):
        return (f"embedding:{name} is not a plain name; embeddings are read only from the models "
                "folders' embeddings/")
    places = ", ".join(str(d) for d in settings.search_dirs(KIND))
    return (f"embedding:{name} was not found (looked for {name}.safetensors, .pt or .bin in "
            f"{places})")


def _tensors_of(data: Any, path: Path) -> dict[str, Any]:
    """The named tensors of a loaded embedding file, whatever its layout."""
    import torch

    if isinstance(data, torch.Tensor):
        return {"": data}
    if not isinstance(data, dict):
        raise ModelError(f"{path} is not a textual-inversion embedding (it holds a "
                         f"{type(data).__name__})")
    params = data.get("string_to_param")
    if isinstance(params, dict) and params:
        return {"": next(iter(params.values()))}
    flat = {k: v for k, v in data.items() if isinstance(v, torch.Tensor)}
    for key in ("clip_l", "clip_g"):
        if key in flat:
            return {k: flat[k] for k in ("clip_l", "clip_g") if k in flat}
    if "emb_params" in flat:
        return {"": flat["emb_params"]}
    stp = [k for k in flat if k.startswith("string_to_param.")]
    if stp:
        return {"": flat[stp[0]]}
    if len(flat) == 1:
        return {"": next(iter(flat.values()))}
    raise ModelError(f"{path} is not a textual-inversion embedding nodeflow can read (tensors: "
                     f"{', '.join(sorted(flat)[:6]) or 'none'})",
                     hint="Use an A1111 or diffusers embedding (emb_params, string_to_param, "
                          "clip_l/clip_g, or a single tensor).")


def load_embedding(path: Path) -> dict[str, Any]:
    """The vectors of an embedding file: {'' | 'clip_l' | 'clip_g': tensor (vectors, width)}."""
    import torch

    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            data: Any = load_file(str(path), device="cpu")
        else:
            try:
                data = torch.load(str(path), map_location="cpu", weights_only=True)
            except Exception as exc:  # UnpicklingError and friends: anything beyond plain tensors
                raise ModelError(
                    f"{path} needs full unpickling to load ({type(exc).__name__}), which could run "
                    "code from the file; nodeflow only reads plain tensors",
                    hint="Convert it to .safetensors with a trusted tool, or use a .safetensors "
                         "embedding.") from None
    except ModelError:
        raise
    except Exception as exc:
        raise ModelError(f"cannot read the embedding {path}: {exc}") from None
    tensors = _tensors_of(data, path)
    return {k: v.detach().float().reshape(-1, v.shape[-1]) for k, v in tensors.items()}


def vectors_for(embedding: dict[str, Any], name: str, width: int, encoder_key: str) -> Any:
    """The vectors to give a text encoder of ``width`` ('clip_l' or 'clip_g' for SDXL's two)."""
    if "" in embedding:
        vectors = embedding[""]
    elif encoder_key in embedding:
        vectors = embedding[encoder_key]
    else:
        raise ModelError(f"embedding:{name} has vectors for {', '.join(sorted(embedding))} but not "
                         f"for the {encoder_key} text encoder")
    if int(vectors.shape[-1]) != width:
        raise ModelError(f"embedding:{name} has vectors of width {int(vectors.shape[-1])}, but the "
                         f"text encoder's are {width} wide: it was made for another model",
                         hint="Use an embedding trained for this checkpoint's family.")
    return vectors
