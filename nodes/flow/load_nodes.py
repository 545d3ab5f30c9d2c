"""Loader nodes of the flow pack: checkpoints, diffusion models, text encoders and VAEs.

Their inputs follow ComfyUI's loaders (CheckpointLoaderSimple, UNETLoader with its
weight_dtype, CLIPLoader / DualCLIPLoader / TripleCLIPLoader with their type, VAELoader),
so imported workflows map onto them one to one. Before a run each loader sizes its models
from the safetensors headers alone (see ``memory``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from nodeflow.api import (
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
    file_fingerprint,
)
from nodeflow.nodes.diffusion.files import check_weights_file, checked_model_path, resolve
from nodeflow.nodes.diffusion.types import VAE
from nodeflow.nodes.flow import files, loaders
from nodeflow.nodes.flow.types import FLOW_CLIP, FLOW_MODEL

FAMILY_CHOICES = ("sd3", "flux")
ENCODER_SOCKETS = ("encoder1", "encoder2", "encoder3")


def t5_tokenizer_folder(settings: Settings, name: str) -> Path | None:
    """The T5 tokenizer folder a node names, or models/tokenizers/t5 when it names none."""
    return settings.resolve_path("tokenizers", name or loaders.T5_TOKENIZER_DEFAULT)


def _load(ctx: RunContext, socket: str, found: Path, loader: Any, kind: str, variant: str = "") -> Any:
    try:
        return ctx.models.load(found, loader, kind=kind, variant=variant)
    except ModelError as exc:
        raise NodeInputError(socket, exc.message, hint=exc.hint) from None
    except (OSError, ValueError, KeyError, RuntimeError) as exc:
        raise NodeInputError(socket, f"cannot load {found}: {exc}",
                             hint="Check that the file is complete and of the kind this node loads.") from None


def _file(ctx: RunContext, socket: str, kind: str, name: str, what: str) -> Path:
    found = resolve(ctx, socket, kind, name)
    problem = check_weights_file(found, what)
    if problem:
        raise NodeInputError(socket, problem)
    return found


def _layout_problem(found: Path, wanted: Iterable[str]) -> str | None:
    if found.is_dir():
        return None
    try:
        layout = files.file_layout(found)
    except ModelError as exc:
        return exc.message + (f" {exc.hint}" if exc.hint else "")
    if layout.kind not in wanted:
        return f"{found.name} holds a {loaders._describe(layout.kind)}. {loaders._where(layout.kind)}"
    return None


class LoadCheckpoint(Node):
    """Load an SD3.x or Flux checkpoint: a diffusers folder, or a single file that bundles the
    diffusion model, its text encoders and the VAE (SD3.5's, or Flux's all-in-one files)."""

    id = "flow.LoadCheckpoint"
    category = "flow/loaders"
    inputs = (
        Input("path", STRING, "The checkpoint: a name in the models folder's checkpoints/ (a diffusers "
              "folder or a .safetensors file) or an absolute path.", path_kind="checkpoints"),
        Input("t5_tokenizer", STRING, "For a single file with T5: the folder of T5's tokenizer in "
              "models/tokenizers ('' looks for tokenizers/t5).", default="", path_kind="tokenizers"),
    )
    outputs = (
        Output("model", FLOW_MODEL, "The transformer with its noise schedule."),
        Output("clip", FLOW_CLIP, "The text encoders."),
        Output("vae", VAE, "The autoencoder."),
    )

    @classmethod
    def check(cls, values: Mapping[str, Any], settings: Settings) -> Iterable[tuple[str | None, str]]:
        problems, found = checked_model_path(values, settings, "path", "checkpoints", "checkpoint")
        yield from problems
        if found is None or problems:
            return
        if found.is_dir():
            if loaders.folder_family(found) is None:
                yield "path", (f"{found} is not an SD3 or Flux diffusers folder (its model_index.json "
                               "names neither); SD 1.x/2.x/SDXL load with diffusion.LoadCheckpoint")
            return
        problem = _layout_problem(found, ("bundle",))
        if problem:
            yield "path", problem
            return
        if _has_t5(found) and t5_tokenizer_folder(settings, str(values.get("t5_tokenizer") or "")) is None:
            error = loaders.missing_t5_tokenizer("no tokenizers/t5 folder")
            yield "t5_tokenizer", f"{error.message}. {error.hint}"

    @classmethod
    def model_family(cls, path: Path) -> str | None:
        """The family of the model at ``path``: 'sd3', 'flux', 'sd' (another family, which this
        node does not load) or None (unreadable). Importers ask it to map loaders by family."""
        return weights_family(path)

    @classmethod
    def estimate_memory(cls, values: Mapping[str, Any], upstream: Mapping[str, ValueEstimate],
                        ctx: EstimateContext) -> MemoryEstimate | None:
        from nodeflow.nodes.flow.memory import checkpoint_estimate

        name = values.get("path")
        found = ctx.settings.resolve_path("checkpoints", name) if isinstance(name, str) and name else None
        if found is None:
            return None
        return checkpoint_estimate(found, ctx.dtype("unet"), ctx.dtype("vae"))

    def run(self, ctx: RunContext, path: str, t5_tokenizer: str) -> Any:
        found = _file(ctx, "path", "checkpoints", path, "checkpoint")
        dtype, vae_dtype = ctx.models.dtype("unet"), ctx.models.dtype("vae")
        if found.is_dir():
            def load(p: Path) -> Any:
                return loaders.load_folder(p, dtype)
            variant = ""
        else:
            tok = t5_tokenizer_folder(ctx.settings, t5_tokenizer)
            if tok is None and _has_t5(found):
                raise NodeInputError("t5_tokenizer", loaders.missing_t5_tokenizer(
                    "no folder named t5 in " + ", ".join(map(str, ctx.settings.search_dirs("tokenizers"))))
                    .message, hint=loaders.missing_t5_tokenizer("").hint)

            def load(p: Path) -> Any:
                return loaders.load_bundle(p, tok, dtype)
            variant = file_fingerprint(tok) if tok is not None else ""
        ckpt = _load(ctx, "path", found, load, "checkpoint", variant)
        if vae_dtype != dtype:
            ckpt.vae.vae.to(vae_dtype)
        return {"model": ckpt.model, "clip": ckpt.clip, "vae": ckpt.vae}


def weights_family(found: Path) -> str | None:
    """'sd3'/'flux' for an SD3.x/Flux folder or weights file (a bundle, a transformer), 'sd' for
    another model, None when the file cannot be read."""
    if found.is_dir():
        try:
            return loaders.folder_family(found) or "sd"
        except (OSError, ValueError, ModelError):
            return None
    try:
        layout = files.file_layout(found)
    except ModelError as exc:
        return "sd" if "1.x/2.x/SDXL" in exc.message else None
    if layout.kind == "bundle":
        return layout.family
    return layout.kind if layout.kind in FAMILY_CHOICES else "sd"


def _has_t5(path: Path) -> bool:
    from nodeflow.api import safetensors_header

    try:
        return any(k.startswith(files.BUNDLE_PREFIXES["t5"]) for k in safetensors_header(path))
    except (OSError, ValueError):
        return False


class LoadDiffusionModel(Node):
    """Load an SD3.x or Flux diffusion model (transformer) from its own file, as ComfyUI's
    UNETLoader does: original or diffusers layout, optionally stored in 8-bit floats."""

    id = "flow.LoadDiffusionModel"
    category = "flow/loaders"
    inputs = (
        Input("path", STRING, "The diffusion model: a name in models/diffusion_models (or unet/) or an "
              "absolute path.", path_kind="diffusion_models"),
        Input("weight_dtype", STRING, "default: weights in the compute dtype; fp8_*: stored in 8-bit "
              "floats and cast up layer by layer while running (half of bf16's memory, slightly "
              "different pictures).", default="default", choices=loaders.WEIGHT_DTYPES),
    )
    outputs = (Output("model", FLOW_MODEL, "The transformer with its noise schedule."),)

    @classmethod
    def check(cls, values: Mapping[str, Any], settings: Settings) -> Iterable[tuple[str | None, str]]:
        problems, found = checked_model_path(values, settings, "path", "diffusion_models", "diffusion model")
        yield from problems
        if found is not None and not problems:
            problem = _layout_problem(found, ("sd3", "flux", "bundle"))
            if problem:
                yield "path", problem

    @classmethod
    def model_family(cls, path: Path) -> str | None:
        """The family of the model at ``path``: 'sd3', 'flux', 'sd' (another family, which this
        node does not load) or None (unreadable). Importers ask it to map loaders by family."""
        return weights_family(path)

    @classmethod
    def estimate_memory(cls, values: Mapping[str, Any], upstream: Mapping[str, ValueEstimate],
                        ctx: EstimateContext) -> MemoryEstimate | None:
        from nodeflow.nodes.flow.memory import transformer_estimate

        name = values.get("path")
        found = ctx.settings.resolve_path("diffusion_models", name) if isinstance(name, str) and name \
            else None
        if found is None:
            return None
        value = transformer_estimate(found, ctx.dtype("unet"), str(values.get("weight_dtype", "default")))
        if value is None:
            return None
        return MemoryEstimate(dict(value.models), outputs={"model": value})

    def run(self, ctx: RunContext, path: str, weight_dtype: str) -> Any:
        found = _file(ctx, "path", "diffusion_models", path, "diffusion model")
        dtype = ctx.models.dtype("unet")
        return _load(ctx, "path", found,
                     lambda p: loaders.load_transformer_file(p, dtype, weight_dtype), "diffusion_model",
                     weight_dtype)


class LoadTextEncoders(Node):
    """Load the text encoders of SD3.x (CLIP-L, CLIP-G, optionally T5) or Flux (CLIP-L, T5) from
    their own files, in any order: each file's role is read from its tensors. Stands for
    ComfyUI's CLIPLoader, DualCLIPLoader and TripleCLIPLoader."""

    id = "flow.LoadTextEncoders"
    category = "flow/loaders"
    inputs = (
        Input("encoder1", STRING, "A text encoder file in models/text_encoders (or clip/).",
              path_kind="text_encoders"),
        Input("encoder2", STRING, "A second text encoder file ('' for none).", default="",
              path_kind="text_encoders"),
        Input("encoder3", STRING, "A third text encoder file ('' for none).", default="",
              path_kind="text_encoders"),
        Input("type", STRING, "The model family the encoders are for.", default="flux",
              choices=FAMILY_CHOICES),
        Input("t5_tokenizer", STRING, "The folder of T5's tokenizer in models/tokenizers ('' looks for "
              "tokenizers/t5).", default="", path_kind="tokenizers"),
    )
    outputs = (Output("clip", FLOW_CLIP, "The text encoders."),)

    @classmethod
    def check(cls, values: Mapping[str, Any], settings: Settings) -> Iterable[tuple[str | None, str]]:
        has_t5 = False
        for socket in ENCODER_SOCKETS:
            problems, found = checked_model_path(values, settings, socket, "text_encoders", "text encoder")
            yield from problems
            if found is None or problems:
                continue
            problem = _layout_problem(found, ("clip", "t5"))
            if problem:
                yield socket, problem
            elif files.file_layout(found).kind == "t5":
                has_t5 = True
        if has_t5 and t5_tokenizer_folder(settings, str(values.get("t5_tokenizer") or "")) is None:
            error = loaders.missing_t5_tokenizer("no tokenizers/t5 folder")
            yield "t5_tokenizer", f"{error.message}. {error.hint}"

    @classmethod
    def estimate_memory(cls, values: Mapping[str, Any], upstream: Mapping[str, ValueEstimate],
                        ctx: EstimateContext) -> MemoryEstimate | None:
        from nodeflow.nodes.flow.memory import header_bytes

        sizes = {}
        for socket in ENCODER_SOCKETS:
            name = values.get(socket)
            found = ctx.settings.resolve_path("text_encoders", name) if isinstance(name, str) and name \
                else None
            if found is not None and found.is_file():
                size = header_bytes(found, ctx.dtype("text_encoder"))
                if size is not None:
                    sizes[found.name] = size
        return MemoryEstimate(sizes, outputs={"clip": ValueEstimate(sizes)})

    def run(self, ctx: RunContext, encoder1: str, encoder2: str, encoder3: str, type: str,
            t5_tokenizer: str) -> Any:
        paths = []
        for socket, name in zip(ENCODER_SOCKETS, (encoder1, encoder2, encoder3), strict=True):
            if name:
                paths.append((socket, _file(ctx, socket, "text_encoders", name, "text encoder")))
        if not paths:
            raise NodeInputError("encoder1", "no text encoder file was given")
        tok = t5_tokenizer_folder(ctx.settings, t5_tokenizer)
        dtype = ctx.models.dtype("text_encoder")
        for socket, p in paths:
            try:
                kind = files.file_layout(p).kind
            except ModelError as exc:
                raise NodeInputError(socket, exc.message, hint=exc.hint) from None
            if kind == "t5" and tok is None:
                error = loaders.missing_t5_tokenizer(
                    "no folder named t5 in " + ", ".join(map(str, ctx.settings.search_dirs("tokenizers"))))
                raise NodeInputError("t5_tokenizer", error.message, hint=error.hint)
        others = [file_fingerprint(p) for _s, p in paths[1:]]
        variant = repr((type, others, file_fingerprint(tok) if tok is not None else None))
        return _load(ctx, paths[0][0], paths[0][1],
                     lambda _p: loaders.load_text_encoders([p for _s, p in paths], type, tok, dtype),
                     "text_encoders", variant)


