"""LoRA for SD3.x and Flux through peft, on copies that share the base weights.

The model and text encoders received are never touched (other branches may use them): each
is copied module by module with its weight tensors shared, the adapter is injected into the
copy, and every adapter in the chain gets its weight as diffusers' ``set_adapters`` sets it.
diffusers' own readers convert the layouts LoRAs come in (diffusers/peft, kohya, and for Flux
also Black Forest Labs' and XLabs').
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

from nodeflow.api import FLOAT, STRING, Input, Node, NodeInputError, Output, RunContext, Settings
from nodeflow.nodes.diffusion.files import check_path_input, lora_file
from nodeflow.nodes.diffusion.lora import LoraFile, load_lora_file, shared_copy
from nodeflow.nodes.flow.types import (
    FAMILY_NAMES,
    FLOW_CLIP,
    FLOW_MODEL,
    Encoder,
    FlowModel,
    FlowTextEncoders,
)

_NAMES = itertools.count()
_ENCODER_PREFIXES = (("clip_l", "text_encoder"), ("clip_g", "text_encoder_2"))
"""Each CLIP encoder and the prefix of its tensors in a diffusers-layout LoRA."""


def _mixin(family: str) -> Any:
    if family == "flux":
        from diffusers.loaders import FluxLoraLoaderMixin

        return FluxLoraLoaderMixin
    from diffusers.loaders import SD3LoraLoaderMixin

    return SD3LoraLoaderMixin


def _has_adapter(module: Any, name: str) -> bool:
    from peft.tuners.tuners_utils import BaseTunerLayer

    return any(isinstance(m, BaseTunerLayer) and name in getattr(m, "lora_A", {}) for m in module.modules())


def read_lora(lora: LoraFile, family: str) -> tuple[dict[str, Any], Any]:
    """The LoRA's tensors in diffusers' names (and network alphas where the layout has them)."""
    mixin = _mixin(family)
    try:
        if family == "flux":
            state, alphas = mixin.lora_state_dict(dict(lora.tensors), return_alphas=True)
        else:
            state, alphas = mixin.lora_state_dict(dict(lora.tensors)), None
    except (ValueError, KeyError, RuntimeError, AttributeError) as exc:
        raise NodeInputError("path", f"{lora.name} is not a {FAMILY_NAMES[family]} LoRA nodeflow can "
                             f"read: {exc}", hint="Use a LoRA trained for the model's family.") from None
    if not state or not any("lora" in key for key in state):
        raise NodeInputError("path", f"{lora.name} is not a LoRA (none of its tensors is a LoRA weight)")
    return dict(state), alphas


def apply_lora(model: FlowModel, clip: FlowTextEncoders | None, lora: LoraFile, strength_model: float,
               strength_clip: float) -> tuple[FlowModel, FlowTextEncoders | None]:
    """New model and text encoders with the LoRA added to the adapters they already carry."""
    from diffusers.utils.peft_utils import set_weights_and_activate_adapters

    state, alphas = read_lora(lora, model.family)
    mixin = _mixin(model.family)
    name = f"lora{next(_NAMES)}"
    touched = False
    transformer = model.transformer
    adapters = model.adapters
    if any(key.startswith("transformer.") for key in state):
        transformer = shared_copy(model.transformer)
        try:
            kwargs: dict[str, Any] = {"network_alphas": alphas} if model.family == "flux" else {}
            mixin.load_lora_into_transformer(state, transformer=transformer, adapter_name=name, **kwargs)
        except (ValueError, RuntimeError, KeyError) as exc:
            raise NodeInputError("path", f"{lora.name} does not fit this "
                                 f"{FAMILY_NAMES[model.family]} model: {exc}",
                                 hint="Use a LoRA trained for this model.") from None
        if _has_adapter(transformer, name):
            touched = True
            adapters = (*adapters, (name, float(strength_model)))
            transformer.set_adapters([n for n, _ in adapters], [w for _, w in adapters])
        else:
            transformer = model.transformer
    new_clip = clip
    if clip is not None:
        changes: dict[str, Encoder] = {}
        for role, prefix in _ENCODER_PREFIXES:
            encoder = getattr(clip, role)
            if encoder is None or not any(key.startswith(prefix + ".") for key in state):
                continue
            te = shared_copy(encoder.model)
            try:
                mixin.load_lora_into_text_encoder(state, alphas, text_encoder=te, prefix=prefix,
                                                  adapter_name=name)
            except (ValueError, RuntimeError, KeyError) as exc:
                raise NodeInputError("path", f"{lora.name} does not fit the {role} text encoder: {exc}",
                                     hint="Use a LoRA trained for this model.") from None
            if _has_adapter(te, name):
                touched = True
                active = (*encoder.adapters, (name, float(strength_clip)))
                set_weights_and_activate_adapters(te, [n for n, _ in active], [w for _, w in active])
                changes[role] = replace(encoder, model=te, adapters=active)
        new_clip = replace(clip, **changes) if changes else clip
    if not touched:
        raise NodeInputError("path", f"nothing in {lora.name} matches a layer of this "
                             f"{FAMILY_NAMES[model.family]} model",
                             hint="Use a LoRA trained for the model's family.")
    new_model = replace(model, transformer=transformer, adapters=adapters, loras=(*model.loras, lora.name))
    return new_model, new_clip


class LoadLoRA(Node):
    """Apply a LoRA to an SD3.x or Flux model and its text encoders, each with its own strength.
    Chain several to stack them; what you connect is left as it was for other branches."""

    id = "flow.LoadLoRA"
    category = "flow/loaders"
    inputs = (
        Input("model", FLOW_MODEL, "The model to adapt."),
        Input("clip", FLOW_CLIP, "The text encoders to adapt (optional: LoRAs for the model only).",
              optional=True),
        Input("path", STRING, "The LoRA: a name in the models folder's loras/ or an absolute path "
              "(.safetensors: diffusers/peft, kohya, or for Flux also BFL and XLabs layouts).",
              path_kind="loras"),
        Input("strength_model", FLOAT, "Strength on the transformer (0: off, 1: as trained).", default=1.0,
              min=-10.0, max=10.0, step=0.05),
        Input("strength_clip", FLOAT, "Strength on the text encoders.", default=1.0, min=-10.0, max=10.0,
              step=0.05),
    )
    outputs = (
        Output("model", FLOW_MODEL, "The model with the LoRA."),
        Output("clip", FLOW_CLIP, "The text encoders with the LoRA (as connected when none is)."),
    )

    @classmethod
    def check(cls, values: Mapping[str, Any], settings: Settings) -> Iterable[tuple[str | None, str]]:
        yield from check_path_input(dict(values), settings, "path", "loras", "LoRA")

    def run(self, ctx: RunContext, model: FlowModel, clip: FlowTextEncoders | None, path: str,
            strength_model: float, strength_clip: float) -> Any:
        found = lora_file(ctx, path)
        if clip is not None and clip.family != model.family:
            raise NodeInputError("clip", f"the text encoders are {FAMILY_NAMES[clip.family]}'s but the "
                                 f"model is {FAMILY_NAMES[model.family]}")
        lora: LoraFile = ctx.models.load(Path(found), load_lora_file, kind="lora")
        with ctx.models.loading():  # peft builds the adapter layers
            new_model, new_clip = apply_lora(model, clip, lora, strength_model, strength_clip)
        return {"model": new_model, "clip": new_clip}
