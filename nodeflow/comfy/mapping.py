"""The node mapping: each ComfyUI node type and the nodeflow node(s) it becomes.

One `NodeMap` entry per ComfyUI type says, declaratively:
- ``widgets``: the type's widget names in ComfyUI's ``INPUT_TYPES`` order, which is the
  order of ``widgets_values`` in UI-format files (``SEED_CONTROL`` marks the hidden
  "control_after_generate" value the editor stores after a seed: a UI setting, not an input);
- ``parts``: the nodeflow node(s) it becomes, each with its linked inputs (nodeflow socket <-
  ComfyUI input name), its literal inputs (nodeflow input <- a widget, converted where the
  two differ) and ``semantics``: literal inputs that make the node behave as ComfyUI's does
  (written only where the nodeflow type declares that input);
- ``outputs``: for each ComfyUI output slot, the nodeflow part and socket that carry it.

Adding a node type is adding one entry to `NODE_MAPS`. ComfyUI types that become different
nodeflow nodes for SD3/Flux models have a second entry in `FLOW_MAPS`, used where the graph's
model family is SD3 or Flux (see ``families``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

CLIP_OF_MODEL = "@clip_of_model"
"""A link placeholder: the CLIP output of the loader the node's model comes from."""

FAMILY = "@family"
"""A widget name the converter fills with the model family it read from the graph (see ``families``)."""

PART_OUTPUT = "@part:"
"""A link source that is another part of the same ComfyUI node: ``@part:NAME.SOCKET``."""

PASS_INPUT = "@input"
"""An output part that is no nodeflow node: the output passes the ComfyUI input it names through."""

SEED_CONTROL = "@control_after_generate"
"""Placeholder in a widget list for the editor-only value that follows a seed widget."""

CONTROL_VALUES = frozenset({"fixed", "increment", "decrement", "randomize"})


class Unmappable(ValueError):
    """A widget value nodeflow has no equivalent for; the message says which values it has."""


Convert = Callable[[Any, "ConvertContext"], Any]


@dataclass(frozen=True)
class ConvertContext:
    """What a converter may consult: the nodeflow input's declared choices, if any."""

    choices: tuple[Any, ...] | None = None


@dataclass(frozen=True)
class Widget:
    """A literal input taken from a ComfyUI widget, optionally converted."""

    name: str
    convert: Convert | None = None
    linkable: bool = True
    """Whether a link into the ComfyUI widget can become a link into the nodeflow input."""


@dataclass(frozen=True)
class Part:
    """One nodeflow node made from a ComfyUI node."""

    type: str
    links: Mapping[str, str] = field(default_factory=dict)
    values: Mapping[str, Widget] = field(default_factory=dict)
    semantics: Mapping[str, Any] = field(default_factory=dict)
    checks: Mapping[str, Widget] = field(default_factory=dict)
    """Widgets that have no nodeflow input but whose value must be one nodeflow reproduces."""


@dataclass(frozen=True)
class NodeMap:
    """How one ComfyUI node type becomes nodeflow nodes."""

    comfy: str
    widgets: tuple[str, ...]
    parts: Mapping[str, Part]
    outputs: tuple[tuple[str, str], ...]
    model_widgets: Mapping[str, str] = field(default_factory=dict)
    """Widgets naming a model file -> the ComfyUI models/ subfolder it lives in."""


# --- converters --------------------------------------------------------------------------


def model_name(value: Any, ctx: ConvertContext) -> Any:
    """ComfyUI names model files relative to a models/ subfolder, with '\\' on Windows."""
    return value.replace("\\", "/") if isinstance(value, str) else value



def choice(aliases: Mapping[str, str] | None = None, what: str = "value") -> Convert:
    """Keep a ComfyUI choice the nodeflow input also offers (or its alias); refuse others, listing them."""

    def convert(value: Any, ctx: ConvertContext) -> Any:
        name = (aliases or {}).get(value, value) if isinstance(value, str) else value
        if ctx.choices is None or name in ctx.choices:
            return name
        offered = ", ".join(str(c) for c in ctx.choices)
        raise Unmappable(f"{what} '{value}' has no nodeflow equivalent yet (nodeflow has: {offered})")

    return convert


