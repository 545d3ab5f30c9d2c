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
import os
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
    weight_files,
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


def checkpoint_estimate(found: Path, dtype: str, vae_dtype: str | None = None) -> dict[str, ValueEstimate]:
    """What LoadCheckpoint's outputs will carry, from the files alone: the bytes of the UNet and
    the text encoder(s) loaded in ``dtype``, of the VAE in ``vae_dtype`` (default ``dtype``), and
    the widths activation estimates need.

    A diffusers folder is sized by the weight files of its component folders, a single file
    by the tensors of its header under each part's prefix. Raises OSError, ValueError or
    ModelError when the files cannot be read.
    """
    itemsize = DTYPE_BYTES[dtype]
    vae_dtype = vae_dtype or dtype
    sizes: dict[str, int] = {}
    if found.is_dir():
        for part in ("unet", "text_encoder", "text_encoder_2", "vae"):
            if (found / part).is_dir():
                sizes[part] = estimate_file_bytes(found / part, vae_dtype if part == "vae" else dtype)
        unet = _config(found / "unet" / "config.json")
        vae_info = _vae_info(_config(found / "vae" / "config.json"), DTYPE_BYTES[vae_dtype])
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
                sizes[owner] = sizes.get(owner, 0) + tensor_bytes(entry, vae_dtype if owner == "vae" else dtype)
        # the file's own config folder (model.config/) when it has one, else the family's
        own = sidecar_folder(found)
        configs = own if own is not None else CONFIGS / FAMILY_CONFIGS[inspect_header(header, found.name).family]
        vae_info = _vae_info(_config(configs / "vae" / "config.json"), DTYPE_BYTES[vae_dtype])
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


LOAD_COPY_FACTOR = 1.25
"""Bytes a load holds beside the model, per stored byte of a tensor it converts to another dtype:
the file's pages of that tensor, read through the file mapping, stay resident beside the
converted copy until the loaded state dict is dropped. Measured by bench/load_memory.py with fp16
files loaded in bf16 or fp32: 1.1-1.25 for an SD 1.5 checkpoint, 1.2 for an SD 1.5 ControlNet."""

FOLDER_COPY_FACTOR = 1.0
"""`LOAD_COPY_FACTOR` for a file of a diffusers folder, which is read and converted by itself
(measured: 0.84 for an SD 1.5 UNet loaded in bf16 from fp16)."""

LOAD_IN_PLACE_FACTOR = 0.15
"""The same for a tensor already stored in the dtype it is used in: safetensors maps the file and
diffusers puts such a tensor into the model as it lies (renaming it, not copying it), so its pages
are read only when first used and then count as the model's own weights. What remains is the
load's bookkeeping: measured 0.13 of the file for SD 1.5, 0.14 for SDXL and 0.21 for an SD 1.5
ControlNet, whose smaller file the fixed part (`LOAD_FIXED`) covers."""

LOAD_FIXED = 64 * 1024 ** 2
"""Bytes any load holds whatever its size (the pipeline's configs, tokenizers, empty modules)."""

_FLOAT_NAMES = {"F32": "fp32", "F16": "fp16", "BF16": "bf16"}


def _file_transient(path: Path, dtype: str, vae_dtype: str | None, prefixes: tuple[str, ...] | None,
                    built: bool, copy: float = LOAD_COPY_FACTOR) -> int:
    """The transient of loading one .safetensors file (see `load_transient`): its tensors under
    ``prefixes`` (None: all), each copied or used in place. A pickle-format file is read whole
    into memory: all of it is copied."""
    if path.suffix.lower() != ".safetensors":
        return int(path.stat().st_size * copy)
    total = 0
    for key, entry in safetensors_header(path).items():
        if prefixes is not None and not key.startswith(prefixes):
            continue
        stored = tensor_bytes(entry)
        kind = str(entry.get("dtype", "F32"))
        # a VAE is loaded in the model's dtype, then cast to its own (SD VAEs stay fp32 in fp16)
        vae = vae_dtype is not None and (key.startswith("first_stage_model.") or prefixes is None)
        targets = {dtype, vae_dtype} if vae else {dtype}
        in_place = kind not in _FLOAT_NAMES or targets == {_FLOAT_NAMES[kind]}
        if built:  # built in fp32, filled by copy, then cast: the fp32 model is held beside the cast
            total += int(stored * copy) + (tensor_bytes(entry, "fp32") if dtype != "fp32" else 0)
        else:
            total += int(stored * (LOAD_IN_PLACE_FACTOR if in_place else copy))
    return total


