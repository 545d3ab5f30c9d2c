"""Checkpoint, VAE and ControlNet loader nodes.

A checkpoint is a diffusers-format folder (``model_index.json`` with ``unet/``,
``vae/``, ``text_encoder/``, ``tokenizer/``...) or a single ``.safetensors`` file
in the original Stable Diffusion layout (see ``single_file``). Each file loads
once per process through the model manager.

Before a run, each loader estimates from the files alone (safetensors headers and
configs, no weights read) the bytes its models will take in the dtype they load
in, and the widths the sampler's and decoder's activation estimates need.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from nodeflow.api import (
    DTYPE_BYTES,
    STRING,
    EstimateContext,
    Input,
    MemoryEstimate,
    ModelError,
    Node,
    NodeInputError,
    Output,
    RunContext,
    Settings,
    ValueEstimate,
    estimate_file_bytes,
    safetensors_header,
    tensor_bytes,
)
from nodeflow.nodes.diffusion.files import (
    check_path_input,
    check_weights_file,
    checked_model_path,
    resolve,
)
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

PREDICTIONS = ("auto", "epsilon", "v_prediction")


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
    text_encoder_2 = tokenizer_2 = None
    text_encoder: Any
    if family == "sdxl" and not (folder / "text_encoder").is_dir() and (folder / "text_encoder_2").is_dir():
        # The SDXL refiner has only the second (OpenCLIP-G) encoder: it is its one encoder.
        text_encoder = CLIPTextModelWithProjection.from_pretrained(folder / "text_encoder_2", **kwargs)
        tokenizer = CLIPTokenizer.from_pretrained(_need(folder, "tokenizer_2"), local_files_only=True)
    else:
        text_encoder = CLIPTextModel.from_pretrained(_need(folder, "text_encoder"), **kwargs)
        tokenizer = CLIPTokenizer.from_pretrained(_need(folder, "tokenizer"), local_files_only=True)
    if family == "sdxl" and (folder / "text_encoder").is_dir():
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
        from nodeflow.nodes.diffusion.declared import read_config_file

        try:
            return read_config_file(path)
        except ValueError as exc:
            raise ModelError(f"cannot use the scheduler config: {exc}") from None
    return {"_class_name": "PNDMScheduler", "beta_start": 0.00085, "beta_end": 0.012,
            "beta_schedule": "scaled_linear", "num_train_timesteps": 1000,
            "set_alpha_to_one": False, "skip_prk_steps": True, "steps_offset": 1,
            "clip_sample": False, "prediction_type": "epsilon"}


def load_checkpoint(path: Path, dtype: Any = None) -> Checkpoint:
    """A diffusers folder or a single-file checkpoint, by what ``path`` is."""
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


_SINGLE_FILE_PARTS = (("model.diffusion_model.", "unet"), ("first_stage_model.", "vae"),
                      ("conditioner.embedders.0.", "text_encoder"),
                      ("conditioner.embedders.1.", "text_encoder_2"), ("cond_stage_model.", "text_encoder"))
"""Tensor name prefixes of an original-layout checkpoint and the part each belongs to (EMA
copies and anything else are not loaded)."""
_OUTPUT_PARTS = {"model": ("unet",), "clip": ("text_encoder", "text_encoder_2"), "vae": ("vae",)}


def _config(path: Path) -> dict[str, Any]:
    from nodeflow.nodes.diffusion.declared import read_config_file

    try:
        return read_config_file(path)  # size-checked: never a huge file read whole
    except (OSError, ValueError):
        return {}


def _vae_info(config: Mapping[str, Any], itemsize: int) -> dict[str, Any]:
    """What the VAE activation estimates need from a VAE config."""
    blocks = config.get("block_out_channels") or [128, 256, 512, 512]
    return {"channels": int(blocks[0]), "tile": int(config.get("sample_size") or 512),
            "scale": 2 ** (len(blocks) - 1), "itemsize": itemsize}


def checkpoint_estimate(found: Path, dtype: str) -> dict[str, ValueEstimate]:
    """What LoadCheckpoint's outputs will carry, from the files alone: the bytes of the UNet, the
    text encoder(s) and the VAE loaded in ``dtype``, and the widths activation estimates need.

    A diffusers folder is sized by the weight files of its component folders, a single file
    by the tensors of its header under each part's prefix. Raises OSError, ValueError or
    ModelError when the files cannot be read.
    """
    itemsize = DTYPE_BYTES[dtype]
    sizes: dict[str, int] = {}
    if found.is_dir():
        for part in ("unet", "text_encoder", "text_encoder_2", "vae"):
            if (found / part).is_dir():
                sizes[part] = estimate_file_bytes(found / part, dtype)
        unet = _config(found / "unet" / "config.json")
        vae_info = _vae_info(_config(found / "vae" / "config.json"), itemsize)
        width = int((unet.get("block_out_channels") or [320])[0])
    else:
        from nodeflow.nodes.diffusion.single_file import (
            CONFIGS,
            FAMILY_CONFIGS,
            UNET,
            inspect_header,
            sidecar_folder,
        )

        header = safetensors_header(found)
        for key, entry in header.items():
            owner = next((p for prefix, p in _SINGLE_FILE_PARTS if key.startswith(prefix)), None)
            if owner is not None:
                sizes[owner] = sizes.get(owner, 0) + tensor_bytes(entry, dtype)
        # the file's own config folder (model.config/) when it has one, else the family's
        own = sidecar_folder(found)
        configs = own if own is not None else CONFIGS / FAMILY_CONFIGS[inspect_header(header, found.name).family]
        vae_info = _vae_info(_config(configs / "vae" / "config.json"), itemsize)
        conv_out = header.get("first_stage_model.decoder.conv_out.weight", {}).get("shape")
        if conv_out:
            vae_info["channels"] = int(conv_out[1])
        width = int(header.get(UNET + "input_blocks.0.0.weight", {}).get("shape", [320])[0])
    model_info = {"channels": width, "itemsize": itemsize, "latent_scale": vae_info["scale"]}
    infos: dict[str, dict[str, Any]] = {"model": model_info, "clip": {}, "vae": vae_info}
    return {out: ValueEstimate({f"{found.name}:{p}": sizes[p] for p in parts if p in sizes}, infos[out])
            for out, parts in _OUTPUT_PARTS.items()}


def _found(values: Mapping[str, Any], ctx: EstimateContext, kind: str) -> Path | None:
    name = values.get("path")
    return ctx.settings.resolve_path(kind, name) if isinstance(name, str) and name else None


SINGLE_FILE_TRANSIENT = 1.25
"""Bytes held while a single file loads, per byte of the file: diffusers reads the whole file and
converts it to new names before filling the modules. Measured by bench/load_memory.py: 1.12 for
an SD 1.5 checkpoint, 1.22 for an SD 1.5 ControlNet (fp16 files loaded in fp32)."""


def load_transient(found: Path) -> int:
    """Bytes held beside the model being built while it loads: a single file's tensors as stored,
    and their converted copies (`SINGLE_FILE_TRANSIENT`), or a folder's largest weight file (its
    components load one after another)."""
    if not found.is_dir():
        return int(estimate_file_bytes(found) * SINGLE_FILE_TRANSIENT)
    sizes = [estimate_file_bytes(f) for f in found.rglob("*.safetensors") if f.is_file()]
    return max(sizes, default=0)


def _loaded(outputs: Mapping[str, ValueEstimate], found: Path | None = None) -> MemoryEstimate:
    """A loader's estimate: it holds every model its outputs carry (in CPU memory), and while it
    loads from ``found``, the load's transient too."""
    models = {name: size for value in outputs.values() for name, size in value.models.items()}
    if found is None:
        return MemoryEstimate(models, outputs=outputs)
    return MemoryEstimate(models, activations=load_transient(found), outputs=outputs,
                          note=f"while loading {found.name}")


