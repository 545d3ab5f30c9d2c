"""LyCORIS adapters (LoHa, LoKr, and LoCon files that mix them with plain LoRA layers), merged
into copies of the layers they change.

A LyCORIS file names each layer in kohya's style (``lora_unet_<module path with _>``,
``lora_te_`` / ``lora_te1_`` / ``lora_te2_`` for the text encoders; SDXL files use the
original UNet's block names, ``input_blocks_4_1_...``) and stores factors from which the
layer's weight change is built:

- LoHa: ``ΔW = (w1_a · w1_b) ⊙ (w2_a · w2_b) · alpha / rank`` (Tucker variants with ``t1``/``t2``),
- LoKr: ``ΔW = w1 ⊗ w2 · alpha / rank``, each factor stored whole or as a product of two;
  ``alpha / rank`` applies only when a factor is decomposed, as in LyCORIS itself,
- LoRA/LoCon: ``ΔW = up · down · alpha / rank``.

Each changed layer of the model the node receives is copied with ``W + strength · ΔW`` as its
weight; the other layers, and the model other branches use, are left as they are.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any

from nodeflow.api import NodeInputError

KINDS = {"hada_": "LoHa", "lokr_": "LoKr", "lora_down": "LoRA", "lora_up": "LoRA"}
UNSUPPORTED = {"lora_mid": "LoCon with a Tucker middle factor", "dora_scale": "DoRA",
               "oft_": "OFT", "diff": "full weight difference", "a1.weight": "GLoRA",
               "w_norm": "a norm adapter", "b_norm": "a norm adapter"}
PREFIXES = (("lora_unet_", "unet"), ("lora_te1_", "text_encoder"), ("lora_te2_", "text_encoder_2"),
            ("lora_te_", "text_encoder"))


def is_lycoris(keys: Iterable[str]) -> bool:
    """Does a LoRA file hold LyCORIS factors (LoHa or LoKr layers)?"""
    return any(".hada_" in k or ".lokr_" in k for k in keys)


def short_list(names: Iterable[str], limit: int = 3) -> str:
    """A few names and how many more: messages never list every key of a file."""
    names = list(names)
    shown = ", ".join(names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


@dataclass(frozen=True)
class Layer:
    """One adapted layer of a file: its stem (``lora_unet_...``), factors and alpha."""

    stem: str
    factors: dict[str, Any]
    alpha: float | None

    @property
    def kind(self) -> str:
        first = next(iter(self.factors))
        return next((name for marker, name in KINDS.items() if first.startswith(marker)), first)


def layers_of(tensors: Mapping[str, Any], file_name: str) -> list[Layer]:
    """The file's layers grouped by stem; a located error for factors nodeflow cannot merge."""
    groups: dict[str, dict[str, Any]] = {}
    alphas: dict[str, float] = {}
    unsupported: dict[str, list[str]] = {}
    for key, tensor in tensors.items():
        stem, _, factor = key.partition(".")
        if factor == "alpha":
            alphas[stem] = float(tensor.item())
            continue
        factor = factor.removesuffix(".weight")
        bad = next((name for marker, name in UNSUPPORTED.items() if factor.startswith(marker)), None)
        if bad is not None or not any(factor.startswith(m) for m in KINDS):
            unsupported.setdefault(bad or f"tensors named '{factor}'", []).append(key)
            continue
        groups.setdefault(stem, {})[factor] = tensor
    if unsupported:
        what = "; ".join(f"{kind} ({short_list(keys)})" for kind, keys in unsupported.items())
        raise NodeInputError("path", f"{file_name} holds adapter layers nodeflow cannot apply: {what}",
                             hint="nodeflow applies LoRA, LoCon, LoHa and LoKr layers.")
    return [Layer(stem, factors, alphas.get(stem)) for stem, factors in groups.items()]


def _scale(alpha: float | None, rank: int | None) -> float:
    return 1.0 if alpha is None or rank is None else alpha / rank


def _tucker(core: Any, a: Any, b: Any) -> Any:
    """Rebuild a convolution factor from its Tucker core: out × in × k × k."""
    import torch

    return torch.einsum("i j k l, j r, i p -> p r k l", core, b, a)


