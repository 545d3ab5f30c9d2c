"""LoRA: low-rank adapters applied through peft, on copies that share the base weights.

Loading a LoRA never touches the model it received (other branches may use it):
the UNet and text encoders are copied module by module with their weight
tensors shared, the adapter is injected into the copy, and the weights of every
adapter in the chain are set as diffusers' ``set_adapters`` sets them. Both the
diffusers/peft key layout and kohya's (``lora_unet_...``) are read, by diffusers'
own conversion. LyCORIS files (LoHa, LoKr) are merged into copied layers instead
(``lycoris.py``).
"""

from __future__ import annotations

import copy
import itertools
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from nodeflow.api import FLOAT, STRING, Input, Node, NodeInputError, Output, RunContext, Settings
from nodeflow.nodes.diffusion.files import (
    check_path_input,
    load_safetensors,
    lora_file,
)
from nodeflow.nodes.diffusion.lycoris import apply_lycoris, is_lycoris
from nodeflow.nodes.diffusion.types import CLIP, FAMILY_NAMES, MODEL, DiffusionModel, TextEncoders

CROSS_ATTENTION_FAMILY = {768: "sd1", 1024: "sd2", 2048: "sdxl"}
_ADAPTER_NUMBERS = itertools.count()


@dataclass(frozen=True, eq=False)
class LoraFile:
    """A LoRA's tensors as diffusers' loaders take them (converted from kohya when needed)."""

    name: str
    tensors: dict[str, Any]
    """The raw tensors of the file."""


def shared_copy(module: Any) -> Any:
    """A copy of a torch module whose structure is new but whose weight tensors are the same objects."""
    memo = {id(t): t for t in itertools.chain(module.parameters(), module.buffers())}
    return copy.deepcopy(module, memo)


def _loader_mixin(family: str) -> Any:
    if family == "sdxl":
        from diffusers.loaders import StableDiffusionXLLoraLoaderMixin

        return StableDiffusionXLLoraLoaderMixin
    from diffusers.loaders import StableDiffusionLoraLoaderMixin

    return StableDiffusionLoraLoaderMixin


def _has_adapter(module: Any, name: str) -> bool:
    """Did loading put adapter ``name`` into any layer of ``module``?"""
    from peft.tuners.tuners_utils import BaseTunerLayer

    return any(isinstance(m, BaseTunerLayer) and name in getattr(m, "lora_A", {})
               for m in module.modules())


def _cross_attention_width(state_dict: Mapping[str, Any]) -> int | None:
    """The text-embedding width a LoRA's cross-attention layers expect (None if it has none)."""
    for key, tensor in state_dict.items():
        if "attn2" in key and "to_k" in key and ("lora_A" in key or "lora.down" in key
                                                 or "lora_down" in key):
            return int(tensor.shape[1])
    return None


def _capped(exc: BaseException, limit: int = 400) -> str:
    """A library's message, cut short: some list every key of the file (tens of thousands of
    characters)."""
    text = str(exc)
    return text if len(text) <= limit else f"{text[:limit]}… ({len(text) - limit} more characters)"


def _converted(lora: LoraFile, family: str, unet: Any) -> tuple[dict[str, Any], Any]:
    mixin = _loader_mixin(family)
    kwargs = {"unet_config": unet.config} if family == "sdxl" else {}
    try:
        state_dict, alphas = mixin.lora_state_dict(dict(lora.tensors), **kwargs)
    except (ValueError, KeyError, RuntimeError) as exc:
        raise NodeInputError("path", f"{lora.name} is not a LoRA nodeflow can read: {_capped(exc)}",
                             hint="Use a LoRA in the diffusers/peft, kohya or LyCORIS layout.") from None
    if not state_dict or not all("lora" in key for key in state_dict):
        raise NodeInputError("path", f"{lora.name} is not a LoRA (its tensors are not LoRA weights)",
                             hint="Load checkpoints with LoadCheckpoint and VAEs with LoadVAE.")
    return state_dict, alphas


