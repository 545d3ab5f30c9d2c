"""Checking a LoRA's (or LyCORIS file's) layer shapes against the model it is applied to, from
the file's header alone, before any tensor is read or any layer patched.

A LoRA made for another model (an SDXL LoRA on an SD 1.5 checkpoint, a file whose rank or
width does not match) is refused with the first layer that does not fit and both shapes,
instead of a library's error from the middle of patching.
"""

from __future__ import annotations

from collections.abc import Mapping
from math import prod
from pathlib import Path
from typing import Any

from nodeflow.api import NodeInputError, safetensors_header

_DIFFUSERS_OWNERS = ("unet", "text_encoder", "text_encoder_2")
_PLAIN_FACTORS = {".lora_A.": "down", ".lora.down.": "down", ".lora_down.": "down",
                  ".lora_B.": "up", ".lora.up.": "up", ".lora_up.": "up"}
_KOHYA_PREFIXES = (("lora_unet_", "unet"), ("lora_te1_", "text_encoder"),
                   ("lora_te2_", "text_encoder_2"), ("lora_te_", "text_encoder"))


def _layer_of(key: str) -> tuple[str, str, bool, str] | None:
    """(owner, layer name, is a kohya stem, factor) of a tensor name; None for other tensors."""
    for prefix, owner in _KOHYA_PREFIXES:
        if key.startswith(prefix):
            stem, _, factor = key.partition(".")
            factor = factor.removesuffix(".weight")
            factor = {"lora_down": "down", "lora_up": "up"}.get(factor, factor)
            return owner, stem[len(prefix):], True, factor
    owner = key.partition(".")[0]
    if owner in _DIFFUSERS_OWNERS:
        for marker, factor in _PLAIN_FACTORS.items():
            if marker in key:
                return owner, key[len(owner) + 1:key.index(marker)], False, factor
    return None


def delta_shape(f: Mapping[str, tuple[int, ...]]) -> tuple[int, ...] | None:
    """The shape of the weight change a layer's factors make (as `lycoris.delta_weight` builds
    it), from the factors' shapes; None when the factors are not a set nodeflow knows."""
    if "down" in f and "up" in f:
        return (f["up"][0], *f["down"][1:])
    if "hada_w1_a" in f and "hada_w1_b" in f:
        if "hada_t1" in f:
            return (f["hada_w1_a"][1], f["hada_w1_b"][1], *f["hada_t1"][2:])
        return (f["hada_w1_a"][0], *f["hada_w1_b"][1:])
    if any(k.startswith("lokr_") for k in f):
        w1 = f.get("lokr_w1") or ((f["lokr_w1_a"][0], f["lokr_w1_b"][1])
                                  if "lokr_w1_a" in f and "lokr_w1_b" in f else None)
        if "lokr_w2" in f:
            w2: tuple[int, ...] | None = f["lokr_w2"]
        elif "lokr_t2" in f and "lokr_w2_a" in f and "lokr_w2_b" in f:
            w2 = (f["lokr_w2_a"][1], f["lokr_w2_b"][1], *f["lokr_t2"][2:])
        elif "lokr_w2_a" in f and "lokr_w2_b" in f:
            w2 = (f["lokr_w2_a"][0], f["lokr_w2_b"][1])
        else:
            w2 = None
        if w1 is None or w2 is None:
            return None
        if len(w2) == 4 and len(w1) == 2:
            w1 = (*w1, 1, 1)
        size = max(len(w1), len(w2))
        w1, w2 = (1,) * (size - len(w1)) + tuple(w1), (1,) * (size - len(w2)) + tuple(w2)
        return tuple(a * b for a, b in zip(w1, w2, strict=True))
    return None


def _fits(change: tuple[int, ...], weight: tuple[int, ...]) -> bool:
    return bool(change) and change[0] == weight[0] and prod(change) == prod(weight)


def first_mismatch(header: Mapping[str, Any], modules: Mapping[str, Any],
                   unet_config: Mapping[str, Any] | None) -> tuple[str, tuple[int, ...], tuple[int, ...]] | None:
    """The first layer of a LoRA header whose weight change does not fit the model's layer of
    that name: (layer, the change's shape, the weight's shape); None when all that match a
    layer fit. Layers that name no layer of the model are left to the loader's own checks."""
    from nodeflow.nodes.diffusion.lycoris import layer_index

    layers: dict[tuple[str, str, bool], dict[str, tuple[int, ...]]] = {}
    for key, entry in header.items():
        parsed = _layer_of(key) if isinstance(entry, Mapping) else None
        if parsed is None or not isinstance(entry.get("shape"), list):
            continue
        owner, name, kohya, factor = parsed
        layers.setdefault((owner, name, kohya), {})[factor] = tuple(int(n) for n in entry["shape"])
    kohya_index: dict[str, dict[str, str]] = {}
    named: dict[str, dict[str, Any]] = {}
    for (owner, name, kohya), factors in layers.items():
        module = modules.get(owner)
        if module is None:
            continue
        if owner not in named:
            named[owner] = dict(module.named_modules())
        path = name
        if kohya:
            if owner not in kohya_index:
                kohya_index[owner] = layer_index(module, unet_config if owner == "unet" else None)
            found = kohya_index[owner].get(name)
            if found is None:
                continue
            path = found
        target = named[owner].get(path)
        target = getattr(target, "base_layer", target)  # a layer an earlier LoRA wraps
        weight = getattr(target, "weight", None)
        change = delta_shape(factors)
        if weight is None or change is None:
            continue
        shape = tuple(int(n) for n in weight.shape)
        if not _fits(change, shape):
            prefix = next((p for p, o in _KOHYA_PREFIXES if o == owner), "") if kohya else f"{owner}."
            return prefix + name, change, shape
    return None


def _shape(shape: tuple[int, ...]) -> str:
    return "×".join(str(n) for n in shape)


def check_lora_shapes(path: Path, model: Any, clip: Any) -> None:
    """Raise a located error (socket ``path``) when a layer of the LoRA file at ``path`` does not
    fit the model; reads the file's header only."""
    from nodeflow.nodes.diffusion.lora import CROSS_ATTENTION_FAMILY
    from nodeflow.nodes.diffusion.types import FAMILY_NAMES

    try:
        header = safetensors_header(path)
    except (OSError, ValueError):
        return  # the loader reports an unreadable file
    modules = {"unet": model.unet, "text_encoder": clip.text_encoder,
               "text_encoder_2": clip.text_encoder_2}
    found = first_mismatch(header, modules, model.unet.config)
    if found is None:
        return
    layer, change, shape = found
    family = FAMILY_NAMES.get(model.family, model.family)
    made_for = ""
    for key, entry in header.items():
        if "attn2" in key and "to_k" in key and any(m in key for m in ("lora_A", "lora.down", "lora_down")):
            width = int(entry["shape"][1])
            guess = FAMILY_NAMES.get(CROSS_ATTENTION_FAMILY.get(width, ""))
            made_for = f" (its cross-attention layers take {width}-wide text embeddings" + \
                (f": it looks made for {guess})" if guess else ")")
            break
    raise NodeInputError(
        "path", f"{path.name} does not fit this {family} model{made_for}: its layer {layer} changes a "
        f"{_shape(change)} weight, but the model's weight there is {_shape(shape)}. Nothing was "
        "applied; the model is unchanged",
        hint=f"Use a LoRA made for {family} checkpoints of this size, or a checkpoint of the "
             "family the LoRA was made for.")