def delta_weight(layer: Layer, shape: tuple[int, ...]) -> Any:
    """The layer's weight change at strength 1, in float32, shaped like the weight it changes."""
    import torch

    f = {k: v.float() for k, v in layer.factors.items()}
    if "hada_w1_a" in f:
        rank = int(f["hada_w1_b"].shape[0])
        if "hada_t1" in f:
            w1 = _tucker(f["hada_t1"], f["hada_w1_a"], f["hada_w1_b"])
            w2 = _tucker(f["hada_t2"], f["hada_w2_a"], f["hada_w2_b"])
        else:
            w1 = f["hada_w1_a"] @ f["hada_w1_b"]
            w2 = f["hada_w2_a"] @ f["hada_w2_b"]
        delta = w1 * w2 * _scale(layer.alpha, rank)
    elif any(k.startswith("lokr_") for k in f):
        rank = None
        if "lokr_w1" in f:
            w1 = f["lokr_w1"]
        else:
            w1, rank = f["lokr_w1_a"] @ f["lokr_w1_b"], int(f["lokr_w1_b"].shape[0])
        if "lokr_w2" in f:
            w2 = f["lokr_w2"]
        elif "lokr_t2" in f:
            w2 = torch.einsum("i j k l, i p, j r -> p r k l", f["lokr_t2"], f["lokr_w2_a"], f["lokr_w2_b"])
            rank = int(f["lokr_w2_b"].shape[0])
        else:
            w2, rank = f["lokr_w2_a"] @ f["lokr_w2_b"], int(f["lokr_w2_b"].shape[0])
        if w2.dim() == 4 and w1.dim() == 2:
            w1 = w1[:, :, None, None]
        delta = torch.kron(w1, w2) * _scale(layer.alpha, rank)
    else:
        up, down = f["lora_up"], f["lora_down"]
        rank = int(down.shape[0])
        delta = (up.flatten(1) @ down.flatten(1)) * _scale(layer.alpha, rank)
    if delta.numel() != _numel(shape):
        raise ValueError(f"its factors make {tuple(delta.shape)}, the layer's weight is {shape}")
    return delta.reshape(shape)


def _numel(shape: tuple[int, ...]) -> int:
    n = 1
    for s in shape:
        n *= s
    return n


def _resnet_sgm(rest: list[str]) -> list[str]:
    names = {"norm1": ["in_layers", "0"], "conv1": ["in_layers", "2"], "time_emb_proj": ["emb_layers", "1"],
             "norm2": ["out_layers", "0"], "conv2": ["out_layers", "3"],
             "conv_shortcut": ["skip_connection"]}
    return names.get(rest[0], [rest[0]]) + rest[1:] if rest else rest


def sgm_name(name: str, config: Mapping[str, Any]) -> str | None:
    """The original (SGM/LDM) UNet's name of a diffusers UNet module, as SDXL LoRAs spell it."""
    per_level = config.get("layers_per_block", 2)
    n = (per_level if isinstance(per_level, int) else per_level[0]) + 1
    up_kinds = config.get("up_block_types") or ()
    parts = name.split(".")
    head, rest = parts[0], parts[1:]
    ends = {"conv_in": "input_blocks.0.0", "conv_norm_out": "out.0", "conv_out": "out.2"}
    if head in ends:
        return ".".join([ends[head], *rest])
    if head in ("time_embedding", "add_embedding") and rest:
        base = "time_embed" if head == "time_embedding" else "label_emb.0"
        index = {"linear_1": "0", "linear_2": "2"}.get(rest[0])
        return None if index is None else ".".join([base, index, *rest[1:]])
    if head == "down_blocks" and len(rest) >= 3:
        level, kind, j, inner = int(rest[0]), rest[1], int(rest[2]), rest[3:]
        if kind == "downsamplers":
            return ".".join([f"input_blocks.{(level + 1) * n}.0", *(["op"] + inner[1:] if inner else [])])
        block = 1 + level * n + j
        if kind == "resnets":
            return ".".join([f"input_blocks.{block}.0", *_resnet_sgm(inner)])
        return ".".join([f"input_blocks.{block}.1", *inner])
    if head == "mid_block" and len(rest) >= 3:
        kind, j, inner = rest[0], int(rest[1]), rest[2:]
        if kind == "resnets":
            return ".".join([f"middle_block.{2 * j}", *_resnet_sgm(inner)])
        return ".".join(["middle_block.1", *inner])
    if head == "up_blocks" and len(rest) >= 3:
        level, kind, j, inner = int(rest[0]), rest[1], int(rest[2]), rest[3:]
        if kind == "upsamplers":
            has_attention = level < len(up_kinds) and "CrossAttn" in up_kinds[level]
            return ".".join([f"output_blocks.{level * n + n - 1}.{2 if has_attention else 1}", *inner])
        block = level * n + j
        if kind == "resnets":
            return ".".join([f"output_blocks.{block}.0", *_resnet_sgm(inner)])
        return ".".join([f"output_blocks.{block}.1", *inner])
    return None


