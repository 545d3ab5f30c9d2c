"""Prompt encoding for SD3.x (CLIP-L + CLIP-G + optional T5) and Flux (CLIP-L pooled + T5),
exactly as the diffusers pipelines encode prompts, plus Flux's guidance and zeroed prompts."""

from __future__ import annotations

import threading
from dataclasses import replace
from typing import Any

from nodeflow.api import FLOAT, INT, STRING, Input, Node, NodeInputError, Output, RunContext
from nodeflow.nodes.flow.types import FLOW_CLIP, FLOW_CONDITIONING, FlowConditioning, FlowTextEncoders

DEFAULT_T5_LENGTH = {"sd3": 256, "flux": 512}
"""T5 tokens per prompt when the node says 0: the pipelines' defaults (Flux schnell users often
choose 256)."""
MAX_T5_LENGTH = 512

_ENCODE_LOCK = threading.Lock()
"""transformers collects hidden states with per-call state on the module: one encoding at a time."""


def _clip(encoder: Any, text: str) -> tuple[Any, Any]:
    """(penultimate hidden states, pooled output) of one CLIP encoder, as the pipelines take them."""
    tokenizer, model = encoder.tokenizer, encoder.model
    ids = tokenizer(text, padding="max_length", max_length=tokenizer.model_max_length, truncation=True,
                    return_tensors="pt").input_ids
    device = next(model.parameters()).device
    out = model(ids.to(device), output_hidden_states=True)
    return out.hidden_states[-2].to(model.dtype), out[0]


def _t5(encoder: Any, text: str, length: int) -> Any:
    tokenizer, model = encoder.tokenizer, encoder.model
    ids = tokenizer(text, padding="max_length", max_length=length, truncation=True,
                    add_special_tokens=True, return_tensors="pt").input_ids
    device = next(model.parameters()).device
    return model(ids.to(device))[0].to(model.dtype)


def encode(clip: FlowTextEncoders, text: str, t5_length: int) -> FlowConditioning:
    """Encode a prompt with a family's encoders (``t5_length`` 0: the family's default)."""
    import torch

    length = t5_length or DEFAULT_T5_LENGTH[clip.family]
    with torch.no_grad():
        if clip.family == "sd3":
            assert clip.clip_l is not None and clip.clip_g is not None
            hidden_l, pooled_l = _clip(clip.clip_l, text)
            hidden_g, pooled_g = _clip(clip.clip_g, text)
            t5 = _t5(clip.t5, text, length) if clip.t5 is not None else None
            return FlowConditioning("sd3", torch.cat([pooled_l, pooled_g], dim=-1),
                                    clip=torch.cat([hidden_l, hidden_g], dim=-1), t5=t5, t5_length=length)
        assert clip.clip_l is not None and clip.t5 is not None
        tokenizer, model = clip.clip_l.tokenizer, clip.clip_l.model
        ids = tokenizer(text, padding="max_length", max_length=tokenizer.model_max_length,
                        truncation=True, return_tensors="pt").input_ids
        pooled = model(ids.to(next(model.parameters()).device)).pooler_output.to(model.dtype)
        return FlowConditioning("flux", pooled, t5=_t5(clip.t5, text, length), t5_length=length)


class TextEncode(Node):
    """Encode a prompt for SD3.x or Flux. SD3 uses CLIP-L, CLIP-G and T5 (when loaded); Flux uses
    CLIP-L's pooled output and T5's token states."""

    id = "flow.TextEncode"
    uses_accelerator = True
    category = "flow/conditioning"
    inputs = (
        Input("clip", FLOW_CLIP, "The text encoders (from flow.LoadCheckpoint or flow.LoadTextEncoders)."),
        Input("text", STRING, "The prompt.", default="", multiline=True),
        Input("t5_length", INT, "T5 tokens the prompt is padded or cut to (0: 256 for SD3, 512 for "
              "Flux, as the diffusers pipelines use).", default=0, min=0, max=MAX_T5_LENGTH),
    )
    outputs = (Output("conditioning", FLOW_CONDITIONING, "The encoded prompt."),)

    def run(self, ctx: RunContext, clip: FlowTextEncoders | None, text: str, t5_length: int) -> Any:
        if clip is None:  # e.g. the clip output of a LoadLoRA whose clip input was left unconnected
            raise NodeInputError("clip", "no text encoders arrive here",
                                 hint="Connect the text encoders of a loader (or give LoadLoRA its clip).")
        if clip.family == "flux" and clip.t5 is None:
            raise NodeInputError("clip", "Flux needs the T5 text encoder, and this clip has none",
                                 hint="Load t5xxl with flow.LoadTextEncoders.")
        with ctx.models.use(*clip.modules()) as _device, _ENCODE_LOCK:
            return encode(clip, text, t5_length)


class FluxGuidance(Node):
    """Set the guidance Flux dev takes as a model input (3.5 is the usual value). Other models
    ignore it."""

    id = "flow.FluxGuidance"
    category = "flow/conditioning"
    inputs = (
        Input("conditioning", FLOW_CONDITIONING, "The encoded prompt."),
        Input("guidance", FLOAT, "The embedded guidance scale.", default=3.5, min=0.0, max=100.0,
              step=0.1),
    )
    outputs = (Output("conditioning", FLOW_CONDITIONING, "The prompt with its guidance."),)

    def run(self, ctx: RunContext, conditioning: FlowConditioning, guidance: float) -> Any:
        return replace(conditioning, guidance=float(guidance))


class ZeroOut(Node):
    """A conditioning of the same shape with every number zero: the negative SD3.x workflows use
    in place of an encoded empty prompt."""

    id = "flow.ZeroOut"
    category = "flow/conditioning"
    inputs = (Input("conditioning", FLOW_CONDITIONING, "The encoded prompt."),)
    outputs = (Output("conditioning", FLOW_CONDITIONING, "The zeroed conditioning."),)

    def run(self, ctx: RunContext, conditioning: FlowConditioning) -> Any:
        import torch

        def zero(t: Any) -> Any:
            return torch.zeros_like(t) if t is not None else None

        return replace(conditioning, pooled=zero(conditioning.pooled), clip=zero(conditioning.clip),
                       t5=zero(conditioning.t5))