def threshold_255(value: Any, ctx: ConvertContext) -> Any:
    """ComfyUI's Canny thresholds are fractions of 1; nodeflow's are 0..255 levels."""
    return round(float(value) * 255) if isinstance(value, int | float) else value


def w(name: str, convert: Convert | None = None, linkable: bool = True) -> Widget:
    return Widget(name, convert, linkable)


def one(comfy: str, type_id: str, widgets: tuple[str, ...] = (), links: Mapping[str, str] | None = None,
        values: Mapping[str, Widget] | None = None, outputs: tuple[str, ...] = (),
        semantics: Mapping[str, Any] | None = None, models: Mapping[str, str] | None = None,
        checks: Mapping[str, Widget] | None = None) -> NodeMap:
    """The common case: one ComfyUI node becomes one nodeflow node."""
    part = Part(type_id, dict(links or {}), dict(values or {}), dict(semantics or {}), dict(checks or {}))
    return NodeMap(comfy, widgets, {"": part}, tuple(("", o) for o in outputs), dict(models or {}))


def image_name(value: Any, ctx: ConvertContext) -> Any:
    """A LoadImage file name, without the " [input]" / " [output]" folder note the editor may add."""
    if isinstance(value, str):
        for note in (" [input]", " [output]", " [temp]"):
            if value.endswith(note):
                return value[: -len(note)]
    return value


def alpha_only(value: Any, ctx: ConvertContext) -> Any:
    if value != "alpha":
        raise Unmappable(f"channel '{value}' is not supported yet (only 'alpha', which image.Load gives)")
    return value


def enabled(value: Any, ctx: ConvertContext) -> Any:
    """ComfyUI's "enable"/"disable" combo widgets as booleans."""
    if value in ("enable", "disable"):
        return value == "enable"
    return value


# Samplers: diffusion.KSampler *is* ComfyUI's semantics (its noise, sigma schedules, start scaling,
# denoise and the VAE posterior mean) under ComfyUI's sampler and scheduler names.
_KSAMPLER_LINKS = {"model": "model", "positive": "positive", "negative": "negative", "latent_image": "latent_image"}
_SAMPLER_NAMES = w("sampler_name", choice(None, "sampler"))
_SCHEDULERS = w("scheduler", choice(None, "scheduler"))


def _conditioning(comfy: str, type_id: str, links: Mapping[str, str], widgets: tuple[str, ...] = ()) -> NodeMap:
    # The regional-prompt nodes keep ComfyUI's socket and widget names.
    return one(comfy, type_id, widgets, links=links, values={name: w(name) for name in widgets},
               outputs=("conditioning",))


