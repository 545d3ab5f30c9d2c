"""Single-file checkpoints in the original Stable Diffusion layout (``model.diffusion_model.*``,
``first_stage_model.*``, ``cond_stage_model.*`` / ``conditioner.*``), loaded fully offline.

The family is read from the file's tensor names; the architecture comes from the
config folders this package carries (``configs/sd15``, ``configs/sd21``,
``configs/sdxl``: diffusers-format configs, no weights) and the CLIP tokenizer is
built from open-clip-torch's vocabulary. A checkpoint of another architecture can
bring its own: a diffusers config folder named like the file plus ``.config``
(``model.safetensors`` → ``model.config/``) is used instead of the carried one.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nodeflow.api import ModelError, safetensors_header
from nodeflow.nodes.diffusion.types import FAMILY_NAMES, Autoencoder

CONFIGS = Path(__file__).resolve().parent / "configs"
FAMILY_CONFIGS = {"sd1": "sd15", "sd2": "sd21", "sdxl": "sdxl"}
UNET = "model.diffusion_model."
CROSS_ATTENTION_KEY = UNET + "input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight"
CROSS_ATTENTION_FAMILY = {768: "sd1", 1024: "sd2", 2048: "sdxl"}


@dataclass(frozen=True)
class CheckpointInfo:
    """What a single-file checkpoint's tensor names say about it."""

    family: str
    in_channels: int


def what_it_is(keys: list[str]) -> str:
    """A guess at what a safetensors file that is not a checkpoint holds, for messages."""
    if any("lora" in k for k in keys):
        return "a LoRA (load it with diffusion.LoadLoRA)"
    if any(k.startswith("control_model.") or "input_hint_block" in k for k in keys):
        return "a ControlNet (load it with diffusion.LoadControlNet)"
    if any(k.startswith(("encoder.", "decoder.", "first_stage_model.")) for k in keys):
        return "a VAE (load it with diffusion.LoadVAE)"
    if any(k.startswith(("text_model.", "encoder.layers.")) for k in keys):
        return "a text encoder"
    return "not a Stable Diffusion model"


def inspect_header(header: Mapping[str, Any], name: str) -> CheckpointInfo:
    """Family and UNet input channels from a safetensors header; ModelError if not a checkpoint."""
    keys = list(header)
    if not any(k.startswith(UNET) for k in keys):
        raise ModelError(f"{name} is not a Stable Diffusion checkpoint: it looks like {what_it_is(keys)}",
                         hint="Give LoadCheckpoint a full checkpoint (.safetensors) or a diffusers folder.")
    if any(k.startswith("conditioner.embedders.") for k in keys):
        family = "sdxl"
    elif any(k.startswith("cond_stage_model.model.") for k in keys):
        family = "sd2"
    elif any(k.startswith("cond_stage_model.transformer.") for k in keys):
        family = "sd1"
    else:
        width = header.get(CROSS_ATTENTION_KEY, {}).get("shape", [0, 0])[1]
        if width not in CROSS_ATTENTION_FAMILY:
            raise ModelError(f"{name} is a UNet of an unknown family (cross-attention width {width})",
                             hint="nodeflow loads SD 1.x, SD 2.x and SDXL checkpoints.")
        family = CROSS_ATTENTION_FAMILY[width]
    conv_in = header.get(UNET + "input_blocks.0.0.weight", {}).get("shape", [0, 4])
    return CheckpointInfo(family, int(conv_in[1]))


def checkpoint_info(path: Path) -> CheckpointInfo:
    """What the file's tensor names say; ModelError if it is not a checkpoint, or if it is one
    the carried config of its family does not describe and it has no config folder beside it."""
    try:
        header = safetensors_header(path)
    except (OSError, ValueError) as exc:
        raise ModelError(f"{path} is not a readable safetensors file ({exc})") from None
    info = inspect_header(header, path.name)
    own = sidecar_folder(path)
    if own is not None:  # sized before anything is built from it
        from nodeflow.nodes.diffusion.declared import check_config_folder

        check_config_folder(path, own, "checkpoint")
    else:
        unlike = _unlike_carried(header, info)
        if unlike:
            folder = _sidecar_path(path)
            raise ModelError(
                f"{path.name} is not a standard {FAMILY_NAMES[info.family]} checkpoint "
                f"({'; '.join(unlike)}) and the config folder its architecture needs is missing: "
                f"{folder}{os.sep}",
                hint="Put the checkpoint's diffusers config folder there (model_index.json and the "
                     "unet/, vae/, text_encoder/, tokenizer/, scheduler/ configs; no weights).")
    return info


