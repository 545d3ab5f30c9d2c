"""Flow-matching transformer families: Stable Diffusion 3.x and Flux, built on diffusers.

Modules: ``types`` (socket types and values), ``files`` (split-file layouts and conversion),
``loaders`` (building models from folders and files) and ``load_nodes`` (their nodes),
``encode`` (prompts, FluxGuidance, zeroed prompts), ``sample`` (latents, shift, sampler),
``lora``, ``control`` (ControlNets), ``memory`` (plan-time estimates) and ``offload``.
Latents and VAEs use the diffusion pack's LATENT and VAE sockets, so its VAEEncode and
VAEDecode work here. Nothing imports torch until a node runs.
"""

from nodeflow.api import ModelKind
from nodeflow.nodes.flow.control import ApplyControlNet, LoadControlNet
from nodeflow.nodes.flow.encode import FluxGuidance, TextEncode, ZeroOut
from nodeflow.nodes.flow.load_nodes import LoadCheckpoint, LoadDiffusionModel, LoadTextEncoders, LoadVAE
from nodeflow.nodes.flow.lora import LoadLoRA
from nodeflow.nodes.flow.sample import EmptyLatent, ModelSamplingFlux, ModelSamplingSD3, OffloadBlocks, Sample

NODES = [LoadCheckpoint, LoadDiffusionModel, LoadTextEncoders, LoadVAE, LoadLoRA, LoadControlNet, TextEncode,
         FluxGuidance, ZeroOut, ApplyControlNet, EmptyLatent, ModelSamplingSD3, ModelSamplingFlux, OffloadBlocks,
         Sample]

MODEL_KINDS = [
    ModelKind("diffusion_models", "SD3.x and Flux transformers: .safetensors files (original or "
              "diffusers layout) or diffusers folders.", suffixes=(".safetensors", ".sft"),
              folders=("diffusion_models", "unet")),
    ModelKind("text_encoders", "Split text-encoder files (CLIP-L, CLIP-G, T5): .safetensors.",
              suffixes=(".safetensors", ".sft"), folders=("text_encoders", "clip")),
    ModelKind("tokenizers", "Text tokenizer folders (T5's, for split text-encoder files)."),
]

__all__ = [cls.__name__ for cls in NODES]