class LoadCheckpoint(Node):
    """Load a Stable Diffusion checkpoint (SD 1.x, 2.x or SDXL): a diffusers folder or a single
    .safetensors file, fully offline. The family is detected from the checkpoint itself."""

    id = "diffusion.LoadCheckpoint"
    category = "diffusion/loaders"
    inputs = (Input("path", STRING, "The checkpoint: a name in the models folder's checkpoints/ "
                    "(a diffusers folder or a .safetensors file) or an absolute path.",
                    path_kind="checkpoints"),
              Input("prediction", STRING, "What the model predicts: auto (read from the checkpoint: its "
                    "scheduler config, or for single files their metadata and, for SD 2.x, their "
                    "weights), or epsilon / v_prediction to override a wrong guess.", default="auto",
                    choices=PREDICTIONS))
    outputs = (
        Output("model", MODEL, "The denoising UNet with its scheduler configuration."),
        Output("clip", CLIP, "The text encoder(s) and tokenizer(s)."),
        Output("vae", VAE, "The autoencoder."),
    )

    @classmethod
    def check(cls, values: Mapping[str, Any], settings: Settings) -> Iterable[tuple[str | None, str]]:
        problems, found = checked_model_path(values, settings, "path", "checkpoints", "checkpoint")
        yield from problems
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

    @classmethod
    def estimate_memory(cls, values: Mapping[str, Any], upstream: Mapping[str, ValueEstimate],
                        ctx: EstimateContext) -> MemoryEstimate | None:
        """UNet, text encoder(s) and VAE sized from the files, in the dtype they load in."""
        found = _found(values, ctx, "checkpoints")
        if found is None:
            return None
        try:
            return _loaded(checkpoint_estimate(found, ctx.dtype("unet")), found)
        except (OSError, ValueError, KeyError, ModelError):
            return None

    def run(self, ctx: RunContext, path: str, prediction: str = "auto") -> Any:
        dtype, vae_dtype = ctx.models.dtype("unet"), ctx.models.dtype("vae")

        def load(p: Path) -> Checkpoint:
            ckpt = load_checkpoint(p, dtype)
            if vae_dtype != dtype:  # e.g. SD VAEs overflow in fp16: they stay fp32
                ckpt.vae.vae.to(vae_dtype)
            return ckpt

        ckpt = load_path_input(ctx, path, "checkpoints", "checkpoint", load,
                               "Check that it is a complete Stable Diffusion checkpoint.")
        model = ckpt.model
        if prediction != "auto":  # a new value: the loaded checkpoint is shared by other runs
            model = replace(model, scheduler_config={**model.scheduler_config, "prediction_type": prediction})
        return {"model": model, "clip": ckpt.clip, "vae": ckpt.vae}


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