def load_transient(found: Path, dtype: str, vae_dtype: str | None = None, *,
                   prefixes: tuple[str, ...] | None = None, built: bool = False) -> int:
    """Bytes held beside the model being built while it loads in ``dtype`` from ``found``, read
    from the safetensors headers alone: per stored byte, `LOAD_COPY_FACTOR` for a tensor the load
    converts to another dtype and `LOAD_IN_PLACE_FACTOR` for one it uses where the file mapping has
    it, plus `LOAD_FIXED`. A folder's components load one after another: its largest file's
    transient counts (with `FOLDER_COPY_FACTOR`).

    ``vae_dtype``: the dtype the VAE is cast to after loading (for a folder, the files under
    vae/; for a single file, the tensors under first_stage_model.). ``prefixes``: the tensors of
    a single file that are loaded (a checkpoint's EMA copies are not). ``built``: the model is
    built in fp32 and filled by copying (no tensor is used in place)."""
    if not found.is_dir():
        return LOAD_FIXED + _file_transient(found, dtype, vae_dtype, prefixes, built)
    files = [f for root, _dirs, _files in os.walk(found) for f in weight_files(Path(root))]
    sizes = [_file_transient(f, dtype, vae_dtype if "vae" in f.relative_to(found).parts[:-1] else None,
                             None, built, FOLDER_COPY_FACTOR)
             for f in files]
    return LOAD_FIXED + max(sizes, default=0)


def _loaded(outputs: Mapping[str, ValueEstimate], found: Path | None = None,
            transient: int = 0) -> MemoryEstimate:
    """A loader's estimate: it holds every model its outputs carry (in CPU memory), and while it
    loads from ``found``, the load's ``transient`` too (see `load_transient`)."""
    models = {name: size for value in outputs.values() for name, size in value.models.items()}
    if found is None:
        return MemoryEstimate(models, outputs=outputs)
    return MemoryEstimate(models, activations=transient, outputs=outputs, note=f"while loading {found.name}")


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
        dtype, vae_dtype = ctx.dtype("unet"), ctx.dtype("vae")
        try:
            prefixes = None if found.is_dir() else tuple(prefix for prefix, _part in _SINGLE_FILE_PARTS)
            return _loaded(checkpoint_estimate(found, dtype, vae_dtype), found,
                           load_transient(found, dtype, vae_dtype, prefixes=prefixes))
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
            # a diffusers-layout file fills a VAE built in fp32; the original layout loads in place
            built = False
            if found.is_dir():
                folder = found / "vae" if (found / "vae" / "config.json").is_file() else found
                size = estimate_file_bytes(folder, dtype)
                info = _vae_info(_config(folder / "config.json"), DTYPE_BYTES[dtype])
            else:
                header = safetensors_header(found)
                built = any(".down_blocks." in k for k in header)
                weights = [e for k, e in header.items() if k.startswith(_VAE_PREFIXES)]
                size = sum(tensor_bytes(e, dtype) for e in weights or header.values())
                info = _vae_info({}, DTYPE_BYTES[dtype])
                conv_out = next((header[k]["shape"] for k in header
                                 if k.endswith("decoder.conv_out.weight")), None)
                if conv_out:
                    info["channels"] = int(conv_out[1])
            transient = load_transient(found, dtype, built=built)
        except (OSError, ValueError, KeyError, ModelError):
            return None
        return _loaded({"vae": ValueEstimate({found.name: size}, info)}, found, transient)

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
        from nodeflow.nodes.diffusion.adapters import adapter_file_layout

        dtype = ctx.dtype("controlnet")
        try:
            size = estimate_file_bytes(found, dtype)
            # a T2I-Adapter file fills a model built in fp32; a ControlNet file loads in place
            transient = load_transient(found, dtype, built=adapter_file_layout(found) is not None)
        except (OSError, ValueError, ModelError):
            return None
        return _loaded({"controlnet": ValueEstimate({found.name: size})}, found, transient)

    def run(self, ctx: RunContext, path: str) -> Any:
        dtype = ctx.models.dtype("controlnet")
        return load_path_input(ctx, path, "controlnet", "ControlNet",
                               lambda p: load_controlnet_file(p, dtype),
                               "Check that it is a complete ControlNet (a diffusers folder or an "
                               "original-layout .safetensors file).")


def family_name(family: str) -> str:
    return FAMILY_NAMES.get(family, family)
