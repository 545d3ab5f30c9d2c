"""Plan-time memory estimates of SD3.x and Flux, checked against the full-size architectures built
on torch's meta device: the loaders' figures, read from safetensors headers alone, are within 5%
of the bytes the models' parameters take, in bf16 and with fp8 storage."""

from __future__ import annotations

import json
import math
import struct
from pathlib import Path
from typing import Any

import pytest

from nodeflow.models import module_size
from nodeflow.node import EstimateContext
from nodeflow.settings import Settings

SD3_MEDIUM = {"sample_size": 128, "patch_size": 2, "in_channels": 16, "num_layers": 24, "attention_head_dim": 64,
              "num_attention_heads": 24, "joint_attention_dim": 4096, "caption_projection_dim": 1536,
              "pooled_projection_dim": 2048, "out_channels": 16, "pos_embed_max_size": 192}
TRANSFORMERS = {
    "flux1-dev": ("FluxTransformer2DModel", {"guidance_embeds": True}),
    "flux1-schnell": ("FluxTransformer2DModel", {"guidance_embeds": False}),
    "sd3_medium": ("SD3Transformer2DModel", SD3_MEDIUM),
    "sd3.5_large": ("SD3Transformer2DModel", {**SD3_MEDIUM, "num_layers": 38, "num_attention_heads": 38,
                                              "caption_projection_dim": 2432, "qk_norm": "rms_norm"}),
    "sd3.5_medium": ("SD3Transformer2DModel", {**SD3_MEDIUM, "pos_embed_max_size": 384, "qk_norm": "rms_norm",
                                               "dual_attention_layers": tuple(range(13))}),
}


def sparse_safetensors(path: Path, shapes: dict[str, tuple[int, ...]], dtype: str = "BF16") -> Path:
    """A safetensors file with these tensors' header and no data written (a sparse file): what the
    estimates read is the header alone."""
    size = {"BF16": 2, "F16": 2, "F32": 4}[dtype]
    header, offset = {}, 0
    for key, shape in shapes.items():
        n = math.prod(shape) * size
        header[key] = {"dtype": dtype, "shape": list(shape), "data_offsets": [offset, offset + n]}
        offset += n
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as fh:
        fh.write(struct.pack("<Q", len(raw)))
        fh.write(raw)
        fh.truncate(8 + len(raw) + offset)
    return path


def meta_model(class_name: str, config: dict[str, Any]) -> Any:
    import diffusers
    import torch

    with torch.device("meta"):
        return getattr(diffusers, class_name)(**config).to(torch.bfloat16)


def context(tmp_path: Path) -> EstimateContext:
    return EstimateContext(Settings(models_dirs=[tmp_path]), device="cuda:0", dtypes=lambda kind, dev: "bf16")


@pytest.mark.parametrize("name", list(TRANSFORMERS))
@pytest.mark.parametrize("weight_dtype", ["default", "fp8_e4m3fn"])
def test_transformer_estimate_within_5_percent(tmp_path, name, weight_dtype):
    import torch

    from nodeflow.nodes.flow.load_nodes import LoadDiffusionModel

    model = meta_model(*TRANSFORMERS[name])
    sparse_safetensors(tmp_path / "diffusion_models" / f"{name}.safetensors",
                       {k: tuple(v.shape) for k, v in model.state_dict().items()})
    if weight_dtype != "default":
        model.enable_layerwise_casting(storage_dtype=torch.float8_e4m3fn, compute_dtype=torch.bfloat16)
    actual = module_size(model)
    estimate = LoadDiffusionModel.estimate_memory({"path": f"{name}.safetensors", "weight_dtype": weight_dtype},
                                                  {}, context(tmp_path))
    assert estimate is not None
    assert abs(estimate.model_bytes - actual) <= 0.05 * actual, (estimate.model_bytes, actual)
    if name == "flux1-dev":
        # 11.9 billion parameters: 23.8 GB in bf16; 15.1 GB with fp8 storage, whose norms' modulation
        # layers, embeddings and final layer stay in bf16 (diffusers' layerwise casting skips them)
        assert 23.5e9 < actual < 24.0e9 if weight_dtype == "default" else 15.0e9 < actual < 15.3e9


def test_text_encoders_and_vae_estimates_within_5_percent(tmp_path):
    import diffusers
    import torch
    from transformers import CLIPTextConfig, CLIPTextModelWithProjection, T5Config, T5EncoderModel

    from nodeflow.nodes.flow.load_nodes import LoadTextEncoders, LoadVAE

    with torch.device("meta"):
        encoders = {
            "clip_l.safetensors": CLIPTextModelWithProjection(CLIPTextConfig(
                hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
                projection_dim=768)),
            "clip_g.safetensors": CLIPTextModelWithProjection(CLIPTextConfig(
                hidden_size=1280, intermediate_size=5120, num_hidden_layers=32, num_attention_heads=20,
                projection_dim=1280, hidden_act="gelu")),
            "t5xxl.safetensors": T5EncoderModel(T5Config(
                vocab_size=32128, d_model=4096, d_ff=10240, num_layers=24, num_heads=64, d_kv=64,
                feed_forward_proj="gated-gelu")),
        }
        vae = diffusers.AutoencoderKL(latent_channels=16, block_out_channels=(128, 256, 512, 512),
                                      layers_per_block=2, down_block_types=["DownEncoderBlock2D"] * 4,
                                      up_block_types=["UpDecoderBlock2D"] * 4, use_quant_conv=False,
                                      use_post_quant_conv=False)
    actual = 0
    for name, model in encoders.items():
        shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()
                  if not k.endswith("position_ids") and k != "encoder.embed_tokens.weight"}  # tied to shared
        sparse_safetensors(tmp_path / "text_encoders" / name, shapes)
        actual += module_size(model.to(torch.bfloat16))
    estimate = LoadTextEncoders.estimate_memory(
        {"encoder1": "clip_l.safetensors", "encoder2": "clip_g.safetensors", "encoder3": "t5xxl.safetensors"},
        {}, context(tmp_path))
    assert estimate is not None and abs(estimate.model_bytes - actual) <= 0.05 * actual
    sparse_safetensors(tmp_path / "vae" / "ae.safetensors", {k: tuple(v.shape) for k, v in vae.state_dict().items()})
    estimate = LoadVAE.estimate_memory({"path": "ae.safetensors"}, {}, context(tmp_path))
    actual = module_size(vae.to(torch.bfloat16))
    assert estimate is not None and abs(estimate.model_bytes - actual) <= 0.05 * actual