def layer_index(module: Any, unet_config: Mapping[str, Any] | None = None) -> dict[str, str]:
    """Kohya-style stem (module path with ``_``) → module path, for every weight layer; for a
    UNet also the original UNet's names."""
    index: dict[str, str] = {}
    for name, sub in module.named_modules():
        if "lora_" in name or ".base_layer" in name or not hasattr(sub, "weight"):
            continue
        index[name.replace(".", "_")] = name
        if unet_config is not None:
            sgm = sgm_name(name, unet_config)
            if sgm is not None:
                index.setdefault(sgm.replace(".", "_"), name)
    return index


def _patched(module: Any, changes: list[tuple[str, Layer]], strength: float, file_name: str) -> Any:
    """A shared copy of ``module`` whose named layers have ``W + strength · ΔW`` as weight."""
    import torch

    from nodeflow.nodes.diffusion.lora import shared_copy

    copy = shared_copy(module)
    subs: dict[str, Any] = dict(copy.named_modules())
    for path, layer in changes:
        target: Any = subs[path]
        target = getattr(target, "base_layer", target)  # a layer peft already wraps
        weight = target.weight
        try:
            delta = delta_weight(layer, tuple(weight.shape))
        except (ValueError, RuntimeError, KeyError) as exc:
            raise NodeInputError("path", f"{file_name}: the {layer.kind} layer {layer.stem} does not fit "
                                 f"this model ({exc})",
                                 hint="Use an adapter trained for the checkpoint's family.") from None
        with torch.no_grad():
            merged = weight.float() + strength * delta.to(weight.device)
        target.weight = torch.nn.Parameter(merged.to(weight.dtype), requires_grad=False)
    return copy


def apply_lycoris(model: Any, clip: Any, name: str, tensors: Mapping[str, Any], strength_model: float,
                  strength_clip: float) -> tuple[Any, Any]:
    """New model and clip values with a LyCORIS file's layers merged into copies."""
    from nodeflow.nodes.diffusion.types import FAMILY_NAMES

    modules: dict[str, Any] = {"unet": model.unet, "text_encoder": clip.text_encoder,
               "text_encoder_2": clip.text_encoder_2}
    indexes = {key: layer_index(m, model.unet.config if key == "unet" else None)
               for key, m in modules.items() if m is not None}
    changes: dict[str, list[tuple[str, Layer]]] = {}
    unmatched = []
    for layer in layers_of(tensors, name):
        owner, stem = next(((o, layer.stem[len(p):]) for p, o in PREFIXES if layer.stem.startswith(p)),
                           (None, layer.stem))
        path = indexes.get(owner or "", {}).get(stem)
        if path is None:
            unmatched.append(layer.stem)
            continue
        changes.setdefault(owner or "", []).append((path, layer))
    if unmatched:
        family = FAMILY_NAMES.get(model.family, model.family)
        raise NodeInputError("path", f"{len(unmatched)} layers of {name} match no layer of this {family} "
                             f"model: {short_list(unmatched)}",
                             hint="Use an adapter trained for the checkpoint's family.")
    unet = model.unet
    if "unet" in changes and strength_model != 0:
        unet = _patched(model.unet, changes["unet"], strength_model, name)
    encoders = {}
    for attr in ("text_encoder", "text_encoder_2"):
        if attr in changes and strength_clip != 0:
            encoders[attr] = _patched(modules[attr], changes[attr], strength_clip, name)
    return replace(model, unet=unet, loras=(*model.loras, name)), replace(clip, **encoders)
