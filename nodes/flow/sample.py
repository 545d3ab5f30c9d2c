"""Flow-matching sampling for SD3.x and Flux, step for step as the diffusers pipelines sample.

One story: assemble the prompt embeddings the model takes, set the shifted sigmas, draw the
starting latents (noise, or the encoded image noised to the first sigma), then step. Random
numbers come from one CPU generator seeded by ``seed`` in the pipelines' order, so a graph
gives the pipelines' pixels on any device. Latents travel unpacked (batch, 16, h/8, w/8) in the
model's space; Flux's 2×2 packing happens here.

Shift: SD3 shifts its sigmas by a fixed factor (3.0); Flux dev by a factor that grows with the
image's token count (``ModelSamplingFlux``: from ``base_shift`` at 256 tokens to ``max_shift``
at 4096), Flux schnell not at all.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Iterable, Mapping
from dataclasses import replace
from typing import Any

from nodeflow.api import (
    FLOAT,
    INT,
    STRING,
    EstimateContext,
    Input,
    MemoryEstimate,
    Node,
    NodeInputError,
    Output,
    RunContext,
    Settings,
    ValueEstimate,
)
from nodeflow.nodes.diffusion.latent import empty_latent_estimate
from nodeflow.nodes.diffusion.sample import latent_preview
from nodeflow.nodes.diffusion.sigmas import SCHEDULERS as COMFY_SCHEDULERS
from nodeflow.nodes.diffusion.types import LATENT, Latent
from nodeflow.nodes.flow.schedules import COMFY_SAMPLERS
from nodeflow.nodes.flow.solvers import ANCESTRAL_SEED_OFFSET, SOLVERS
from nodeflow.nodes.flow.types import (
    FAMILY_NAMES,
    FLOW_CONDITIONING,
    FLOW_MODEL,
    FlowConditioning,
    FlowModel,
    Shift,
)

SAMPLERS: dict[str, tuple[str, dict[str, Any]]] = {
    "euler": ("FlowMatchEulerDiscreteScheduler", {}),
    "heun": ("FlowMatchHeunDiscreteScheduler", {}),
}
"""Sampler names and the diffusers flow-matching scheduler that implements each."""
SCHEDULES = {"normal": {}, "karras": {"use_karras_sigmas": True},
             "exponential": {"use_exponential_sigmas": True}, "beta": {"use_beta_sigmas": True}}
"""Sigma spacings FlowMatchEulerDiscreteScheduler offers (heun: normal only)."""
SEMANTICS = ("diffusers", "comfyui")
"""How a sampler reads its settings: as the diffusers pipelines do, or as ComfyUI does (see
``schedules``: ComfyUI's scheduler names and sigma tables, its denoise rule, the encoder's mean
and the noise drawn first)."""

SAMPLER_NAMES = (*SAMPLERS, *(name for name in COMFY_SAMPLERS if name not in SAMPLERS))
"""The sampler choices: diffusers' flow-matching schedulers, then ComfyUI's other samplers
(semantics comfyui runs every one of them, see ``solvers``)."""

SCHEDULER_NAMES = (*SCHEDULES, *(name for name in COMFY_SCHEDULERS if name not in SCHEDULES))
"""The schedule choices: diffusers' spacings, then ComfyUI's other schedulers (semantics comfyui)."""

MULTIPLE = 16
DEFAULT_GUIDANCE = 3.5
"""Flux dev's embedded guidance when no FluxGuidance sets it (the pipeline's default)."""
"""Pixels per transformer token side: the VAE's 8 times the 2×2 patch."""
LATENT_SCALE = 8
PREVIEW_EVERY = 4
ACTIVATION_FACTOR = 48
"""Bytes of activations per image token, per channel of the model width, per byte of its dtype
and per image of the (guided) batch: the residual stream, the attention projections and the 4×
MLP of one block alive at once, with a margin; attention scores are never materialised."""