def _unlike_carried(header: Mapping[str, Any], info: CheckpointInfo) -> list[str]:
    """How the file's UNet differs from the carried config of its family (read from the header)."""
    config = json.loads((CONFIGS / FAMILY_CONFIGS[info.family] / "unet" / "config.json").read_text())
    unlike = []
    conv_in = header.get(UNET + "input_blocks.0.0.weight", {}).get("shape")
    if conv_in and conv_in[0] != config["block_out_channels"][0]:
        unlike.append(f"UNet width {conv_in[0]}, not {config['block_out_channels'][0]}")
    attention = header.get(CROSS_ATTENTION_KEY, {}).get("shape")
    if attention and attention[1] != config["cross_attention_dim"]:
        unlike.append(f"cross-attention width {attention[1]}, not {config['cross_attention_dim']}")
    return unlike


def _sidecar_path(path: Path) -> Path:
    return path.parent / (path.stem + ".config")


def sidecar_folder(path: Path) -> Path | None:
    """The config folder a single file brings along (``model.config/``), if it has one."""
    folder = _sidecar_path(path)
    return folder if (folder / "model_index.json").is_file() else None


SD2_PROBE = UNET + "output_blocks.11.1.transformer_blocks.0.norm1.bias"
V_PREDICTION_STD = 0.09
"""SD 2.x v-prediction models (768 px) were fine-tuned until this layer norm's bias spread out;
the epsilon base models (512 px) keep it near zero. The same test ComfyUI applies."""


def _probe_key(header: Mapping[str, Any]) -> str | None:
    """The first transformer block's norm bias in the UNet's last output block with attention."""
    if SD2_PROBE in header:
        return SD2_PROBE
    found = [k for k in header if k.startswith(UNET + "output_blocks.")
             and k.endswith(".1.transformer_blocks.0.norm1.bias")]
    return max(found, key=lambda k: int(k[len(UNET + "output_blocks."):].split(".")[0]), default=None)


def prediction_type(path: Path, info: CheckpointInfo) -> tuple[str | None, str]:
    """What a single file was trained to predict, and how that was found; None when the file does
    not say (its family's usual prediction then applies)."""
    header = safetensors_header(path, metadata=True)
    meta = header.get("__metadata__") or {}
    declared = str(meta.get("modelspec.prediction_type", "")).lower()
    if declared in ("epsilon", "eps"):
        return "epsilon", "the file's modelspec.prediction_type"
    if declared in ("v", "v_prediction", "v-prediction"):
        return "v_prediction", "the file's modelspec.prediction_type"
    if "v_pred" in header:
        return "v_prediction", "the file's v_pred marker"
    if info.family != "sd2":
        return None, f"{FAMILY_NAMES[info.family]} models predict noise"
    if info.in_channels != 4:
        return "epsilon", "SD 2 inpainting models predict noise"
    key = _probe_key(header)
    if key is None:
        return None, "the file has no output attention block to read"
    from safetensors import safe_open

    with safe_open(str(path), "pt") as fh:
        spread = float(fh.get_tensor(key).float().std(unbiased=False))
    kind = "v_prediction" if spread > V_PREDICTION_STD else "epsilon"
    return kind, f"the spread of {key.removeprefix(UNET)} ({spread:.3f})"


def _prepare_config(path: Path, info: CheckpointInfo, workdir: Path) -> Path:
    """The config folder for this file: its own, or the carried one adjusted to the file."""
    own = sidecar_folder(path)
    if own is not None:
        return own
    source = CONFIGS / FAMILY_CONFIGS[info.family]
    prediction, _why = prediction_type(path, info)
    carried = json.loads((source / "scheduler" / "scheduler_config.json").read_text())
    if info.in_channels == 4 and prediction in (None, carried.get("prediction_type", "epsilon")):
        return source
    target = workdir / source.name
    shutil.copytree(source, target)
    unet_config = target / "unet" / "config.json"
    data = json.loads(unet_config.read_text())
    data["in_channels"] = info.in_channels
    unet_config.write_text(json.dumps(data))
    if prediction is not None:
        carried["prediction_type"] = prediction
        (target / "scheduler" / "scheduler_config.json").write_text(json.dumps(carried))
    return target


