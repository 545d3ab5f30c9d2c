"""Autoregressive image generation: a VQ image tokenizer and a causal transformer prior.

``ar.Tokenize`` turns images into grids of codebook indices (TOKENS), ``ar.Detokenize``
turns them back, and ``ar.Sample`` writes a grid one token at a time with a prior,
optionally keeping the top rows of a given grid (image completion).

Memory estimates (before a run): the tokenizer and the prior are sized from their
files (both run in float32); sampling adds the prior's key/value cache, 2 × layers ×
batch × tokens × width × 4 bytes, and the attention scores of a prefill,
batch × heads × tokens² × 4 bytes.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from nodeflow.api import (
    FLOAT,
    IMAGE,
    INT,
    STRING,
    EstimateContext,
    Input,
    MemoryEstimate,
    ModelError,
    ModelKind,
    Node,
    NodeInputError,
    Output,
    RunContext,
    Settings,
    SocketType,
    ValueEstimate,
)
from nodeflow.nodes.ar.tokens import Tokens, mismatch

TOKENIZER = SocketType(
    "TOKENIZER", color="#4db6ac",
    description="A VQ image tokenizer (diffusers VQModel): images to codebook indices and back.")
TOKENS = SocketType(
    "TOKENS", color="#26a69a",
    description="A batch of token grids: int64 codebook indices (batch, height, width), the "
    "codebook size and the tokenizer they belong to.")
PRIOR = SocketType(
    "PRIOR", color="#00897b",
    description="A causal transformer over a codebook that generates token grids in raster order.")


def _check_model_path(values: Mapping[str, Any], settings: Settings, kind: str,
                      read: Any) -> Iterable[tuple[str | None, str]]:
    path = values.get("path")
    if isinstance(path, str) and path:
        found = settings.resolve_path(kind, path)
        if found is not None:
            try:
                read(found)
            except ValueError as exc:
                yield ("path", str(exc))
            except OSError as exc:
                yield ("path", f"cannot read {found}: {exc.strerror or exc}")


def _load(ctx: RunContext, kind: str, path: str, loader: Any) -> Any:
    found = ctx.settings.resolve_path(kind, path)
    if found is None:
        raise NodeInputError("path", ctx.settings.describe_search(kind, path))
    try:
        return ctx.models.load(found, loader, kind=kind)
    except ModelError as exc:
        raise NodeInputError("path", exc.message, hint=exc.hint) from None


def _estimate_file(values: Mapping[str, Any], ctx: EstimateContext, kind: str,
                   weights: Any) -> tuple[str, int] | None:
    """The name and float32 bytes of the model file a loader's `path` names, or None."""
    from nodeflow.api import estimate_file_bytes

    path = values.get("path")
    found = ctx.settings.resolve_path(kind, path) if isinstance(path, str) and path else None
    if found is None:
        return None
    try:
        return found.name, estimate_file_bytes(weights(found), "fp32")
    except (OSError, ValueError, ModelError):
        return None


def _tokenizer_weights(path: Any) -> Any:
    if path.is_dir() and not (path / "config.json").is_file() and (path / "vqvae").is_dir():
        return path / "vqvae"
    return path


class LoadTokenizer(Node):
    """Load a VQ image tokenizer: a diffusers VQModel folder (or a pipeline folder with a
    'vqvae' subfolder), or a single .safetensors file with its config in the metadata."""

    id = "ar.LoadTokenizer"
    category = "autoregressive"
    inputs = (Input("path", STRING, "The tokenizer, in the 'tokenizers' folder of a models folder "
                    "or an absolute path.", path_kind="tokenizers"),)
    outputs = (
        Output("tokenizer", TOKENIZER, "The tokenizer."),
        Output("codebook_size", INT, "How many distinct tokens the codebook has."),
        Output("downscale", INT, "Image pixels per token along each side."),
    )

    @classmethod
    def check(cls, values: Mapping[str, Any], settings: Settings) -> Iterable[tuple[str | None, str]]:
        from nodeflow.nodes.ar.files import tokenizer_config

        yield from _check_model_path(values, settings, "tokenizers", tokenizer_config)

    @classmethod
    def estimate_memory(cls, values: Mapping[str, Any], upstream: Mapping[str, ValueEstimate],
                        ctx: EstimateContext) -> MemoryEstimate | None:
        """The VQ model sized from its file or folder (float32)."""
        found = _estimate_file(values, ctx, "tokenizers", _tokenizer_weights)
        if found is None:
            return None
        return MemoryEstimate(dict([found]), outputs={"tokenizer": ValueEstimate(dict([found]))})

    def run(self, ctx: RunContext, path: str) -> Any:
        from nodeflow.nodes.ar.tokenizer import load_tokenizer

        tokenizer = _load(ctx, "tokenizers", path, load_tokenizer)
        return {"tokenizer": tokenizer, "codebook_size": tokenizer.codebook_size,
                "downscale": tokenizer.downscale}