def apply_lora(model: DiffusionModel, clip: TextEncoders, lora: LoraFile, strength_model: float,
               strength_clip: float) -> tuple[DiffusionModel, TextEncoders]:
    """New model and clip values with the LoRA added to the adapters they already carry."""
    from diffusers.utils.peft_utils import set_weights_and_activate_adapters

    if is_lycoris(lora.tensors):
        return apply_lycoris(model, clip, lora.name, lora.tensors, strength_model, strength_clip)

    state_dict, alphas = _converted(lora, model.family, model.unet)
    width = _cross_attention_width(state_dict)
    expected = int(model.unet.config.cross_attention_dim)
    if width is not None and width != expected:
        made_for = FAMILY_NAMES.get(CROSS_ATTENTION_FAMILY.get(width, ""), f"a model of width {width}")
        raise NodeInputError("path", f"{lora.name} was made for {made_for}, but the model is "
                             f"{FAMILY_NAMES.get(model.family, model.family)}",
                             hint="Use a LoRA trained for the checkpoint's family.")
    mixin = _loader_mixin(model.family)
    name = f"lora{next(_ADAPTER_NUMBERS)}"  # unique: model and clip may come from different chains

    unet = shared_copy(model.unet)
    try:
        mixin.load_lora_into_unet(state_dict, alphas, unet=unet, adapter_name=name)
    except (ValueError, RuntimeError, KeyError) as exc:
        raise NodeInputError("path", f"{lora.name} does not fit this model: {_capped(exc)}",
                             hint="Use a LoRA trained for the checkpoint's family.") from None
    unet_adapters = model.adapters
    touched = _has_adapter(unet, name)
    if touched:
        unet_adapters = (*unet_adapters, (name, float(strength_model)))
        unet.set_adapters([n for n, _ in unet_adapters], [w for _, w in unet_adapters])
    else:  # a text-encoder-only LoRA: the UNet stays as it was
        unet = model.unet

    encoders = {}
    for attr, adapters_attr, prefix in (("text_encoder", "adapters", "text_encoder"),
                                        ("text_encoder_2", "adapters_2", "text_encoder_2")):
        te = getattr(clip, attr)
        adapters = getattr(clip, adapters_attr)
        if te is None or not any(key.startswith(prefix + ".") for key in state_dict):
            continue
        te = shared_copy(te)
        try:
            mixin.load_lora_into_text_encoder(state_dict, alphas, text_encoder=te, prefix=prefix,
                                              adapter_name=name)
        except (ValueError, RuntimeError, KeyError) as exc:
            raise NodeInputError("path", f"{lora.name} does not fit this text encoder: {_capped(exc)}",
                                 hint="Use a LoRA trained for the checkpoint's family.") from None
        if _has_adapter(te, name):
            touched = True
            adapters = (*adapters, (name, float(strength_clip)))
            set_weights_and_activate_adapters(te, [n for n, _ in adapters], [w for _, w in adapters])
            encoders[attr] = te
            encoders[adapters_attr] = adapters
    if not touched:
        raise NodeInputError("path", f"nothing in {lora.name} matches a layer of this "
                             f"{FAMILY_NAMES.get(model.family, model.family)} model",
                             hint="Use a LoRA trained for the checkpoint's family.")
    new_model = replace(model, unet=unet, adapters=unet_adapters, loras=(*model.loras, lora.name))
    return new_model, replace(clip, **encoders)


def load_lora_file(path: Path) -> LoraFile:
    return LoraFile(path.name, load_safetensors(path, "path"))


class LoadLoRA(Node):
    """Apply a LoRA to a model and its text encoder, each with its own strength. Chain several
    to stack them; the model you connect is left as it was for other branches."""

    id = "diffusion.LoadLoRA"
    category = "diffusion/loaders"
    inputs = (
        Input("model", MODEL, "The model to adapt."),
        Input("clip", CLIP, "The text encoder(s) to adapt."),
        Input("path", STRING, "The LoRA: a name in the models folder's loras/ or an absolute path "
              "(.safetensors: diffusers/peft, kohya or LyCORIS LoHa/LoKr layout).", path_kind="loras"),
        Input("strength_model", FLOAT, "Strength on the UNet (0: off, 1: as trained).", default=1.0,
              min=-10.0, max=10.0, step=0.05),
        Input("strength_clip", FLOAT, "Strength on the text encoder(s).", default=1.0, min=-10.0,
              max=10.0, step=0.05),
    )
    outputs = (
        Output("model", MODEL, "The model with the LoRA."),
        Output("clip", CLIP, "The text encoder(s) with the LoRA."),
    )

    @classmethod
    def check(cls, values: Mapping[str, Any], settings: Settings) -> Iterable[tuple[str | None, str]]:
        yield from check_path_input(dict(values), settings, "path", "loras", "LoRA")

    def run(self, ctx: RunContext, model: DiffusionModel, clip: TextEncoders, path: str,
            strength_model: float, strength_clip: float) -> Any:
        found = lora_file(ctx, path)
        if clip.family != model.family:
            raise NodeInputError("clip", "the model and the clip come from different families")
        from nodeflow.nodes.diffusion.lora_shapes import check_lora_shapes

        check_lora_shapes(found, model, clip)  # from the header, before reading or patching
        lora = ctx.models.load(found, load_lora_file, kind="lora")
        with ctx.models.loading():  # peft builds the adapter layers
            new_model, new_clip = apply_lora(model, clip, lora, strength_model, strength_clip)
        return {"model": new_model, "clip": new_clip}
