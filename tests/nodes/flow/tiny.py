"""Tiny SD3 and Flux components with random weights, saved as diffusers folders and split files.

Sizes follow the conventions the split-file loaders infer configurations by: CLIP and T5
attention heads 64 wide, GroupNorm of 32 groups and 8× downsampling in the VAE.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

T5_VOCAB = ["<pad>", "</s>", "<unk>"] + [f"▁{w}" for w in (
    "a", "red", "circle", "on", "blue", "background", "fox", "in", "snow", "photo", "of", "the", "and",
    "green", "square", "star", "cat", "dog", "big", "small")] + list("abcdefghijklmnopqrstuvwxyz▁")


def t5_tokenizer() -> Any:
    """A small T5-style (unigram, metaspace, </s> appended) fast tokenizer."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
    from transformers import T5TokenizerFast

    vocab = [(piece, -float(i) / 10) for i, piece in enumerate(T5_VOCAB)]
    tok = Tokenizer(models.Unigram(vocab, unk_id=2))
    tok.normalizer = normalizers.Sequence([normalizers.Strip(), normalizers.Replace(" ", " ")])
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
    tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
    tok.post_processor = processors.TemplateProcessing(single="$A </s>", pair="$A </s> $B </s>",
                                                       special_tokens=[("</s>", 1)])
    return T5TokenizerFast(tokenizer_object=tok, eos_token="</s>", pad_token="<pad>", unk_token="<unk>",
                           extra_ids=0, model_max_length=512)


def clip_config(hidden: int, act: str) -> Any:
    from transformers import CLIPTextConfig

    return CLIPTextConfig(bos_token_id=49406, eos_token_id=49407, pad_token_id=1, hidden_size=hidden,
                          intermediate_size=37, layer_norm_eps=1e-05, num_attention_heads=hidden // 64,
                          num_hidden_layers=2, vocab_size=49408, projection_dim=hidden, hidden_act=act)


def t5_encoder() -> Any:
    from transformers import T5Config, T5EncoderModel

    return T5EncoderModel(T5Config(vocab_size=len(T5_VOCAB), d_model=256, d_kv=64, num_heads=1, d_ff=37,
                                   num_layers=2, relative_attention_num_buckets=8,
                                   feed_forward_proj="gated-gelu", is_encoder_decoder=False)).eval()


def vae(family: str) -> Any:
    from diffusers import AutoencoderKL

    factors = {"sd3": (1.5305, 0.0609), "flux": (0.3611, 0.1159)}[family]
    return AutoencoderKL(in_channels=3, out_channels=3, latent_channels=16, block_out_channels=(32,) * 4,
                         layers_per_block=1, norm_num_groups=32, down_block_types=["DownEncoderBlock2D"] * 4,
                         up_block_types=["UpDecoderBlock2D"] * 4, use_quant_conv=False,
                         use_post_quant_conv=False, sample_size=64, scaling_factor=factors[0],
                         shift_factor=factors[1]).eval()


def sd3_components(seed: int = 0, t5: bool = True) -> dict[str, Any]:
    import torch
    from diffusers import FlowMatchEulerDiscreteScheduler, SD3Transformer2DModel
    from transformers import CLIPTextModelWithProjection

    from nodeflow.nodes.diffusion.clip_vocab import clip_tokenizer

    torch.manual_seed(seed)
    transformer = SD3Transformer2DModel(
        sample_size=8, patch_size=2, in_channels=16, num_layers=2, attention_head_dim=16,
        num_attention_heads=2, joint_attention_dim=256, caption_projection_dim=32,
        pooled_projection_dim=192, out_channels=16, pos_embed_max_size=16, qk_norm="rms_norm",
        dual_attention_layers=(0,))
    parts: dict[str, Any] = {
        "transformer": transformer.eval(), "vae": vae("sd3"),
        "text_encoder": CLIPTextModelWithProjection(clip_config(64, "quick_gelu")).eval(),
        "tokenizer": clip_tokenizer(),
        "text_encoder_2": CLIPTextModelWithProjection(clip_config(128, "gelu")).eval(),
        "tokenizer_2": clip_tokenizer("!"),
        "text_encoder_3": t5_encoder() if t5 else None, "tokenizer_3": t5_tokenizer() if t5 else None,
        "scheduler": FlowMatchEulerDiscreteScheduler(shift=3.0),
    }
    return parts