class Tokenize(Node):
    """Turn images into grids of codebook indices (one token per downscale×downscale pixels)."""

    id = "ar.Tokenize"
    uses_accelerator = True
    category = "autoregressive"
    inputs = (
        Input("tokenizer", TOKENIZER, "The VQ tokenizer."),
        Input("image", IMAGE, "The images; width and height must be multiples of the "
              "tokenizer's downscale."),
    )
    outputs = (Output("tokens", TOKENS, "The token grids."),)

    def run(self, ctx: RunContext, tokenizer: Any, image: Any) -> Any:
        d = tokenizer.downscale
        height, width = image.shape[1:3]
        if height % d or width % d:
            raise NodeInputError(
                "image", f"the image is {width}×{height}; this tokenizer needs width and height "
                f"that are multiples of {d}",
                hint=f"Resize or crop it to {width // d * d or d}×{height // d * d or d} first.")
        with ctx.models.use(tokenizer) as device:
            ids = tokenizer.encode(image, device)
        ctx.progress(1, 1)
        return Tokens(ids, tokenizer.codebook_size, tokenizer.fingerprint)


class Detokenize(Node):
    """Turn token grids back into images with the tokenizer they came from."""

    id = "ar.Detokenize"
    uses_accelerator = True
    category = "autoregressive"
    inputs = (
        Input("tokenizer", TOKENIZER, "The VQ tokenizer whose codebook the tokens index."),
        Input("tokens", TOKENS, "The token grids."),
    )
    outputs = (Output("image", IMAGE, "The decoded images."),)

    def run(self, ctx: RunContext, tokenizer: Any, tokens: Tokens) -> Any:
        problem = mismatch(tokens, tokenizer.codebook_size, tokenizer.fingerprint, "this tokenizer")
        if problem:
            raise NodeInputError("tokens", problem,
                                 hint="Decode tokens with the tokenizer that made them (or that "
                                 "the prior was trained on).")
        ids = tokens.ids
        if ids.size and (ids.min() < 0 or ids.max() >= tokenizer.codebook_size):
            raise NodeInputError("tokens", f"token ids range from {ids.min()} to {ids.max()}, "
                                 f"outside the codebook of {tokenizer.codebook_size}")
        with ctx.models.use(tokenizer) as device:
            image = tokenizer.decode(ids, device)
        ctx.progress(1, 1)
        return image


class LoadPrior(Node):
    """Load a token prior (a small causal transformer over a tokenizer's codebook)."""

    id = "ar.LoadPrior"
    category = "autoregressive"
    inputs = (Input("path", STRING, "The prior: a .safetensors file with its config, or a folder "
                    "with config.json and model.safetensors, in the 'priors' folder of a models "
                    "folder or an absolute path.", path_kind="priors"),)
    outputs = (
        Output("prior", PRIOR, "The prior."),
        Output("codebook_size", INT, "The codebook size it generates tokens for."),
        Output("classes", STRING, "The class labels it is conditioned on, one per line "
               "(line n is label n); empty when unconditional."),
    )

    @classmethod
    def check(cls, values: Mapping[str, Any], settings: Settings) -> Iterable[tuple[str | None, str]]:
        from nodeflow.nodes.ar.files import prior_config

        yield from _check_model_path(values, settings, "priors", prior_config)

    @classmethod
    def estimate_memory(cls, values: Mapping[str, Any], upstream: Mapping[str, ValueEstimate],
                        ctx: EstimateContext) -> MemoryEstimate | None:
        """The prior sized from its file (float32), with the shape its sampling needs."""
        from nodeflow.nodes.ar.files import prior_config

        found = _estimate_file(values, ctx, "priors",
                               lambda p: p / "model.safetensors" if p.is_dir() else p)
        if found is None:
            return None
        try:
            config = prior_config(ctx.settings.resolve_path("priors", values["path"]) or Path())
        except (OSError, ValueError):
            config = {}
        info = {k: config[k] for k in ("layers", "dim", "heads") if isinstance(config.get(k), int)}
        if isinstance(config.get("height"), int) and isinstance(config.get("width"), int):
            info["tokens"] = config["height"] * config["width"] + 1
        return MemoryEstimate(dict([found]), outputs={"prior": ValueEstimate(dict([found]), info)})

    def run(self, ctx: RunContext, path: str) -> Any:
        from nodeflow.nodes.ar.prior import load_prior

        prior = _load(ctx, "priors", path, load_prior)
        names = prior.config.get("class_names") or [str(i) for i in range(prior.num_classes)]
        return {"prior": prior, "codebook_size": prior.vocab_size, "classes": "\n".join(names)}


