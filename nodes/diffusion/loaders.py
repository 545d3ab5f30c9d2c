"""Checkpoint, VAE and ControlNet loader nodes.

A checkpoint is a diffusers-format folder (``model_index.json`` with ``unet/``,
``vae/``, ``text_encoder/``, ``tokenizer/``...) or a single ``.safetensors`` file
in the original Stable Diffusion layout (see ``single_file``). Each file loads
once per process through the model manager.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nodeflow.errors import ModelError, NodeInputError
from nodeflow.node import Input, Node, Output, RunContext
from nodeflow.nodes.diffusion.files import LOAD_LOCK, check_path_input, check_weights_file, resolve
from nodeflow.nodes.diffusion.types import (
    CLIP,
    CONTROL_NET,
    FAMILY_NAMES,
    MODEL,
    VAE,
    Autoencoder,
    ControlNet,
    DiffusionModel,
    TextEncoders,
)
from nodeflow.settings import Settings
from nodeflow.types import STRING


@dataclass(frozen=True, eq=False)
class Checkpoint:
    """The three parts of a loaded checkpoint."""

    model: DiffusionModel
    clip: TextEncoders
    vae: Autoencoder


def family_of_folder(folder: Path, index: Mapping[str, Any]) -> str:
    """sd1, sd2 or sdxl, from a diffusers folder's model_index.json and text encoder config."""
    name = str(index.get("_class_name", ""))
    if "XL" in name or (folder / "text_encoder_2").is_dir():
        return "sdxl"
    config = folder / "text_encoder" / "config.json"
    if config.is_file():
        try:
            te = json.loads(config.read_text())
        except (OSError, ValueError):
            te = {}
        if te.get("hidden_size") == 1024 or te.get("hidden_act") == "gelu":
            return "sd2"
    return "sd1"


def _need(folder: Path, sub: str) -> Path:
    path = folder / sub
    if not path.is_dir():
        raise ModelError(f"the checkpoint folder {folder} has no '{sub}' subfolder",
                         hint="A diffusers-format checkpoint needs unet/, vae/, text_encoder/ and "
                              "tokenizer/ (and scheduler/); copy the whole folder.")
    return path