NODE_MAPS: tuple[NodeMap, ...] = (
    # --- loaders ---
    one("CheckpointLoaderSimple", "diffusion.LoadCheckpoint", ("ckpt_name",),
        values={"path": w("ckpt_name", model_name)}, outputs=("model", "clip", "vae"),
        models={"ckpt_name": "checkpoints"}),
    one("CheckpointLoader", "diffusion.LoadCheckpoint", ("config_name", "ckpt_name"),
        values={"path": w("ckpt_name", model_name)}, outputs=("model", "clip", "vae"),
        models={"ckpt_name": "checkpoints"}),
    one("VAELoader", "diffusion.LoadVAE", ("vae_name",), values={"path": w("vae_name", model_name)},
        outputs=("vae",), models={"vae_name": "vae"}),
    one("LoraLoader", "diffusion.LoadLoRA", ("lora_name", "strength_model", "strength_clip"),
        links={"model": "model", "clip": "clip"},
        values={"path": w("lora_name", model_name), "strength_model": w("strength_model"),
                "strength_clip": w("strength_clip")},
        outputs=("model", "clip"), models={"lora_name": "loras"}),
    # nodeflow's LoRA loader takes the CLIP too: it gets the one beside the model, left unchanged.
    one("LoraLoaderModelOnly", "diffusion.LoadLoRA", ("lora_name", "strength_model"),
        links={"model": "model", "clip": CLIP_OF_MODEL},
        values={"path": w("lora_name", model_name), "strength_model": w("strength_model")},
        semantics={"strength_clip": 0.0}, outputs=("model",), models={"lora_name": "loras"}),
    one("ControlNetLoader", "diffusion.LoadControlNet", ("control_net_name",),
        values={"path": w("control_net_name", model_name)}, outputs=("controlnet",),
        models={"control_net_name": "controlnet"}),
    one("UpscaleModelLoader", "upscale.LoadModel", ("model_name",),
        values={"path": w("model_name", model_name)}, outputs=("upscale_model",),
        models={"model_name": "upscale_models"}),
    # --- text ---
    one("CLIPTextEncode", "diffusion.TextEncode", ("text",), links={"clip": "clip"},
        values={"text": w("text")}, outputs=("conditioning",), semantics={"weighting": "comfy"}),
    _conditioning("CLIPTextEncodeSDXL", "diffusion.CLIPTextEncodeSDXL", {"clip": "clip"},
                  ("width", "height", "crop_w", "crop_h", "target_width", "target_height", "text_g", "text_l")),
    _conditioning("CLIPTextEncodeSDXLRefiner", "diffusion.CLIPTextEncodeSDXLRefiner", {"clip": "clip"},
                  ("ascore", "width", "height", "text")),
    _conditioning("ConditioningCombine", "diffusion.ConditioningCombine",
                  {"conditioning_1": "conditioning_1", "conditioning_2": "conditioning_2"}),
    _conditioning("ConditioningAverage", "diffusion.ConditioningAverage",
                  {"conditioning_to": "conditioning_to", "conditioning_from": "conditioning_from"},
                  ("conditioning_to_strength",)),
    _conditioning("ConditioningConcat", "diffusion.ConditioningConcat",
                  {"conditioning_to": "conditioning_to", "conditioning_from": "conditioning_from"}),
    _conditioning("ConditioningSetArea", "diffusion.ConditioningSetArea", {"conditioning": "conditioning"},
                  ("width", "height", "x", "y", "strength")),
    _conditioning("ConditioningSetAreaStrength", "diffusion.ConditioningSetAreaStrength",
                  {"conditioning": "conditioning"}, ("strength",)),
    _conditioning("ConditioningSetMask", "diffusion.ConditioningSetMask",
                  {"conditioning": "conditioning", "mask": "mask"}, ("strength", "set_cond_area")),
    _conditioning("ConditioningSetTimestepRange", "diffusion.ConditioningSetTimestepRange",
                  {"conditioning": "conditioning"}, ("start", "end")),
    _conditioning("ConditioningZeroOut", "diffusion.ConditioningZeroOut", {"conditioning": "conditioning"}),
    # --- latents and sampling ---
    one("EmptyLatentImage", "diffusion.EmptyLatent", ("width", "height", "batch_size"),
        values={"width": w("width"), "height": w("height"), "batch": w("batch_size")}, outputs=("latent",)),
    one("KSampler", "diffusion.KSampler",
        ("seed", SEED_CONTROL, "steps", "cfg", "sampler_name", "scheduler", "denoise"),
        links=_KSAMPLER_LINKS,
        values={"seed": w("seed"), "steps": w("steps"), "cfg": w("cfg"), "sampler_name": _SAMPLER_NAMES,
                "scheduler": _SCHEDULERS, "denoise": w("denoise")},
        outputs=("latent",)),
    one("KSamplerAdvanced", "diffusion.KSamplerAdvanced",
        ("add_noise", "noise_seed", SEED_CONTROL, "steps", "cfg", "sampler_name", "scheduler",
         "start_at_step", "end_at_step", "return_with_leftover_noise"),
        links=_KSAMPLER_LINKS,
        values={"add_noise": w("add_noise", enabled, linkable=False), "noise_seed": w("noise_seed"),
                "steps": w("steps"), "cfg": w("cfg"), "sampler_name": _SAMPLER_NAMES, "scheduler": _SCHEDULERS,
                "start_at_step": w("start_at_step"), "end_at_step": w("end_at_step"),
                "return_with_leftover_noise": w("return_with_leftover_noise", enabled, linkable=False)},
        outputs=("latent",)),
    one("VAEDecode", "diffusion.VAEDecode", links={"latent": "samples", "vae": "vae"}, outputs=("image",)),
    one("VAEEncode", "diffusion.VAEEncode", links={"image": "pixels", "vae": "vae"}, outputs=("latent",)),
    one("VAEEncodeForInpaint", "diffusion.VAEEncodeForInpaint", ("grow_mask_by",),
        links={"image": "pixels", "vae": "vae", "mask": "mask"}, values={"grow_mask_by": w("grow_mask_by")},
        outputs=("latent",)),
    one("SetLatentNoiseMask", "diffusion.SetLatentMask", links={"latent": "samples", "mask": "mask"},
        outputs=("latent",)),
    one("LatentUpscale", "diffusion.LatentUpscale", ("upscale_method", "width", "height", "crop"),
        links={"latent": "samples"},
        values={"upscale_method": w("upscale_method"), "width": w("width"), "height": w("height"),
                "crop": w("crop")}, outputs=("latent",)),
    one("LatentUpscaleBy", "diffusion.LatentUpscaleBy", ("upscale_method", "scale_by"), links={"latent": "samples"},
        values={"upscale_method": w("upscale_method"), "scale_by": w("scale_by")}, outputs=("latent",)),
    one("LatentComposite", "diffusion.LatentComposite", ("x", "y", "feather"),
        links={"destination": "samples_to", "source": "samples_from"},
        values={"x": w("x"), "y": w("y"), "feather": w("feather")}, outputs=("latent",)),
    one("RepeatLatentBatch", "diffusion.RepeatLatentBatch", ("amount",), links={"latent": "samples"},
        values={"amount": w("amount")}, outputs=("latent",)),
    one("LatentFromBatch", "diffusion.LatentFromBatch", ("batch_index", "length"), links={"latent": "samples"},
        values={"batch_index": w("batch_index"), "length": w("length")}, outputs=("latent",)),
    # --- ControlNet ---
    one("ControlNetApply", "diffusion.ApplyControlNet", ("strength",),
        links={"conditioning": "conditioning", "controlnet": "control_net", "image": "image"},
        values={"strength": w("strength")}, outputs=("conditioning",)),
    NodeMap("ControlNetApplyAdvanced", ("strength", "start_percent", "end_percent"), {
        # ComfyUI attaches the same ControlNet to both conditionings.
        f"{side}": Part("diffusion.ApplyControlNet",
                        {"conditioning": side, "controlnet": "control_net", "image": "image"},
                        {"strength": w("strength"), "start": w("start_percent"), "end": w("end_percent")})
        for side in ("positive", "negative")}, (("positive", "conditioning"), ("negative", "conditioning"))),
    one("Canny", "control.Canny", ("low_threshold", "high_threshold"), links={"image": "image"},
        values={"low_threshold": w("low_threshold", threshold_255, linkable=False),
                "high_threshold": w("high_threshold", threshold_255, linkable=False)},
        outputs=("image",)),
    # --- upscaling ---
    one("ImageUpscaleWithModel", "upscale.Upscale", links={"upscale_model": "upscale_model", "image": "image"},
        outputs=("image",)),
    # --- images ---
    one("LoadImage", "image.Load", ("image", "upload"), values={"path": w("image", image_name)},
        outputs=("image", "mask")),
    one("LoadImageMask", "image.Load", ("image", "channel", "upload"), values={"path": w("image", image_name)},
        checks={"channel": w("channel", alpha_only)}, outputs=("mask",)),
    # ComfyUI's newer primitive nodes (real nodes, unlike the editor's PrimitiveNode).
    *(one(comfy, type_id, ("value",), values={"value": w("value")}, outputs=("value",))
      for comfy, type_id in (("PrimitiveInt", "value.Int"), ("PrimitiveFloat", "value.Float"),
                             ("PrimitiveString", "value.String"), ("PrimitiveStringMultiline", "value.String"))),
    one("SaveImage", "image.Save", ("filename_prefix",), links={"image": "images"},
        values={"prefix": w("filename_prefix")}),
    one("PreviewImage", "image.PreviewImage", links={"image": "images"}),
    one("ImageScale", "image.ImageScale", ("upscale_method", "width", "height", "crop"), links={"image": "image"},
        values={"upscale_method": w("upscale_method"), "width": w("width"), "height": w("height"),
                "crop": w("crop")}, outputs=("image",)),
    one("ImageScaleBy", "image.ImageScaleBy", ("upscale_method", "scale_by"), links={"image": "image"},
        values={"upscale_method": w("upscale_method"), "scale_by": w("scale_by")}, outputs=("image",)),
    one("ImageInvert", "image.Invert", links={"image": "image"}, outputs=("image",)),
    one("ImageCrop", "image.Crop", ("width", "height", "x", "y"), links={"image": "image"},
        values={"width": w("width"), "height": w("height"), "x": w("x"), "y": w("y")}, outputs=("image",)),
    one("ImageBlend", "image.Blend", ("blend_factor", "blend_mode"), links={"a": "image1", "b": "image2"},
        values={"factor": w("blend_factor"), "mode": w("blend_mode", choice(None, "blend mode"))},
        outputs=("image",)),
    one("ImagePadForOutpaint", "diffusion.ImagePadForOutpaint", ("left", "top", "right", "bottom", "feathering"),
        links={"image": "image"},
        values={name: w(name) for name in ("left", "top", "right", "bottom", "feathering")},
        outputs=("image", "mask")),
)

