"""The sampler: classifier-free guided denoising driven by a diffusers scheduler.

One story, as in the diffusers pipelines: prepare the embeddings, set the
timesteps, prepare the starting latents (noise for text-to-image, noised image
latents for image-to-image and inpainting), then step. Random numbers come from
one CPU generator seeded by ``seed`` and are drawn in the pipelines' order, so a
graph gives the same pixels as the matching pipeline, on any device. Guidance can be
limited to an interval of timesteps and rescaled; ``denoising_end`` / ``denoising_start``
hand a still-noisy latent from one sampler to the next (SDXL base → refiner), as the
diffusers pipelines do. ComfyUI's semantics are in ``ksampler`` (see docs/sampling.md).

Memory estimate (before a run): the UNet and any attached ControlNets resident, plus
activations of about ``UNET_ACTIVATION_FACTOR`` × the UNet's first-block width ×
latent cells × (batch, doubled with guidance) × bytes per number, half as much again
per ControlNet (SD 1.5 at 512×512 with guidance in fp16: about 340 MB; SDXL at
1024×1024: about 1.3 GB): what a UNet with PyTorch's fused attention keeps alive
(skip connections, feed-forward and attention projections at full latent resolution),
with a margin; the attention score matrices are never materialised. Measured on the
CPU with the demo UNet at 512×512 with guidance: 0.76 of the estimate.
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
from nodeflow.nodes.diffusion.adapters import ADAPTER, adapter_residuals, prepare_adapters
from nodeflow.nodes.diffusion.types import (
    CONDITIONING,
    FAMILY_NAMES,
    LATENT,
    MODEL,
    Conditioning,
    DiffusionModel,
    Latent,
)

SAMPLERS: dict[str, tuple[str, dict[str, Any]]] = {
    "euler": ("EulerDiscreteScheduler", {}),
    "euler_ancestral": ("EulerAncestralDiscreteScheduler", {}),
    "heun": ("HeunDiscreteScheduler", {}),
    "dpmpp_2m": ("DPMSolverMultistepScheduler", {"algorithm_type": "dpmsolver++", "solver_order": 2}),
    "dpmpp_2m_sde": ("DPMSolverMultistepScheduler",
                     {"algorithm_type": "sde-dpmsolver++", "solver_order": 2}),
    "ddim": ("DDIMScheduler", {}),
    "unipc": ("UniPCMultistepScheduler", {}),
    "lms": ("LMSDiscreteScheduler", {}),
    "lcm": ("LCMScheduler", {}),
    "pndm": ("PNDMScheduler", {}),
}
"""Sampler names and the diffusers scheduler (with settings) that implements each."""

SCHEDULES = ("normal", "karras")
KARRAS = frozenset({"euler", "heun", "dpmpp_2m", "dpmpp_2m_sde", "unipc", "lms"})
"""Samplers whose diffusers scheduler offers Karras sigmas."""

PREVIEW_EVERY = 4
UNET_ACTIVATION_FACTOR = 64
"""Bytes of activations per latent cell, per channel of the UNet's first block, per byte of its
dtype and per image of the (guided) batch: a rough, somewhat generous figure."""

# Linear maps from 4-channel latents to RGB, for cheap previews.
_PREVIEW_RGB = {
    "sd": ((0.3512, 0.2297, 0.3227), (0.3250, 0.4974, 0.2350), (-0.2829, 0.1762, 0.2721),
           (-0.2120, -0.2616, -0.7177)),
    "sdxl": ((0.3651, 0.4232, 0.4341), (-0.2533, -0.0042, 0.1068), (0.1076, 0.1111, -0.0362),
             (-0.3165, -0.2492, -0.2188)),
}


SPACINGS = ("auto", "leading", "linspace", "trailing")
"""How the steps are placed among the training timesteps; auto: as the checkpoint's scheduler config
says (diffusers' default, linspace, when it says nothing — original single files say nothing, while
folders saved by recent diffusers say leading)."""


def make_scheduler(config: Mapping[str, Any], sampler: str, schedule: str, spacing: str = "auto") -> Any:
    """The diffusers scheduler for a sampler name, built from a checkpoint's scheduler config."""
    import diffusers

    class_name, overrides = SAMPLERS[sampler]
    kwargs = dict(overrides)
    if schedule == "karras":
        kwargs["use_karras_sigmas"] = True
    if spacing != "auto":
        kwargs["timestep_spacing"] = spacing
    return getattr(diffusers, class_name).from_config(dict(config), **kwargs)