def _has_vocab(folder: Path) -> bool:
    return (folder / "vocab.json").is_file() and (folder / "merges.txt").is_file()


@contextmanager
def _diffusers_quiet() -> Iterator[None]:
    """diffusers' own loading bar and its notes while it builds a pipeline from one file (the
    run's progress lines say what is loading); loads are serialised, so this is no race."""
    from diffusers.utils import logging as diffusers_logging

    bars, level = diffusers_logging.is_progress_bar_enabled(), diffusers_logging.get_verbosity()
    diffusers_logging.disable_progress_bar()
    diffusers_logging.set_verbosity_error()
    try:
        yield
    finally:
        diffusers_logging.set_verbosity(level)
        if bars:
            diffusers_logging.enable_progress_bar()


def load_single_file(path: Path, dtype: Any = None) -> Any:
    """Load an original-layout .safetensors checkpoint into a `Checkpoint`."""
    import diffusers

    from nodeflow.nodes.diffusion.clip_vocab import EOS, clip_tokenizer
    from nodeflow.nodes.diffusion.loaders import Checkpoint, read_scheduler_config
    from nodeflow.nodes.diffusion.types import DiffusionModel, TextEncoders

    info = checkpoint_info(path)
    sdxl = info.family == "sdxl"
    inpaint = info.in_channels == 9
    cls: Any
    if sdxl:
        cls = diffusers.StableDiffusionXLInpaintPipeline if inpaint else diffusers.StableDiffusionXLPipeline
    else:
        cls = diffusers.StableDiffusionInpaintPipeline if inpaint else diffusers.StableDiffusionPipeline
    with tempfile.TemporaryDirectory(prefix="nodeflow-config-") as work:
        config = _prepare_config(path, info, Path(work))
        kwargs: dict[str, Any] = {"config": str(config), "local_files_only": True}
        if dtype is not None:
            kwargs["torch_dtype"] = dtype
        if not _has_vocab(config / "tokenizer"):
            kwargs["tokenizer"] = clip_tokenizer(EOS if info.family == "sd1" or sdxl else "!")
        if sdxl and not _has_vocab(config / "tokenizer_2"):
            kwargs["tokenizer_2"] = clip_tokenizer("!")
        if not sdxl:
            kwargs.update(safety_checker=None, feature_extractor=None, requires_safety_checker=False)
        else:
            kwargs["add_watermarker"] = False
        try:
            with _diffusers_quiet():
                pipe = cls.from_single_file(str(path), **kwargs)
        except (OSError, ValueError, KeyError, RuntimeError) as exc:
            raise ModelError(f"cannot load {path.name} as a {info.family.upper()} checkpoint: {exc}",
                             hint="Check that the file is complete; a checkpoint of another "
                                  "architecture needs its config folder beside it "
                                  f"({path.stem}.config/).") from None
        except Exception as exc:  # diffusers' SingleFileComponentError: a part has no weights
            if type(exc).__name__ != "SingleFileComponentError":
                raise
            missing = re.search(r"Failed to load (\w+)", str(exc))
            part = missing.group(1) if missing else "one of its parts"
            raise ModelError(f"{path.name} is not a whole {info.family.upper()} checkpoint: it holds "
                             f"no weights for {part} (or holds them under names nodeflow does not "
                             "know)",
                             hint="A checkpoint holds the UNet, the VAE and the text encoders. A file "
                                  "with only some of them (a VAE alone, say) loads with its own "
                                  "loader, such as diffusion.LoadVAE.") from None
        scheduler_config = read_scheduler_config(config / "scheduler")
    for module in (pipe.unet, pipe.vae, pipe.text_encoder, getattr(pipe, "text_encoder_2", None)):
        if module is not None:
            module.eval().requires_grad_(False)
    vae = Autoencoder(pipe.vae, info.family)
    return Checkpoint(
        DiffusionModel(pipe.unet, scheduler_config, info.family, vae.scale_factor, str(path)),
        TextEncoders(info.family, pipe.tokenizer, pipe.text_encoder, getattr(pipe, "tokenizer_2", None),
                     getattr(pipe, "text_encoder_2", None)),
        vae,
    )