def flux_components(seed: int = 0, guidance: bool = True) -> dict[str, Any]:
    import torch
    from diffusers import FlowMatchEulerDiscreteScheduler, FluxTransformer2DModel
    from transformers import CLIPTextModel

    from nodeflow.nodes.diffusion.clip_vocab import clip_tokenizer

    torch.manual_seed(seed)
    transformer = FluxTransformer2DModel(
        patch_size=1, in_channels=64, num_layers=1, num_single_layers=1, attention_head_dim=32,
        num_attention_heads=2, joint_attention_dim=256, pooled_projection_dim=64,
        guidance_embeds=guidance, axes_dims_rope=(4, 14, 14))
    return {
        "transformer": transformer.eval(), "vae": vae("flux"),
        "text_encoder": CLIPTextModel(clip_config(64, "quick_gelu")).eval(), "tokenizer": clip_tokenizer(),
        "text_encoder_2": t5_encoder(), "tokenizer_2": t5_tokenizer(),
        "scheduler": FlowMatchEulerDiscreteScheduler(
            shift=3.0, use_dynamic_shifting=True, base_shift=0.5, max_shift=1.15, base_image_seq_len=256,
            max_image_seq_len=4096),
    }


def save_sd3_parts(folder: Path, parts: dict[str, Any]) -> Path:
    from diffusers import StableDiffusion3Pipeline

    StableDiffusion3Pipeline(**parts).save_pretrained(folder)
    return folder


def save_flux_parts(folder: Path, parts: dict[str, Any]) -> Path:
    from diffusers import FluxPipeline

    FluxPipeline(**parts).save_pretrained(folder)
    return folder


# --- split files in the layouts ComfyUI users have ----------------------------------------------

def _invert_flux(sd: dict[str, Any]) -> dict[str, Any]:
    """A diffusers Flux state dict in the original (Black Forest Labs) names: the inverse of the
    loader's mapping, written independently from the original model's module names."""
    import torch

    from nodeflow.nodes.flow import files

    out: dict[str, Any] = {}
    left = dict(sd)

    def put(dst: str, src: str) -> None:
        for suffix in (".weight", ".bias"):
            if src + suffix in left:
                out[dst + suffix] = left.pop(src + suffix)

    for original, diffusers_name in files._FLUX_TOP.items():
        put(original, diffusers_name)
    for suffix in (".weight", ".bias"):
        shift_scale = left.pop("norm_out.linear" + suffix)
        scale, shift = shift_scale.chunk(2)
        out["final_layer.adaLN_modulation.1" + suffix] = torch.cat([shift, scale])
    blocks = {int(k.split(".")[1]) for k in sd if k.startswith("transformer_blocks.")}
    for i in blocks:
        src, dst = f"transformer_blocks.{i}.", f"double_blocks.{i}."
        for original, diffusers_name in files._FLUX_DOUBLE.items():
            put(dst + original, src + diffusers_name)
        for original, diffusers_name in files._FLUX_NORMS.items():
            out[dst + original] = left.pop(src + diffusers_name)
        for stream, names in (("img_attn", ("to_q", "to_k", "to_v")),
                              ("txt_attn", ("add_q_proj", "add_k_proj", "add_v_proj"))):
            for suffix in (".weight", ".bias"):
                out[f"{dst}{stream}.qkv{suffix}"] = torch.cat([left.pop(f"{src}attn.{n}{suffix}")
                                                              for n in names])
    singles = {int(k.split(".")[1]) for k in sd if k.startswith("single_transformer_blocks.")}
    for i in singles:
        src, dst = f"single_transformer_blocks.{i}.", f"single_blocks.{i}."
        put(dst + "modulation.lin", src + "norm.linear")
        put(dst + "linear2", src + "proj_out")
        out[dst + "norm.query_norm.scale"] = left.pop(src + "attn.norm_q.weight")
        out[dst + "norm.key_norm.scale"] = left.pop(src + "attn.norm_k.weight")
        for suffix in (".weight", ".bias"):
            out[dst + "linear1" + suffix] = torch.cat([left.pop(src + n + suffix) for n in
                                                      ("attn.to_q", "attn.to_k", "attn.to_v", "proj_mlp")])
    assert not left, sorted(left)[:5]
    return out