def scheduler_settings(scheduler: Any) -> str:
    """The settings that decide which timesteps a run visits, for the run's events: the same weights
    can render differently from a folder and from a single file when these differ."""
    config = scheduler.config
    parts = [f"timestep_spacing {config.get('timestep_spacing', 'linspace')}",
             f"prediction {config.get('prediction_type', 'epsilon')}",
             f"steps_offset {config.get('steps_offset', 0)}",
             f"betas {config.get('beta_schedule', 'linear')} {config.get('beta_start')}–{config.get('beta_end')}"]
    if config.get("use_karras_sigmas"):
        parts.append("karras sigmas")
    if config.get("rescale_betas_zero_snr"):
        parts.append("zero terminal SNR")
    return f"{type(scheduler).__name__}: {', '.join(parts)}"


def settings_note(scheduler: Any, sampler: str, schedule: str, steps: int, timesteps: Any, cfg: float,
                  guided: bool, guidance_t: tuple[float, float], guidance_rescale: float,
                  denoise: float, stage: tuple[float, float]) -> dict[str, str]:
    """What a sampler resolved, for the run's notes (saved pictures and the memory report carry
    them): the scheduler and its settings as used, and the steps and guidance that ran."""
    config = scheduler.config
    note = {"sampler": sampler, "schedule": schedule, "scheduler": type(scheduler).__name__,
            "timestep_spacing": str(config.get("timestep_spacing", "linspace")),
            "prediction_type": str(config.get("prediction_type", "epsilon")),
            "steps_offset": str(config.get("steps_offset", 0)),
            "betas": f"{config.get('beta_schedule', 'linear')} {config.get('beta_start')}–{config.get('beta_end')}",
            "steps": str(steps), "steps_run": str(len(timesteps)),
            "timesteps": f"{float(timesteps[0]):g} → {float(timesteps[-1]):g}" if len(timesteps) else "-",
            "cfg": f"{cfg:g}" if guided else f"{cfg:g} (no guidance)"}
    if config.get("use_karras_sigmas"):
        note["karras_sigmas"] = "yes"
    if config.get("rescale_betas_zero_snr"):
        note["zero_terminal_snr"] = "yes"
    if guided and tuple(guidance_t) != (0.0, 1000.0):
        note["guidance_t"] = f"{guidance_t[0]:g}–{guidance_t[1]:g}"
    if guided and guidance_rescale > 0:
        note["guidance_rescale"] = f"{guidance_rescale:g}"
    if denoise < 1:
        note["denoise"] = f"{denoise:g}"
    if tuple(stage) != (0.0, 1.0):
        note["denoising"] = f"{stage[0]:g}–{stage[1]:g}"
    return note


def latent_preview(latents: Any, family: str) -> Any:
    """A rough RGB picture of latents (batch item 0) by a fixed linear projection."""
    import torch

    z = latents[:1].detach().float().cpu()
    if z.shape[1] == 4:
        weights = torch.tensor(_PREVIEW_RGB["sdxl" if family == "sdxl" else "sd"])
        rgb = torch.einsum("bchw,cr->bhwr", z, weights)
    else:
        rgb = z[:, :3].permute(0, 2, 3, 1) / 4
        if rgb.shape[-1] < 3:
            rgb = rgb[..., :1].expand(*rgb.shape[:3], 3)
    return ((rgb + 1) / 2).clamp(0, 1).numpy()


def guidance_embedding(w: Any, dim: int, dtype: Any) -> Any:
    """Sinusoidal embedding of the guidance scale, for guidance-distilled (LCM) UNets."""
    import torch

    w = w * 1000.0
    half = dim // 2
    freq = torch.exp(torch.arange(half, dtype=dtype) * -(math.log(10000.0) / (half - 1)))
    emb = w.to(dtype)[:, None] * freq[None, :]
    emb = torch.cat([torch.sin(emb), torch.cos(emb)], dim=1)
    if dim % 2 == 1:
        emb = torch.nn.functional.pad(emb, (0, 1))
    return emb