def load_single_file_vae(path: Path, dtype: Any = None) -> Autoencoder:
    """A VAE from one .safetensors file, in the original layout or diffusers'."""
    import torch
    from diffusers import AutoencoderKL

    header = safetensors_header(path)
    keys = list(header)
    family = "sdxl" if "xl" in path.name.lower() else "sd1"
    config = CONFIGS / FAMILY_CONFIGS[family]
    if any(".down_blocks." in k for k in keys):  # already in diffusers' layout
        from safetensors.torch import load_file

        vae = AutoencoderKL.from_config(AutoencoderKL.load_config(config / "vae"))
        missing, unexpected = vae.load_state_dict(load_file(str(path)), strict=False)
        if missing or unexpected:
            raise ModelError(f"{path.name} does not fit a Stable Diffusion VAE "
                             f"({len(missing)} tensors missing, {len(unexpected)} unexpected)")
        if dtype is not None:
            vae = vae.to(dtype)
    else:
        if not any(k.startswith(("encoder.", "decoder.", "first_stage_model.")) for k in keys):
            raise ModelError(f"{path.name} is not a VAE: it looks like {what_it_is(keys)}")
        kwargs: dict[str, Any] = {"config": str(config), "subfolder": "vae", "local_files_only": True}
        if dtype is not None:
            kwargs["torch_dtype"] = dtype
        vae = AutoencoderKL.from_single_file(str(path), **kwargs)
    with torch.no_grad():
        vae.eval().requires_grad_(False)
    return Autoencoder(vae, family)


CONTROLNET_FIELDS = ("in_channels", "down_block_types", "block_out_channels", "layers_per_block",
                     "cross_attention_dim", "attention_head_dim", "use_linear_projection",
                     "class_embed_type", "addition_embed_type", "addition_time_embed_dim",
                     "projection_class_embeddings_input_dim", "transformer_layers_per_block",
                     "norm_num_groups", "num_attention_heads", "upcast_attention")
"""What a ControlNet shares with the UNet it was trained beside (the carried configs hold these)."""


@dataclass(frozen=True)
class ControlNetFileInfo:
    """What a single-file ControlNet's tensor names say about it."""

    family: str
    prefix: str
    """``control_model.`` in files saved with the whole training model, else empty."""
    hint_channels: int


