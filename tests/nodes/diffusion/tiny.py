"""Tiny Stable Diffusion components with random weights, saved as real checkpoints."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[3]


def text_config(**extra: Any) -> Any:
    from transformers import CLIPTextConfig

    return CLIPTextConfig(bos_token_id=49406, eos_token_id=49407, pad_token_id=49407, hidden_size=32,
                          intermediate_size=37, layer_norm_eps=1e-05, num_attention_heads=4,
                          num_hidden_layers=3, vocab_size=49408, projection_dim=32, **extra)


def sd_components(in_channels: int = 4, seed: int = 0) -> dict[str, Any]:
    """UNet, VAE, text encoder, tokenizer and scheduler of a tiny SD 1.x-like model."""
    import torch
    from diffusers import AutoencoderKL, EulerDiscreteScheduler, UNet2DConditionModel
    from transformers import CLIPTextModel

    from nodeflow.nodes.diffusion.clip_vocab import clip_tokenizer

    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        block_out_channels=(32, 64), layers_per_block=1, sample_size=16, in_channels=in_channels,
        out_channels=4, down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), cross_attention_dim=32,
        norm_num_groups=8)
    vae = AutoencoderKL(block_out_channels=[16, 32], in_channels=3, out_channels=3,
                        down_block_types=["DownEncoderBlock2D"] * 2,
                        up_block_types=["UpDecoderBlock2D"] * 2, latent_channels=4, norm_num_groups=8,
                        sample_size=32)
    text_encoder = CLIPTextModel(text_config())
    scheduler = EulerDiscreteScheduler(beta_start=0.00085, beta_end=0.012,
                                       beta_schedule="scaled_linear", steps_offset=1)
    return {"unet": unet.eval(), "vae": vae.eval(), "text_encoder": text_encoder.eval(),
            "tokenizer": clip_tokenizer(), "scheduler": scheduler}


def sdxl_components(seed: int = 0) -> dict[str, Any]:
    import torch
    from diffusers import AutoencoderKL, EulerDiscreteScheduler, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    from nodeflow.nodes.diffusion.clip_vocab import clip_tokenizer

    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        block_out_channels=(32, 64), layers_per_block=1, sample_size=16, in_channels=4,
        out_channels=4, down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), attention_head_dim=(2, 4),
        use_linear_projection=True, addition_embed_type="text_time", addition_time_embed_dim=8,
        transformer_layers_per_block=(1, 2), projection_class_embeddings_input_dim=80,
        cross_attention_dim=64, norm_num_groups=8)
    vae = AutoencoderKL(block_out_channels=[16, 32], in_channels=3, out_channels=3,
                        down_block_types=["DownEncoderBlock2D"] * 2,
                        up_block_types=["UpDecoderBlock2D"] * 2, latent_channels=4, norm_num_groups=8,
                        sample_size=32)
    text_encoder = CLIPTextModel(text_config(hidden_act="gelu"))
    text_encoder_2 = CLIPTextModelWithProjection(text_config(hidden_act="gelu"))
    scheduler = EulerDiscreteScheduler(beta_start=0.00085, beta_end=0.012,
                                       beta_schedule="scaled_linear", steps_offset=1,
                                       timestep_spacing="leading")
    return {"unet": unet.eval(), "vae": vae.eval(), "text_encoder": text_encoder.eval(),
            "tokenizer": clip_tokenizer(), "text_encoder_2": text_encoder_2.eval(),
            "tokenizer_2": clip_tokenizer("!"), "scheduler": scheduler}


def save_sd(folder: Path, in_channels: int = 4, seed: int = 0) -> Path:
    from diffusers import StableDiffusionInpaintPipeline, StableDiffusionPipeline

    cls = StableDiffusionInpaintPipeline if in_channels == 9 else StableDiffusionPipeline
    pipe = cls(**sd_components(in_channels, seed), safety_checker=None, feature_extractor=None,
               requires_safety_checker=False)
    pipe.save_pretrained(folder)
    return folder


def save_sdxl(folder: Path, seed: int = 0) -> Path:
    from diffusers import StableDiffusionXLPipeline

    StableDiffusionXLPipeline(**sdxl_components(seed), add_watermarker=False).save_pretrained(folder)
    return folder


def picture(width: int = 32, height: int = 32, seed: int = 0) -> Any:
    """A smooth random RGB picture (Pillow)."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, size=(4, 4, 3), dtype=np.uint8)
    return Image.fromarray(small).resize((width, height), Image.Resampling.BICUBIC)