def _ldm_vae(vae_model: Any) -> dict[str, Any]:
    """An AutoencoderKL's weights in the original (LDM) names, as ae.safetensors has them."""
    from diffusers.loaders.single_file_utils import DIFFUSERS_TO_LDM_MAPPING

    sd = {k: v.contiguous() for k, v in vae_model.state_dict().items()}
    mapping = DIFFUSERS_TO_LDM_MAPPING["vae"]
    out = {}
    for key, tensor in sd.items():
        if key in mapping:
            out[mapping[key]] = tensor
            continue
        new = key
        for a, b in (("mid_block.attentions.0.", "mid.attn_1."), ("mid_block.resnets.0.", "mid.block_1."),
                     ("mid_block.resnets.1.", "mid.block_2."),
                     ("encoder.down_blocks.", "encoder.down."), ("decoder.up_blocks.", "decoder.up."),
                     (".resnets.", ".block."), (".downsamplers.0", ".downsample"),
                     (".upsamplers.0", ".upsample"), ("conv_shortcut", "nin_shortcut"), ("group_norm", "norm"),
                     ("to_q", "q"), ("to_k", "k"), ("to_v", "v"), ("to_out.0", "proj_out")):
            new = new.replace(a, b)
        if new.startswith("decoder.up."):  # the original counts decoder levels from the bottom
            parts = new.split(".")
            parts[2] = str(len(vae_model.config.block_out_channels) - 1 - int(parts[2]))
            new = ".".join(parts)
        if ".attn_1." in new and tensor.ndim == 2:
            tensor = tensor[:, :, None, None]
        out[new] = tensor
    return out


def save_split(root: Path, parts: dict[str, Any], family: str, names: dict[str, str]) -> dict[str, Path]:
    """Write a pipeline's parts as ComfyUI-style files under a models folder; returns their paths."""
    from safetensors.torch import save_file

    def state(module: Any) -> dict[str, Any]:
        return {k: v.contiguous() for k, v in module.state_dict().items()}

    paths = {}
    transformer = state(parts["transformer"])
    if family == "flux":
        transformer = _invert_flux(transformer)
    paths["model"] = root / "diffusion_models" / names["model"]
    paths["clip_l"] = root / "text_encoders" / names["clip_l"]
    paths["vae"] = root / "vae" / names["vae"]
    files = {paths["model"]: transformer, paths["clip_l"]: state(parts["text_encoder"]),
             paths["vae"]: _ldm_vae(parts["vae"])}
    t5 = parts["text_encoder_2"] if family == "flux" else parts.get("text_encoder_3")
    if family == "sd3":
        paths["clip_g"] = root / "text_encoders" / names["clip_g"]
        files[paths["clip_g"]] = state(parts["text_encoder_2"])
    if t5 is not None:
        paths["t5"] = root / "text_encoders" / names["t5"]
        t5_state = state(t5)
        t5_state.pop("encoder.embed_tokens.weight", None)  # tied to shared.weight, as in t5xxl files
        files[paths["t5"]] = t5_state
    for path, tensors in files.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        save_file(tensors, str(path))
    tok = parts["tokenizer_2"] if family == "flux" else parts.get("tokenizer_3")
    if tok is not None:
        tok.save_pretrained(root / "tokenizers" / "t5")
    return paths