class Sample(Node):
    """Generate token grids one token at a time with a prior, in raster order.

    With `tokens`, the top `keep_rows` rows of that grid are kept unchanged and the rest is
    generated after them (image completion). Same seed, same tokens.
    """

    id = "ar.Sample"
    uses_accelerator = True
    category = "autoregressive"
    inputs = (
        Input("prior", PRIOR, "The prior, from ar.LoadPrior."),
        Input("tokens", TOKENS, "A grid to continue from (optional).", optional=True),
        Input("keep_rows", INT, "How many rows of `tokens`, from the top, are kept; the rows "
              "below are generated. Only used with tokens.", default=0, min=0, max=4096),
        Input("label", INT, "The class to generate (see ar.LoadPrior's classes); unset for none.",
              optional=True, min=0, max=1_000_000),
        Input("batch", INT, "How many grids to generate when no tokens are given.", default=1,
              min=1, max=256),
        Input("seed", INT, "Random seed of the sampling.", default=0, min=0, max=2**63 - 1,
              seed=True),
        Input("temperature", FLOAT, "Below 1 picks likelier tokens, above 1 more varied ones; "
              "0 always takes the likeliest.", default=1.0, min=0.0, max=5.0, step=0.05),
        Input("top_k", INT, "Only draw among the k likeliest tokens; 0 for all, 1 is greedy.",
              default=0, min=0, max=1_000_000),
        Input("top_p", FLOAT, "Only draw among the likeliest tokens whose probabilities add up "
              "to p (nucleus sampling); 1 for all.", default=1.0, min=0.01, max=1.0, step=0.01),
        Input("cfg", FLOAT, "Classifier-free guidance with a label: above 1 follows the label "
              "more closely (each step also runs without it, so it costs twice the compute); "
              "1 turns it off.", default=1.0, min=0.0, max=20.0, step=0.1),
    )
    outputs = (Output("tokens", TOKENS, "The generated grids."),)

    @classmethod
    def estimate_memory(cls, values: Mapping[str, Any], upstream: Mapping[str, ValueEstimate],
                        ctx: EstimateContext) -> MemoryEstimate | None:
        """The prior, and its key/value cache and prefill scores (see the module docstring)."""
        prior = upstream.get("prior")
        if prior is None:
            return None
        info = prior.info
        batch = values.get("batch") if "tokens" not in upstream else None
        if not all(isinstance(info.get(k), int) for k in ("layers", "dim", "heads", "tokens")) \
                or not isinstance(batch, int):
            return MemoryEstimate(dict(prior.models))
        tokens = info["tokens"]
        activations = 4 * batch * tokens * (2 * info["layers"] * info["dim"] + info["heads"] * tokens)
        return MemoryEstimate(dict(prior.models), activations, note=f"batch {batch}")

    def run(self, ctx: RunContext, prior: Any, tokens: Tokens | None, keep_rows: int,
            label: int | None, batch: int, seed: int, temperature: float, top_k: int,
            top_p: float, cfg: float = 1.0) -> Any:
        import numpy as np
        import torch

        from nodeflow.nodes.ar.prior import generate

        height, width = prior.grid
        fingerprint = prior.config.get("tokenizer")
        if label is not None and label >= prior.num_classes:
            have = (f"labels 0 to {prior.num_classes - 1}" if prior.num_classes
                    else "no labels (it is unconditional)")
            raise NodeInputError("label", f"label {label} is not a class of this prior; it has {have}")
        if tokens is not None:
            problem = mismatch(tokens, prior.vocab_size, fingerprint, "the prior")
            if problem:
                raise NodeInputError("tokens", problem)
            if tokens.shape[1:] != (height, width):
                raise NodeInputError(
                    "tokens", f"the tokens are a {tokens.shape[2]}×{tokens.shape[1]} grid but the "
                    f"prior makes {width}×{height} grids",
                    hint=f"Tokenize an image of {width}×{height} tokens.")
            if keep_rows > height:
                raise NodeInputError("keep_rows", f"keep_rows {keep_rows} is more than the "
                                     f"{height} rows of the grid")
            ids = torch.from_numpy(np.ascontiguousarray(tokens.ids, dtype=np.int64))
            ids = ids.reshape(tokens.shape[0], height * width)
            known = keep_rows * width
            fingerprint = tokens.tokenizer or fingerprint
        else:
            ids = torch.zeros(batch, height * width, dtype=torch.long)
            known = 0
        rows_total = height - known // width

        def on_token(i: int) -> None:
            if (i + 1) % width == 0:
                ctx.progress((i + 1) // width - known // width, rows_total)
            else:
                ctx.check_cancelled()

        with ctx.models.use(prior):
            out = generate(prior, ids, known, label, seed, temperature, top_k, top_p,
                           on_token=on_token, cfg=cfg)
        grid = out.numpy().reshape(-1, height, width)
        return Tokens(grid, prior.vocab_size, fingerprint)


NODES = [LoadTokenizer, Tokenize, Detokenize, LoadPrior, Sample]
MODEL_KINDS = [
    ModelKind("tokenizers", "Tokenizers: VQ image tokenizers (.safetensors with their config), and "
              "text tokenizer folders (T5's, for split text-encoder files)."),
    ModelKind("priors", "Autoregressive token priors: .safetensors with their config.",
              suffixes=(".safetensors",)),
]
__all__ = ["TOKENIZER", "TOKENS", "PRIOR", "Tokens", "LoadTokenizer", "Tokenize", "Detokenize",
           "LoadPrior", "Sample", "NODES", "MODEL_KINDS"]
