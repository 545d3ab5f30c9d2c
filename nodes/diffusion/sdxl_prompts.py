"""SDXL prompt nodes with size and aesthetic-score conditioning (ComfyUI's CLIPTextEncodeSDXL and
CLIPTextEncodeSDXLRefiner).

SDXL's UNet also takes "micro-conditioning": the size the picture had (``original_size``),
the crop it was cut from (``crop``) and the size wanted (``target_size``); the refiner
takes an aesthetic score (6 for the prompt, 2.5 for the negative are the usual values)
in place of the target size. These nodes put those figures on the conditioning; a sampler
reads them with `time_ids`. Prompts are read with ComfyUI's weighting.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from nodeflow.api import (
    FLOAT,
    INT,
    STRING,
    FingerprintContext,
    Input,
    Node,
    NodeInputError,
    Output,
    RunContext,
    Settings,
)
from nodeflow.nodes.diffusion.conditioning import (
    _ENCODE_LOCK,
    check_embeddings,
    embedding_lookup,
    embeddings_fingerprint,
)
from nodeflow.nodes.diffusion.types import CLIP, CONDITIONING, Conditioning, TextEncoders
from nodeflow.nodes.diffusion.weighting import empty_chunk, encode_chunk, weighted_encode

SIZE = {"default": 1024, "min": 0, "max": 16384, "step": 8}


def time_ids(cond: Conditioning, width: int, height: int, refiner: bool, negative: bool) -> list[float]:
    """SDXL's added time ids for a conditioning: (original h, w, crop top, left, target h, w), or
    for the refiner (original h, w, crop top, left, aesthetic score); the picture's size and
    no crop where the conditioning does not say."""
    ow, oh = cond.original_size or (width, height)
    cw, ch = cond.crop or (0, 0)
    if refiner:
        score = cond.aesthetic_score if cond.aesthetic_score is not None else (2.5 if negative else 6.0)
        return [oh, ow, ch, cw, score]
    tw, th = cond.target_size or (width, height)
    return [oh, ow, ch, cw, th, tw]


def _encode_one(tokenizer: Any, encoder: Any, text: str, lookup: Any, key: str) -> tuple[list[Any], Any]:
    """Penultimate-layer chunks of one SDXL text encoder and its first chunk's output."""
    import torch

    def read(out: Any, _ids: Any) -> tuple[Any, Any]:
        return out.hidden_states[-2], out[0]

    width = int(encoder.config.hidden_size)
    with torch.no_grad():
        return weighted_encode(tokenizer, encoder, text, "comfy", lambda n: lookup(n, width, key), read)


def _empty(tokenizer: Any, encoder: Any) -> Any:
    import torch

    def read(out: Any, _ids: Any) -> tuple[Any, Any]:
        return out.hidden_states[-2], None

    with torch.no_grad():
        return encode_chunk(encoder, empty_chunk(tokenizer), False, read)[0]


def _size_problems(values: Mapping[str, Any]) -> Iterable[tuple[str | None, str]]:
    for crop, size in (("crop_w", "width"), ("crop_h", "height")):
        c, s = values.get(crop), values.get(size)
        if isinstance(c, int) and isinstance(s, int) and c >= s > 0:
            yield crop, f"{crop} {c} starts outside the original {size} {s}; use 0 to {s - 1}"


def _need_two(clip: TextEncoders) -> None:
    if clip.family != "sdxl" or clip.text_encoder_2 is None or clip.text_encoder is None:
        raise NodeInputError("clip", "this node needs SDXL's two text encoders (CLIP-L and "
                             "OpenCLIP-G), but this clip has one",
                             hint="Use diffusion.TextEncode for SD 1.x/2.x checkpoints, and "
                                  "CLIPTextEncodeSDXLRefiner for the refiner.")


