"""Loading SD3.x and Flux: diffusers folders, the split files ComfyUI users keep, single-file bundles.

* a diffusers folder (``model_index.json`` with ``transformer/``, ``vae/``, the text encoders
  and their tokenizers), through ``load_folder``;
* a diffusion-model file (``models/diffusion_models`` or ``unet``) in the original or diffusers
  layout, through ``load_transformer_file``;
* text encoder files (``clip_l``, ``clip_g``, ``t5xxl`` in ``models/text_encoders`` or ``clip``),
  whose roles are told from their tensors, through ``load_text_encoders``;
* a 16-channel autoencoder (``ae.safetensors``), through ``load_vae``;
* a checkpoint bundling all of these (SD3.5's, or Flux's all-in-one files), through ``load_bundle``.

Tokenizers: a diffusers folder carries its own. For split files, CLIP's tokenizer is rebuilt
from the vocabulary open-clip-torch ships (as the diffusion pack does), and T5's comes from a
tokenizer folder (``tokenizer.json`` or ``spiece.model``) the user keeps in
``models/tokenizers/t5`` (or names), since no package on the registry ships it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nodeflow.api import ModelError
from nodeflow.nodes.diffusion.types import Autoencoder
from nodeflow.nodes.flow import files
from nodeflow.nodes.flow.types import Encoder, FlowModel, FlowTextEncoders, Shift

WEIGHT_DTYPES = ("default", "fp8_e4m3fn", "fp8_e5m2")
"""How a transformer's weights are stored: in the compute dtype, or in 8-bit floats that each
layer casts up to the compute dtype while it runs (half of bf16's memory)."""

T5_TOKENIZER_DEFAULT = "t5"
"""The folder of models/tokenizers searched for T5's tokenizer when none is named."""


@dataclass(frozen=True, eq=False)
class FlowCheckpoint:
    model: FlowModel
    clip: FlowTextEncoders
    vae: Autoencoder


def folder_family(folder: Path) -> str | None:
    """'sd3' or 'flux' for a diffusers folder of those families, else None."""
    index = files.read_json(folder / "model_index.json")
    name = str(index.get("_class_name", "")) + str(files.read_json(folder / "transformer" / "config.json")
                                                   .get("_class_name", ""))
    if "StableDiffusion3" in name or "SD3" in name:
        return "sd3"
    if "Flux" in name:
        return "flux"
    return None


def shift_of(config: dict[str, Any]) -> Shift:
    """The shift settings of a FlowMatch scheduler config."""
    return Shift(shift=float(config.get("shift", 1.0)),
                 dynamic=bool(config.get("use_dynamic_shifting", False)),
                 base_shift=float(config.get("base_shift") or 0.5),
                 max_shift=float(config.get("max_shift") or 1.15),
                 base_seq_len=int(config.get("base_image_seq_len") or 256),
                 max_seq_len=int(config.get("max_image_seq_len") or 4096))


def _kwargs(dtype: Any) -> dict[str, Any]:
    kwargs: dict[str, Any] = {"local_files_only": True}
    if dtype is not None:
        kwargs["torch_dtype"] = dtype
    return kwargs


def _sub(folder: Path, name: str) -> Path | None:
    path = folder / name
    return path if path.is_dir() else None


def load_t5_tokenizer(folder: Path) -> Any:
    """A T5 tokenizer from a folder with tokenizer.json (or spiece.model), or a ModelError."""
    from transformers import T5TokenizerFast  # type: ignore[attr-defined]  # lazily exported

    if (folder / "tokenizer.json").is_file() or (folder / "spiece.model").is_file():
        try:
            return T5TokenizerFast.from_pretrained(folder, local_files_only=True)
        except (OSError, ValueError, ImportError) as exc:
            raise ModelError(f"cannot read the T5 tokenizer in {folder}: {exc}",
                             hint="Give a folder with T5's tokenizer.json.") from None
    for sub in ("tokenizer_3", "tokenizer_2"):
        if (folder / sub / "tokenizer.json").is_file() or (folder / sub / "spiece.model").is_file():
            return load_t5_tokenizer(folder / sub)
    raise ModelError(f"{folder} has no T5 tokenizer (no tokenizer.json or spiece.model)",
                     hint="Use the tokenizer_3 folder of an SD3 diffusers repository, the tokenizer_2 "
                          "folder of a Flux one, or google/t5-v1_1-xxl's tokenizer files.")


def missing_t5_tokenizer(searched: str) -> ModelError:
    return ModelError(
        f"the T5 text encoder needs T5's tokenizer, which split files do not carry, and none was found "
        f"({searched})",
        hint="Copy T5's tokenizer files (tokenizer.json, or spiece.model; e.g. the tokenizer_2 folder "
             "of a FLUX.1 diffusers repository or tokenizer_3 of SD3's) to models/tokenizers/t5/, or "
             "name their folder in the t5_tokenizer input.")


def load_folder(folder: Path, dtype: Any = None) -> FlowCheckpoint:
    """Every part of an SD3.x or Flux diffusers folder, offline."""
    return _load_folder(folder, dtype)


def _load_folder(folder: Path, dtype: Any) -> FlowCheckpoint:
    from diffusers import AutoencoderKL, FluxTransformer2DModel, SD3Transformer2DModel
    from transformers import CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer, T5EncoderModel

    family = folder_family(folder)
    if family is None:
        raise ModelError(f"{folder} is not an SD3 or Flux diffusers folder (model_index.json names "
                         "neither StableDiffusion3 nor Flux)",
                         hint="SD 1.x/2.x/SDXL checkpoints load with diffusion.LoadCheckpoint.")
    for part in ("transformer", "vae", "text_encoder", "tokenizer"):
        if _sub(folder, part) is None:
            raise ModelError(f"the {family.upper()} folder {folder} has no '{part}' subfolder",
                             hint="Copy the whole diffusers folder.")
    kwargs = _kwargs(dtype)
    cls: Any = SD3Transformer2DModel if family == "sd3" else FluxTransformer2DModel
    transformer = cls.from_pretrained(folder / "transformer", **kwargs)
    vae = files.with_shift(AutoencoderKL.from_pretrained(folder / "vae", **kwargs))
    scheduler = files.read_json(folder / "scheduler" / "scheduler_config.json") or \
        dict(files.SCHEDULER_DEFAULTS[family])

    def encoder(role: str, te_dir: str, tok_dir: str, te_cls: Any, t5: bool = False) -> Encoder | None:
        te_path, tok_path = _sub(folder, te_dir), _sub(folder, tok_dir)
        if te_path is None:
            return None
        model = te_cls.from_pretrained(te_path, **kwargs).eval().requires_grad_(False)
        if tok_path is None:
            raise ModelError(f"{folder} has {te_dir}/ but no {tok_dir}/ for its tokenizer",
                             hint="Copy the whole diffusers folder.")
        tokenizer = load_t5_tokenizer(tok_path) if t5 else CLIPTokenizer.from_pretrained(
            tok_path, local_files_only=True)
        return Encoder(role, model, tokenizer, str(te_path))

    if family == "sd3":
        clip = FlowTextEncoders(
            "sd3", encoder("clip_l", "text_encoder", "tokenizer", CLIPTextModelWithProjection),
            encoder("clip_g", "text_encoder_2", "tokenizer_2", CLIPTextModelWithProjection),
            encoder("t5", "text_encoder_3", "tokenizer_3", T5EncoderModel, t5=True))
    else:
        clip = FlowTextEncoders("flux", encoder("clip_l", "text_encoder", "tokenizer", CLIPTextModel),
                                t5=encoder("t5", "text_encoder_2", "tokenizer_2", T5EncoderModel, t5=True))
    for module in (transformer, vae):
        module.eval().requires_grad_(False)
    model = FlowModel(transformer, family, shift_of(scheduler), scheduler, str(folder))
    return FlowCheckpoint(model, clip, Autoencoder(vae, family))


def _cast_weights(transformer: Any, weight_dtype: str, compute: Any) -> None:
    """Store the transformer's weights in 8-bit floats, each layer cast up to ``compute`` as it runs."""
    import torch

    if weight_dtype == "default":
        return
    storage = {"fp8_e4m3fn": torch.float8_e4m3fn, "fp8_e5m2": torch.float8_e5m2}[weight_dtype]
    transformer.enable_layerwise_casting(storage_dtype=storage, compute_dtype=compute or torch.float32)


def model_from_state(family: str, sd: dict[str, Any], source: str, dtype: Any,
                     weight_dtype: str = "default") -> FlowModel:
    """A FlowModel from a diffusers-layout transformer state dict, with the released schedule."""
    transformer = files.build_transformer(family, sd, dtype)
    _cast_weights(transformer, weight_dtype, dtype)
    key = family
    if family == "flux" and not transformer.config.guidance_embeds:
        key = "flux-schnell"
    scheduler = dict(files.SCHEDULER_DEFAULTS[key])
    return FlowModel(transformer, family, shift_of(scheduler), scheduler, source)


def load_transformer_file(path: Path, dtype: Any = None, weight_dtype: str = "default") -> FlowModel:
    """An SD3 or Flux transformer from one .safetensors file (original or diffusers layout)."""
    if path.is_dir():
        family = folder_family(path) or folder_family(path.parent)
        sub = path / "transformer" if (path / "transformer").is_dir() else path
        if family is None:
            raise ModelError(f"{path} is a folder but not an SD3 or Flux transformer")
        from diffusers import FluxTransformer2DModel, SD3Transformer2DModel

        cls: Any = SD3Transformer2DModel if family == "sd3" else FluxTransformer2DModel
        transformer = cls.from_pretrained(sub, **_kwargs(dtype)).eval().requires_grad_(False)
        _cast_weights(transformer, weight_dtype, dtype)
        scheduler = files.read_json(sub.parent / "scheduler" / "scheduler_config.json") or \
            dict(files.SCHEDULER_DEFAULTS[family])
        return FlowModel(transformer, family, shift_of(scheduler), scheduler, str(path))
    layout = files.file_layout(path)
    if layout.kind == "bundle":
        prefix = files.BUNDLE_PREFIXES["transformer"]
        layout = files.Layout(layout.family, True)
    elif layout.kind in ("sd3", "flux"):
        prefix = layout.prefix
    else:
        raise ModelError(f"{path.name} holds a {_describe(layout.kind)}, not a diffusion model",
                         hint=_where(layout.kind))
    family, sd = files.transformer_state(layout, files.read_tensors(path, prefix))
    return model_from_state(family, sd, str(path), dtype, weight_dtype)


def _describe(kind: str) -> str:
    return {"clip": "CLIP text encoder", "t5": "T5 text encoder", "vae": "VAE",
            "sd3": "SD3 diffusion model", "flux": "Flux diffusion model",
            "bundle": "full SD3/Flux checkpoint"}.get(kind, kind)


def _where(kind: str) -> str:
    return {"clip": "Load it with flow.LoadTextEncoders (models/text_encoders).",
            "t5": "Load it with flow.LoadTextEncoders (models/text_encoders).",
            "vae": "Load it with flow.LoadVAE (models/vae).",
            "bundle": "Load it with flow.LoadCheckpoint (models/checkpoints).",
            }.get(kind, "Load it with flow.LoadDiffusionModel (models/diffusion_models).")


def _clip_width(sd: dict[str, Any]) -> int:
    embed = sd.get("text_model.embeddings.token_embedding.weight", sd.get("embeddings.token_embedding.weight"))
    return int(embed.shape[1]) if embed is not None else 0


def load_text_encoders(paths: Iterable[Path], family: str, t5_tokenizer: Path | None,
                       dtype: Any = None) -> FlowTextEncoders:
    """Text encoders from split files; each file's role (CLIP-L, CLIP-G, T5) comes from its tensors.

    With two CLIP files the narrower is CLIP-L. ``t5_tokenizer`` is the folder of T5's tokenizer
    (needed when a T5 file is given).
    """
    clips: list[tuple[dict[str, Any], str]] = []
    t5: tuple[dict[str, Any], str] | None = None
    for path in paths:
        layout = files.file_layout(path)
        if layout.kind == "clip":
            clips.append((files.read_tensors(path, layout.prefix), str(path)))
        elif layout.kind == "t5":
            if t5 is not None:
                raise ModelError(f"two T5 text encoders were given ({Path(t5[1]).name}, {path.name})")
            t5 = (files.read_tensors(path, layout.prefix), str(path))
        else:
            raise ModelError(f"{path.name} holds a {_describe(layout.kind)}, not a text encoder",
                             hint=_where(layout.kind))
    return assemble_encoders(family, clips, t5, t5_tokenizer, dtype)


def assemble_encoders(family: str, clips: list[tuple[dict[str, Any], str]],
                      t5: tuple[dict[str, Any], str] | None, t5_tokenizer: Path | None,
                      dtype: Any) -> FlowTextEncoders:
    from nodeflow.nodes.diffusion.clip_vocab import EOS, clip_tokenizer

    clips = sorted(clips, key=lambda c: _clip_width(c[0]))
    need = 2 if family == "sd3" else 1
    if len(clips) != need:
        names = "CLIP-L and CLIP-G" if family == "sd3" else "CLIP-L"
        raise ModelError(f"{files_name(family)} needs {names} text encoder{'s' if need == 2 else ''}, "
                         f"but {len(clips)} CLIP file{'s were' if len(clips) != 1 else ' was'} given",
                         hint="SD3: clip_l, clip_g and optionally t5xxl; Flux: clip_l and t5xxl.")
    if family == "flux" and t5 is None:
        raise ModelError("Flux needs the T5 text encoder (t5xxl) beside CLIP-L",
                         hint="Add the t5xxl file from models/text_encoders.")
    sd3 = family == "sd3"
    l_sd, l_src = clips[0]
    encoder_l = Encoder("clip_l", files.build_clip(l_sd, "clip_l", sd3, dtype), clip_tokenizer(EOS), l_src)
    encoder_g = None
    if sd3:
        g_sd, g_src = clips[1]
        encoder_g = Encoder("clip_g", files.build_clip(g_sd, "clip_g", True, dtype), clip_tokenizer("!"),
                            g_src)
    encoder_t5 = None
    if t5 is not None:
        if t5_tokenizer is None:
            raise missing_t5_tokenizer("models/tokenizers/t5 does not exist")
        tokenizer = load_t5_tokenizer(t5_tokenizer)
        encoder_t5 = Encoder("t5", files.build_t5(t5[0], dtype), tokenizer, t5[1])
    return FlowTextEncoders(family, encoder_l, encoder_g, encoder_t5)


def files_name(family: str) -> str:
    return {"sd3": "SD3", "flux": "Flux"}.get(family, family)


def vae_family_from_name(path: Path) -> str | None:
    """The latent scaling a 16-channel VAE file uses, from its name (the weights cannot tell)."""
    name = path.name.lower()
    if "sd3" in name or "sd35" in name or "stable" in name:
        return "sd3"
    if name in ("ae.safetensors", "ae.sft") or "flux" in name:
        return "flux"
    return None


def load_vae(path: Path, family: str, dtype: Any = None) -> Autoencoder:
    """A VAE: a 16-channel one (scaled for ``family``), or an SD one through the diffusion pack."""
    if path.is_dir():
        from diffusers import AutoencoderKL

        sub = path / "vae" if (path / "vae" / "config.json").is_file() else path
        vae = files.with_shift(AutoencoderKL.from_pretrained(sub, **_kwargs(dtype)))
        return Autoencoder(vae.eval().requires_grad_(False), folder_family(path) or "")
    layout = files.file_layout(path)
    if layout.kind == "bundle":
        family = layout.family
        layout = files.Layout("vae", True, files.BUNDLE_VAE_PREFIXES[family])
    if layout.kind != "vae":
        raise ModelError(f"{path.name} holds a {_describe(layout.kind)}, not a VAE",
                         hint=_where(layout.kind))
    sd = files.read_tensors(path, layout.prefix)
    if "decoder.conv_in.weight" in sd and int(sd["decoder.conv_in.weight"].shape[1]) == 4:
        from nodeflow.nodes.diffusion.loaders import load_vae_file

        return load_vae_file(path, dtype)
    if family not in ("sd3", "flux"):
        raise ModelError(f"cannot tell whether {path.name} is Flux's or SD3's VAE: their weights have "
                         "the same shapes but different latent scaling",
                         hint="Set the VAE node's family input to flux or sd3.")
    return Autoencoder(files.build_vae(sd, family, dtype), family)


def load_bundle(path: Path, t5_tokenizer: Path | None, dtype: Any = None) -> FlowCheckpoint:
    """A single-file checkpoint with its transformer, text encoders and VAE: SD3.5's (CLIP-L,
    CLIP-G, optionally T5) or Flux's all-in-one (CLIP-L and T5)."""
    family = files.file_layout(path).family or "sd3"
    prefixes = {**files.BUNDLE_PREFIXES, "vae": files.BUNDLE_VAE_PREFIXES[family]}
    tensors = files.read_tensors(path)
    parts: dict[str, dict[str, Any]] = {name: {} for name in prefixes}
    for key, tensor in tensors.items():
        for name, prefix in prefixes.items():
            if key.startswith(prefix):
                parts[name][key[len(prefix):]] = tensor
                break
    what = files_name(family)
    if not parts["transformer"]:
        raise ModelError(f"{path.name} has no {what} diffusion model (model.diffusion_model.*)")
    needed = ("vae", "clip_l", "clip_g") if family == "sd3" else ("vae", "clip_l", "t5")
    missing = [n for n in needed if not parts[n]]
    if missing:
        raise ModelError(f"{path.name} is a {what} checkpoint without its "
                         f"{', '.join(n.replace('t5', 't5xxl') for n in missing)}",
                         hint="Load the diffusion model with flow.LoadDiffusionModel and the other "
                              "parts from their own files.")
    _family, sd = files.transformer_state(files.Layout(family, True), parts["transformer"])
    model = model_from_state(family, sd, str(path), dtype)
    t5 = (parts["t5"], str(path)) if parts["t5"] else None
    clips = [(parts[role], str(path)) for role in ("clip_l", "clip_g") if parts[role]]
    if family == "flux":
        clips = clips[:1]  # a Flux file carries CLIP-L only; anything under clip_g is not used
    clip = assemble_encoders(family, clips, t5, t5_tokenizer, dtype)
    vae = Autoencoder(files.build_vae(parts["vae"], family, dtype), family)
    return FlowCheckpoint(model, clip, vae)
