"""Writing a diffusers-format SD 1.x model as one original-layout .safetensors file, for testing
single-file loading: the converter lives in training.export_single_file."""

from __future__ import annotations

from training.export_single_file import save_sd1_single_file, unet_to_ldm, vae_to_ldm

__all__ = ["save_sd1_single_file", "unet_to_ldm", "vae_to_ldm"]


def config_beside(single_file, folder):
    """The config folder (``NAME.config/``) a single file of a non-carried architecture needs,
    copied from the diffusers folder it was exported from."""
    import shutil

    config = single_file.with_suffix(".config")
    for sub in ("unet", "vae", "text_encoder", "scheduler"):
        (config / sub).mkdir(parents=True)
        for f in (folder / sub).glob("*.json"):
            shutil.copy(f, config / sub)
    shutil.copy(folder / "model_index.json", config)