BY_TYPE: dict[str, NodeMap] = {m.comfy: m for m in NODE_MAPS}


# --- SD3.x and Flux: the flow pack ----------------------------------------------------------


def vae_family(value: Any, ctx: ConvertContext) -> Any:
    """The family read from the graph as flow.LoadVAE's ``family`` ('flow': from the file's name)."""
    return value if value in ("sd3", "flux") else "auto"


def weight_dtype(value: Any, ctx: ConvertContext) -> Any:
    # "_fast" asks ComfyUI for fp8 matrix products on GPUs that have them: the same fp8 storage here
    name = "fp8_e4m3fn" if value == "fp8_e4m3fn_fast" else value
    return choice(None, "weight_dtype")(name, ctx)


_FLOW_SAMPLE = {"seed": w("seed"), "steps": w("steps"), "cfg": w("cfg"),
                "sampler": w("sampler_name", choice(None, "sampler")), "scheduler": _SCHEDULERS, "denoise": w("denoise")}
_COMFY_SEMANTICS = {"semantics": "comfyui"}
"""flow.Sample with ComfyUI's semantics runs every sampler its ``sampler`` input declares."""
_CONTROL_APPLY = ("strength", "start_percent", "end_percent")
_CONTROL_LINKS = {"conditioning": "positive", "controlnet": "control_net", "vae": "vae", "image": "image"}
_CONTROL_VALUES = {"strength": w("strength"), "start": w("start_percent"), "end": w("end_percent")}


