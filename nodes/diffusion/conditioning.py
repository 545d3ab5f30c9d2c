"""Prompt encoding and ControlNet hints.

Prompts up to 75 tokens are encoded exactly as the diffusers pipelines encode them.
Longer prompts are cut into chunks of 75 tokens, each encoded on its own with its
start/end tokens, and the embeddings concatenated, so no word is dropped.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping
from typing import Any

from nodeflow.errors import NodeInputError
from nodeflow.node import Input, Node, Output, RunContext
from nodeflow.nodes.diffusion.types import (
    CLIP,
    CONDITIONING,
    CONTROL_NET,
    FAMILY_NAMES,
    Conditioning,
    ControlHint,
    TextEncoders,
)
from nodeflow.settings import Settings
from nodeflow.types import FLOAT, IMAGE, INT, STRING

_ENCODE_LOCK = threading.Lock()
"""One prompt encoding at a time: transformers collects hidden states with hooks on the module,
so two threads encoding with the same text encoder at once would mix their layers."""


def _token_chunks(tokenizer: Any, text: str) -> list[Any]:
    """(token ids, attention mask) tensors (1, max_length), one pair per chunk of the prompt."""
    import torch

    size = tokenizer.model_max_length
    plain = tokenizer(text, add_special_tokens=False, truncation=False).input_ids
    if len(plain) <= size - 2:
        tokens = tokenizer(text, padding="max_length", max_length=size, truncation=True,
                           return_tensors="pt")
        return [(tokens.input_ids, tokens.attention_mask)]
    body = size - 2
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    chunks = []
    for start in range(0, len(plain), body):
        part = plain[start:start + body]
        ids = [tokenizer.bos_token_id, *part, tokenizer.eos_token_id]
        mask = [1] * len(ids) + [0] * (size - len(ids))
        ids += [pad] * (size - len(ids))
        chunks.append((torch.tensor([ids], dtype=torch.long), torch.tensor([mask], dtype=torch.long)))
    return chunks


def _final_norm(text_encoder: Any) -> Any:
    return getattr(text_encoder, "text_model", text_encoder).final_layer_norm


def encode_sd(clip: TextEncoders, text: str, clip_skip: int) -> Conditioning:
    """SD 1.x/2.x: last hidden state (or an earlier layer, normed) of the one text encoder."""
    import torch

    te = clip.text_encoder
    device = next(te.parameters()).device
    use_mask = bool(getattr(te.config, "use_attention_mask", False))
    pieces = []
    with torch.no_grad():
        for ids, attention in _token_chunks(clip.tokenizer, text):
            mask = attention.to(device) if use_mask else None
            if clip_skip <= 0:
                out = te(ids.to(device), attention_mask=mask)[0]
            else:
                hidden = te(ids.to(device), attention_mask=mask, output_hidden_states=True).hidden_states
                out = _final_norm(te)(hidden[-(clip_skip + 1)])
            pieces.append(out.to(dtype=te.dtype))
    return Conditioning(torch.cat(pieces, dim=1), clip.family)


def encode_sdxl(clip: TextEncoders, text: str, clip_skip: int) -> Conditioning:
    """SDXL: penultimate layers of both encoders side by side, and the second one's pooled output."""
    import torch

    per_encoder = []
    pooled = None
    with torch.no_grad():
        for tokenizer, te in clip.pairs():
            device = next(te.parameters()).device
            pieces = []
            for ids, _mask in _token_chunks(tokenizer, text):
                out = te(ids.to(device), output_hidden_states=True)
                if pooled is None and out[0].ndim == 2:
                    pooled = out[0]
                pieces.append(out.hidden_states[-(clip_skip + 2)])
            per_encoder.append(pieces)
        if len({len(p) for p in per_encoder}) != 1:
            count = min(len(p) for p in per_encoder)
            per_encoder = [p[:count] for p in per_encoder]
        chunks = [torch.cat(parts, dim=-1) for parts in zip(*per_encoder, strict=True)]
        dtype = clip.text_encoder_2.dtype if clip.text_encoder_2 is not None else clip.text_encoder.dtype
        embeds = torch.cat(chunks, dim=1).to(dtype=dtype)
    return Conditioning(embeds, clip.family, pooled=pooled)