class LoadVAE(Node):
    """Load a VAE: the 16-channel autoencoder of SD3.x or Flux (e.g. Flux's ae.safetensors), or an
    SD 1.x/SDXL one. The two 16-channel VAEs have identical shapes but different latent scaling,
    so `family` says which it is (auto: from the file name, ae.safetensors being Flux's)."""

    id = "flow.LoadVAE"
    category = "flow/loaders"
    inputs = (
        Input("path", STRING, "The VAE: a name in models/vae (a .safetensors file or diffusers folder) "
              "or an absolute path.", path_kind="vae"),
        Input("family", STRING, "Which family's latent scaling the VAE uses.", default="auto",
              choices=("auto", "flux", "sd3")),
    )
    outputs = (Output("vae", VAE, "The autoencoder."),)

    @classmethod
    def check(cls, values: Mapping[str, Any], settings: Settings) -> Iterable[tuple[str | None, str]]:
        problems, found = checked_model_path(values, settings, "path", "vae", "VAE")
        yield from problems
        if found is not None and not problems:
            problem = _layout_problem(found, ("vae", "bundle"))
            if problem:
                yield "path", problem

    @classmethod
    def estimate_memory(cls, values: Mapping[str, Any], upstream: Mapping[str, ValueEstimate],
                        ctx: EstimateContext) -> MemoryEstimate | None:
        from nodeflow.nodes.flow.memory import vae_estimate

        name = values.get("path")
        found = ctx.settings.resolve_path("vae", name) if isinstance(name, str) and name else None
        value = vae_estimate(found, ctx.dtype("vae")) if found is not None else None
        if value is None:
            return None
        return MemoryEstimate(dict(value.models), outputs={"vae": value})

    def run(self, ctx: RunContext, path: str, family: str) -> Any:
        found = _file(ctx, "path", "vae", path, "VAE")
        chosen = family if family != "auto" else (loaders.vae_family_from_name(found) or "")
        dtype = ctx.models.dtype("vae")
        return _load(ctx, "path", found, lambda p: loaders.load_vae(p, chosen, dtype), "vae", chosen)

