"""Export a diffusers SD 1.x folder as one original-layout (ldm) .safetensors checkpoint, plus the
config folder that single-file loading needs for an architecture nodeflow does not carry.

    python -m training.export_single_file [--src FOLDER] [--out FILE]

By default the shipped demo model ``models/checkpoints/nodeflow-shapes`` becomes
``models/checkpoints/nodeflow-shapes.safetensors`` and its sidecar
``models/checkpoints/nodeflow-shapes.config/`` (model_index.json and the component
configs and tokenizer files, no weights). Re-run it after retraining.

Weights are written exactly as the folder stores them (the demo UNet is fp16). The VAE and the
text encoder are stored as fp16 too when that is harmless: decoding the same latents through
the fp16-rounded VAE must change pixels by at most 1/255 at the 99th percentile; otherwise
both keep the dtype they have in the folder (``--dtype`` forces a choice). Both outputs are
written to temporary names and moved into place.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from .common import MODELS, atomic_dir, atomic_file

CHECKPOINTS = MODELS / "checkpoints"
DEFAULT_SRC = CHECKPOINTS / "nodeflow-shapes"
DEFAULT_OUT = CHECKPOINTS / "nodeflow-shapes.safetensors"

PIXEL_TOLERANCE = 1 / 255
"""How far the fp16-rounded VAE may move decoded pixels (0..1) at the 99th percentile."""

CONFIG_FILES = {
    ".": ("model_index.json",),
    "unet": ("config.json",),
    "vae": ("config.json",),
    "text_encoder": ("config.json",),
    "scheduler": ("scheduler_config.json",),
    "tokenizer": ("vocab.json", "merges.txt", "tokenizer_config.json", "special_tokens_map.json"),
}
"""The files of a diffusers SD 1.x folder that the sidecar config folder carries (when present)."""

WEIGHTS = {"unet": "unet/diffusion_pytorch_model.safetensors",
           "vae": "vae/diffusion_pytorch_model.safetensors",
           "text_encoder": "text_encoder/model.safetensors"}

# --------------------------------------------------------------------------- key conversion

_RESNET = [("norm1", "in_layers.0"), ("conv1", "in_layers.2"), ("time_emb_proj", "emb_layers.1"),
           ("norm2", "out_layers.0"), ("conv2", "out_layers.3"), ("conv_shortcut", "skip_connection")]
_VAE_ATTN = [("group_norm", "norm"), ("to_q", "q"), ("to_k", "k"), ("to_v", "v"),
             ("to_out.0", "proj_out")]


def _swap(key: str, pairs: list[tuple[str, str]]) -> str:
    for a, b in pairs:
        key = key.replace(f".{a}.", f".{b}.")
    return key


def unet_to_ldm(sd: dict[str, Any], config: Any) -> dict[str, Any]:
    """A diffusers UNet2DConditionModel state dict under the original layout's names (any number
    of levels and layers per block)."""
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


def controlnet_to_ldm(net: Any) -> dict[str, Any]:
    """A diffusers ControlNetModel's tensors under the original layout's names (no prefix):
    its UNet-like half as `unet_to_ldm` names it, plus the hint encoder (``input_hint_block``),
    the zero convolutions (``zero_convs``) and ``middle_block_out``."""
    sd = net.state_dict()
    blocks = len(net.controlnet_cond_embedding.blocks)
    out: dict[str, Any] = {}
    unet_like: dict[str, Any] = {}
    for key, tensor in sd.items():
        if key.startswith("controlnet_cond_embedding."):
            part, _, tail = key.removeprefix("controlnet_cond_embedding.").partition(".")
            if part == "blocks":
                index, _, tail = tail.partition(".")
                out[f"input_hint_block.{2 * (int(index) + 1)}.{tail}"] = tensor
            else:
                out[f"input_hint_block.{0 if part == 'conv_in' else 2 * (blocks + 1)}.{tail}"] = tensor
        elif key.startswith("controlnet_down_blocks."):
            index, _, tail = key.removeprefix("controlnet_down_blocks.").partition(".")
            out[f"zero_convs.{index}.0.{tail}"] = tensor
        elif key.startswith("controlnet_mid_block."):
            out["middle_block_out.0." + key.removeprefix("controlnet_mid_block.")] = tensor
        else:
            unet_like[key] = tensor
    # the up-block types only place upsamplers, which a ControlNet has none of
    config = {**net.config, "up_block_types": ["UpBlock2D"] * len(net.config["block_out_channels"])}
    for key, tensor in unet_to_ldm(unet_like, config).items():
        out[key.removeprefix("model.diffusion_model.")] = tensor
    return out


def vae_to_ldm(sd: dict[str, Any], config: Any) -> dict[str, Any]:
    """A diffusers AutoencoderKL state dict under the original layout's names."""
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


