"""Plan-time memory estimates of the flow pack: model bytes from file headers, activations
from the image size.

Sampler activations: about ``ACTIVATION_FACTOR`` bytes per image token × model width ×
bytes per number × images in the (guided) batch, plus the text tokens. Flux dev at
1024×1024 in bf16 (4096 image + 512 text tokens, width 3072): about 1.4 GB; SD3.5 large
(width 2432, guided): about 2.2 GB.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from nodeflow.api import MemoryEstimate, ValueEstimate
from nodeflow.nodes.flow.sample import ACTIVATION_FACTOR, token_count


def sampler_estimate(values: Mapping[str, Any], upstream: Mapping[str, ValueEstimate]) -> MemoryEstimate | None:
    model = upstream.get("model")
    if model is None:
        return None
    positive = upstream.get("positive")
    controlnets = dict(positive.models) if positive is not None else {}
    models = {**model.models, **controlnets}
    resident = model.info.get("resident")
    if isinstance(resident, dict):  # offloaded by blocks: only part of the transformer at once
        models = {**resident, **controlnets}
    latent = upstream.get("latent")
    dims = latent.dims() if latent is not None else None
    if dims is None:
        return MemoryEstimate(models)
    width, height, batch = dims
    cfg = values.get("cfg")
    guided = "negative" in upstream and (not isinstance(cfg, int | float) or cfg > 1.0)
    text = int(model.info.get("text_tokens", 512))
    tokens = (token_count(width, height) + text) * batch * (2 if guided else 1)
    activations = (ACTIVATION_FACTOR * int(model.info.get("channels", 3072)) * tokens
                   * int(model.info.get("itemsize", 2)))
    activations += activations * len(controlnets) // 2
    return MemoryEstimate(models, activations,
                          outputs={"latent": ValueEstimate(info={"width": width, "height": height,
                                                                 "batch": batch})},
                          note=f"{width}×{height}, batch {batch}{' with guidance' if guided else ''}")


_HIDDEN_KEYS = ("x_embedder.weight", "img_in.weight", "pos_embed.proj.weight", "x_embedder.proj.weight")
TEXT_TOKENS = {"sd3": 77 + 256, "flux": 512}


def tensor_sizes(path: Any, dtype: str, weight_dtype: str = "default", prefix: str = "") -> dict[str, int] | None:
    """Bytes each tensor of a safetensors file (under ``prefix``) takes once loaded."""
    import math

    from nodeflow.api import safetensors_header, tensor_bytes

    try:
        header = safetensors_header(path)
    except (OSError, ValueError):
        return None
    # fp8 storage: one byte per number of the blocks' matrices (see loaders.WEIGHT_DTYPES)
    return {k: math.prod(int(n) for n in e.get("shape", ())) if weight_dtype != "default" and _fp8(k, e)
            else tensor_bytes(e, dtype) for k, e in header.items() if k.startswith(prefix)}


def header_bytes(path: Any, dtype: str, weight_dtype: str = "default", prefix: str = "") -> int | None:
    """Bytes the tensors of a safetensors file (under ``prefix``) take once loaded."""
    sizes = tensor_sizes(path, dtype, weight_dtype, prefix)
    return sum(sizes.values()) if sizes is not None else None


_BLOCK = re.compile(r"(?:^|\.)((?:single_)?transformer_blocks|joint_blocks|double_blocks|single_blocks)\.(\d+)\.")


def block_split(sizes: Mapping[str, int]) -> tuple[int, int]:
    """(bytes outside the transformer blocks, bytes of the largest block)."""
    blocks: dict[tuple[str, str], int] = {}
    rest = 0
    for key, size in sizes.items():
        m = _BLOCK.search(key)
        if m:
            blocks[(m.group(1), m.group(2))] = blocks.get((m.group(1), m.group(2)), 0) + size
        else:
            rest += size
    return rest, max(blocks.values(), default=0)


def _fp8(key: str, entry: Mapping[str, Any]) -> bool:
    return len(entry.get("shape", ())) == 2 and "blocks." in key and "norm" not in key


def _family_and_width(keys: Mapping[str, Any], prefix: str = "") -> tuple[str, int]:
    family = "flux" if any("double_blocks." in k or "single_transformer_blocks." in k for k in keys) \
        else "sd3"
    for name in _HIDDEN_KEYS:
        entry = keys.get(prefix + name)
        if entry is not None:
            return family, int(entry["shape"][0])
    return family, 3072


def transformer_estimate(found: Any, dtype: str, weight_dtype: str = "default") -> ValueEstimate | None:
    """What a loaded transformer weighs and the facts the sampler's estimate needs."""
    from pathlib import Path

    from nodeflow.api import DTYPE_BYTES, safetensors_header
    from nodeflow.nodes.flow.files import BUNDLE_PREFIXES, read_json

    path = Path(found)
    if path.is_dir():
        sub = path / "transformer" if (path / "transformer").is_dir() else path
        shards = sorted(sub.glob("*.safetensors"))
        if not shards:
            return None
        sizes: dict[str, int] = {}
        for shard in shards:
            sizes.update(tensor_sizes(shard, dtype, weight_dtype) or {})
        config = read_json(sub / "config.json")
        family = "flux" if "Flux" in str(config.get("_class_name", "")) else "sd3"
        width = int(config.get("num_attention_heads", 24)) * int(config.get("attention_head_dim", 128))
    else:
        try:
            header = safetensors_header(path)
        except (OSError, ValueError):
            return None
        prefix = BUNDLE_PREFIXES["transformer"] if any(k.startswith(BUNDLE_PREFIXES["transformer"])
                                                       for k in header) else ""
        sizes = tensor_sizes(path, dtype, weight_dtype, prefix) or {}
        family, width = _family_and_width(header, prefix)
    rest, largest = block_split(sizes)
    return ValueEstimate({f"{path.name}:transformer": sum(sizes.values())},
                         {"channels": width, "itemsize": DTYPE_BYTES[dtype], "family": family,
                          "text_tokens": TEXT_TOKENS[family], "latent_scale": 8,
                          "resident_bytes": rest, "block_bytes": largest})