def _flow_control(comfy: str) -> NodeMap:
    # The ControlNet goes on the positive; the flow sampler applies it to both halves of a guided batch.
    return NodeMap(comfy, _CONTROL_APPLY, {"": Part("flow.ApplyControlNet", _CONTROL_LINKS, _CONTROL_VALUES)},
                   (("", "conditioning"), (PASS_INPUT, "negative")))


def _flow_encoders(comfy: str, names: tuple[str, ...], extra: tuple[str, ...] = (),
                   semantics: Mapping[str, Any] | None = None) -> NodeMap:
    values = {f"encoder{i + 1}": w(name, model_name) for i, name in enumerate(names)}
    if "type" in extra:
        values["type"] = w("type", choice(None, "text encoder type"))
    return one(comfy, "flow.LoadTextEncoders", (*names, *extra), values=values, outputs=("clip",),
               semantics=semantics, models={name: "text_encoders" for name in names})


FLOW_MAPS: dict[str, NodeMap] = {m.comfy: m for m in (
    one("CheckpointLoaderSimple", "flow.LoadCheckpoint", ("ckpt_name",),
        values={"path": w("ckpt_name", model_name)}, outputs=("model", "clip", "vae"),
        models={"ckpt_name": "checkpoints"}),
    one("CheckpointLoader", "flow.LoadCheckpoint", ("config_name", "ckpt_name"),
        values={"path": w("ckpt_name", model_name)}, outputs=("model", "clip", "vae"),
        models={"ckpt_name": "checkpoints"}),
    one("UNETLoader", "flow.LoadDiffusionModel", ("unet_name", "weight_dtype"),
        values={"path": w("unet_name", model_name), "weight_dtype": w("weight_dtype", weight_dtype)},
        outputs=("model",), models={"unet_name": "diffusion_models"}),
    _flow_encoders("CLIPLoader", ("clip_name",), ("type", "device")),
    _flow_encoders("DualCLIPLoader", ("clip_name1", "clip_name2"), ("type", "device")),
    _flow_encoders("TripleCLIPLoader", ("clip_name1", "clip_name2", "clip_name3"), semantics={"type": "sd3"}),
    one("VAELoader", "flow.LoadVAE", ("vae_name",),
        values={"path": w("vae_name", model_name), "family": w(FAMILY, vae_family)}, outputs=("vae",),
        models={"vae_name": "vae"}),
    one("LoraLoader", "flow.LoadLoRA", ("lora_name", "strength_model", "strength_clip"),
        links={"model": "model", "clip": "clip"},
        values={"path": w("lora_name", model_name), "strength_model": w("strength_model"),
                "strength_clip": w("strength_clip")},
        outputs=("model", "clip"), models={"lora_name": "loras"}),
    one("LoraLoaderModelOnly", "flow.LoadLoRA", ("lora_name", "strength_model"), links={"model": "model"},
        values={"path": w("lora_name", model_name), "strength_model": w("strength_model")},
        outputs=("model",), models={"lora_name": "loras"}),
    one("CLIPTextEncode", "flow.TextEncode", ("text",), links={"clip": "clip"}, values={"text": w("text")},
        outputs=("conditioning",)),
    # One prompt for CLIP-L and T5 (the converter checks the two texts agree), then its guidance.
    NodeMap("CLIPTextEncodeFlux", ("clip_l", "t5xxl", "guidance"), {
        "": Part("flow.TextEncode", {"clip": "clip"}, {"text": w("t5xxl")}),
        "guidance": Part("flow.FluxGuidance", {"conditioning": f"{PART_OUTPUT}.conditioning"},
                         {"guidance": w("guidance")})}, (("guidance", "conditioning"),)),
    one("FluxGuidance", "flow.FluxGuidance", ("guidance",), links={"conditioning": "conditioning"},
        values={"guidance": w("guidance")}, outputs=("conditioning",)),
    one("ConditioningZeroOut", "flow.ZeroOut", links={"conditioning": "conditioning"}, outputs=("conditioning",)),
    one("ModelSamplingSD3", "flow.ModelSamplingSD3", ("shift",), links={"model": "model"},
        values={"shift": w("shift")}, outputs=("model",)),
    one("ModelSamplingFlux", "flow.ModelSamplingFlux", ("max_shift", "base_shift", "width", "height"),
        links={"model": "model"},
        values={name: w(name) for name in ("max_shift", "base_shift", "width", "height")}, outputs=("model",)),
    one("KSampler", "flow.Sample", ("seed", SEED_CONTROL, "steps", "cfg", "sampler_name", "scheduler", "denoise"),
        links={"model": "model", "positive": "positive", "negative": "negative", "latent": "latent_image"},
        values=_FLOW_SAMPLE, semantics=_COMFY_SEMANTICS, outputs=("latent",)),
    # RandomNoise, KSamplerSelect, BasicScheduler and BasicGuider/CFGGuider are folded into the
    # sampler by the converter (see ``custom_sampler``): their widgets arrive under these names.
    NodeMap("SamplerCustomAdvanced", (), {"": Part(
        "flow.Sample", {"model": "model", "positive": "positive", "negative": "negative",
                        "latent": "latent_image"}, _FLOW_SAMPLE, _COMFY_SEMANTICS)},
        (("", "latent"), ("", "latent"))),
    NodeMap("SamplerCustom", ("add_noise", "noise_seed", SEED_CONTROL, "cfg"), {"": Part(
        "flow.Sample", {"model": "model", "positive": "positive", "negative": "negative",
                        "latent": "latent_image"}, _FLOW_SAMPLE, _COMFY_SEMANTICS)},
        (("", "latent"), ("", "latent"))),
    one("ControlNetLoader", "flow.LoadControlNet", ("control_net_name",),
        values={"path": w("control_net_name", model_name)}, outputs=("controlnet",),
        models={"control_net_name": "controlnet"}),
    _flow_control("ControlNetApplyAdvanced"),
    _flow_control("ControlNetApplySD3"),
)}
"""The nodeflow nodes ComfyUI types become where the model family is SD3 or Flux."""