def text_encoder_to_ldm(sd: dict[str, Any]) -> dict[str, Any]:
    """A transformers CLIPTextModel state dict under the original SD 1.x layout's names."""
    out = {}
    for key, tensor in sd.items():
        key = key if key.startswith("text_model.") else "text_model." + key
        out["cond_stage_model.transformer." + key] = tensor
    return out


def open_clip_to_ldm(sd: dict[str, Any]) -> dict[str, Any]:
    """A transformers CLIPTextModelWithProjection state dict under open-clip's names (SD 2.x's
    ``cond_stage_model.model.*`` and SDXL's ``conditioner.embedders.1.model.*`` hold this text
    encoder so), without the prefix: q/k/v joined into ``in_proj``, the projection transposed."""
    import torch

    out: dict[str, Any] = {
        "positional_embedding": sd["text_model.embeddings.position_embedding.weight"],
        "token_embedding.weight": sd["text_model.embeddings.token_embedding.weight"],
        "ln_final.weight": sd["text_model.final_layer_norm.weight"],
        "ln_final.bias": sd["text_model.final_layer_norm.bias"],
        "text_projection": sd["text_projection.weight"].T.contiguous(),
    }
    names = [(".layer_norm1.", ".ln_1."), (".layer_norm2.", ".ln_2."), (".mlp.fc1.", ".mlp.c_fc."),
             (".mlp.fc2.", ".mlp.c_proj."), (".self_attn.out_proj.", ".attn.out_proj.")]
    layers = sorted({int(k.split(".")[3]) for k in sd if k.startswith("text_model.encoder.layers.")})
    for i in layers:
        src, dst = f"text_model.encoder.layers.{i}", f"transformer.resblocks.{i}"
        for part in ("weight", "bias"):
            out[f"{dst}.attn.in_proj_{part}"] = torch.cat(
                [sd[f"{src}.self_attn.{p}_proj.{part}"] for p in ("q", "k", "v")])
        for key, value in sd.items():
            rest = key[len(src):]
            if not key.startswith(src + ".") or (".self_attn." in rest and ".out_proj." not in rest):
                continue  # q, k and v went into in_proj above
            for a, b in names:
                rest = rest.replace(a, b)
            out[dst + rest] = value
    return out


def ldm_state_dict(folder: Path, half: Sequence[str] = ()) -> dict[str, Any]:
    """Every weight of the diffusers SD 1.x folder ``folder`` under original-layout names, in the
    dtype the folder stores it, except the parts named in ``half`` ("vae", "text_encoder"),
    which are rounded to fp16."""
    import torch
    from safetensors.torch import load_file

    def part(name: str) -> dict[str, Any]:
        sd = load_file(str(folder / WEIGHTS[name]))
        if name in half:
            sd = {k: v.to(torch.float16) if v.is_floating_point() else v for k, v in sd.items()}
        return sd

    unet_config = json.loads((folder / "unet" / "config.json").read_text())
    vae_config = json.loads((folder / "vae" / "config.json").read_text())
    state: dict[str, Any] = {}
    state.update(unet_to_ldm(part("unet"), unet_config))
    state.update(vae_to_ldm(part("vae"), vae_config))
    state.update(text_encoder_to_ldm(part("text_encoder")))
    return {k: v.contiguous() for k, v in state.items()}


# --------------------------------------------------------------------------- writing


def save_sd1_single_file(folder: Path, target: Path, half: Sequence[str] = (),
                         metadata: dict[str, str] | None = None) -> Path:
    """The diffusers SD 1.x folder ``folder`` as one original-layout .safetensors file."""
    from safetensors.torch import save_file

    state = ldm_state_dict(Path(folder), half)
    atomic_file(Path(target), lambda tmp: save_file(state, str(tmp), metadata=metadata))
    return Path(target)


def sidecar_path(target: Path) -> Path:
    """The config folder single-file loading looks for beside ``target``."""
    return target.parent / (target.stem + ".config")