def token_count(width: int, height: int) -> int:
    """Image tokens of a width×height picture (8× VAE, 2×2 patches)."""
    return (width // MULTIPLE) * (height // MULTIPLE)


def flux_mu(shift: Shift, tokens: int) -> float:
    """The exponent of Flux's resolution-dependent shift for an image of ``tokens`` tokens."""
    slope = (shift.max_shift - shift.base_shift) / (shift.max_seq_len - shift.base_seq_len)
    return tokens * slope + shift.base_shift - slope * shift.base_seq_len


def make_scheduler(model: FlowModel, sampler: str, schedule: str) -> Any:
    """The diffusers scheduler for a sampler name, with the model's shift settings."""
    import diffusers

    class_name, overrides = SAMPLERS[sampler]
    s = model.shift
    config = {**model.scheduler_config, "shift": s.shift, "use_dynamic_shifting": s.dynamic,
              "base_shift": s.base_shift, "max_shift": s.max_shift,
              "base_image_seq_len": s.base_seq_len, "max_image_seq_len": s.max_seq_len}
    cls = getattr(diffusers, class_name)
    kwargs = {**overrides, **SCHEDULES[schedule]}
    accepted = set(inspect.signature(cls.__init__).parameters)
    return cls.from_config({k: v for k, v in config.items() if k in accepted or k.startswith("_")},
                           **kwargs)


class EmptyLatent(Node):
    """An empty 16-channel latent of a size for SD3.x or Flux text-to-image (the sampler fills it
    with seeded noise). Sides are multiples of 16."""

    id = "flow.EmptyLatent"
    category = "flow/latent"
    inputs = (
        Input("width", INT, "Image width in pixels (a multiple of 16).", default=1024, min=16, max=8192,
              step=16),
        Input("height", INT, "Image height in pixels (a multiple of 16).", default=1024, min=16,
              max=8192, step=16),
        Input("batch", INT, "How many images to make at once.", default=1, min=1, max=64),
    )
    outputs = (Output("latent", LATENT, "The empty latent."),)

    @classmethod
    def check(cls, values: Mapping[str, Any], settings: Settings) -> Iterable[tuple[str | None, str]]:
        for name in ("width", "height"):
            value = values.get(name)
            if isinstance(value, int) and value % MULTIPLE:
                lower = value - value % MULTIPLE
                yield name, (f"{name} {value} is not a multiple of {MULTIPLE} (SD3 and Flux work on "
                             f"16-pixel patches); use {lower or MULTIPLE} or {lower + MULTIPLE}")

    @classmethod
    def estimate_memory(cls, values: Mapping[str, Any], upstream: Mapping[str, ValueEstimate],
                        ctx: EstimateContext) -> MemoryEstimate | None:
        return empty_latent_estimate(values)

    def run(self, ctx: RunContext, width: int, height: int, batch: int) -> Any:
        for socket, message in self.check({"width": width, "height": height}, ctx.settings):
            raise NodeInputError(socket or "width", message)
        return Latent(width=width, height=height, batch=batch)


class ModelSamplingSD3(Node):
    """Shift the noise schedule by a fixed factor (SD3.x uses 3; higher spends more steps on
    the noisy start, which helps large images)."""

    id = "flow.ModelSamplingSD3"
    category = "flow/sampling"
    inputs = (
        Input("model", FLOW_MODEL, "The model."),
        Input("shift", FLOAT, "The shift factor.", default=3.0, min=0.0, max=100.0, step=0.01),
    )
    outputs = (Output("model", FLOW_MODEL, "The model with the shifted schedule."),)

    def run(self, ctx: RunContext, model: FlowModel, shift: float) -> Any:
        return replace(model, shift=replace(model.shift, shift=float(shift), dynamic=False))


class ModelSamplingFlux(Node):
    """Flux's resolution-dependent shift, computed for a given image size: from base_shift at 256
    tokens to max_shift at 4096 tokens (a 1024×1024 image)."""

    id = "flow.ModelSamplingFlux"
    category = "flow/sampling"
    inputs = (
        Input("model", FLOW_MODEL, "The model."),
        Input("max_shift", FLOAT, "Shift exponent at 4096 tokens.", default=1.15, min=0.0, max=100.0,
              step=0.01),
        Input("base_shift", FLOAT, "Shift exponent at 256 tokens.", default=0.5, min=0.0, max=100.0,
              step=0.01),
        Input("width", INT, "Image width the shift is computed for.", default=1024, min=16, max=8192,
              step=16),
        Input("height", INT, "Image height the shift is computed for.", default=1024, min=16,
              max=8192, step=16),
    )
    outputs = (Output("model", FLOW_MODEL, "The model with the shifted schedule."),)

    def run(self, ctx: RunContext, model: FlowModel, max_shift: float, base_shift: float, width: int,
            height: int) -> Any:
        shift = replace(model.shift, dynamic=True, max_shift=float(max_shift), base_shift=float(base_shift),
                        base_seq_len=256, max_seq_len=4096, size=(int(width), int(height)))
        return replace(model, shift=shift)


class OffloadBlocks(Node):
    """Run the transformer one block at a time: only its small parts and the running blocks stay
    on the GPU, so a model larger than the GPU's memory (Flux dev: 23.8 GB in bf16) runs on a
    12 GB card, more slowly. The memory plan before the run counts only what stays resident."""

    id = "flow.OffloadBlocks"
    category = "flow/sampling"
    inputs = (Input("model", FLOW_MODEL, "The model."),)
    outputs = (Output("model", FLOW_MODEL, "The same model, offloaded block by block while sampling."),)

    @classmethod
    def estimate_memory(cls, values: Mapping[str, Any], upstream: Mapping[str, ValueEstimate],
                        ctx: EstimateContext) -> MemoryEstimate | None:
        from nodeflow.nodes.flow.memory import offloaded

        model = upstream.get("model")
        if model is None:
            return None
        return MemoryEstimate(outputs={"model": offloaded(model)})

    def run(self, ctx: RunContext, model: FlowModel) -> Any:
        return replace(model, offload="blocks")


class Sample(Node):
    """Denoise a latent with an SD3.x or Flux model: text-to-image from an empty latent,
    image-to-image from an encoded one (denoise below 1), inpainting from a masked one (the
    unmasked area is restored every step). Classifier-free guidance runs when a
    negative is connected and cfg is above 1; Flux dev's embedded guidance comes from
    flow.FluxGuidance on the positive (3.5 when not set)."""

    id = "flow.Sample"
    uses_accelerator = True
    category = "flow/sampling"
    inputs = (
        Input("model", FLOW_MODEL, "The model (from a loader, optionally shifted or with LoRAs)."),
        Input("positive", FLOW_CONDITIONING, "What to make (with any ControlNets attached)."),
        Input("negative", FLOW_CONDITIONING, "What to steer away from (only used with cfg above 1).",
              optional=True),
        Input("latent", LATENT, "Where to start: an empty latent or an encoded image."),
        Input("seed", INT, "The noise seed (the same seed gives the same image on any device).",
              default=0, min=0, max=2**63 - 1, seed=True),
        Input("steps", INT, "Denoising steps.", default=28, min=1, max=1000),
        Input("cfg", FLOAT, "Classifier-free guidance scale (1 or less: none; SD3 uses about 4.5 to 7, "
              "Flux dev 1 with FluxGuidance).", default=1.0, min=0.0, max=100.0, step=0.5),
        Input("sampler", STRING, "The sampling method (semantics comfyui: also dpmpp_2m and "
              "euler_ancestral).", default="euler", choices=SAMPLER_NAMES),
        Input("scheduler", STRING, "The spacing of the sigmas (semantics comfyui: ComfyUI's schedulers, "
              "simple and sgm_uniform among them).", default="normal", choices=tuple(SCHEDULER_NAMES)),
        Input("denoise", FLOAT, "How much to change: 1 repaints everything; lower keeps more of an "
              "encoded image.", default=1.0, min=0.0, max=1.0, step=0.01),
        Input("semantics", STRING, "diffusers: sample as the diffusers pipelines do; comfyui: as ComfyUI "
              "does (its schedulers; denoise below 1 runs all steps at lower noise; an encoded image "
              "starts from the encoder's mean). Imported ComfyUI workflows use comfyui.",
              default="diffusers", choices=SEMANTICS),
    )
    outputs = (Output("latent", LATENT, "The denoised latents."),)

    @classmethod
    def check(cls, values: Mapping[str, Any], settings: Settings) -> Iterable[tuple[str | None, str]]:
        steps, denoise = values.get("steps"), values.get("denoise")
        schedule = values.get("scheduler", "normal")
        if values.get("semantics") == "comfyui":
            if values.get("sampler", "euler") not in COMFY_SAMPLERS:
                yield "sampler", (f"with ComfyUI's semantics nodeflow runs {', '.join(COMFY_SAMPLERS)} on SD3 "
                                  f"and Flux, not '{values.get('sampler')}'")
            if isinstance(denoise, int | float) and denoise <= 0:
                yield "denoise", "denoise 0 leaves no step to run"
            return
        if values.get("sampler", "euler") not in SAMPLERS:
            yield "sampler", (f"'{values.get('sampler')}' runs with ComfyUI's semantics only: set semantics "
                              f"to comfyui, or use one of {', '.join(SAMPLERS)}")
        if schedule not in SCHEDULES:
            yield "scheduler", (f"'{schedule}' is one of ComfyUI's schedulers: set semantics to comfyui, or "
                                f"use one of {', '.join(SCHEDULES)}")
        if values.get("sampler") == "heun" and schedule != "normal":
            yield "scheduler", "the heun sampler has only the normal schedule"
        if isinstance(steps, int) and isinstance(denoise, int | float) and 0 <= denoise < 1:
            if steps - int(max(steps - steps * denoise, 0)) < 1:
                yield "denoise", (f"denoise {denoise} with {steps} steps leaves no step to run; raise "
                                  "denoise or steps")

    @classmethod
    def estimate_memory(cls, values: Mapping[str, Any], upstream: Mapping[str, ValueEstimate],
                        ctx: EstimateContext) -> MemoryEstimate | None:
        """The transformer (or, offloaded by blocks, its resident part and two blocks) and the
        ControlNets on `positive`, plus activations at the latent's size."""
        from nodeflow.nodes.flow.memory import sampler_estimate

        return sampler_estimate(values, upstream)

    def run(self, ctx: RunContext, model: FlowModel, positive: FlowConditioning,
            negative: FlowConditioning | None, latent: Latent, seed: int, steps: int, cfg: float,
            sampler: str, scheduler: str, denoise: float, semantics: str = "diffusers") -> Any:
        for problem in self.check({"sampler": sampler, "scheduler": scheduler, "steps": steps,
                                   "denoise": denoise, "semantics": semantics}, ctx.settings):
            raise NodeInputError(problem[0] or "sampler", problem[1])
        conds = [("positive", positive)] + ([("negative", negative)] if negative is not None else [])
        for socket, cond in conds:
            if cond.family != model.family:
                raise NodeInputError(socket, f"this conditioning was encoded for "
                                     f"{FAMILY_NAMES.get(cond.family, cond.family)}, but the model is "
                                     f"{FAMILY_NAMES.get(model.family, model.family)}",
                                     hint="Encode the prompt with the text encoders of the model's family.")
        for hint in positive.hints:
            if hint.controlnet.family != model.family:
                raise NodeInputError("positive", "a ControlNet attached here is for "
                                     f"{FAMILY_NAMES.get(hint.controlnet.family)}, but the model is "
                                     f"{FAMILY_NAMES.get(model.family)}")
        if latent.width % MULTIPLE or latent.height % MULTIPLE:
            raise NodeInputError("latent", f"the latent's size {latent.width}×{latent.height} is not a "
                                 f"multiple of {MULTIPLE}", hint="Use flow.EmptyLatent, or resize the picture.")
        if latent.is_empty and denoise < 1.0:
            raise NodeInputError("denoise", f"denoise {denoise} needs a starting image, but the latent is "
                                 "empty", hint="Use denoise 1, or encode an image with diffusion.VAEEncode.")
        if latent.mask is not None and latent.encoded is None:
            raise NodeInputError("latent", "an inpainting mask needs the encoded picture",
                                 hint="Connect diffusion.VAEEncode → diffusion.SetLatentMask here.")
        modules = [*(h.controlnet.model for h in positive.hints)]
        from nodeflow.nodes.flow.offload import placed

        with placed(ctx, model, modules) as device:
            samples = denoise_latents(ctx, model, positive, negative, latent, seed, steps, cfg, sampler,
                                      scheduler, denoise, device, comfy=semantics == "comfyui")
        return replace(latent, samples=samples, encoded=None, mask=None)


def prompt_embeds(model: FlowModel, cond: FlowConditioning, device: Any, dtype: Any) -> tuple[Any, Any]:
    """(token embeddings, pooled embedding) in the form the model takes."""
    import torch

    pooled = cond.pooled.to(device=device, dtype=dtype)
    if model.family == "flux":
        return cond.t5.to(device=device, dtype=dtype), pooled
    joint = int(model.config.joint_attention_dim)
    clip = cond.clip.to(device=device, dtype=dtype)
    if cond.t5 is not None:
        t5 = cond.t5.to(device=device, dtype=dtype)
    else:  # SD3 without T5: zeros take the T5 tokens' place, as in the pipeline
        t5 = torch.zeros((clip.shape[0], cond.t5_length, joint), device=device, dtype=dtype)
    clip = torch.nn.functional.pad(clip, (0, t5.shape[-1] - clip.shape[-1]))
    return torch.cat([clip, t5], dim=-2), pooled


def pack(latents: Any) -> Any:
    """(b, c, h, w) → (b, h/2·w/2, 4c): Flux's 2×2 patches as tokens."""
    b, c, h, w = latents.shape
    x = latents.view(b, c, h // 2, 2, w // 2, 2).permute(0, 2, 4, 1, 3, 5)
    return x.reshape(b, (h // 2) * (w // 2), c * 4)


def unpack(tokens: Any, h: int, w: int) -> Any:
    b, _n, d = tokens.shape
    x = tokens.view(b, h // 2, w // 2, d // 4, 2, 2).permute(0, 3, 1, 4, 2, 5)
    return x.reshape(b, d // 4, h, w)


def image_ids(h: int, w: int, device: Any, dtype: Any) -> Any:
    """Flux's positions of the (h/2)×(w/2) image tokens: (0, row, column)."""
    import torch

    ids = torch.zeros(h // 2, w // 2, 3)
    ids[..., 1] = ids[..., 1] + torch.arange(h // 2)[:, None]
    ids[..., 2] = ids[..., 2] + torch.arange(w // 2)[None, :]
    return ids.reshape(-1, 3).to(device=device, dtype=dtype)


def _timesteps(scheduler: Any, model: FlowModel, steps: int, latent_hw: tuple[int, int],
               device: Any) -> None:
    import numpy as np

    s = model.shift
    kwargs: dict[str, Any] = {}
    accepts = inspect.signature(scheduler.set_timesteps).parameters
    if s.dynamic:
        if s.size is not None:
            tokens = token_count(*s.size)
        else:
            tokens = (latent_hw[0] // 2) * (latent_hw[1] // 2)
        mu = flux_mu(s, tokens)
        if "mu" in accepts:
            kwargs["mu"] = mu
        else:  # a fixed shift of e^mu is the same time shift, for schedulers that take no mu
            scheduler.register_to_config(shift=math.exp(mu), use_dynamic_shifting=False)
    if model.family == "flux" and "sigmas" in accepts:
        kwargs["sigmas"] = np.linspace(1.0, 1 / steps, steps)
        scheduler.set_timesteps(device=device, **kwargs)
    else:
        scheduler.set_timesteps(steps, device=device, **kwargs)


def _comfy_timesteps(scheduler: Any, model: FlowModel, schedule: str, sampler: str, steps: int,
                     denoise: float, latent_hw: tuple[int, int], device: Any) -> None:
    """Give a diffusers flow-matching scheduler ComfyUI's sigmas (its step is ComfyUI's Euler step)."""
    from nodeflow.nodes.flow.schedules import comfy_sigmas

    sigmas = comfy_sigmas(model, schedule, sampler, steps, denoise)
    if len(sigmas) < 2:
        raise NodeInputError("denoise", f"denoise {denoise} leaves no step to run")
    _timesteps(scheduler, model, len(sigmas) - 1, latent_hw, device)
    scheduler.sigmas = sigmas.to(device)
    scheduler.timesteps = (sigmas[:-1] * scheduler.config.num_train_timesteps).to(device)
    scheduler._step_index = None
    scheduler.set_begin_index(0)


def denoise_latents(ctx: RunContext, model: FlowModel, positive: FlowConditioning,
                    negative: FlowConditioning | None, latent: Latent, seed: int, steps: int, cfg: float,
                    sampler: str, schedule: str, denoise: float, device: Any, comfy: bool = False) -> Any:
    import torch
    from diffusers.utils.torch_utils import randn_tensor

    from nodeflow.nodes.flow.control import control_residuals, prepare_hints

    transformer = model.transformer
    dtype = _compute_dtype(transformer)
    batch = latent.batch
    flux = model.family == "flux"
    generator = torch.Generator("cpu").manual_seed(int(seed))
    do_cfg = negative is not None and cfg > 1.0

    embeds, pooled = prompt_embeds(model, positive, device, dtype)
    embeds, pooled = embeds.repeat(batch, 1, 1), pooled.repeat(batch, 1)
    neg_embeds: Any = None
    neg_pooled: Any = None
    if do_cfg:
        assert negative is not None
        neg_embeds, neg_pooled = prompt_embeds(model, negative, device, dtype)
        neg_embeds, neg_pooled = neg_embeds.repeat(batch, 1, 1), neg_pooled.repeat(batch, 1)
        if not flux and neg_embeds.shape[1] != embeds.shape[1]:
            raise NodeInputError("negative", f"the negative has {neg_embeds.shape[1]} tokens but the "
                                 f"positive {embeds.shape[1]}", hint="Encode both with the same t5_length.")

    if latent.samples is not None:
        h, w = int(latent.samples.shape[-2]), int(latent.samples.shape[-1])
    else:
        h, w = latent.height // LATENT_SCALE, latent.width // LATENT_SCALE
    solver = SOLVERS.get(sampler) if comfy else None
    # ComfyUI's samplers step on their own; the Euler scheduler then keeps the sigmas and noising
    scheduler = make_scheduler(model, "euler" if solver else sampler, schedule if schedule in SCHEDULES
                               else "normal")
    from_image = not latent.is_empty
    if comfy:
        _comfy_timesteps(scheduler, model, schedule, sampler, steps, denoise, (h, w), device)
        timesteps = scheduler.timesteps
    else:
        _timesteps(scheduler, model, steps, (h, w), device)
        timesteps = scheduler.timesteps
    if from_image and not comfy:
        init = min(steps * denoise, steps)
        t_start = int(max(steps - init, 0))
        timesteps = timesteps[t_start * scheduler.order:]
        if hasattr(scheduler, "set_begin_index"):
            scheduler.set_begin_index(t_start * scheduler.order)
        if len(timesteps) < 1:
            raise NodeInputError("denoise", f"denoise {denoise} with {steps} steps leaves no step to run")
    elif hasattr(scheduler, "set_begin_index"):
        scheduler.set_begin_index(0)

    shape = (batch, model.latent_channels, h, w)
    comfy_noise: Any = None
    if comfy:  # ComfyUI draws the whole batch's noise first, in float32, on the CPU
        noise_shape = tuple(latent.samples.shape) if from_image else shape
        if from_image and noise_shape[0] < batch:
            noise_shape = (batch, *noise_shape[1:])
        comfy_noise = torch.randn(noise_shape, generator=generator, dtype=torch.float32).to(device=device,
                                                                                             dtype=dtype)
    # Flux's pipeline draws the control images' latents first, with the same generator
    hints = prepare_hints(model, positive.hints, h, w, batch, do_cfg and not flux, device, generator, seed)
    if from_image and comfy:  # from the encoder's mean (VAEEncode's samples), noised to the first sigma
        init_latents = latent.samples.to(device=device, dtype=dtype)
        if init_latents.shape[0] < batch:
            init_latents = init_latents.repeat(batch // init_latents.shape[0], 1, 1, 1)
        noise = comfy_noise
        latents = scheduler.scale_noise(init_latents, timesteps[:1].repeat(batch), noise)
    elif comfy:
        latents = comfy_noise * scheduler.sigmas[0]
    elif from_image:
        with torch.no_grad():
            if latent.encoded is not None:
                from nodeflow.nodes.diffusion.latent import to_model_space

                sample = latent.encoded.dist.sample(generator=generator)
                init_latents = to_model_space(latent.encoded.vae.vae, sample).to(device=device, dtype=dtype)
            else:
                init_latents = latent.samples.to(device=device, dtype=dtype)
        if init_latents.shape[0] < batch:
            init_latents = init_latents.repeat(batch // init_latents.shape[0], 1, 1, 1)
        noise = randn_tensor(tuple(init_latents.shape), generator=generator, device=device, dtype=dtype)
        latents = scheduler.scale_noise(init_latents, timesteps[:1].repeat(batch), noise)
    else:
        latents = randn_tensor(shape, generator=generator, device=device, dtype=dtype)
    mask: Any = None
    image_latents: Any = None
    if latent.mask is not None:
        # The inpainting pipelines also encode the masked picture, whose latents a 16-channel model
        # does not use: draw the same numbers to stay in step with them.
        assert latent.encoded is not None
        if not comfy:
            randn_tensor(tuple(latent.encoded.dist.mean.shape), generator=generator, device=device,
                         dtype=dtype)
        condition = torch.from_numpy(latent.mask)[:, None].clone()
        condition[condition < 0.5] = 0
        condition[condition >= 0.5] = 1
        mask = torch.nn.functional.interpolate(condition, size=(h, w)).to(device=device, dtype=dtype)
        mask = mask.repeat(batch // mask.shape[0], 1, 1, 1)
        image_latents = init_latents
        if flux:  # kept and blended as packed tokens, as the Flux pipeline does
            mask, image_latents = pack(mask.expand(-1, model.latent_channels, -1, -1)), pack(image_latents)
            noise = pack(noise)

    guidance = None
    guidance_value = positive.guidance if positive.guidance is not None else DEFAULT_GUIDANCE
    if flux and model.guidance_embedded:
        guidance = torch.full([1], guidance_value, device=device, dtype=torch.float32).expand(batch)
    if flux:
        latents = pack(latents)
        img_ids = image_ids(h, w, device, latents.dtype)
        txt_ids = torch.zeros(embeds.shape[1], 3).to(device=device, dtype=dtype)
        neg_txt_ids = (torch.zeros(neg_embeds.shape[1], 3).to(device=device, dtype=dtype)
                       if neg_embeds is not None else None)
    else:
        joint = torch.cat([neg_embeds, embeds]) if do_cfg else embeds
        joint_pooled = torch.cat([neg_pooled, pooled]) if do_cfg else pooled

    def velocity(latents: Any, t: Any, i: int) -> Any:
        """The (guided) velocity the model predicts at timestep ``t`` (σ·1000) of step ``i``."""
        if flux:
            timestep = t.expand(latents.shape[0]).to(latents.dtype)
            residuals = control_residuals(model, hints, i, total, latents, timestep, embeds, pooled,
                                          guidance_value, txt_ids, img_ids)
            noise_pred = transformer(hidden_states=latents, timestep=timestep / 1000, guidance=guidance,
                                     pooled_projections=pooled, encoder_hidden_states=embeds,
                                     txt_ids=txt_ids, img_ids=img_ids, return_dict=False,
                                     **residuals)[0]
            if do_cfg:
                neg_pred = transformer(hidden_states=latents, timestep=timestep / 1000,
                                       guidance=guidance, pooled_projections=neg_pooled,
                                       encoder_hidden_states=neg_embeds, txt_ids=neg_txt_ids,
                                       img_ids=img_ids, return_dict=False, **residuals)[0]
                noise_pred = neg_pred + cfg * (noise_pred - neg_pred)
            return noise_pred
        model_input = torch.cat([latents] * 2) if do_cfg else latents
        timestep = t.expand(model_input.shape[0])
        residuals = control_residuals(model, hints, i, total, model_input, timestep, joint,
                                      joint_pooled, None, None, None)
        noise_pred = transformer(hidden_states=model_input, timestep=timestep,
                                 encoder_hidden_states=joint, pooled_projections=joint_pooled,
                                 return_dict=False, **residuals)[0]
        if do_cfg:
            uncond, text = noise_pred.chunk(2)
            noise_pred = uncond + cfg * (text - uncond)
        return noise_pred

    def after_step(i: int, latents: Any) -> Any:
        if mask is not None:  # keep the unmasked area: the picture, noised to the next sigma
            proper = image_latents
            if i < total - 1:
                proper = scheduler.scale_noise(proper, torch.tensor([timesteps[i + 1]]), noise)
            latents = (1 - mask) * proper + mask * latents
        ctx.progress(i + 1, total)
        if (i + 1) % PREVIEW_EVERY == 0 or i + 1 == total:
            ctx.preview(latent_preview(unpack(latents, h, w) if flux else latents, model.family))
        return latents

    total = len(timesteps)
    with torch.no_grad():
        if solver is not None:
            scale = scheduler.config.num_train_timesteps
            ancestral = torch.Generator("cpu").manual_seed(int(seed) + ANCESTRAL_SEED_OFFSET)

            def denoised(x: Any, sigma: Any, i: int) -> Any:
                return x - sigma.to(x.dtype) * velocity(x, sigma * scale, i)

            def fresh_noise() -> Any:
                drawn = torch.randn(shape, generator=ancestral, dtype=torch.float32).to(device=device,
                                                                                     dtype=dtype)
                return pack(drawn) if flux else drawn

            latents = solver(denoised, latents, scheduler.sigmas.to(device), after_step, fresh_noise)
        else:
            for i, t in enumerate(timesteps):
                noise_pred = velocity(latents, t, i)
                latents = scheduler.step(noise_pred, t, latents, return_dict=False)[0]
                latents = after_step(i, latents)
    return unpack(latents, h, w) if flux else latents


def _compute_dtype(transformer: Any) -> Any:
    """The dtype the transformer computes in (its weights may be stored in fp8)."""
    import torch

    for p in transformer.parameters():
        if p.dtype in (torch.float32, torch.float16, torch.bfloat16):
            return p.dtype
    return torch.float32


def guided_cells(width: int, height: int, batch: int, guided: bool) -> int:
    return token_count(width, height) * batch * (2 if guided else 1)

