"""Writing a diffusers-format SD 1.x model as one original-layout .safetensors file, for testing
single-file loading: the converter lives in training.export_single_file."""

from __future__ import annotations

from training.export_single_file import save_sd1_single_file, unet_to_ldm, vae_to_ldm

__all__ = ["save_sd1_single_file", "unet_to_ldm", "vae_to_ldm"]