def write_sidecar(folder: Path, target: Path) -> Path:
    """Copy the configs and tokenizer files of ``folder`` (no weights) to ``target``'s sidecar."""
    sidecar = sidecar_path(Path(target))

    def write(tmp: Path) -> None:
        for sub, names in CONFIG_FILES.items():
            for name in names:
                source = folder / sub / name
                if source.is_file():
                    (tmp / sub).mkdir(parents=True, exist_ok=True)
                    shutil.copyfile(source, tmp / sub / name)

    for required in ("model_index.json", "unet/config.json", "vae/config.json", "text_encoder/config.json"):
        if not (folder / required).is_file():
            raise FileNotFoundError(f"{folder} is not a diffusers SD 1.x folder: it has no {required}")
    atomic_dir(sidecar, write)
    return sidecar


# --------------------------------------------------------------------------- the fp16 check


def vae_fp16_error(folder: Path, n: int = 16, seed: int = 0) -> float:
    """The 99th percentile of |pixel change| (pixels in 0..1) when the same latents, the VAE's
    encodings of ``n`` renders of the demo world, are decoded by the VAE with its weights rounded
    to fp16 instead of as stored (computing in fp32 both times, as nodeflow does on the CPU)."""
    import numpy as np
    import torch
    from diffusers import AutoencoderKL

    from training import world

    vae = AutoencoderKL.from_pretrained(folder / "vae", torch_dtype=torch.float32,
                                        local_files_only=True).eval()
    rounded = AutoencoderKL.from_pretrained(folder / "vae", torch_dtype=torch.float32,
                                            local_files_only=True).eval()
    with torch.no_grad():
        for p in rounded.parameters():
            p.copy_(p.half().float())
        rng = np.random.default_rng(seed)
        pictures = np.stack([world.render_array(world.sample_scene(rng)) for _ in range(n)])
        x = torch.from_numpy(pictures).permute(0, 3, 1, 2).float() / 127.5 - 1
        latents = vae.encode(x).latent_dist.mean

        def pixels(model: Any) -> Any:
            return (model.decode(latents).sample / 2 + 0.5).clamp(0, 1)

        diff = (pixels(vae) - pixels(rounded)).abs().flatten()
    return float(torch.quantile(diff.double(), 0.99))


# --------------------------------------------------------------------------- the command


def export(src: Path = DEFAULT_SRC, out: Path = DEFAULT_OUT, dtype: str = "auto",
           log: Callable[[str], None] = print) -> tuple[Path, Path, list[str]]:
    """Write ``out`` and its sidecar config folder from the diffusers folder ``src``.

    ``dtype`` is the storage of the VAE and text encoder: "auto" (fp16 if the VAE check passes,
    else as stored), "fp16", or "stored". Returns the file, the sidecar and the parts halved.
    """
    src, out = Path(src), Path(out)
    if not (src / "model_index.json").is_file():
        raise FileNotFoundError(f"{src} is not a diffusers folder (no model_index.json)")
    half: list[str] = []
    if dtype == "auto":
        error = vae_fp16_error(src)
        ok = error <= PIXEL_TOLERANCE
        log(f"fp16-rounded VAE: 99th-percentile pixel change {error * 255:.3f}/255 "
            f"({'within' if ok else 'over'} 1/255): VAE and text encoder stored as "
            f"{'fp16' if ok else 'in the folder'}")
        half = ["vae", "text_encoder"] if ok else []
    elif dtype == "fp16":
        half = ["vae", "text_encoder"]
    sidecar = write_sidecar(src, out)
    # One metadata entry only: safetensors writes several in a random order, and the same
    # folder should always give the same bytes.
    save_sd1_single_file(src, out, half, {"format": "pt"})
    log(f"wrote {out} ({out.stat().st_size / 1e6:.2f} MB) and {sidecar}/ "
        f"({sum(f.stat().st_size for f in sidecar.rglob('*') if f.is_file()) / 1e3:.1f} kB)")
    return out, sidecar, half


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--src", type=Path, default=DEFAULT_SRC,
                        help="the diffusers SD 1.x folder (default: the shipped nodeflow-shapes)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT,
                        help="the .safetensors file to write; its config folder goes beside it "
                             "(default: nodeflow-shapes.safetensors beside the folder)")
    parser.add_argument("--dtype", choices=("auto", "fp16", "stored"), default="auto",
                        help="storage of the VAE and text encoder: fp16 if the VAE check passes "
                             "(auto), always fp16, or as the folder stores them")
    args = parser.parse_args(argv)
    if args.out.suffix != ".safetensors":
        parser.error(f"--out must be a .safetensors file, not {args.out}")
    import torch

    torch.set_num_threads(1)
    try:
        export(args.src, args.out, args.dtype)
    except (OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