def make_lora(path: Path, parts: dict[str, Any], family: str, seed: int, rank: int = 4) -> Path:
    """A LoRA for the transformer and CLIP encoder(s) with random non-zero weights, saved in the
    diffusers/peft layout (the parts themselves are left unchanged)."""
    import copy

    import torch
    from diffusers import FluxPipeline, StableDiffusion3Pipeline
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    names = ["transformer", "text_encoder"] + (["text_encoder_2"] if family == "sd3" else [])
    gen = torch.Generator().manual_seed(seed)
    layers = {}
    for name in names:
        module = copy.deepcopy(parts[name])
        targets = ["to_q", "to_k", "to_v", "to_out.0"] if name == "transformer" else \
            ["q_proj", "k_proj", "v_proj", "out_proj"]
        module.add_adapter(LoraConfig(r=rank, lora_alpha=rank, init_lora_weights="gaussian",
                                      target_modules=targets))
        with torch.no_grad():
            for pname, p in module.named_parameters():
                if "lora_B" in pname:  # gaussian init leaves B at zero: give the LoRA an effect
                    p.copy_(torch.randn(p.shape, generator=gen) * 0.3)
        layers[name] = get_peft_model_state_dict(module)
    path.parent.mkdir(parents=True, exist_ok=True)
    if family == "sd3":
        StableDiffusion3Pipeline.save_lora_weights(
            path.parent, transformer_lora_layers=layers["transformer"],
            text_encoder_lora_layers=layers["text_encoder"],
            text_encoder_2_lora_layers=layers["text_encoder_2"], weight_name=path.name)
    else:
        FluxPipeline.save_lora_weights(path.parent, transformer_lora_layers=layers["transformer"],
                                       text_encoder_lora_layers=layers["text_encoder"], weight_name=path.name)
    return path


def save_controlnet(folder: Path, family: str, seed: int) -> Path:
    """A tiny SD3 or Flux ControlNet whose zero-initialised outputs are given random weights."""
    import torch
    from diffusers import FluxControlNetModel, SD3ControlNetModel

    torch.manual_seed(seed)
    if family == "sd3":
        net: Any = SD3ControlNetModel(
            sample_size=8, patch_size=2, in_channels=16, num_layers=1, attention_head_dim=16,
            num_attention_heads=2, joint_attention_dim=256, caption_projection_dim=32,
            pooled_projection_dim=192, out_channels=16, pos_embed_max_size=16)
    else:
        net = FluxControlNetModel(
            patch_size=1, in_channels=64, num_layers=1, num_single_layers=1, attention_head_dim=32,
            num_attention_heads=2, joint_attention_dim=256, pooled_projection_dim=64, guidance_embeds=True,
            axes_dims_rope=(4, 14, 14))
    with torch.no_grad():
        for name, p in net.named_parameters():
            if "controlnet_" in name:
                p.copy_(torch.randn(p.shape) * 0.1)
    net.save_pretrained(folder)
    return folder


_SD3_TOP = {"pos_embed": "pos_embed.pos_embed", "x_embedder.proj": "pos_embed.proj",
            "t_embedder.mlp.0": "time_text_embed.timestep_embedder.linear_1",
            "t_embedder.mlp.2": "time_text_embed.timestep_embedder.linear_2",
            "context_embedder": "context_embedder",
            "y_embedder.mlp.0": "time_text_embed.text_embedder.linear_1",
            "y_embedder.mlp.2": "time_text_embed.text_embedder.linear_2", "final_layer.linear": "proj_out"}
_SD3_BLOCK = {"x_block.attn.proj": "attn.to_out.0", "context_block.attn.proj": "attn.to_add_out",
              "x_block.attn2.proj": "attn2.to_out.0", "x_block.adaLN_modulation.1": "norm1.linear",
              "context_block.adaLN_modulation.1": "norm1_context.linear",
              "x_block.mlp.fc1": "ff.net.0.proj", "x_block.mlp.fc2": "ff.net.2",
              "context_block.mlp.fc1": "ff_context.net.0.proj", "context_block.mlp.fc2": "ff_context.net.2",
              "x_block.attn.ln_q": "attn.norm_q", "x_block.attn.ln_k": "attn.norm_k",
              "context_block.attn.ln_q": "attn.norm_added_q", "context_block.attn.ln_k": "attn.norm_added_k",
              "x_block.attn2.ln_q": "attn2.norm_q", "x_block.attn2.ln_k": "attn2.norm_k"}


