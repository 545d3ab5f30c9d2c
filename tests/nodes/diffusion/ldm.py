"""Write a diffusers-format SD 1.x model as one .safetensors file in the original (ldm) layout,
for testing single-file loading. Handles any number of levels and layers per block."""

from __future__ import annotations

from pathlib import Path
from typing import Any

_RESNET = [("norm1", "in_layers.0"), ("conv1", "in_layers.2"), ("time_emb_proj", "emb_layers.1"),
           ("norm2", "out_layers.0"), ("conv2", "out_layers.3"), ("conv_shortcut", "skip_connection")]
_VAE_ATTN = [("group_norm", "norm"), ("to_q", "q"), ("to_k", "k"), ("to_v", "v"),
             ("to_out.0", "proj_out")]


def _swap(key: str, pairs: list[tuple[str, str]]) -> str:
    for a, b in pairs:
        key = key.replace(f".{a}.", f".{b}.")
    return key


def unet_to_ldm(sd: dict[str, Any], config: Any) -> dict[str, Any]:
    layers = config["layers_per_block"]
    n = len(config["block_out_channels"])
    up_has_attn = ["CrossAttn" in t for t in config["up_block_types"]]
    prefix = []
    for i in range(n):
        for j in range(layers):
            prefix.append((f"down_blocks.{i}.resnets.{j}.", f"input_blocks.{(layers + 1) * i + j + 1}.0."))
            prefix.append((f"down_blocks.{i}.attentions.{j}.", f"input_blocks.{(layers + 1) * i + j + 1}.1."))
        if i < n - 1:
            prefix.append((f"down_blocks.{i}.downsamplers.0.conv.", f"input_blocks.{(layers + 1) * (i + 1)}.0.op."))
        for j in range(layers + 1):
            prefix.append((f"up_blocks.{i}.resnets.{j}.", f"output_blocks.{(layers + 1) * i + j}.0."))
            prefix.append((f"up_blocks.{i}.attentions.{j}.", f"output_blocks.{(layers + 1) * i + j}.1."))
        if i < n - 1:
            slot = 2 if up_has_attn[i] else 1
            prefix.append((f"up_blocks.{i}.upsamplers.0.", f"output_blocks.{(layers + 1) * i + layers}.{slot}."))
    prefix += [("mid_block.attentions.0.", "middle_block.1."), ("mid_block.resnets.0.", "middle_block.0."),
               ("mid_block.resnets.1.", "middle_block.2."), ("time_embedding.linear_1.", "time_embed.0."),
               ("time_embedding.linear_2.", "time_embed.2."), ("conv_in.", "input_blocks.0.0."),
               ("conv_norm_out.", "out.0."), ("conv_out.", "out.2."),
               ("add_embedding.linear_1.", "label_emb.0.0."), ("add_embedding.linear_2.", "label_emb.0.2.")]
    out = {}
    for key, tensor in sd.items():
        new = key
        for a, b in prefix:
            if key.startswith(a):
                new = b + key[len(a):]
                if ".resnets." in key:
                    new = _swap("." + new, _RESNET)[1:]
                break
        out["model.diffusion_model." + new] = tensor
    return out


def vae_to_ldm(sd: dict[str, Any], config: Any) -> dict[str, Any]:
    n = len(config["block_out_channels"])
    out = {}
    for key, tensor in sd.items():
        new = key
        for i in range(n):
            new = new.replace(f"encoder.down_blocks.{i}.resnets.", f"encoder.down.{i}.block.")
            new = new.replace(f"encoder.down_blocks.{i}.downsamplers.0.", f"encoder.down.{i}.downsample.")
            new = new.replace(f"decoder.up_blocks.{i}.resnets.", f"decoder.up.{n - 1 - i}.block.")
            new = new.replace(f"decoder.up_blocks.{i}.upsamplers.0.", f"decoder.up.{n - 1 - i}.upsample.")
        for j in range(2):
            new = new.replace(f"mid_block.resnets.{j}.", f"mid.block_{j + 1}.")
        new = new.replace("mid_block.attentions.0.", "mid.attn_1.")
        new = new.replace("conv_norm_out.", "norm_out.").replace("conv_shortcut.", "nin_shortcut.")
        if "mid.attn_1." in new:
            new = _swap("." + new, _VAE_ATTN)[1:]
            if tensor.ndim == 2:
                tensor = tensor.reshape(*tensor.shape, 1, 1)
        out["first_stage_model." + new] = tensor
    return out


def save_sd1_single_file(folder: Path, target: Path) -> Path:
    """The diffusers SD 1.x folder ``folder`` as one original-layout .safetensors file."""
    import json

    from safetensors.torch import load_file, save_file

    unet_config = json.loads((folder / "unet" / "config.json").read_text())
    vae_config = json.loads((folder / "vae" / "config.json").read_text())
    state = {}
    state.update(unet_to_ldm(load_file(str(folder / "unet" / "diffusion_pytorch_model.safetensors")),
                             unet_config))
    state.update(vae_to_ldm(load_file(str(folder / "vae" / "diffusion_pytorch_model.safetensors")),
                            vae_config))
    for key, tensor in load_file(str(folder / "text_encoder" / "model.safetensors")).items():
        key = key if key.startswith("text_model.") else "text_model." + key
        state["cond_stage_model.transformer." + key] = tensor
    save_file({k: v.contiguous() for k, v in state.items()}, str(target))
    return target