def offloaded(model: ValueEstimate) -> ValueEstimate:
    """A transformer's estimate with block offload: resident are its parts outside the blocks and
    two blocks (the one running and the one the manager brings in next)."""
    rest, block = model.info.get("resident_bytes"), model.info.get("block_bytes")
    if not isinstance(rest, int) or not isinstance(block, int) or len(model.models) != 1:
        return model
    name = next(iter(model.models))
    return ValueEstimate(dict(model.models), {**model.info, "resident": {name: rest + 2 * block}})


def vae_estimate(found: Any, dtype: str) -> ValueEstimate | None:
    from pathlib import Path

    from nodeflow.api import DTYPE_BYTES, estimate_file_bytes

    path = Path(found)
    try:
        if path.is_dir():
            sub = path / "vae" if (path / "vae").is_dir() else path
            size = estimate_file_bytes(sub, dtype)
        else:
            size = header_bytes(path, dtype, prefix=_vae_prefix(path)) or 0
    except (OSError, ValueError):
        return None
    return ValueEstimate({f"{path.name}:vae": size},
                         {"channels": 128, "tile": 512, "scale": 8, "itemsize": DTYPE_BYTES[dtype]})


def _vae_prefix(path: Any) -> str:
    """The VAE's prefix in a bundled checkpoint, '' for a VAE file."""
    from nodeflow.api import safetensors_header
    from nodeflow.nodes.flow.files import bundle_vae_prefix

    try:
        return bundle_vae_prefix(safetensors_header(path))
    except (OSError, ValueError):
        return ""


def checkpoint_estimate(found: Any, dtype: str, vae_dtype: str) -> MemoryEstimate | None:
    """The transformer, text encoders and VAE of a diffusers folder or an SD3/Flux bundle."""
    from pathlib import Path

    from nodeflow.api import estimate_file_bytes

    path = Path(found)
    model = transformer_estimate(path, dtype)
    vae = vae_estimate(path, vae_dtype)
    if model is None or vae is None:
        return None
    clip: dict[str, int] = {}
    try:
        if path.is_dir():
            for sub in sorted(path.glob("text_encoder*")):
                if sub.is_dir():
                    clip[f"{path.name}:{sub.name}"] = estimate_file_bytes(sub, dtype)
        else:
            for role in ("clip_l", "clip_g", "t5xxl"):
                size = header_bytes(path, dtype, prefix=f"text_encoders.{role}.")
                if size:
                    clip[f"{path.name}:{role}"] = size
    except (OSError, ValueError):
        return None
    models = {**model.models, **clip, **vae.models}
    return MemoryEstimate(models, outputs={"model": model, "clip": ValueEstimate(clip), "vae": vae})