def invert_sd3(sd: dict[str, Any]) -> dict[str, Any]:
    """A diffusers SD3 transformer state dict in the original (MMDiT) names, as SD3.x single files
    have it; the loader reads these with diffusers' own converter."""
    import torch

    out: dict[str, Any] = {}
    left = dict(sd)
    layers = 1 + max(int(k.split(".")[1]) for k in sd if k.startswith("transformer_blocks."))

    def swap(t: Any) -> Any:
        a, b = t.chunk(2)
        return torch.cat([b, a])

    for original, name in _SD3_TOP.items():
        for suffix in ("", ".weight", ".bias"):
            if name + suffix in left and (suffix or name == "pos_embed.pos_embed"):
                out[original + suffix] = left.pop(name + suffix)
    for suffix in (".weight", ".bias"):
        out["final_layer.adaLN_modulation.1" + suffix] = swap(left.pop("norm_out.linear" + suffix))
    for i in range(layers):
        src, dst = f"transformer_blocks.{i}.", f"joint_blocks.{i}."
        for original, name in _SD3_BLOCK.items():
            for suffix in (".weight", ".bias"):
                if src + name + suffix in left:
                    tensor = left.pop(src + name + suffix)
                    if name == "norm1_context.linear" and i == layers - 1:
                        tensor = swap(tensor)
                    out[dst + original + suffix] = tensor
        for block, attn, names in (("x_block", "attn", ("to_q", "to_k", "to_v")),
                                   ("context_block", "attn", ("add_q_proj", "add_k_proj", "add_v_proj")),
                                   ("x_block", "attn2", ("to_q", "to_k", "to_v"))):
            for suffix in (".weight", ".bias"):
                parts = [left.pop(f"{src}{attn}.{n}{suffix}", None) for n in names]
                if all(p is not None for p in parts):
                    out[f"{dst}{block}.{attn}.qkv{suffix}"] = torch.cat(parts)
    assert not left, sorted(left)[:5]
    return out


def save_sd3_bundle(path: Path, parts: dict[str, Any]) -> Path:
    """An SD3.5-style single file: the transformer, CLIP-L, CLIP-G, T5 and the VAE, each under the
    prefix such files use."""
    from safetensors.torch import save_file

    tensors: dict[str, Any] = {}
    for prefix, sd in (("model.diffusion_model.", invert_sd3(dict(parts["transformer"].state_dict()))),
                       ("first_stage_model.", _ldm_vae(parts["vae"])),
                       ("text_encoders.clip_l.transformer.", parts["text_encoder"].state_dict()),
                       ("text_encoders.clip_g.transformer.", parts["text_encoder_2"].state_dict()),
                       ("text_encoders.t5xxl.transformer.", parts["text_encoder_3"].state_dict())):
        for key, tensor in sd.items():
            if key != "encoder.embed_tokens.weight":
                tensors[prefix + key] = tensor.contiguous()
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(path))
    return path


def save_flux_bundle(path: Path, parts: dict[str, Any]) -> Path:
    """A Flux all-in-one single file, as ComfyUI saves them: the original-layout transformer under
    model.diffusion_model., CLIP-L and T5 under text_encoders.{clip_l,t5xxl}.transformer., the
    original-layout VAE under vae."""
    from safetensors.torch import save_file

    tensors: dict[str, Any] = {}
    for prefix, sd in (("model.diffusion_model.", _invert_flux(dict(parts["transformer"].state_dict()))),
                       ("vae.", _ldm_vae(parts["vae"])),
                       ("text_encoders.clip_l.transformer.", parts["text_encoder"].state_dict()),
                       ("text_encoders.t5xxl.transformer.", parts["text_encoder_2"].state_dict())):
        for key, tensor in sd.items():
            if key != "encoder.embed_tokens.weight":
                tensors[prefix + key] = tensor.contiguous()
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(path))
    return path
