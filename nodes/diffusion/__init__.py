"""Stable Diffusion nodes (SD 1.x/2.x, SDXL) built on diffusers, transformers and peft.

Modules: ``types`` (socket types and values), ``loaders`` (checkpoint, VAE, ControlNet),
``single_file`` (original-layout .safetensors checkpoints with the carried configs),
``lora``, ``conditioning`` (prompts, ControlNet hints), ``latent`` and ``sample``.
Nothing here imports torch until a node runs.
"""

from nodeflow.api import ModelKind
from nodeflow.nodes.diffusion.batches import LatentComposite, LatentFromBatch, RepeatLatentBatch
from nodeflow.nodes.diffusion.conditioning import ApplyControlNet, TextEncode
from nodeflow.nodes.diffusion.ksampler import KSampler, KSamplerAdvanced
from nodeflow.nodes.diffusion.latent import (
    EmptyLatent,
    LatentUpscale,
    LatentUpscaleBy,
    SetLatentMask,
    VAEDecode,
    VAEEncode,
)
from nodeflow.nodes.diffusion.loaders import LoadCheckpoint, LoadControlNet, LoadVAE
from nodeflow.nodes.diffusion.lora import LoadLoRA
from nodeflow.nodes.diffusion.outpaint import ImagePadForOutpaint, VAEEncodeForInpaint
from nodeflow.nodes.diffusion.regions import REGION_NODES
from nodeflow.nodes.diffusion.sample import Sample
from nodeflow.nodes.diffusion.sdxl_prompts import CLIPTextEncodeSDXL, CLIPTextEncodeSDXLRefiner

NODES = [LoadCheckpoint, LoadVAE, LoadControlNet, LoadLoRA, TextEncode, ApplyControlNet, EmptyLatent,
         VAEEncode, VAEDecode, SetLatentMask, Sample, KSampler, KSamplerAdvanced,
         *REGION_NODES]
NODES += [LatentUpscale, LatentUpscaleBy, LatentComposite, LatentFromBatch, RepeatLatentBatch,
          ImagePadForOutpaint, VAEEncodeForInpaint, CLIPTextEncodeSDXL, CLIPTextEncodeSDXLRefiner]

SAFETENSORS = (".safetensors",)
MODEL_KINDS = [
    ModelKind("checkpoints", "Stable Diffusion checkpoints: diffusers folders or single .safetensors "
              "files.", suffixes=SAFETENSORS),
    ModelKind("vae", "VAEs: diffusers folders or .safetensors files.", suffixes=(".safetensors", ".sft")),
    ModelKind("loras", "LoRA (and LyCORIS) weights: .safetensors files.", suffixes=SAFETENSORS),
    ModelKind("controlnet", "ControlNets and T2I-Adapters: diffusers folders or .safetensors files.",
              suffixes=SAFETENSORS, folders=("controlnet", "t2i_adapter")),
    ModelKind("embeddings", "Textual-inversion embeddings a prompt names as embedding:NAME.",
              suffixes=(".safetensors", ".pt", ".bin")),
]

__all__ = [cls.__name__ for cls in NODES]