def mask_picture(width: int = 32, height: int = 32) -> Any:
    """A white square (the area to repaint) on black."""
    from PIL import Image

    arr = np.zeros((height, width), dtype=np.uint8)
    arr[height // 4: 3 * height // 4, width // 4: 3 * width // 4] = 255
    return Image.fromarray(arr, "L")


def run_graph(registry: Any, graph: Any, models_dir: Path | None = None, outputs: Any = None,
              executor: Any = None, out_dir: Path | None = None) -> Any:
    from nodeflow.executor import Executor
    from nodeflow.settings import Settings

    if executor is None:
        settings = Settings(models_dirs=[models_dir] if models_dir else [],
                            out_dir=out_dir or Path("out"), base_dir=REPO / "graphs")
        executor = Executor(registry, settings)
    result = executor.run(graph, outputs)
    assert result.ok, {k: str(v) for k, v in result.failed.items()}
    return result


def load_graph(name: str, **inputs: dict[str, Any]) -> Any:
    """A graph file of graphs/, with some literal inputs changed: node id → {input: value}."""
    from nodeflow.graph import Graph

    graph = Graph.load(REPO / "graphs" / f"{name}.json")
    for node_id, values in inputs.items():
        for key, value in values.items():
            graph.set_input(node_id, key, value)
    return graph


def make_lora(path: Path, components: dict[str, Any], seed: int, rank: int = 4,
              kohya: bool = False) -> Path:
    """A LoRA for the given UNet and text encoder(s) with random (non-zero) weights."""
    import torch
    from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict
    from safetensors.torch import save_file

    modules = {"unet": components["unet"], "text_encoder": components["text_encoder"]}
    if components.get("text_encoder_2") is not None:
        modules["text_encoder_2"] = components["text_encoder_2"]
    gen = torch.Generator().manual_seed(seed)
    layers = {}
    for name, module in modules.items():
        targets = ["to_q", "to_k", "to_v", "to_out.0"] if name == "unet" else \
            ["q_proj", "k_proj", "v_proj", "out_proj"]
        module.add_adapter(LoraConfig(r=rank, lora_alpha=rank, init_lora_weights="gaussian",
                                      target_modules=targets))
        with torch.no_grad():
            for pname, p in module.named_parameters():
                if "lora_B" in pname:  # gaussian init leaves B at zero: give the LoRA an effect
                    p.copy_(torch.randn(p.shape, generator=gen) * 0.3)
        layers[name] = get_peft_model_state_dict(module)
    if not kohya:
        if "text_encoder_2" in layers:
            StableDiffusionXLPipeline.save_lora_weights(
                path.parent, unet_lora_layers=layers["unet"],
                text_encoder_lora_layers=layers["text_encoder"],
                text_encoder_2_lora_layers=layers["text_encoder_2"], weight_name=path.name)
        else:
            StableDiffusionPipeline.save_lora_weights(
                path.parent, unet_lora_layers=layers["unet"],
                text_encoder_lora_layers=layers["text_encoder"], weight_name=path.name)
        return path
    out = {}
    for prefix, name in (("lora_unet_", "unet"), ("lora_te_text_model_", "text_encoder")):
        for key, tensor in layers[name].items():
            module_name, _, rest = key.rpartition(".lora_")
            kind = "lora_down" if rest.startswith("A") else "lora_up"
            stem = prefix + module_name.replace(".", "_")
            out[f"{stem}.{kind}.weight"] = tensor.contiguous()
            out[f"{stem}.alpha"] = torch.tensor(float(rank))
    save_file(out, str(path))
    return path


def save_controlnet(folder: Path, seed: int, cross_attention_dim: int = 32) -> Path:
    """A tiny ControlNet whose zero-initialised output convolutions are given random weights."""
    import torch
    from diffusers import ControlNetModel

    torch.manual_seed(seed)
    net = ControlNetModel(block_out_channels=(32, 64), layers_per_block=1, in_channels=4,
                          down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
                          cross_attention_dim=cross_attention_dim,
                          conditioning_embedding_out_channels=(16, 32), norm_num_groups=8)
    with torch.no_grad():
        for name, p in net.named_parameters():
            if name.startswith(("controlnet_down_blocks", "controlnet_mid_block")) or \
                    "conv_out" in name:
                p.copy_(torch.randn(p.shape) * 0.1)
    net.save_pretrained(folder)
    return folder