FOLDED_WIDGETS: dict[str, tuple[str, ...]] = {
    "RandomNoise": ("noise_seed", SEED_CONTROL),
    "KSamplerSelect": ("sampler_name",),
    "BasicScheduler": ("scheduler", "steps", "denoise"),
    "BasicGuider": (),
    "CFGGuider": ("cfg",),
}
"""Widget orders of the custom-sampler parts the converter folds into one sampler node."""

NODE_MAPS = (*NODE_MAPS, one("EmptySD3LatentImage", "flow.EmptyLatent", ("width", "height", "batch_size"),
                             values={"width": w("width"), "height": w("height"), "batch": w("batch_size")},
                             outputs=("latent",)))
BY_TYPE["EmptySD3LatentImage"] = NODE_MAPS[-1]

WIDGET_ORDER: dict[str, tuple[str, ...]] = {
    # Types handled before mapping, or not mapped yet, whose widgets are still read by name.
    "CLIPSetLastLayer": ("stop_at_clip_layer",),
    **FOLDED_WIDGETS,
    **{m.comfy: m.widgets for m in FLOW_MAPS.values()},
    **{m.comfy: m.widgets for m in NODE_MAPS},
}
"""Widget names in ``widgets_values`` order, per ComfyUI node type (ComfyUI's INPUT_TYPES order)."""


def widget_values(type_name: str, values: list[Any] | dict[str, Any]) -> dict[str, Any]:
    """Name the positional ``widgets_values`` of a UI-format node, skipping the seed's control value.

    Old files store control_after_generate as a boolean, newer ones as a word; files that have
    none at all are read correctly too, since the value is only skipped when it looks like one.
    """
    if isinstance(values, dict):
        return dict(values)
    order = WIDGET_ORDER.get(type_name)
    if order is None:
        return {}
    named: dict[str, Any] = {}
    i = 0
    for name in order:
        if i >= len(values):
            break
        if name == SEED_CONTROL:
            if isinstance(values[i], bool) or (isinstance(values[i], str) and values[i] in CONTROL_VALUES):
                i += 1
            continue
        named[name] = values[i]
        i += 1
    return named
