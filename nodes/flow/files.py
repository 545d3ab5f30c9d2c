"""Reading the split files SD3.x and Flux users have, and building models from them offline.

A file's layout is told from its tensor names (the safetensors header), never from its
file name: an original-layout MMDiT (``joint_blocks.*``, SD3.x) or Flux transformer
(``double_blocks.*``), the same in diffusers' layout, CLIP and T5 text encoders in
transformers' layout, an original-layout autoencoder (``encoder.down.*``), or a checkpoint
bundling all of them under ``model.diffusion_model.``, ``text_encoders.{clip_l,clip_g,t5xxl}.
transformer.`` and the VAE's prefix: ``first_stage_model.`` in SD3.5's, ``vae.`` in Flux's
all-in-one files (ComfyUI's prefixes for the two families). Anything else is a clear error
saying what was found.

No hub is reachable, so configurations are inferred from tensor shapes. The few numbers
shapes cannot tell follow the released models: 64-wide attention heads in CLIP, T5 and
SD3 models without query/key norms, and GroupNorm of 32 groups in autoencoders.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nodeflow.api import ModelError, safetensors_header

HEAD_DIM = 64
"""Attention head width of the released CLIP, T5 and SD3 (no qk-norm) models."""

VAE_FACTORS = {"sd3": {"scaling_factor": 1.5305, "shift_factor": 0.0609},
               "flux": {"scaling_factor": 0.3611, "shift_factor": 0.1159}}
"""Latent scaling of the 16-channel autoencoders; their weights alone do not tell them apart."""

SCHEDULER_DEFAULTS: dict[str, dict[str, Any]] = {
    "sd3": {"_class_name": "FlowMatchEulerDiscreteScheduler", "num_train_timesteps": 1000, "shift": 3.0},
    "flux": {"_class_name": "FlowMatchEulerDiscreteScheduler", "num_train_timesteps": 1000, "shift": 3.0,
             "use_dynamic_shifting": True, "base_shift": 0.5, "max_shift": 1.15,
             "base_image_seq_len": 256, "max_image_seq_len": 4096},
    "flux-schnell": {"_class_name": "FlowMatchEulerDiscreteScheduler", "num_train_timesteps": 1000,
                     "shift": 1.0, "use_dynamic_shifting": False},
}
"""Scheduler settings of the released models, for split files that carry none."""

BUNDLE_PREFIXES = {"transformer": "model.diffusion_model.", "vae": "first_stage_model.",
                   "clip_l": "text_encoders.clip_l.transformer.",
                   "clip_g": "text_encoders.clip_g.transformer.",
                   "t5": "text_encoders.t5xxl.transformer."}
"""Where each part sits in a checkpoint that bundles everything (the VAE: SD3.x's prefix)."""
BUNDLE_VAE_PREFIXES = {"sd3": "first_stage_model.", "flux": "vae."}
"""The VAE's prefix in each family's bundled checkpoints."""


@dataclass(frozen=True)
class Layout:
    """What a weights file holds, from its tensor names."""

    kind: str
    """'sd3', 'flux' (transformers), 'clip', 't5', 'vae' or 'bundle'."""
    original: bool = True
    """Original (Stability / Black Forest Labs) layout rather than diffusers'."""
    prefix: str = ""
    family: str = ""
    """For a bundle: 'sd3' or 'flux'."""


def _strip(keys: Iterable[str], prefix: str) -> list[str]:
    return [k[len(prefix):] for k in keys if k.startswith(prefix)]


def detect(keys: Iterable[str], name: str) -> Layout:
    """The layout of a file with these tensor names, or a ModelError naming the file."""
    keys = list(keys)
    for family, blocks in (("sd3", "joint_blocks."), ("flux", "double_blocks.")):
        if any(k.startswith(BUNDLE_PREFIXES["transformer"] + blocks) for k in keys) and \
                any(k.startswith(("text_encoders.", BUNDLE_VAE_PREFIXES[family])) for k in keys):
            return Layout("bundle", True, family=family)
    for prefix in ("model.diffusion_model.", ""):
        body = _strip(keys, prefix)
        if any(k.startswith("joint_blocks.") for k in body):
            return Layout("sd3", True, prefix)
        if any(k.startswith("double_blocks.") for k in body):
            return Layout("flux", True, prefix)
    if any(k.startswith("single_transformer_blocks.") for k in keys):
        return Layout("flux", False)
    if any(k.startswith("transformer_blocks.") for k in keys) and "pos_embed.proj.weight" in keys:
        return Layout("sd3", False)
    for prefix in ("", "transformer."):
        if prefix + "text_model.embeddings.token_embedding.weight" in keys or \
                prefix + "embeddings.token_embedding.weight" in keys:
            return Layout("clip", False, prefix)
    if any(re.match(r"(transformer\.)?encoder\.block\.\d+\.layer\.", k) for k in keys):
        return Layout("t5", False, "transformer." if keys and all(k.startswith("transformer.")
                                                                  for k in keys) else "")
    for prefix in ("first_stage_model.", "vae.", ""):
        if any(k.startswith(prefix + "encoder.down.") for k in keys) and \
                any(k.startswith(prefix + "decoder.up.") for k in keys):
            return Layout("vae", True, prefix)
    if any(k.startswith("encoder.down_blocks.") for k in keys):
        return Layout("vae", False)
    if any(k.startswith("input_blocks.") or k.startswith("model.diffusion_model.input_blocks.")
           for k in keys):
        raise ModelError(f"{name} is a Stable Diffusion 1.x/2.x/SDXL UNet, not an SD3 or Flux model",
                         hint="Load it with diffusion.LoadCheckpoint.")
    sample = ", ".join(sorted(keys)[:4])
    raise ModelError(f"{name} is not a layout nodeflow knows for SD3 or Flux (its first tensors: "
                     f"{sample or 'none'})",
                     hint="Expected an SD3.x/Flux diffusion model, a CLIP-L/CLIP-G/T5 text encoder, a "
                          "16-channel VAE (ae.safetensors) or an SD3.5 or Flux checkpoint that bundles them.")


def bundle_vae_prefix(keys: Iterable[str]) -> str:
    """The VAE's prefix in a bundled checkpoint with these tensor names ('' if it is none)."""
    keys = list(keys)
    try:
        layout = detect(keys, "")
    except ModelError:
        return ""
    return BUNDLE_VAE_PREFIXES[layout.family] if layout.kind == "bundle" else ""


def file_layout(path: Path) -> Layout:
    """The layout of a .safetensors file, from its header alone."""
    try:
        header = safetensors_header(path)
    except (OSError, ValueError) as exc:
        raise ModelError(f"{path} is not a readable safetensors file ({exc})") from None
    return detect(header, path.name)


def read_tensors(path: Path, prefix: str = "") -> dict[str, Any]:
    """The tensors of a safetensors file under ``prefix`` (prefix removed), on the CPU."""
    from safetensors import safe_open

    out = {}
    with safe_open(str(path), framework="pt", device="cpu") as fh:
        for key in fh.keys():  # noqa: SIM118 - safe_open is not a mapping
            if key.startswith(prefix):
                out[key[len(prefix):]] = fh.get_tensor(key)
    return out


def _count(keys: Iterable[str], pattern: str) -> int:
    found = {int(m.group(1)) for k in keys if (m := re.match(pattern, k))}
    return max(found) + 1 if found else 0


# --- transformers -----------------------------------------------------------------------------

def sd3_config(sd: Mapping[str, Any]) -> dict[str, Any]:
    """An SD3Transformer2DModel config from a diffusers-layout state dict."""
    proj = sd["pos_embed.proj.weight"]
    hidden, in_channels, patch = int(proj.shape[0]), int(proj.shape[1]), int(proj.shape[2])
    norm_q = sd.get("transformer_blocks.0.attn.norm_q.weight")
    head_dim = int(norm_q.shape[0]) if norm_q is not None else HEAD_DIM
    layers = _count(sd, r"transformer_blocks\.(\d+)\.")
    out = int(sd["proj_out.weight"].shape[0]) // (patch * patch)
    config: dict[str, Any] = {
        "sample_size": 128, "patch_size": patch, "in_channels": in_channels, "num_layers": layers,
        "attention_head_dim": head_dim, "num_attention_heads": hidden // head_dim,
        "joint_attention_dim": int(sd["context_embedder.weight"].shape[1]),
        "caption_projection_dim": int(sd["context_embedder.weight"].shape[0]),
        "pooled_projection_dim": int(sd["time_text_embed.text_embedder.linear_1.weight"].shape[1]),
        "out_channels": out,
        "dual_attention_layers": tuple(sorted({int(m.group(1)) for k in sd
                                               if (m := re.match(r"transformer_blocks\.(\d+)\.attn2\.", k))})),
        "qk_norm": "rms_norm" if norm_q is not None else None,
    }
    pos = sd.get("pos_embed.pos_embed")
    if pos is not None:
        config["pos_embed_max_size"] = int(math.isqrt(int(pos.shape[1])))
    return config


def flux_config(sd: Mapping[str, Any]) -> dict[str, Any]:
    """A FluxTransformer2DModel config from a diffusers-layout state dict."""
    hidden, in_channels = (int(n) for n in sd["x_embedder.weight"].shape)
    head_dim = int(sd["transformer_blocks.0.attn.norm_q.weight"].shape[0])
    first = head_dim // 8  # the released models split 128 as 16 + 56 + 56 between the rope axes
    rest = (head_dim - first) // 2
    return {
        "patch_size": 1, "in_channels": in_channels, "out_channels": None,
        "num_layers": _count(sd, r"transformer_blocks\.(\d+)\."),
        "num_single_layers": _count(sd, r"single_transformer_blocks\.(\d+)\."),
        "attention_head_dim": head_dim, "num_attention_heads": hidden // head_dim,
        "joint_attention_dim": int(sd["context_embedder.weight"].shape[1]),
        "pooled_projection_dim": int(sd["time_text_embed.text_embedder.linear_1.weight"].shape[1]),
        "guidance_embeds": any(k.startswith("time_text_embed.guidance_embedder.") for k in sd),
        "axes_dims_rope": (first, rest, head_dim - first - rest),
    }


def _swap_halves(t: Any) -> Any:
    """Original final norms are (shift, scale); diffusers' are (scale, shift)."""
    import torch

    a, b = t.chunk(2, dim=0)
    return torch.cat([b, a], dim=0)


_FLUX_DOUBLE = {
    "img_mod.lin": "norm1.linear", "txt_mod.lin": "norm1_context.linear",
    "img_attn.proj": "attn.to_out.0", "txt_attn.proj": "attn.to_add_out",
    "img_mlp.0": "ff.net.0.proj", "img_mlp.2": "ff.net.2",
    "txt_mlp.0": "ff_context.net.0.proj", "txt_mlp.2": "ff_context.net.2",
}
_FLUX_NORMS = {"img_attn.norm.query_norm.scale": "attn.norm_q.weight",
               "img_attn.norm.key_norm.scale": "attn.norm_k.weight",
               "txt_attn.norm.query_norm.scale": "attn.norm_added_q.weight",
               "txt_attn.norm.key_norm.scale": "attn.norm_added_k.weight"}
_FLUX_TOP = {"time_in.in_layer": "time_text_embed.timestep_embedder.linear_1",
             "time_in.out_layer": "time_text_embed.timestep_embedder.linear_2",
             "vector_in.in_layer": "time_text_embed.text_embedder.linear_1",
             "vector_in.out_layer": "time_text_embed.text_embedder.linear_2",
             "guidance_in.in_layer": "time_text_embed.guidance_embedder.linear_1",
             "guidance_in.out_layer": "time_text_embed.guidance_embedder.linear_2",
             "txt_in": "context_embedder", "img_in": "x_embedder", "final_layer.linear": "proj_out"}


def flux_to_diffusers(sd: Mapping[str, Any]) -> dict[str, Any]:
    """An original-layout (Black Forest Labs) Flux transformer state dict in diffusers' names.

    Fused projections are split by shape: the image/text qkv in three, a single block's first
    linear into q, k, v (each as wide as the model) and the MLP input (the rest).
    """
    out: dict[str, Any] = {}
    left = dict(sd)

    def take(src: str, dst: str) -> None:
        for suffix in (".weight", ".bias"):
            if src + suffix in left:
                out[dst + suffix] = left.pop(src + suffix)

    for src, dst in _FLUX_TOP.items():
        take(src, dst)
    hidden = int(out["x_embedder.weight"].shape[0])
    for suffix in (".weight", ".bias"):
        key = "final_layer.adaLN_modulation.1" + suffix
        if key in left:
            out["norm_out.linear" + suffix] = _swap_halves(left.pop(key))
    for i in range(_count(sd, r"double_blocks\.(\d+)\.")):
        src, dst = f"double_blocks.{i}.", f"transformer_blocks.{i}."
        for a, b in _FLUX_DOUBLE.items():
            take(src + a, dst + b)
        for a, b in _FLUX_NORMS.items():
            if src + a in left:
                out[dst + b] = left.pop(src + a)
        for stream, names in (("img_attn", ("to_q", "to_k", "to_v")),
                              ("txt_attn", ("add_q_proj", "add_k_proj", "add_v_proj"))):
            for suffix in (".weight", ".bias"):
                key = f"{src}{stream}.qkv{suffix}"
                if key in left:
                    for name, part in zip(names, left.pop(key).chunk(3, dim=0), strict=True):
                        out[f"{dst}attn.{name}{suffix}"] = part
    for i in range(_count(sd, r"single_blocks\.(\d+)\.")):
        src, dst = f"single_blocks.{i}.", f"single_transformer_blocks.{i}."
        take(src + "modulation.lin", dst + "norm.linear")
        take(src + "linear2", dst + "proj_out")
        for a, b in (("norm.query_norm.scale", "attn.norm_q.weight"),
                     ("norm.key_norm.scale", "attn.norm_k.weight")):
            if src + a in left:
                out[dst + b] = left.pop(src + a)
        for suffix in (".weight", ".bias"):
            key = f"{src}linear1{suffix}"
            if key in left:
                fused = left.pop(key)
                mlp = int(fused.shape[0]) - 3 * hidden
                q, k, v, m = fused.split([hidden, hidden, hidden, mlp], dim=0)
                for name, part in (("attn.to_q", q), ("attn.to_k", k), ("attn.to_v", v), ("proj_mlp", m)):
                    out[f"{dst}{name}{suffix}"] = part
    if left:
        raise ModelError(f"unexpected tensors in a Flux transformer: {', '.join(sorted(left)[:5])}")
    return out


def transformer_state(layout: Layout, tensors: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """Family and diffusers-layout state dict of a transformer file's tensors."""
    if layout.kind == "sd3" and layout.original:
        from diffusers.loaders.single_file_utils import convert_sd3_transformer_checkpoint_to_diffusers

        return "sd3", convert_sd3_transformer_checkpoint_to_diffusers(dict(tensors))
    if layout.kind == "flux" and layout.original:
        return "flux", flux_to_diffusers(tensors)
    return layout.kind, dict(tensors)


def build_transformer(family: str, sd: dict[str, Any], dtype: Any = None) -> Any:
    """An SD3 or Flux transformer with these weights (config inferred from their shapes)."""
    import torch
    from diffusers import FluxTransformer2DModel, SD3Transformer2DModel

    cls = FluxTransformer2DModel if family == "flux" else SD3Transformer2DModel
    config = flux_config(sd) if family == "flux" else sd3_config(sd)
    with torch.device("meta"):
        model = cls(**config)
    _load_into(model, sd, dtype, f"{family} transformer")
    return model


def _load_into(model: Any, sd: Mapping[str, Any], dtype: Any, what: str) -> None:
    """Assign weights to a module built on the meta device (in ``dtype`` when given)."""
    if dtype is not None:
        sd = {k: v.to(dtype) if v.is_floating_point() else v for k, v in sd.items()}
    expected = set(model.state_dict())
    missing = sorted(expected - set(sd))
    unexpected = sorted(set(sd) - expected)
    if missing or unexpected:
        raise ModelError(f"the {what} weights do not fit the inferred architecture "
                         f"(missing: {', '.join(missing[:4]) or 'none'}; "
                         f"unexpected: {', '.join(unexpected[:4]) or 'none'})",
                         hint="The file may be truncated or a model variant nodeflow does not know.")
    model.load_state_dict(sd, strict=True, assign=True)
    _materialize_buffers(model)
    model.eval().requires_grad_(False)


def _materialize_buffers(model: Any) -> None:
    """Non-persistent buffers (rotary tables, position ids) are still on the meta device after
    an assigned load: recompute them by rebuilding the owning modules' buffers on the CPU."""
    import torch

    for module in model.modules():
        for name, buf in list(module.named_buffers(recurse=False)):
            if buf is not None and buf.is_meta:
                if name == "position_ids":
                    module.register_buffer(name, torch.arange(buf.shape[-1]).expand(buf.shape).clone(),
                                           persistent=False)
                else:
                    raise ModelError(f"buffer {name} of {type(module).__name__} was not in the file")


# --- text encoders ----------------------------------------------------------------------------

def clip_config(sd: Mapping[str, Any], role: str) -> Any:
    """A CLIPTextConfig from a transformers-layout state dict; CLIP-G uses gelu, CLIP-L quick_gelu."""
    from transformers import CLIPTextConfig

    vocab, hidden = (int(n) for n in sd["text_model.embeddings.token_embedding.weight"].shape)
    proj = sd.get("text_projection.weight")
    return CLIPTextConfig(
        vocab_size=vocab, hidden_size=hidden,
        intermediate_size=int(sd["text_model.encoder.layers.0.mlp.fc1.weight"].shape[0]),
        num_hidden_layers=_count(sd, r"text_model\.encoder\.layers\.(\d+)\."),
        num_attention_heads=max(1, hidden // HEAD_DIM),
        max_position_embeddings=int(sd["text_model.embeddings.position_embedding.weight"].shape[0]),
        projection_dim=int(proj.shape[0]) if proj is not None else hidden,
        hidden_act="gelu" if role == "clip_g" else "quick_gelu",
        bos_token_id=49406, eos_token_id=49407, pad_token_id=1, layer_norm_eps=1e-5)


def build_clip(sd: dict[str, Any], role: str, with_projection: bool, dtype: Any = None) -> Any:
    """A CLIP text encoder (with its projection for SD3; a missing projection is the identity)."""
    import torch
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    # Files have "text_model."-prefixed names (transformers 4); some writers leave the prefix out.
    sd = {(k if k.startswith(("text_model.", "text_projection")) else "text_model." + k): v
          for k, v in sd.items() if not k.endswith("position_ids")}
    config = clip_config(sd, role)
    if with_projection:
        if "text_projection.weight" not in sd:
            sd["text_projection.weight"] = torch.eye(config.hidden_size)
        cls: Any = CLIPTextModelWithProjection
    else:
        sd.pop("text_projection.weight", None)
        cls = CLIPTextModel
    with torch.device("meta"):
        model = cls(config)
    if not any(k.startswith("text_model.") for k in model.state_dict()):
        sd = {k.removeprefix("text_model."): v for k, v in sd.items()}
    _load_into(model, sd, dtype, f"{role.replace('_', '-').upper()} text encoder")
    return model


def t5_config(sd: Mapping[str, Any]) -> Any:
    from transformers import T5Config

    embed = sd.get("shared.weight", sd.get("encoder.embed_tokens.weight"))
    if embed is None:
        raise ModelError("the T5 text encoder has no token embedding (shared.weight)")
    vocab, d_model = (int(n) for n in embed.shape)
    q = sd["encoder.block.0.layer.0.SelfAttention.q.weight"]
    gated = "encoder.block.0.layer.1.DenseReluDense.wi_0.weight" in sd
    wi = sd["encoder.block.0.layer.1.DenseReluDense." + ("wi_0" if gated else "wi") + ".weight"]
    return T5Config(
        vocab_size=vocab, d_model=d_model, d_kv=HEAD_DIM, num_heads=max(1, int(q.shape[0]) // HEAD_DIM),
        d_ff=int(wi.shape[0]), num_layers=_count(sd, r"encoder\.block\.(\d+)\."),
        relative_attention_num_buckets=int(
            sd["encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight"].shape[0]),
        feed_forward_proj="gated-gelu" if gated else "relu", is_encoder_decoder=False,
        use_cache=False)


def build_t5(sd: dict[str, Any], dtype: Any = None) -> Any:
    import torch
    from transformers import T5EncoderModel

    if "shared.weight" not in sd and "encoder.embed_tokens.weight" in sd:
        sd["shared.weight"] = sd["encoder.embed_tokens.weight"]
    config = t5_config(sd)
    with torch.device("meta"):
        model = T5EncoderModel(config)
    expected = set(model.state_dict())
    if "encoder.embed_tokens.weight" in expected and "encoder.embed_tokens.weight" not in sd:
        sd["encoder.embed_tokens.weight"] = sd["shared.weight"]
    sd = {k: v for k, v in sd.items() if k in expected or not k.startswith("shared")}
    _load_into(model, sd, dtype, "T5 text encoder")
    return model


# --- autoencoder ------------------------------------------------------------------------------

def vae_config(sd: Mapping[str, Any], family: str) -> dict[str, Any]:
    """A diffusers AutoencoderKL config from an original-layout state dict (no prefix)."""
    levels = _count(sd, r"encoder\.down\.(\d+)\.")
    blocks = [int(sd[f"encoder.down.{i}.block.0.conv1.weight"].shape[0]) for i in range(levels)]
    return {
        "in_channels": int(sd["encoder.conv_in.weight"].shape[1]),
        "out_channels": int(sd["decoder.conv_out.weight"].shape[0]),
        "latent_channels": int(sd["decoder.conv_in.weight"].shape[1]),
        "block_out_channels": blocks, "layers_per_block": _count(sd, r"encoder\.down\.0\.block\.(\d+)\."),
        "down_block_types": ["DownEncoderBlock2D"] * levels, "up_block_types": ["UpDecoderBlock2D"] * levels,
        "norm_num_groups": 32, "sample_size": 1024,
        "use_quant_conv": "quant_conv.weight" in sd, "use_post_quant_conv": "post_quant_conv.weight" in sd,
        **VAE_FACTORS[family],
    }


def build_vae(sd: dict[str, Any], family: str, dtype: Any = None) -> Any:
    """A 16-channel AutoencoderKL from an original-layout state dict."""
    import torch
    from diffusers import AutoencoderKL
    from diffusers.loaders.single_file_utils import convert_ldm_vae_checkpoint

    config = vae_config(sd, family)
    converted = convert_ldm_vae_checkpoint(dict(sd), config)
    with torch.device("meta"):
        vae = AutoencoderKL(**config)
    _load_into(vae, converted, dtype, "VAE")
    return with_shift(vae)


def with_shift(vae: Any) -> Any:
    """Carry the VAE's ``shift_factor`` as a per-channel latents mean (with unit std): the diffusion
    pack's encode and decode then compute ``(z - shift) * scale`` and ``z / scale + shift``, as the
    SD3 and Flux pipelines do."""
    shift = vae.config.get("shift_factor")
    if shift is not None and vae.config.get("latents_mean") is None:
        channels = int(vae.config.latent_channels)
        vae.register_to_config(latents_mean=[float(shift)] * channels, latents_std=[1.0] * channels)
    return vae


def read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}
