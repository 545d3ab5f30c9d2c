"""SD3 and Flux ControlNets kept as one .safetensors file (what ComfyUI users download into
models/controlnet): told apart by their tensor names, configured from their tensor shapes.

Diffusers' layout (InstantX's and Stability's SD3/SD3.5 ControlNets, InstantX's and Shakker's
Flux ControlNets, the union ones included) loads offline: every configuration number is read
from a tensor's shape, except three the shapes cannot tell, which follow the released models:
SD3 attention heads are 64 wide unless the file has qk-norm weights (whose length is the head
width); SD3 ControlNets without a text embedder (SD3.5's) do not zero the pooled prompt, the
others do; Flux's rotary split is 1/8 + the rest halved, as in ``files.flux_config``. Layouts
diffusers has no converter for (XLabs' Flux ControlNets, Stability's original SD3.5 files) are
refused with a message naming them.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from nodeflow.api import ModelError, safetensors_header
from nodeflow.nodes.flow.files import HEAD_DIM, flux_config, read_tensors


def _count(keys: Iterable[str], pattern: str) -> int:
    found = {int(m.group(1)) for k in keys if (m := re.match(pattern, k))}
    return max(found) + 1 if found else 0


def controlnet_file_family(path: Path) -> str:
    """'sd3' or 'flux' for a diffusers-layout ControlNet file; a ModelError saying what the file is
    otherwise."""
    try:
        keys = list(safetensors_header(path))
    except (OSError, ValueError) as exc:
        raise ModelError(f"{path} is not a readable safetensors file ({exc})") from None
    return keys_family(keys, path.name)


def keys_family(keys: list[str], name: str) -> str:
    has = set(keys)
    if "controlnet_x_embedder.weight" in has and any(k.startswith("controlnet_blocks.") for k in has):
        return "flux"
    if "pos_embed_input.proj.weight" in has and any(k.startswith("controlnet_blocks.") for k in has):
        return "sd3"
    if any(k.startswith("double_blocks.") for k in has) and any(k.startswith("controlnet_blocks.") for k in has):
        raise ModelError(f"{name} is a Flux ControlNet in XLabs' layout, which nodeflow does not convert yet",
                         hint="Use the diffusers-layout release of this ControlNet (a folder with config.json, "
                              "or its diffusion_pytorch_model.safetensors).")
    if any(k.startswith(("joint_blocks.", "model.diffusion_model.joint_blocks.")) for k in has) or \
            any(k.startswith("transformer_blocks.") and ".adaLN_modulation." in k for k in has):
        raise ModelError(f"{name} is an SD3 ControlNet in Stability's original layout, which nodeflow does "
                         "not convert yet",
                         hint="Use the diffusers-layout release of this ControlNet (diffusion_pytorch_model"
                              ".safetensors with its config.json).")
    if any(k.startswith(("input_blocks.", "control_model.", "controlnet_down_blocks.", "zero_convs."))
           for k in has):
        raise ModelError(f"{name} is an SD 1.x/2.x/SDXL ControlNet, not an SD3 or Flux one",
                         hint="Load it with diffusion.LoadControlNet.")
    sample = ", ".join(sorted(keys)[:4])
    raise ModelError(f"{name} is not an SD3 or Flux ControlNet layout nodeflow knows (its first tensors: "
                     f"{sample or 'none'})",
                     hint="Expected the diffusers layout: controlnet_blocks.* with pos_embed_input (SD3) or "
                          "controlnet_x_embedder (Flux).")


def sd3_controlnet_config(sd: Mapping[str, Any]) -> dict[str, Any]:
    """An SD3ControlNetModel config from a diffusers-layout state dict."""
    hint = sd["pos_embed_input.proj.weight"]
    hidden, hint_channels, patch = int(hint.shape[0]), int(hint.shape[1]), int(hint.shape[2])
    use_pos_embed = "pos_embed.proj.weight" in sd
    in_channels = int(sd["pos_embed.proj.weight"].shape[1]) if use_pos_embed else 16
    norm_q = sd.get("transformer_blocks.0.attn.norm_q.weight")
    head_dim = int(norm_q.shape[0]) if norm_q is not None else HEAD_DIM
    context = sd.get("context_embedder.weight")
    config: dict[str, Any] = {
        "patch_size": patch, "in_channels": in_channels, "out_channels": in_channels,
        "num_layers": _count(sd, r"transformer_blocks\.(\d+)\."),
        "attention_head_dim": head_dim, "num_attention_heads": hidden // head_dim,
        "joint_attention_dim": int(context.shape[1]) if context is not None else None,
        "caption_projection_dim": int(context.shape[0]) if context is not None else hidden,
        "pooled_projection_dim": int(sd["time_text_embed.text_embedder.linear_1.weight"].shape[1]),
        "extra_conditioning_channels": hint_channels - in_channels,
        "dual_attention_layers": tuple(sorted({int(m.group(1)) for k in sd
                                               if (m := re.match(r"transformer_blocks\.(\d+)\.attn2\.", k))})),
        "qk_norm": "rms_norm" if norm_q is not None else None,
        "use_pos_embed": use_pos_embed, "pos_embed_type": "sincos" if use_pos_embed else None,
        "force_zeros_for_pooled_projection": context is not None,
    }
    pos = sd.get("pos_embed.pos_embed")
    if pos is not None:
        config["pos_embed_max_size"] = int(math.isqrt(int(pos.shape[1])))
    return config


def flux_controlnet_config(sd: Mapping[str, Any]) -> dict[str, Any]:
    """A FluxControlNetModel config from a diffusers-layout state dict."""
    config = {k: v for k, v in flux_config(sd).items() if k != "out_channels"}
    mode = sd.get("controlnet_mode_embedder.weight")
    config["num_mode"] = int(mode.shape[0]) if mode is not None else None
    hint = sd.get("input_hint_block.conv_in.weight")
    config["conditioning_embedding_channels"] = int(hint.shape[1]) if hint is not None else None
    return config


def load_controlnet_file(path: Path, dtype: Any = None) -> tuple[Any, str]:
    """The ControlNet in a diffusers-layout single file, and its family."""
    import torch
    from diffusers import FluxControlNetModel, SD3ControlNetModel

    family = controlnet_file_family(path)
    sd = read_tensors(path)
    try:
        if family == "sd3":
            net: Any = SD3ControlNetModel.from_config(sd3_controlnet_config(sd))
        else:
            net = FluxControlNetModel.from_config(flux_controlnet_config(sd))
    except (KeyError, IndexError, ValueError, ZeroDivisionError) as exc:
        raise ModelError(f"{path.name} looks like a {family.upper()} ControlNet, but its tensors do not "
                         f"describe one ({type(exc).__name__}: {exc})") from None
    missing, unexpected = net.load_state_dict(sd, strict=False)
    # diffusers keeps a fixed positional table on SD3 models: a file may or may not carry it
    missing = [k for k in missing if k != "pos_embed.pos_embed"]
    if missing or unexpected:
        names = [*missing[:3], *unexpected[:3]]
        raise ModelError(f"{path.name} does not match the {family.upper()} ControlNet its shapes describe: "
                         f"{len(missing)} tensors missing, {len(unexpected)} unexpected (e.g. "
                         f"{', '.join(names)})", hint="Check that the file is complete.")
    net = net.eval().requires_grad_(False)
    if dtype is not None:
        net = net.to(dtype)
    else:
        net = net.to(torch.float32)
    return net, family