class CLIPTextEncodeSDXL(Node):
    """Encode an SDXL prompt with a text for each encoder (text_g for OpenCLIP-G, text_l for
    CLIP-L) and the size conditioning: the original size, the crop and the target size."""

    id = "diffusion.CLIPTextEncodeSDXL"
    uses_accelerator = True
    category = "diffusion/conditioning"
    inputs = (
        Input("clip", CLIP, "SDXL's text encoders."),
        Input("width", INT, "Original width the picture should look as if it had.", **SIZE),
        Input("height", INT, "Original height.", **SIZE),
        Input("crop_w", INT, "Left edge of the crop it should look cut from (0: uncropped).",
              default=0, min=0, max=16384, step=8),
        Input("crop_h", INT, "Top edge of that crop.", default=0, min=0, max=16384, step=8),
        Input("target_width", INT, "Target width.", **SIZE),
        Input("target_height", INT, "Target height.", **SIZE),
        Input("text_g", STRING, "The prompt for OpenCLIP-G (the larger encoder).", default="",
              multiline=True),
        Input("text_l", STRING, "The prompt for CLIP-L.", default="", multiline=True),
    )
    outputs = (Output("conditioning", CONDITIONING, "The encoded prompt with its size conditioning."),)

    @classmethod
    def check(cls, values: Mapping[str, Any], settings: Settings) -> Iterable[tuple[str | None, str]]:
        yield from _size_problems(values)
        for name in ("text_g", "text_l"):
            for _, message in check_embeddings(values.get(name), "comfy", settings):
                yield name, message

    @classmethod
    def fingerprint(cls, ctx: FingerprintContext, **inputs: Any) -> str | None:
        """The embedding files the prompts name."""
        return embeddings_fingerprint(ctx.settings, [inputs.get("text_g"), inputs.get("text_l")])

    def run(self, ctx: RunContext, clip: TextEncoders, width: int, height: int, crop_w: int,
            crop_h: int, target_width: int, target_height: int, text_g: str, text_l: str) -> Any:
        import torch

        _need_two(clip)
        for socket, message in _size_problems({"width": width, "height": height, "crop_w": crop_w,
                                               "crop_h": crop_h}):
            raise NodeInputError(socket or "crop_w", message)
        lookup = embedding_lookup(ctx.settings)
        with ctx.models.use(clip.text_encoder, clip.text_encoder_2), _ENCODE_LOCK:
            chunks_l, _ = _encode_one(clip.tokenizer, clip.text_encoder, text_l, lookup, "clip_l")
            chunks_g, first_g = _encode_one(clip.tokenizer_2, clip.text_encoder_2, text_g, lookup,
                                            "clip_g")
            # The shorter prompt is padded with empty-prompt chunks, as ComfyUI pads it.
            if len(chunks_l) < len(chunks_g):
                chunks_l += [_empty(clip.tokenizer, clip.text_encoder)] * (len(chunks_g) - len(chunks_l))
            elif len(chunks_g) < len(chunks_l):
                chunks_g += [_empty(clip.tokenizer_2, clip.text_encoder_2)] * (len(chunks_l) - len(chunks_g))
            embeds = torch.cat([torch.cat(pair, dim=-1) for pair in zip(chunks_l, chunks_g, strict=True)],
                               dim=1).to(dtype=clip.text_encoder_2.dtype)
        return Conditioning(embeds, clip.family, pooled=first_g, original_size=(width, height),
                            crop=(crop_w, crop_h), target_size=(target_width, target_height))


class CLIPTextEncodeSDXLRefiner(Node):
    """Encode a prompt for the SDXL refiner (OpenCLIP-G only) with its aesthetic score and the
    original size."""

    id = "diffusion.CLIPTextEncodeSDXLRefiner"
    uses_accelerator = True
    category = "diffusion/conditioning"
    inputs = (
        Input("clip", CLIP, "The refiner's text encoder (or SDXL's)."),
        Input("ascore", FLOAT, "Aesthetic score: about 6 for a prompt, 2.5 for a negative prompt.",
              default=6.0, min=0.0, max=1000.0, step=0.01),
        Input("width", INT, "Original width the picture should look as if it had.", **SIZE),
        Input("height", INT, "Original height.", **SIZE),
        Input("text", STRING, "The prompt.", default="", multiline=True),
    )
    outputs = (Output("conditioning", CONDITIONING, "The encoded prompt with the aesthetic score."),)

    @classmethod
    def check(cls, values: Mapping[str, Any], settings: Settings) -> Iterable[tuple[str | None, str]]:
        yield from check_embeddings(values.get("text"), "comfy", settings)

    @classmethod
    def fingerprint(cls, ctx: FingerprintContext, **inputs: Any) -> str | None:
        """The embedding files the prompt names."""
        return embeddings_fingerprint(ctx.settings, [inputs.get("text")])

    def run(self, ctx: RunContext, clip: TextEncoders, ascore: float, width: int, height: int,
            text: str) -> Any:
        import torch

        encoder = clip.text_encoder_2 if clip.text_encoder_2 is not None else clip.text_encoder
        tokenizer = clip.tokenizer_2 if clip.text_encoder_2 is not None else clip.tokenizer
        if clip.family != "sdxl" or encoder is None:
            raise NodeInputError("clip", "this node needs the SDXL refiner's (or SDXL's) text encoder",
                                 hint="Use diffusion.TextEncode for SD 1.x/2.x checkpoints.")
        lookup = embedding_lookup(ctx.settings)
        with ctx.models.use(encoder), _ENCODE_LOCK:
            chunks, first = _encode_one(tokenizer, encoder, text, lookup, "clip_g")
            embeds = torch.cat(chunks, dim=1).to(dtype=encoder.dtype)
        pooled = first if first is not None and first.ndim == 2 else None
        return Conditioning(embeds, clip.family, pooled=pooled, original_size=(width, height),
                            aesthetic_score=float(ascore))


SDXL_PROMPT_NODES = [CLIPTextEncodeSDXL, CLIPTextEncodeSDXLRefiner]