_VAE_PREFIXES = ("encoder.", "decoder.", "quant_conv.", "post_quant_conv.", "first_stage_model.")


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

    @classmethod
    def estimate_memory(cls, values: Mapping[str, Any], upstream: Mapping[str, ValueEstimate],
                        ctx: EstimateContext) -> MemoryEstimate | None:
        """The VAE sized from its file or folder, in the dtype it loads in."""
        found = _found(values, ctx, "vae")
        if found is None:
            return None
        dtype = ctx.dtype("vae")
        try:
            if found.is_dir():
                folder = found / "vae" if (found / "vae" / "config.json").is_file() else found
                size = estimate_file_bytes(folder, dtype)
                info = _vae_info(_config(folder / "config.json"), DTYPE_BYTES[dtype])
            else:
                header = safetensors_header(found)
                weights = [e for k, e in header.items() if k.startswith(_VAE_PREFIXES)]
                size = sum(tensor_bytes(e, dtype) for e in weights or header.values())
                info = _vae_info({}, DTYPE_BYTES[dtype])
                conv_out = next((header[k]["shape"] for k in header
                                 if k.endswith("decoder.conv_out.weight")), None)
                if conv_out:
                    info["channels"] = int(conv_out[1])
        except (OSError, ValueError, KeyError, ModelError):
            return None
        return _loaded({"vae": ValueEstimate({found.name: size}, info)}, found)

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
    return _load_controlnet_file(path, dtype)


def _load_controlnet_file(path: Path, dtype: Any) -> ControlNet:
    from diffusers import ControlNetModel

    from nodeflow.nodes.diffusion.adapters import (
        adapter_file_layout,
        is_adapter_folder,
        load_adapter_file,
        load_adapter_folder,
    )

    if is_adapter_folder(path):  # T2I-Adapters load through the same node, as in ComfyUI
        return load_adapter_folder(path, dtype)
    if adapter_file_layout(path) is not None:
        return load_adapter_file(path, dtype)
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
    """Load a ControlNet or a T2I-Adapter (a diffusers folder or a .safetensors file)."""

    id = "diffusion.LoadControlNet"
    category = "diffusion/loaders"
    inputs = (Input("path", STRING, "The ControlNet: a name in the models folder's controlnet/ or "
                    "an absolute path.", path_kind="controlnet"),)
    outputs = (Output("controlnet", CONTROL_NET, "The ControlNet."),)

    @classmethod
    def check(cls, values: Mapping[str, Any], settings: Settings) -> Iterable[tuple[str | None, str]]:
        problems, found = checked_model_path(values, settings, "path", "controlnet", "ControlNet")
        yield from problems
        if found is not None and found.is_file() and not problems:
            from nodeflow.nodes.diffusion.adapters import adapter_file_layout
            from nodeflow.nodes.diffusion.single_file import controlnet_file_info

            if adapter_file_layout(found) is not None:
                return  # a T2I-Adapter file: its shape is read from the weights when it loads
            try:
                controlnet_file_info(found)
            except ModelError as exc:
                yield "path", exc.message

    @classmethod
    def estimate_memory(cls, values: Mapping[str, Any], upstream: Mapping[str, ValueEstimate],
                        ctx: EstimateContext) -> MemoryEstimate | None:
        """The ControlNet sized from its folder or file, in the dtype it loads in."""
        found = _found(values, ctx, "controlnet")
        if found is None:
            return None
        try:
            size = estimate_file_bytes(found, ctx.dtype("controlnet"))
        except (OSError, ValueError, ModelError):
            return None
        return _loaded({"controlnet": ValueEstimate({found.name: size})}, found)

    def run(self, ctx: RunContext, path: str) -> Any:
        dtype = ctx.models.dtype("controlnet")
        return load_path_input(ctx, path, "controlnet", "ControlNet",
                               lambda p: load_controlnet_file(p, dtype),
                               "Check that it is a complete ControlNet (a diffusers folder or an "
                               "original-layout .safetensors file).")


def family_name(family: str) -> str:
    return FAMILY_NAMES.get(family, family)