def load_diffusers_folder(folder: Path, dtype: Any = None) -> Checkpoint:
    """Load every part of a diffusers-format Stable Diffusion folder, offline."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

    index_file = folder / "model_index.json"
    index = json.loads(index_file.read_text()) if index_file.is_file() else {}
    family = family_of_folder(folder, index)
    kwargs: dict[str, Any] = {"local_files_only": True}
    if dtype is not None:
        kwargs["torch_dtype"] = dtype
    unet = UNet2DConditionModel.from_pretrained(_need(folder, "unet"), **kwargs)
    vae = AutoencoderKL.from_pretrained(_need(folder, "vae"), **kwargs)
    text_encoder = CLIPTextModel.from_pretrained(_need(folder, "text_encoder"), **kwargs)
    tokenizer = CLIPTokenizer.from_pretrained(_need(folder, "tokenizer"), local_files_only=True)
    text_encoder_2 = tokenizer_2 = None
    if family == "sdxl":
        text_encoder_2 = CLIPTextModelWithProjection.from_pretrained(_need(folder, "text_encoder_2"),
                                                                     **kwargs)
        tokenizer_2 = CLIPTokenizer.from_pretrained(_need(folder, "tokenizer_2"), local_files_only=True)
    scheduler_config = read_scheduler_config(folder / "scheduler")
    for module in (unet, vae, text_encoder, text_encoder_2):
        if module is not None:
            module.eval().requires_grad_(False)
    return Checkpoint(
        DiffusionModel(unet, scheduler_config, family, Autoencoder(vae).scale_factor, str(folder)),
        TextEncoders(family, tokenizer, text_encoder, tokenizer_2, text_encoder_2),
        Autoencoder(vae, family),
    )


def read_scheduler_config(folder: Path) -> dict[str, Any]:
    """The scheduler configuration of a checkpoint (Stable Diffusion's defaults when absent)."""
    path = folder / "scheduler_config.json"
    if path.is_file():
        return dict(json.loads(path.read_text()))
    return {"_class_name": "PNDMScheduler", "beta_start": 0.00085, "beta_end": 0.012,
            "beta_schedule": "scaled_linear", "num_train_timesteps": 1000,
            "set_alpha_to_one": False, "skip_prk_steps": True, "steps_offset": 1,
            "clip_sample": False, "prediction_type": "epsilon"}


def load_checkpoint(path: Path, dtype: Any = None) -> Checkpoint:
    """A diffusers folder or a single-file checkpoint, by what ``path`` is."""
    with LOAD_LOCK:
        return _load_checkpoint(path, dtype)


def _load_checkpoint(path: Path, dtype: Any) -> Checkpoint:
    if path.is_dir():
        if not (path / "model_index.json").is_file() and not (path / "unet").is_dir():
            raise ModelError(f"{path} is a folder but not a diffusers-format checkpoint "
                             "(it has no model_index.json and no unet/ subfolder)",
                             hint="Point to the checkpoint folder itself or to a .safetensors file.")
        return load_diffusers_folder(path, dtype)
    from nodeflow.nodes.diffusion.single_file import load_single_file

    return load_single_file(path, dtype)


class LoadCheckpoint(Node):
    """Load a Stable Diffusion checkpoint (SD 1.x, 2.x or SDXL): a diffusers folder or a single
    .safetensors file, fully offline. The family is detected from the checkpoint itself."""

    id = "diffusion.LoadCheckpoint"
    category = "diffusion/loaders"
    inputs = (Input("path", STRING, "The checkpoint: a name in the models folder's checkpoints/ "
                    "(a diffusers folder or a .safetensors file) or an absolute path.",
                    path_kind="checkpoints"),)
    outputs = (
        Output("model", MODEL, "The denoising UNet with its scheduler configuration."),
        Output("clip", CLIP, "The text encoder(s) and tokenizer(s)."),
        Output("vae", VAE, "The autoencoder."),
    )

    @classmethod
    def check(cls, values: Mapping[str, Any], settings: Settings) -> Iterable[tuple[str | None, str]]:
        problems = list(check_path_input(dict(values), settings, "path", "checkpoints", "checkpoint"))
        yield from problems
        name = values.get("path")
        found = settings.resolve_path("checkpoints", name) if isinstance(name, str) and name else None
        if found is not None and found.is_file() and not problems:
            from nodeflow.nodes.diffusion.single_file import checkpoint_info

            try:
                checkpoint_info(found)
            except ModelError as exc:
                yield "path", exc.message
        if found is not None and found.is_dir() and not (found / "model_index.json").is_file() \
                and not (found / "unet").is_dir():
            yield "path", (f"{found} is a folder but not a diffusers-format checkpoint (no "
                           "model_index.json, no unet/); point to the checkpoint folder itself or to "
                           "a .safetensors file")

    def run(self, ctx: RunContext, path: str) -> Any:
        dtype = ctx.models.dtype("unet")
        ckpt = load_path_input(ctx, path, "checkpoints", "checkpoint",
                               lambda p: load_checkpoint(p, dtype),
                               "Check that it is a complete Stable Diffusion checkpoint.")
        return {"model": ckpt.model, "clip": ckpt.clip, "vae": ckpt.vae}


def load_path_input(ctx: RunContext, path: str, kind: str, what: str,
                    loader: Callable[[Path], Any], hint: str) -> Any:
    """Resolve a model file named by the node's `path` input and load it once through the model
    manager; every failure is an error on the `path` socket."""
    found = resolve(ctx, "path", kind, path)
    problem = check_weights_file(found, what)
    if problem:
        raise NodeInputError("path", problem)
    try:
        return ctx.models.load(found, loader, kind=what.lower())
    except ModelError as exc:
        raise NodeInputError("path", exc.message, hint=exc.hint) from None
    except (OSError, ValueError, KeyError, RuntimeError) as exc:
        raise NodeInputError("path", f"cannot load the {what} {found}: {exc}", hint=hint) from None


def load_vae_file(path: Path, dtype: Any = None) -> Autoencoder:
    """An AutoencoderKL from a diffusers folder or a single .safetensors file."""
    with LOAD_LOCK:
        return _load_vae_file(path, dtype)


def _load_vae_file(path: Path, dtype: Any) -> Autoencoder:
    from diffusers import AutoencoderKL

    kwargs: dict[str, Any] = {"local_files_only": True}
    if dtype is not None:
        kwargs["torch_dtype"] = dtype
    if path.is_dir():
        folder = path / "vae" if (path / "vae" / "config.json").is_file() else path
        vae = AutoencoderKL.from_pretrained(folder, **kwargs)
        return Autoencoder(vae.eval().requires_grad_(False))
    from nodeflow.nodes.diffusion.single_file import load_single_file_vae

    return load_single_file_vae(path, dtype)


class LoadVAE(Node):
    """Load a VAE (autoencoder) to use instead of the checkpoint's own."""

    id = "diffusion.LoadVAE"
    category = "diffusion/loaders"
    inputs = (Input("path", STRING, "The VAE: a name in the models folder's vae/ (a diffusers "
                    "folder or a .safetensors file) or an absolute path.", path_kind="vae"),)
    outputs = (Output("vae", VAE, "The autoencoder."),)

    @classmethod
    def check(cls, values: Mapping[str, Any], settings: Settings) -> Iterable[tuple[str | None, str]]:
        yield from check_path_input(dict(values), settings, "path", "vae", "VAE")

    def run(self, ctx: RunContext, path: str) -> Any:
        dtype = ctx.models.dtype("vae")
        return load_path_input(ctx, path, "vae", "VAE", lambda p: load_vae_file(p, dtype),
                               "Check that it is a Stable Diffusion VAE.")


def controlnet_family(model: Any) -> str:
    """The family a ControlNet fits, from its cross-attention width."""
    dim = model.config.cross_attention_dim
    if model.config.get("addition_embed_type") == "text_time":
        return "sdxl"
    if dim == 1024:
        return "sd2"
    return "sd1"


def load_controlnet_file(path: Path, dtype: Any = None) -> ControlNet:
    with LOAD_LOCK:
        return _load_controlnet_file(path, dtype)


def _load_controlnet_file(path: Path, dtype: Any) -> ControlNet:
    from diffusers import ControlNetModel

    kwargs: dict[str, Any] = {"local_files_only": True}
    if dtype is not None:
        kwargs["torch_dtype"] = dtype
    if path.is_dir():
        model = ControlNetModel.from_pretrained(path, **kwargs)
    else:
        from nodeflow.nodes.diffusion.single_file import load_single_file_controlnet

        model = load_single_file_controlnet(path, dtype)
    model.eval().requires_grad_(False)
    return ControlNet(model, controlnet_family(model), str(path))


class LoadControlNet(Node):
    """Load a ControlNet (a diffusers folder or a .safetensors file)."""

    id = "diffusion.LoadControlNet"
    category = "diffusion/loaders"
    inputs = (Input("path", STRING, "The ControlNet: a name in the models folder's controlnet/ or "
                    "an absolute path.", path_kind="controlnet"),)
    outputs = (Output("controlnet", CONTROL_NET, "The ControlNet."),)

    @classmethod
    def check(cls, values: Mapping[str, Any], settings: Settings) -> Iterable[tuple[str | None, str]]:
        yield from check_path_input(dict(values), settings, "path", "controlnet", "ControlNet")

    def run(self, ctx: RunContext, path: str) -> Any:
        dtype = ctx.models.dtype("controlnet")
        return load_path_input(ctx, path, "controlnet", "ControlNet",
                               lambda p: load_controlnet_file(p, dtype),
                               "Check that it is a diffusers ControlNet.")


def family_name(family: str) -> str:
    return FAMILY_NAMES.get(family, family)