def controlnet_file_info(path: Path) -> ControlNetFileInfo:
    """Family and layout of an original-layout ControlNet file (``control_v11p_sd15_canny``
    and friends); ModelError when it is not one, or not one the carried configs describe and
    no config folder is beside it."""
    try:
        header = safetensors_header(path)
    except (OSError, ValueError) as exc:
        raise ModelError(f"{path} is not a readable safetensors file ({exc})") from None
    keys = list(header)
    prefix = "control_model." if any(k.startswith("control_model.") for k in keys) else ""
    if not any(k.startswith(prefix + "input_hint_block.") for k in keys):
        if any(k.startswith("controlnet_cond_embedding.") for k in keys):
            raise ModelError(f"{path.name} is a ControlNet in diffusers' layout without its config",
                             hint="Give the ControlNet's folder (config.json + weights), not the "
                                  "weights file alone.")
        kind = what_it_is(keys)
        if "ControlNet" in kind:
            raise ModelError(f"{path.name} holds ControlNet tensors but not in a layout nodeflow reads "
                             f"(no {prefix}input_hint_block.0.weight)",
                             hint="Use the ControlNet's diffusers folder or its original single file.")
        raise ModelError(f"{path.name} is not a ControlNet: it looks like {kind}")
    hint = header[prefix + "input_hint_block.0.weight"]["shape"]
    widths = {entry["shape"][1] for k, entry in header.items()
              if k.endswith("attn2.to_k.weight") and len(entry["shape"]) == 2}
    sidecar = _controlnet_sidecar(path)
    if sidecar is not None:  # the architecture is the one the config folder describes
        from nodeflow.nodes.diffusion.declared import check_config_folder, read_config_file

        check_config_folder(path, sidecar, "ControlNet")
        config = read_config_file(sidecar / "config.json")
        family = "sdxl" if config.get("addition_embed_type") == "text_time" else \
            CROSS_ATTENTION_FAMILY.get(config.get("cross_attention_dim", 768), "sd1")
        return ControlNetFileInfo(family, prefix, int(hint[1]))
    if any(k.startswith(prefix + "label_emb.") for k in keys):
        family = "sdxl"
    elif len(widths) == 1 and next(iter(widths)) in CROSS_ATTENTION_FAMILY:
        family = CROSS_ATTENTION_FAMILY[next(iter(widths))]
    else:
        raise ModelError(f"{path.name} is a ControlNet of an unknown family (cross-attention width "
                         f"{sorted(widths) or 'none'}) and has no config folder beside it "
                         f"({_sidecar_path(path)}{os.sep})",
                         hint="nodeflow knows SD 1.x, SD 2.x and SDXL ControlNets; for another "
                              "architecture put its diffusers config.json in that folder.")
    info = ControlNetFileInfo(family, prefix, int(hint[1]))
    config = _carried_controlnet_config(info)
    unlike = []
    conv_in = header.get(prefix + "input_blocks.0.0.weight", {}).get("shape")
    if conv_in and conv_in[0] != config["block_out_channels"][0]:
        unlike.append(f"width {conv_in[0]}, not {config['block_out_channels'][0]}")
    zero_convs = len({k.split(".")[1] for k in (k.removeprefix(prefix) for k in keys)
                      if k.startswith("zero_convs.")})
    expected = len(config["block_out_channels"]) * (config["layers_per_block"] + 1)
    if zero_convs != expected:
        unlike.append(f"{zero_convs} down-block outputs, not {expected}")
    if unlike:
        raise ModelError(
            f"{path.name} is not a standard {FAMILY_NAMES[family]} ControlNet ({'; '.join(unlike)}) "
            f"and the config folder its architecture needs is missing: {_sidecar_path(path)}{os.sep}",
            hint="Put the ControlNet's diffusers config.json in that folder (no weights).")
    return info


def _controlnet_sidecar(path: Path) -> Path | None:
    folder = _sidecar_path(path)
    return folder if (folder / "config.json").is_file() else None


def _carried_controlnet_config(info: ControlNetFileInfo) -> dict[str, Any]:
    unet = json.loads((CONFIGS / FAMILY_CONFIGS[info.family] / "unet" / "config.json").read_text())
    config = {k: unet[k] for k in CONTROLNET_FIELDS if k in unet}
    config.update({"_class_name": "ControlNetModel", "conditioning_channels": info.hint_channels})
    return config


def load_single_file_controlnet(path: Path, dtype: Any = None) -> Any:
    """A ControlNet from one original-layout .safetensors file, through diffusers' own conversion,
    with the carried config of its family (or the ``.config/`` folder beside the file)."""
    from diffusers import ControlNetModel

    info = controlnet_file_info(path)
    kwargs: dict[str, Any] = {"local_files_only": True}
    if dtype is not None:
        kwargs["torch_dtype"] = dtype
    with tempfile.TemporaryDirectory(prefix="nodeflow-config-") as work:
        folder = _controlnet_sidecar(path)
        if folder is None:
            folder = Path(work)
            (folder / "config.json").write_text(json.dumps(_carried_controlnet_config(info)))
        try:
            return ControlNetModel.from_single_file(str(path), config=str(folder), **kwargs)
        except (OSError, ValueError, KeyError, RuntimeError) as exc:
            text = str(exc)
            raise ModelError(f"cannot load {path.name} as a {FAMILY_NAMES[info.family]} ControlNet: "
                             f"{text[:300]}{'…' if len(text) > 300 else ''}",
                             hint="Check that the file is complete; a ControlNet of another "
                                  f"architecture needs its config.json in {path.stem}.config/.") from None