def _matched(a: Any, b: Any) -> tuple[Any, Any]:
    """Repeat the shorter of two chunked embeddings so both have the same token count."""
    la, lb = a.shape[1], b.shape[1]
    if la == lb:
        return a, b
    n = math.lcm(la, lb)
    return a.repeat(1, n // la, 1), b.repeat(1, n // lb, 1)


def _step_kwargs(scheduler: Any, generator: Any) -> dict[str, Any]:
    params = set(inspect.signature(scheduler.step).parameters)
    kwargs: dict[str, Any] = {}
    if "eta" in params:
        kwargs["eta"] = 0.0
    if "generator" in params:
        kwargs["generator"] = generator
    return kwargs


def _hint_tensor(image: Any, width: int, height: int, batch: int, cfg: bool, dtype: Any,
                 device: Any) -> Any:
    import numpy as np
    import torch

    t = torch.from_numpy(np.ascontiguousarray(np.asarray(image, dtype=np.float32).transpose(0, 3, 1, 2)))
    if t.shape[-2:] != (height, width):
        t = torch.nn.functional.interpolate(t, size=(height, width))
    if t.shape[0] == 1:
        t = t.repeat_interleave(batch, dim=0)
    t = t.to(device=device, dtype=dtype)
    return torch.cat([t] * 2) if cfg else t


def sampler_estimate(values: Mapping[str, Any], upstream: Mapping[str, ValueEstimate],
                     latent_socket: str) -> MemoryEstimate | None:
    """A sampler's memory need: the UNet and the ControlNets on `positive`, resident together,
    and the denoising activations at the latent's size (see the module docstring)."""
    model = upstream.get("model")
    if model is None:
        return None
    positive = upstream.get("positive")
    controlnets = dict(positive.models) if positive is not None else {}
    models = {**model.models, **controlnets}
    latent = upstream.get(latent_socket)
    dims = latent.dims() if latent is not None else None
    if dims is None:
        return MemoryEstimate(models)
    width, height, batch = dims
    cfg = values.get("cfg")
    guided = not isinstance(cfg, int | float) or cfg > 1.0  # linked: assume guidance
    scale = int(model.info.get("latent_scale", 8))
    cells = (width // scale) * (height // scale) * batch * (2 if guided else 1)
    activations = (UNET_ACTIVATION_FACTOR * int(model.info.get("channels", 320)) * cells
                   * int(model.info.get("itemsize", 4)))
    activations += activations * len(controlnets) // 2
    return MemoryEstimate(
        models, activations,
        outputs={"latent": ValueEstimate(info={"width": width, "height": height, "batch": batch})},
        note=f"{width}×{height}, batch {batch}{' with guidance' if guided else ''}")


GUIDANCE_INPUTS = (
    Input("guidance_min_t", FLOAT, "Apply guidance only at timesteps t ≥ this (0 = clean, 999 = "
          "pure noise); below it the positive prediction alone.", default=0.0, min=0.0, max=1000.0,
          step=10.0, widget="range.start"),
    Input("guidance_max_t", FLOAT, "Apply guidance only at timesteps t ≤ this. E.g. 500 keeps the "
          "composition of unguided sampling (more variety) and guides the details.", default=1000.0,
          min=0.0, max=1000.0, step=10.0, widget="range.end"),
    Input("guidance_rescale", FLOAT, "Rescale the guided prediction towards the positive one's "
          "spread (0: off; 0.7 suits zero-terminal-SNR models at high cfg).", default=0.0, min=0.0,
          max=1.0, step=0.05),
)
"""Guidance control shared by the samplers: an interval of timesteps where guidance applies
(Kynkäänniemi et al. 2024) and guidance rescale (Lin et al. 2023)."""


def guidance_problems(values: Mapping[str, Any]) -> Iterable[tuple[str | None, str]]:
    """Validation of the guidance inputs."""
    lo, hi = values.get("guidance_min_t"), values.get("guidance_max_t")
    if isinstance(lo, int | float) and isinstance(hi, int | float) and lo > hi:
        yield "guidance_max_t", (f"guidance_max_t ({hi}) is below guidance_min_t ({lo}): guidance "
                                 "would never apply; set cfg to 1 for that")


def rescale_noise_cfg(guided: Any, positive: Any, amount: float) -> Any:
    """Guidance rescale: scale the guided prediction to the positive one's standard deviation
    (per picture) and mix ``amount`` of that in, as the diffusers pipelines do."""
    dims = tuple(range(1, positive.ndim))
    rescaled = guided * (positive.std(dim=dims, keepdim=True) / guided.std(dim=dims, keepdim=True))
    return amount * rescaled + (1 - amount) * guided


class Sample(Node):
    """Denoise a latent with classifier-free guidance: text-to-image from an empty latent,
    image-to-image from an encoded one (denoise below 1), inpainting from a masked one.
    Guidance can be limited to an interval of timesteps and rescaled."""

    id = "diffusion.Sample"
    version = "1.1.0"
    uses_accelerator = True
    category = "diffusion/sampling"
    inputs = (
        Input("model", MODEL, "The denoising model (from a checkpoint, optionally with LoRAs)."),
        Input("positive", CONDITIONING, "What to make (with any ControlNets attached)."),
        Input("negative", CONDITIONING, "What to steer away from."),
        Input("latent", LATENT, "Where to start: an empty latent, an encoded image, or a masked one."),
        Input("seed", INT, "The noise seed (the same seed gives the same image on any device).",
              default=0, min=0, max=2**63 - 1, seed=True),
        Input("steps", INT, "Denoising steps.", default=20, min=1, max=1000),
        Input("cfg", FLOAT, "Classifier-free guidance scale (1 or less: no guidance).", default=7.5,
              min=0.0, max=100.0, step=0.5),
        Input("sampler", STRING, "The sampling method.", default="euler", choices=tuple(SAMPLERS)),
        Input("scheduler", STRING, "The noise schedule: normal, or Karras sigmas (for euler, heun, "
              "dpmpp_2m, dpmpp_2m_sde, unipc, lms).", default="normal", choices=SCHEDULES),
        Input("denoise", FLOAT, "How much to change: 1 repaints everything; lower keeps more of an "
              "encoded image.", default=1.0, min=0.0, max=1.0, step=0.01),
        *GUIDANCE_INPUTS,
        Input("denoising_start", FLOAT, "Start this far into the schedule, from the latent as it is "
              "(no noise added): the second stage of a hand-over such as SDXL base → refiner "
              "(diffusers' denoising_start).", default=0.0, min=0.0, max=1.0, step=0.01,
              widget="range.start"),
        Input("denoising_end", FLOAT, "Stop this far into the schedule, leaving the rest of the noise "
              "for a second sampler (diffusers' denoising_end).", default=1.0, min=0.0, max=1.0,
              step=0.01, widget="range.end"),
        Input("timestep_spacing", STRING, "Where the steps fall among the training timesteps: auto "
              "(as the checkpoint's scheduler config says), leading, linspace or trailing. The run's "
              "first progress event says what was used.", default="auto", choices=SPACINGS),
    )
    outputs = (Output("latent", LATENT, "The denoised latents."),)

    @classmethod
    def check(cls, values: Mapping[str, Any], settings: Settings) -> Iterable[tuple[str | None, str]]:
        yield from guidance_problems(values)
        sampler, schedule = values.get("sampler"), values.get("scheduler")
        if schedule == "karras" and sampler in SAMPLERS and sampler not in KARRAS:
            yield "scheduler", (f"the {sampler} sampler has no Karras schedule; use 'normal', or one "
                                f"of {', '.join(sorted(KARRAS))}")
        steps, denoise = values.get("steps"), values.get("denoise")
        start, end = values.get("denoising_start"), values.get("denoising_end")
        if isinstance(start, int | float) and isinstance(end, int | float) and start >= end:
            yield "denoising_end", (f"denoising_end ({end}) must be after denoising_start ({start}); "
                                    "no step would run")
        if isinstance(start, int | float) and start > 0 and isinstance(denoise, int | float) \
                and denoise < 1:
            yield "denoise", ("denoise and denoising_start both say where to start; with "
                              "denoising_start set, leave denoise at 1")
        if sampler == "pndm" and isinstance(steps, int) and steps < 4:
            yield "steps", f"the pndm sampler needs at least 4 steps, got {steps}"
        if isinstance(steps, int) and isinstance(denoise, int | float) and 0 <= denoise < 1:
            if int(steps * denoise) < 1:
                yield "denoise", (f"denoise {denoise} with {steps} steps leaves no step to run; "
                                  "raise denoise or steps")

    @classmethod
    def estimate_memory(cls, values: Mapping[str, Any], upstream: Mapping[str, ValueEstimate],
                        ctx: EstimateContext) -> MemoryEstimate | None:
        """The UNet and the ControlNets on `positive`, resident together, and the denoising
        activations at the latent's size (see the module docstring)."""
        return sampler_estimate(values, upstream, "latent")

    def run(self, ctx: RunContext, model: DiffusionModel, positive: Conditioning,
            negative: Conditioning, latent: Latent, seed: int, steps: int, cfg: float,
            sampler: str, scheduler: str, denoise: float, guidance_min_t: float = 0.0,
            guidance_max_t: float = 1000.0, guidance_rescale: float = 0.0,
            denoising_start: float = 0.0, denoising_end: float = 1.0,
            timestep_spacing: str = "auto") -> Any:
        if sampler not in SAMPLERS:
            raise NodeInputError("sampler", f"unknown sampler {sampler!r}",
                                 hint=f"Use one of: {', '.join(SAMPLERS)}.")
        if scheduler not in SCHEDULES:
            raise NodeInputError("scheduler", f"unknown scheduler {scheduler!r}",
                                 hint=f"Use one of: {', '.join(SCHEDULES)}.")
        for problem in self.check({"sampler": sampler, "scheduler": scheduler, "steps": steps,
                                   "denoise": denoise, "denoising_start": denoising_start,
                                   "denoising_end": denoising_end}, ctx.settings):
            raise NodeInputError(problem[0] or "sampler", problem[1])
        for problem in guidance_problems({"guidance_min_t": guidance_min_t,
                                          "guidance_max_t": guidance_max_t}):
            raise NodeInputError(problem[0] or "guidance_max_t", problem[1])
        for socket, cond in (("positive", positive), ("negative", negative)):
            if cond.is_regional:
                raise NodeInputError(socket, "this conditioning has areas, masks, a step range or "
                                     "combined prompts, which diffusion.Sample (the diffusers "
                                     "pipelines' sampler) does not apply",
                                     hint="Use diffusion.KSampler for regional prompts.")
            if cond.family != model.family:
                raise NodeInputError(socket, f"this conditioning was encoded by a "
                                     f"{FAMILY_NAMES.get(cond.family)} text encoder, but the model is "
                                     f"{FAMILY_NAMES.get(model.family)}",
                                     hint="Encode the prompt with the same checkpoint's clip.")
        for hint in positive.hints:
            if hint.controlnet.family != model.family:
                raise NodeInputError("positive", f"a ControlNet attached here is for "
                                     f"{FAMILY_NAMES.get(hint.controlnet.family)}, but the model is "
                                     f"{FAMILY_NAMES.get(model.family)}")
        if latent.width % model.latent_scale or latent.height % model.latent_scale:
            raise NodeInputError("latent", f"the latent's size {latent.width}×{latent.height} is not a "
                                 f"multiple of {model.latent_scale}")
        if model.is_inpaint and latent.mask is None:
            raise NodeInputError("latent", "this is an inpainting checkpoint (9-channel UNet): it needs "
                                 "an encoded picture with a mask",
                                 hint="Connect VAEEncode → SetLatentMask here.")
        if latent.mask is not None and latent.encoded is None:
            raise NodeInputError("latent", "an inpainting mask needs the encoded picture")
        if latent.is_empty and denoising_start > 0:
            raise NodeInputError("denoising_start", "denoising_start carries on from a latent that "
                                 "still has its noise, but the latent is empty",
                                 hint="Connect the first sampler's latent (with denoising_end) here.")
        if latent.is_empty and denoise < 1.0:
            raise NodeInputError("denoise", f"denoise {denoise} needs a starting image, but the latent "
                                 "is empty", hint="Use denoise 1, or encode an image with VAEEncode.")
        modules = [model.unet, *(h.controlnet.model for h in positive.hints)]
        with ctx.models.use(*modules) as device:
            samples = _denoise(ctx, model, positive, negative, latent, seed, steps, cfg, sampler,
                               scheduler, denoise, device, (guidance_min_t, guidance_max_t),
                               guidance_rescale, (denoising_start, denoising_end), timestep_spacing)
        return replace(latent, samples=samples, encoded=None, mask=None)


def _denoise(ctx: RunContext, model: DiffusionModel, positive: Conditioning, negative: Conditioning,
             latent: Latent, seed: int, steps: int, cfg: float, sampler: str, schedule: str,
             denoise: float, device: Any, guidance_t: tuple[float, float] = (0.0, 1000.0),
             guidance_rescale: float = 0.0, stage: tuple[float, float] = (0.0, 1.0),
             spacing: str = "auto") -> Any:
    import torch

    unet = model.unet
    dtype = unet.dtype
    batch = latent.batch
    height, width = latent.height, latent.width
    scale = model.latent_scale
    generator = torch.Generator("cpu").manual_seed(int(seed))
    draw = _NoiseDraws(generator, latent)
    guidance_cond = unet.config.time_cond_proj_dim is not None
    do_cfg = cfg > 1.0 and not guidance_cond

    # Embeddings: [negative, positive] when guiding, each repeated for the batch.
    pos, neg = positive.embeds, negative.embeds
    if do_cfg:
        pos, neg = _matched(pos, neg)
    pos = pos.to(device=device, dtype=dtype).repeat(batch, 1, 1)
    neg = neg.to(device=device, dtype=dtype).repeat(batch, 1, 1)
    embeds = torch.cat([neg, pos]) if do_cfg else pos
    added_cond = None
    if model.family == "sdxl":
        # Size conditioning as the prompts say (CLIPTextEncodeSDXL), else the picture's size.
        from nodeflow.nodes.diffusion.sdxl_prompts import time_ids as sdxl_time_ids

        refiner = time_id_count(unet, positive.pooled) == 5
        time_ids = torch.tensor([sdxl_time_ids(positive, width, height, refiner, False)],
                                dtype=dtype).repeat(batch, 1)
        text_embeds = positive.pooled.to(device=device, dtype=dtype).repeat(batch, 1)
        if do_cfg:
            neg_pooled = negative.pooled.to(device=device, dtype=dtype).repeat(batch, 1)
            text_embeds = torch.cat([neg_pooled, text_embeds])
            neg_ids = torch.tensor([sdxl_time_ids(negative, width, height, refiner, True)], dtype=dtype)
            time_ids = torch.cat([neg_ids.repeat(batch, 1), time_ids])
        added_cond = {"text_embeds": text_embeds, "time_ids": time_ids.to(device)}
    timestep_cond = None
    if guidance_cond:
        w = torch.tensor(cfg - 1).repeat(batch)
        timestep_cond = guidance_embedding(w, unet.config.time_cond_proj_dim, dtype).to(device)

    # Timesteps; denoise < 1 (or an image to start from) skips the noisiest ones.
    scheduler = make_scheduler(model.scheduler_config, sampler, schedule, spacing)
    ctx.progress(0, steps, scheduler_settings(scheduler))
    scheduler.set_timesteps(steps, device=device)
    timesteps = scheduler.timesteps
    if sampler == "pndm" and steps < 4:  # its warm-up needs more steps than that
        raise NodeInputError("steps", f"the pndm sampler needs at least 4 steps, got {steps}")
    from_image = not latent.is_empty
    start_fraction, end_fraction = stage
    train_steps = int(scheduler.config.num_train_timesteps)
    if start_fraction > 0:
        # Carry on from a latent that kept its noise: the timesteps below the cut-off, no noise
        # added (as diffusers' img2img pipelines with denoising_start).
        cutoff = int(round(train_steps - start_fraction * train_steps))
        count = int((timesteps < cutoff).sum())
        if scheduler.order == 2 and count % 2 == 0:
            count += 1  # a second-order step must not be cut in half
        t_start = len(timesteps) - count
        timesteps = timesteps[t_start:]
        if hasattr(scheduler, "set_begin_index"):
            scheduler.set_begin_index(t_start)
    if end_fraction < 1:
        cutoff = int(round(train_steps - end_fraction * train_steps))
        timesteps = timesteps[:int((timesteps >= cutoff).sum())]
    if len(timesteps) == 0:
        raise NodeInputError("denoising_end", f"denoising_start {start_fraction} to denoising_end "
                             f"{end_fraction} leaves none of the {steps} steps to run",
                             hint="Widen the range or raise steps.")
    if start_fraction > 0:
        from_image = False
        latents = latent.samples.to(device=device, dtype=dtype)
        if latents.shape[0] < batch:
            latents = latents.repeat(batch // latents.shape[0], 1, 1, 1)
    if from_image:
        init = min(int(steps * denoise), steps)
        t_start = max(steps - init, 0)
        timesteps = timesteps[t_start * scheduler.order:]
        if hasattr(scheduler, "set_begin_index"):
            scheduler.set_begin_index(t_start * scheduler.order)
        if steps - t_start < 1:
            raise NodeInputError("denoise", f"denoise {denoise} with {steps} steps leaves no step "
                                 "to run", hint="Raise denoise or steps.")
    note = getattr(ctx, "note", None)
    if note is not None:
        note(settings_note(scheduler, sampler, schedule, steps, timesteps, cfg, do_cfg, guidance_t,
                           guidance_rescale, denoise if from_image else 1.0, stage))
    latent_timestep = timesteps[:1].repeat(batch)
    shape = (batch, unet.config.in_channels if not model.is_inpaint else (unet.config.in_channels - 1) // 2,
             height // scale, width // scale)

    mask: Any = None
    masked_latents: Any = None
    image_latents: Any = None
    noise: Any = None
    if latent.mask is not None and start_fraction == 0:
        latents, noise, image_latents, mask, masked_latents = _prepare_inpaint(
            latent, model, scheduler, draw, shape, latent_timestep, denoise == 1.0, do_cfg,
            device, dtype)
    elif from_image:
        if latent.encoded is not None:
            with torch.no_grad():
                init_latents = _sample_latents(latent, draw, device, dtype)
        else:
            init_latents = latent.samples.to(device=device, dtype=dtype)
        if init_latents.shape[0] < batch:
            init_latents = init_latents.repeat(batch // init_latents.shape[0], 1, 1, 1)
        noise = draw(init_latents.shape, device, dtype)
        latents = scheduler.add_noise(init_latents, noise, latent_timestep)
    elif start_fraction == 0:
        latents = draw(shape, device, dtype)
        latents = latents * scheduler.init_noise_sigma

    hints = [(h, _hint_tensor(h.image, width, height, batch, do_cfg, h.controlnet.model.dtype, device))
             for h in positive.hints if h.controlnet.kind != ADAPTER]
    adapters = prepare_adapters(positive.hints, width, height, batch, do_cfg, device)
    extra = _step_kwargs(scheduler, generator)
    total = len(timesteps)
    with torch.no_grad():
        for i, t in enumerate(timesteps):
            # Outside the guidance interval only the positive half of each batch is run.
            guided = do_cfg and guidance_t[0] <= float(t) <= guidance_t[1]
            half = _positive_half if do_cfg and not guided else _whole
            step_embeds, step_added = half(embeds), half(added_cond)
            model_input = torch.cat([latents] * 2) if guided else latents
            model_input = scheduler.scale_model_input(model_input, t)
            down = mid = None
            for hint, image in hints:
                keep = 1.0 - float(i / total < hint.start or (i + 1) / total > hint.end)
                d, m = hint.controlnet.model(
                    model_input, t, encoder_hidden_states=step_embeds, controlnet_cond=half(image),
                    conditioning_scale=hint.strength * keep, guess_mode=False,
                    added_cond_kwargs=step_added, return_dict=False)
                if down is None:
                    down, mid = list(d), m
                else:
                    down = [a + b for a, b in zip(down, d, strict=True)]
                    mid = mid + m
            if model.is_inpaint:
                model_input = torch.cat([model_input, half(mask), half(masked_latents)], dim=1)
            kwargs: dict[str, Any] = {}
            if down is not None:
                kwargs = {"down_block_additional_residuals": down, "mid_block_additional_residual": mid}
            intrablock = adapter_residuals(adapters, i, total)  # T2I-Adapters' features
            if intrablock is not None:
                kwargs["down_intrablock_additional_residuals"] = [half(f) for f in intrablock]
            noise_pred = unet(model_input, t, encoder_hidden_states=step_embeds,
                              timestep_cond=timestep_cond, added_cond_kwargs=step_added,
                              return_dict=False, **kwargs)[0]
            if guided:
                uncond, text = noise_pred.chunk(2)
                noise_pred = uncond + cfg * (text - uncond)
                if guidance_rescale > 0:
                    noise_pred = rescale_noise_cfg(noise_pred, text, guidance_rescale)
            latents = scheduler.step(noise_pred, t, latents, **extra, return_dict=False)[0]
            if mask is not None and not model.is_inpaint:
                init_mask = mask.chunk(2)[0] if do_cfg else mask
                proper = image_latents
                if i < total - 1:
                    proper = scheduler.add_noise(proper, noise, torch.tensor([timesteps[i + 1]]))
                latents = (1 - init_mask) * proper + init_mask * latents
            ctx.progress(i + 1, total)
            if (i + 1) % PREVIEW_EVERY == 0 or i + 1 == total:
                ctx.preview(latent_preview(latents, model.family))
    return latents


def time_id_count(unet: Any, pooled: Any) -> int:
    """How many size (and score) numbers an SDXL UNet takes: 6, or 5 for the refiner."""
    width = int(unet.config.projection_class_embeddings_input_dim) - int(pooled.shape[-1])
    return width // int(unet.config.addition_time_embed_dim)


def _whole(value: Any) -> Any:
    return value


def _positive_half(value: Any) -> Any:
    """The positive half of a [negative, positive] batch (tensors, or a dict of them)."""
    if value is None:
        return None
    if isinstance(value, dict):
        return {k: v.chunk(2)[1] for k, v in value.items()}
    return value.chunk(2)[1]


class _NoiseDraws:
    """The sampler's random numbers, drawn from its one generator in the pipelines' order. For
    latents taken from a batch (LatentFromBatch), each draw is made for the whole batch they came
    from and their rows are kept, so each gets the numbers it had there."""

    def __init__(self, generator: Any, latent: Latent) -> None:
        from nodeflow.nodes.diffusion.batches import picked_rows

        self.generator = generator
        self.picked = picked_rows(latent)

    def __call__(self, shape: Any, device: Any, dtype: Any) -> Any:
        from diffusers.utils.torch_utils import randn_tensor

        shape = tuple(shape)
        if self.picked is None or shape[0] != len(self.picked[0]):
            return randn_tensor(shape, generator=self.generator, device=device, dtype=dtype)
        indices, rows = self.picked
        whole = randn_tensor((rows, *shape[1:]), generator=self.generator, device=device, dtype=dtype)
        return whole[indices]

    def sample(self, dist: Any) -> Any:
        """A draw from the encoder's (diagonal Gaussian) distribution, as ``dist.sample`` draws."""
        if self.picked is None:
            return dist.sample(generator=self.generator)
        return dist.mean + dist.std * self(dist.mean.shape, dist.mean.device, dist.mean.dtype)


def _sample_latents(latent: Latent, draw: _NoiseDraws, device: Any, dtype: Any) -> Any:
    """Draw the encoded image's latents from the encoder's distribution with the sampler's generator."""
    from nodeflow.nodes.diffusion.latent import to_model_space

    assert latent.encoded is not None
    sample = draw.sample(latent.encoded.dist)
    return to_model_space(latent.encoded.vae.vae, sample).to(device=device, dtype=dtype)


def _prepare_inpaint(latent: Latent, model: DiffusionModel, scheduler: Any, draw: _NoiseDraws,
                     shape: tuple[int, ...], latent_timestep: Any, full: bool, do_cfg: bool,
                     device: Any, dtype: Any) -> tuple[Any, Any, Any, Any, Any]:
    """Starting latents, noise, image latents, latent mask and masked-image latents, drawn in the
    inpainting pipeline's order."""
    import torch

    from nodeflow.nodes.diffusion.latent import encode_pixels

    assert latent.encoded is not None
    batch = shape[0]
    keep_image = not model.is_inpaint
    image_latents = None
    with torch.no_grad():
        if keep_image or not full:
            image_latents = _sample_latents(latent, draw, device, dtype)
            image_latents = image_latents.repeat(batch // image_latents.shape[0], 1, 1, 1)
        noise = draw(shape, device, dtype)
        if full:
            latents = noise * scheduler.init_noise_sigma
        else:
            latents = scheduler.add_noise(image_latents, noise, latent_timestep)

        condition = torch.from_numpy(latent.mask)[:, None].clone()
        condition[condition < 0.5] = 0
        condition[condition >= 0.5] = 1
        pixels = latent.encoded.pixels
        masked = pixels * (condition < 0.5)
        mask = torch.nn.functional.interpolate(condition, size=(shape[2], shape[3]))
        mask = mask.to(device=device, dtype=dtype)
        if model.is_inpaint:
            dist = encode_pixels(latent.encoded.vae, masked, latent.encoded.tiled)
            from nodeflow.nodes.diffusion.latent import to_model_space

            masked_latents = to_model_space(latent.encoded.vae.vae, draw.sample(dist))
            masked_latents = masked_latents.to(device=device, dtype=dtype)
        else:
            # Unused by a 4-channel UNet, but the pipeline draws these numbers: keep in step.
            draw((masked.shape[0], shape[1], shape[2], shape[3]), device, dtype)
            masked_latents = torch.zeros(0)
        if mask.shape[0] < batch:
            mask = mask.repeat(batch // mask.shape[0], 1, 1, 1)
        if model.is_inpaint and masked_latents.shape[0] < batch:
            masked_latents = masked_latents.repeat(batch // masked_latents.shape[0], 1, 1, 1)
        if do_cfg:
            mask = torch.cat([mask] * 2)
            if model.is_inpaint:
                masked_latents = torch.cat([masked_latents] * 2)
    return latents, noise, image_latents, mask, masked_latents