class TextEncode(Node):
    """Encode a prompt with the checkpoint's text encoder(s). Prompts longer than 75 tokens are
    encoded in chunks, so nothing is cut off."""

    id = "diffusion.TextEncode"
    uses_accelerator = True
    category = "diffusion/conditioning"
    inputs = (
        Input("clip", CLIP, "The text encoder(s) from a checkpoint (or a LoRA)."),
        Input("text", STRING, "The prompt.", default="", multiline=True),
        Input("clip_skip", INT, "Skip this many of the text encoder's last layers (0: use all; "
              "1 or 2 suit some anime-style checkpoints).", default=0, min=0, max=11),
    )
    outputs = (Output("conditioning", CONDITIONING, "The encoded prompt."),)

    def run(self, ctx: RunContext, clip: TextEncoders, text: str, clip_skip: int) -> Any:
        layers = clip.text_encoder.config.num_hidden_layers
        if clip_skip >= layers:
            raise NodeInputError("clip_skip", f"clip_skip {clip_skip} skips every layer of this "
                                 f"{layers}-layer text encoder", hint=f"Use 0 to {layers - 1}.")
        with ctx.models.use(*(te for _, te in clip.pairs())), _ENCODE_LOCK:
            if clip.family == "sdxl":
                return encode_sdxl(clip, text, clip_skip)
            return encode_sd(clip, text, clip_skip)


class ApplyControlNet(Node):
    """Attach a ControlNet and its control image (e.g. Canny edges) to a conditioning. Chain
    several to combine ControlNets; each acts between `start` and `end` (fractions of the steps)."""

    id = "diffusion.ApplyControlNet"
    category = "diffusion/conditioning"
    inputs = (
        Input("conditioning", CONDITIONING, "The positive conditioning to guide."),
        Input("controlnet", CONTROL_NET, "The ControlNet."),
        Input("image", IMAGE, "The control image (from a control.* preprocessor); resized to the "
              "latent's size when it differs."),
        Input("strength", FLOAT, "How strongly the ControlNet steers.", default=1.0, min=0.0,
              max=10.0, step=0.05),
        Input("start", FLOAT, "Fraction of the steps at which it starts acting.", default=0.0,
              min=0.0, max=1.0, step=0.01),
        Input("end", FLOAT, "Fraction of the steps at which it stops acting.", default=1.0,
              min=0.0, max=1.0, step=0.01),
    )
    outputs = (Output("conditioning", CONDITIONING, "The conditioning with the ControlNet attached."),)

    @classmethod
    def check(cls, values: Mapping[str, Any], settings: Settings) -> Iterable[tuple[str | None, str]]:
        start, end = values.get("start"), values.get("end")
        if isinstance(start, int | float) and isinstance(end, int | float) and start > end:
            yield "end", f"end ({end}) is before start ({start}); the ControlNet would never act"

    def run(self, ctx: RunContext, conditioning: Conditioning, controlnet: Any, image: Any,
            strength: float, start: float, end: float) -> Any:
        import numpy as np

        if controlnet.family != conditioning.family:
            raise NodeInputError(
                "controlnet", f"this ControlNet is for {FAMILY_NAMES.get(controlnet.family)}, but the "
                f"conditioning comes from a {FAMILY_NAMES.get(conditioning.family)} checkpoint",
                hint="Use a ControlNet made for the checkpoint's family.")
        width = int(controlnet.model.config.cross_attention_dim)
        if width != int(conditioning.embeds.shape[-1]):
            raise NodeInputError(
                "controlnet", f"this ControlNet takes text embeddings of width {width}, but the "
                f"conditioning's are {int(conditioning.embeds.shape[-1])} wide: it was made for "
                "another model", hint="Use a ControlNet made for the checkpoint.")
        if start > end:
            raise NodeInputError("end", f"end ({end}) is before start ({start})")
        arr = np.asarray(image, dtype=np.float32)
        if arr.ndim != 4 or arr.shape[-1] != 3:
            raise NodeInputError("image", f"expected an IMAGE (batch, height, width, 3), got shape "
                                 f"{arr.shape}")
        return conditioning.with_hint(ControlHint(controlnet, arr, float(strength), float(start),
                                                  float(end)))
