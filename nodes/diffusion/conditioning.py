"""Prompt encoding and ControlNet hints.

Prompts up to 75 tokens are encoded exactly as the diffusers pipelines encode them.
Longer prompts are cut into chunks of 75 tokens, each encoded on its own with its
start/end tokens, and the embeddings concatenated, so no word is dropped. Weights,
``BREAK`` and ``embedding:name`` are read as ``weighting`` says (see ``weighting``).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import replace
from typing import Any

from nodeflow.api import (
    FLOAT,
    IMAGE,
    INT,
    STRING,
    FingerprintContext,
    Input,
    ModelError,
    Node,
    NodeInputError,
    Output,
    RunContext,
    Settings,
)
from nodeflow.nodes.diffusion.types import (
    CLIP,
    CONDITIONING,
    CONTROL_NET,
    FAMILY_NAMES,
    Conditioning,
    ControlHint,
    TextEncoders,
)
from nodeflow.nodes.diffusion.weighting import WEIGHTINGS, embedding_names, weighted_encode

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


EmbeddingLookup = Callable[[str, int, str], Any]
"""(embedding name, text encoder width, 'clip_l' | 'clip_g') → vectors (count, width)."""


def encode_sd(clip: TextEncoders, text: str, clip_skip: int, weighting: str = "none",
              embedding: EmbeddingLookup | None = None) -> Conditioning:
    """SD 1.x/2.x: last hidden state (or an earlier layer, normed) of the one text encoder."""
    import torch

    te = clip.text_encoder
    device = next(te.parameters()).device
    use_mask = bool(getattr(te.config, "use_attention_mask", False))
    pieces = []
    if weighting != "none":
        def read(out: Any, _ids: Any) -> tuple[Any, Any]:
            z = out[0] if clip_skip <= 0 else _final_norm(te)(out.hidden_states[-(clip_skip + 1)])
            return z.to(dtype=te.dtype), None

        width = int(te.config.hidden_size)
        with torch.no_grad():
            pieces, _ = weighted_encode(clip.tokenizer, te, text, weighting,
                                        _lookup(embedding, width, "clip_l"), read, use_mask)
        return Conditioning(torch.cat(pieces, dim=1), clip.family)
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


def _lookup(embedding: EmbeddingLookup | None, width: int, key: str) -> Callable[[str], Any]:
    def find(name: str) -> Any:
        if embedding is None:
            raise NodeInputError("text", f"embedding:{name} cannot be used here")
        return embedding(name, width, key)
    return find


def encode_sdxl(clip: TextEncoders, text: str, clip_skip: int, weighting: str = "none",
                embedding: EmbeddingLookup | None = None) -> Conditioning:
    """SDXL: penultimate layers of both encoders side by side, and the second one's pooled output."""
    import torch

    per_encoder = []
    pooled = None
    with torch.no_grad():
        for index, (tokenizer, te) in enumerate(clip.pairs()):
            device = next(te.parameters()).device
            pieces = []
            if weighting != "none":
                def read(out: Any, _ids: Any) -> tuple[Any, Any]:
                    return out.hidden_states[-(clip_skip + 2)], out[0]

                key = "clip_g" if index == 1 else "clip_l"
                pieces, first = weighted_encode(tokenizer, te, text, weighting,
                                                _lookup(embedding, int(te.config.hidden_size), key),
                                                read)
                if pooled is None and first is not None and first.ndim == 2:
                    pooled = first
                per_encoder.append(pieces)
                continue
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


def check_embeddings(text: Any, weighting: Any, settings: Settings) -> Iterable[tuple[str, str]]:
    """A problem on `text` for each ``embedding:name`` that names no embedding file."""
    from nodeflow.nodes.diffusion.embeddings import find_embedding, missing_message

    if not isinstance(text, str) or weighting not in ("comfy", "a1111"):
        return
    for name in embedding_names(text, weighting):
        if find_embedding(settings, name) is None:
            yield "text", missing_message(settings, name) + (
                "; put the file in the 'embeddings' folder of a models folder (--models DIR)")


def embeddings_fingerprint(settings: Settings, texts: Iterable[Any], weighting: Any = "comfy") -> str | None:
    """The state of the embedding files prompts name, for a text node's cache key: an edited or
    replaced embedding file encodes the prompt again (None when the prompts name none)."""
    from nodeflow.api import file_fingerprint
    from nodeflow.nodes.diffusion.embeddings import find_embedding

    parts = []
    for text in texts:
        if isinstance(text, str) and "embedding:" in text:
            for name in embedding_names(text, weighting if weighting in WEIGHTINGS else "comfy"):
                found = find_embedding(settings, name)
                parts.append(f"{name}={file_fingerprint(found) if found is not None else 'missing'}")
    return ";".join(parts) or None


def embedding_lookup(settings: Settings) -> EmbeddingLookup:
    """Find, read and check the embeddings a prompt names; every failure is an error on `text`."""
    from nodeflow.nodes.diffusion.embeddings import (
        find_embedding,
        load_embedding,
        missing_message,
        vectors_for,
    )

    loaded: dict[str, Any] = {}

    def lookup(name: str, width: int, key: str) -> Any:
        found = find_embedding(settings, name)
        if found is None:
            raise NodeInputError("text", missing_message(settings, name),
                                 hint="Put the file in the 'embeddings' folder of a models folder.")
        try:
            if name not in loaded:
                loaded[name] = load_embedding(found)
            return vectors_for(loaded[name], name, width, key)
        except ModelError as exc:
            raise NodeInputError("text", exc.message, hint=exc.hint) from None

    return lookup


class TextEncode(Node):
    """Encode a prompt with the checkpoint's text encoder(s). Prompts longer than 75 tokens are
    encoded in chunks, so nothing is cut off.

    With ``weighting`` comfy or a1111, ``(word:1.3)``, ``(word)``, ``\\(`` escapes and
    ``embedding:name[:weight]`` (textual inversion, from the models folder's embeddings/)
    are read as ComfyUI reads them; a1111 also reads ``[word]`` and ``BREAK``. ``none``
    encodes the text as it is, exactly as the diffusers pipelines do.
    """

    id = "diffusion.TextEncode"
    version = "1.1.0"
    uses_accelerator = True
    category = "diffusion/conditioning"
    inputs = (
        Input("clip", CLIP, "The text encoder(s) from a checkpoint (or a LoRA)."),
        Input("text", STRING, "The prompt. (word:1.3) weights a word, embedding:name inserts a "
              "textual-inversion embedding (see weighting).", default="", multiline=True),
        Input("clip_skip", INT, "Skip this many of the text encoder's last layers (0: use all; "
              "1 or 2 suit some anime-style checkpoints).", default=0, min=0, max=11),
        Input("weighting", STRING, "How prompt weights are read: comfy (ComfyUI: (word), "
              "(word:1.3), embeddings), a1111 (also [word] and BREAK, mean-preserving weights) or "
              "none (plain text, as the diffusers pipelines encode it).", default="comfy",
              choices=WEIGHTINGS),
    )
    outputs = (Output("conditioning", CONDITIONING, "The encoded prompt."),)

    @classmethod
    def check(cls, values: Mapping[str, Any], settings: Settings) -> Iterable[tuple[str | None, str]]:
        yield from check_embeddings(values.get("text"), values.get("weighting", "comfy"), settings)

    @classmethod
    def fingerprint(cls, ctx: FingerprintContext, **inputs: Any) -> str | None:
        """The embedding files the prompt names."""
        return embeddings_fingerprint(ctx.settings, [inputs.get("text")], inputs.get("weighting", "comfy"))

    def run(self, ctx: RunContext, clip: TextEncoders, text: str, clip_skip: int,
            weighting: str = "comfy") -> Any:
        if weighting not in WEIGHTINGS:
            raise NodeInputError("weighting", f"unknown weighting {weighting!r}",
                                 hint=f"Use one of: {', '.join(WEIGHTINGS)}.")
        layers = clip.text_encoder.config.num_hidden_layers
        if clip_skip >= layers:
            raise NodeInputError("clip_skip", f"clip_skip {clip_skip} skips every layer of this "
                                 f"{layers}-layer text encoder", hint=f"Use 0 to {layers - 1}.")
        lookup = embedding_lookup(ctx.settings)
        with ctx.models.use(*(te for _, te in clip.pairs())), _ENCODE_LOCK:
            if clip.family == "sdxl":
                return encode_sdxl(clip, text, clip_skip, weighting, lookup)
            return encode_sd(clip, text, clip_skip, weighting, lookup)


class ApplyControlNet(Node):
    """Attach a ControlNet or a T2I-Adapter and its control image (e.g. Canny edges) to a
    conditioning. Chain several to stack them: each acts with its own strength between `start`
    and `end` (fractions of the steps), and their effects add up."""

    id = "diffusion.ApplyControlNet"
    category = "diffusion/conditioning"
    inputs = (
        Input("conditioning", CONDITIONING, "The positive conditioning to guide."),
        Input("controlnet", CONTROL_NET, "The ControlNet or T2I-Adapter (diffusion.LoadControlNet)."),
        Input("image", IMAGE, "The control image (from a control.* preprocessor); resized to the "
              "latent's size when it differs."),
        Input("strength", FLOAT, "How strongly the ControlNet steers.", default=1.0, min=0.0,
              max=10.0, step=0.05),
        Input("start", FLOAT, "Fraction of the steps at which it starts acting.", default=0.0,
              min=0.0, max=1.0, step=0.01, widget="range.start"),
        Input("end", FLOAT, "Fraction of the steps at which it stops acting.", default=1.0,
              min=0.0, max=1.0, step=0.01, widget="range.end"),
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

        adapter = getattr(controlnet, "kind", "controlnet") == "t2i_adapter"
        if adapter and controlnet.family == "sd1" and conditioning.family in ("sd1", "sd2"):
            controlnet = replace(controlnet, family=conditioning.family)  # fits SD 1.x and 2.x
        if controlnet.family != conditioning.family:
            raise NodeInputError(
                "controlnet", f"this {'T2I-Adapter' if adapter else 'ControlNet'} is for "
                f"{FAMILY_NAMES.get(controlnet.family)}, but the conditioning comes from a "
                f"{FAMILY_NAMES.get(conditioning.family)} checkpoint",
                hint="Use one made for the checkpoint's family.")
        width = int(conditioning.embeds.shape[-1]) if adapter else \
            int(controlnet.model.config.cross_attention_dim)
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
