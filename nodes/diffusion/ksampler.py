"""KSampler and KSamplerAdvanced: sampling with ComfyUI's semantics.

``diffusion.Sample`` reproduces the diffusers pipelines; these two nodes reproduce
ComfyUI's KSampler nodes, so a ComfyUI workflow gives the picture its user knows:

- **Noise**: one CPU generator seeded with ``seed`` draws the noise of the whole batch
  at once (``torch.manual_seed(seed)``, then one ``randn``), whatever the device.
- **Start**: from the largest noise level the latent starts at noise × √(1 + σ_max²)
  (unit variance in the model's input scale); from a lower level (img2img, a later step
  range), at latent + noise × σ.
- **denoise** below 1 runs all ``steps`` steps: the last ``steps`` of a schedule of
  ⌊steps / denoise⌋ steps (see ``sigmas.sampling_sigmas``).
- **Step ranges** (KSamplerAdvanced): ``start_at_step`` / ``end_at_step`` cut the
  schedule; ``add_noise`` off starts from the latent as it is; with
  ``return_with_leftover_noise`` the range ends at its own noise level, so a second
  sampler can carry on from there.
- **Guidance** is computed on the predicted clean latents; regional entries (areas,
  masks, combined prompts) are each run on their own crop and averaged, weighted by
  strength and feathered at area edges, as ComfyUI does.

Beyond ComfyUI: ``guidance_min_t`` / ``guidance_max_t`` apply guidance only in an
interval of timesteps, and ``guidance_rescale`` rescales the guided prediction (Lin
et al. 2023, in v-space as ComfyUI's RescaleCFG node does).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any

from nodeflow.api import (
    BOOL,
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
from nodeflow.nodes.diffusion.sample import (
    GUIDANCE_INPUTS,
    PREVIEW_EVERY,
    guidance_problems,
    latent_preview,
    sampler_estimate,
)
from nodeflow.nodes.diffusion.sigmas import (
    SCHEDULERS,
    ModelSampling,
    model_sampling,
    sampling_sigmas,
    step_range,
)
from nodeflow.nodes.diffusion.solvers import BROWNIAN, SOLVERS, NoiseSource
from nodeflow.nodes.diffusion.types import (
    CONDITIONING,
    FAMILY_NAMES,
    LATENT,
    MODEL,
    Conditioning,
    ControlHint,
    DiffusionModel,
    Latent,
)

SAMPLER_NAMES = tuple(SOLVERS)
SCHEDULER_NAMES = tuple(SCHEDULERS)
FEATHER = 8
"""Latent cells over which an area's weight ramps up from its edges inside the picture."""


def prepare_noise(latent_image: Any, seed: int, batch_index: Any = None) -> Any:
    """ComfyUI's starting noise: drawn on the CPU from one generator seeded with ``seed``,
    for the whole batch at once (or, with batch indices, item by item in index order)."""
    import torch

    generator = torch.Generator("cpu").manual_seed(int(seed))
    shape = tuple(latent_image.shape)
    if batch_index is None:
        return torch.randn(shape, dtype=torch.float32, generator=generator)
    wanted = sorted(set(int(i) for i in batch_index))
    drawn = {}
    for i in range(wanted[-1] + 1):
        noise = torch.randn((1, *shape[1:]), dtype=torch.float32, generator=generator)
        if i in wanted:
            drawn[i] = noise
    return torch.cat([drawn[int(i)] for i in batch_index])


@dataclass(eq=False)
class _Entry:
    """One conditioning entry resolved to latent cells for this sampling."""

    cond: Conditioning
    area: tuple[int, int, int, int] | None  # (height, width, y, x) in latent cells
    mask: Any  # (batch or 1, h, w) at the latent's size, or None
    sigma_range: tuple[float, float]  # active while sigma_range[1] <= σ <= sigma_range[0]
    hints: tuple[ControlHint, ...]


class GuidedDenoiser:
    """x̂₀(x, σ): the model's prediction of the clean latent with classifier-free guidance,
    regional entries and ControlNets, as ComfyUI's sampling function computes it."""

    def __init__(self, model: DiffusionModel, ms: ModelSampling, positive: Conditioning,
                 negative: Conditioning, cfg: float, shape: tuple[int, ...], device: Any,
                 guidance_t: tuple[float, float] = (0.0, 1000.0), guidance_rescale: float = 0.0,
                 inpaint: tuple[Any, Any, Any] | None = None) -> None:
        self.model, self.ms, self.cfg = model, ms, float(cfg)
        self.shape, self.device = shape, device
        self.guidance_t, self.rescale = guidance_t, float(guidance_rescale)
        self.inpaint = inpaint  # (latent image, noise, mask at the latent's size)
        self.dtype = model.unet.dtype
        self.height_px, self.width_px = shape[2] * model.latent_scale, shape[3] * model.latent_scale
        pos = [self._resolve(e, "positive") for e in positive.entries()]
        neg = [self._resolve(e, "negative") for e in negative.entries()]
        _mirror_areas(pos, neg)
        _share_controlnets(pos, neg)
        self.positive, self.negative = pos, neg
        self.concat = None
        if model.is_inpaint and inpaint is not None:
            latent_image, _noise, mask = inpaint
            self.concat = (mask[:, :1].round(), latent_image)

    def _resolve(self, cond: Conditioning, socket: str) -> _Entry:
        import torch

        scale = self.model.latent_scale
        h, w = self.shape[2], self.shape[3]
        area = None
        if cond.area is not None:
            x, y, width, height = cond.area
            if x >= self.width_px or y >= self.height_px:
                raise NodeInputError(socket, f"the area at ({x}, {y}) of size {width}×{height} lies "
                                     f"outside the {self.width_px}×{self.height_px} picture",
                                     hint="Move the area inside the picture (ConditioningSetArea).")
            area = (height // scale, width // scale, y // scale, x // scale)
        elif cond.area_fraction is not None:
            fx, fy, fw, fh = cond.area_fraction
            area = (max(1, round(fh * h)), max(1, round(fw * w)), round(fy * h), round(fx * w))
            if area[2] >= h or area[3] >= w:
                raise NodeInputError(socket, f"the area at ({fx}, {fy}) of the picture lies outside it",
                                     hint="Use x and y below 1 (ConditioningSetAreaPercentage).")
        mask = None
        if cond.mask is not None:
            mask = torch.as_tensor(cond.mask, dtype=torch.float32)
            if mask.ndim == 2:
                mask = mask[None]
            if tuple(mask.shape[-2:]) != (h, w):
                mask = torch.nn.functional.interpolate(mask[:, None], size=(h, w), mode="bilinear",
                                                       align_corners=False)[:, 0]
            mask = mask.to(self.device)
            if cond.mask_bounds:
                bounds = mask.abs().amax(dim=0) != 0
                if not bool(bounds.any()):
                    area = (8, 8, 0, 0)
                else:
                    ys, xs = torch.where(bounds)
                    top, left = int(ys.min()), int(xs.min())
                    area = (max(8, int(ys.max()) - top + 1), max(8, int(xs.max()) - left + 1), top, left)
        start, end = cond.percent_range
        sigma_range = (self.ms.percent_to_sigma(start), self.ms.percent_to_sigma(end))
        return _Entry(cond, area, mask, sigma_range, cond.hints)

    def _area_and_mult(self, entry: _Entry, x: Any) -> tuple[tuple[int, int, int, int], Any]:
        import torch

        full_h, full_w = x.shape[2], x.shape[3]
        if entry.area is None:
            area = (full_h, full_w, 0, 0)
        else:
            h, w, y, x0 = entry.area
            area = (min(h, full_h - y), min(w, full_w - x0), y, x0)
        h, w, y, x0 = area
        crop = x[:, :, y:y + h, x0:x0 + w]
        if entry.mask is not None:
            m = entry.mask[:, y:y + h, x0:x0 + w] * entry.cond.mask_strength
            m = m[:, None].repeat(crop.shape[0] // m.shape[0], crop.shape[1], 1, 1)
        else:
            m = torch.ones_like(crop)
        mult = m * entry.cond.strength
        if entry.mask is None and entry.area is not None:
            for dim, (size, offset, full) in enumerate(((h, y, full_h), (w, x0, full_w))):
                ramp = min(FEATHER, size // 4)
                for t in range(ramp):
                    if offset != 0:
                        mult.narrow(dim + 2, t, 1).mul_((t + 1) / ramp)
                    if offset + size < full:
                        mult.narrow(dim + 2, size - 1 - t, 1).mul_((t + 1) / ramp)
        return area, mult

    def _added_cond(self, cond: Conditioning, batch: int, negative: bool) -> dict[str, Any] | None:
        """SDXL's pooled embedding and size conditioning (the refiner's: size, crop and aesthetic
        score), from the entry's fields, defaulting to the picture's size as ComfyUI does."""
        import torch

        if self.model.family != "sdxl":
            return None
        from nodeflow.nodes.diffusion.sample import time_id_count
        from nodeflow.nodes.diffusion.sdxl_prompts import time_ids as sdxl_time_ids

        refiner = time_id_count(self.model.unet, cond.pooled) == 5
        ids = sdxl_time_ids(cond, self.width_px, self.height_px, refiner, negative)
        time_ids = torch.tensor([ids], dtype=self.dtype, device=self.device).repeat(batch, 1)
        pooled = cond.pooled.to(device=self.device, dtype=self.dtype).repeat(batch, 1)
        return {"text_embeds": pooled, "time_ids": time_ids}

    def _run(self, items: list[tuple[_Entry, Any, tuple[int, int, int, int], bool]],
             sigma: float) -> Any:
        """One network call on crops of the same size: returns x̂₀ per item."""
        import torch

        crops = [crop for _, crop, _, _ in items]
        x = torch.cat(crops)
        batch = crops[0].shape[0]
        # Prompts of different lengths are repeated to a common length (attention is unchanged).
        prompts = [e.cond.embeds for e, _, _, _ in items]
        tokens = math.lcm(*(int(t.shape[1]) for t in prompts))
        embeds = torch.cat([t.repeat(1, tokens // t.shape[1], 1).to(device=self.device, dtype=self.dtype)
                            .repeat(batch, 1, 1) for t in prompts])
        added = [self._added_cond(e.cond, batch, neg) for e, _, _, neg in items]
        added_cond = None
        if added[0] is not None:
            added_cond = {k: torch.cat([a[k] for a in added if a is not None]) for k in added[0]}
        t = self.ms.timestep(sigma).to(self.device)
        timesteps = t.repeat(x.shape[0])
        xc = self.ms.calculate_input(sigma, x)
        if self.concat is not None:
            h, w, y, x0 = items[0][2]  # grouped items share their area
            mask, image = self.concat
            extra = torch.cat([mask[:, :, y:y + h, x0:x0 + w], image[:, :, y:y + h, x0:x0 + w]], dim=1)
            xc = torch.cat([xc, extra.repeat(len(items), 1, 1, 1)], dim=1)
        kwargs: dict[str, Any] = {}
        hints = items[0][0].hints
        if hints:
            kwargs = self._control(hints, self.ms.calculate_input(sigma, x), timesteps, embeds,
                                   added_cond, sigma)
        out = self.model.unet(xc.to(self.dtype), timesteps.to(self.dtype), encoder_hidden_states=embeds,
                              added_cond_kwargs=added_cond, return_dict=False, **kwargs)[0]
        denoised = self.ms.calculate_denoised(sigma, out.float(), x)
        return denoised.chunk(len(items))

    def _control(self, hints: tuple[ControlHint, ...], xc: Any, timesteps: Any, embeds: Any,
                 added_cond: Any, sigma: float) -> dict[str, Any]:
        """Residuals of the ControlNets and features of the T2I-Adapters acting at σ, each with its
        control image resized to the crop the model sees."""
        from nodeflow.nodes.diffusion.adapters import ADAPTER
        from nodeflow.nodes.diffusion.sample import _hint_tensor

        down = mid = features = None
        for hint in hints:
            start, end = self.ms.percent_to_sigma(hint.start), self.ms.percent_to_sigma(hint.end)
            if sigma > start or sigma < end:
                continue
            net = hint.controlnet.model
            image = _hint_tensor(hint.image, xc.shape[3] * self.model.latent_scale,
                                 xc.shape[2] * self.model.latent_scale, xc.shape[0], False, net.dtype,
                                 self.device)
            if hint.controlnet.kind == ADAPTER:
                out = [f * hint.strength for f in net(image)]
                features = out if features is None else [a + b for a, b in zip(features, out, strict=True)]
                continue
            d, m = net(xc.to(net.dtype), timesteps.to(net.dtype), encoder_hidden_states=embeds.to(net.dtype),
                       controlnet_cond=image, conditioning_scale=hint.strength, guess_mode=False,
                       added_cond_kwargs=added_cond, return_dict=False)
            if down is None:
                down, mid = list(d), m
            else:
                down = [a + b for a, b in zip(down, d, strict=True)]
                mid = mid + m
        kwargs: dict[str, Any] = {}
        if down is not None:
            kwargs = {"down_block_additional_residuals": down, "mid_block_additional_residual": mid}
        if features is not None:
            kwargs["down_intrablock_additional_residuals"] = [f.to(self.dtype) for f in features]
        return kwargs

    def guided(self, t: float) -> bool:
        """Whether guidance applies at timestep t."""
        lo, hi = self.guidance_t
        return not math.isclose(self.cfg, 1.0) and lo <= t <= hi

    def predictions(self, x: Any, sigma: float) -> tuple[Any, Any]:
        """(positive, negative) x̂₀ averaged over their entries; negative None when unguided."""
        import torch

        guided = self.guided(float(self.ms.timestep(sigma)))
        todo: list[tuple[_Entry, Any, Any, Any, bool]] = []
        for entries, negative in ((self.positive, False), (self.negative, True)):
            if negative and not guided:
                continue
            for entry in entries:
                hi, lo = entry.sigma_range
                if sigma > hi or sigma < lo:
                    continue
                area, mult = self._area_and_mult(entry, x)
                h, w, y, x0 = area
                todo.append((entry, x[:, :, y:y + h, x0:x0 + w], mult, area, negative))
        sums = {False: torch.zeros_like(x), True: torch.zeros_like(x)}
        counts = {False: torch.full_like(x, 1e-37), True: torch.full_like(x, 1e-37)}
        while todo:
            first = todo[0]
            group = [item for item in todo
                     if item[1].shape == first[1].shape and item[0].hints is first[0].hints
                     and (self.concat is None or item[3] == first[3])]
            todo = [item for item in todo if not any(item is g for g in group)]
            outs = self._run([(e, crop, area, neg) for e, crop, _m, area, neg in group], sigma)
            for (_e, _crop, mult, area, neg), out in zip(group, outs, strict=True):
                h, w, y, x0 = area
                sums[neg][:, :, y:y + h, x0:x0 + w] += out * mult
                counts[neg][:, :, y:y + h, x0:x0 + w] += mult
        cond = sums[False] / counts[False]
        return cond, (sums[True] / counts[True] if guided else None)

    def __call__(self, x: Any, sigma: float) -> Any:
        if self.inpaint is not None:
            latent_image, noise, mask = self.inpaint
            x = x * mask + (latent_image + noise * sigma) * (1 - mask)
        cond, uncond = self.predictions(x, sigma)
        if uncond is None:
            out = cond
        else:
            out = uncond + (cond - uncond) * self.cfg
            if self.rescale > 0:
                out = rescale_guidance(x, sigma, cond, out, self.rescale)
        if self.inpaint is not None:
            out = out * mask + latent_image * (1 - mask)
        return out


def rescale_guidance(x: Any, sigma: float, cond: Any, guided: Any, amount: float) -> Any:
    """Rescale the guided prediction's standard deviation towards the positive one's, in
    v-space (v = (x/(σ²+1) − x̂₀)·√(σ²+1)/σ), mixing ``amount`` of it in."""
    scale = (sigma * sigma + 1.0) ** 0.5
    x_in = x / (sigma * sigma + 1.0)
    v_cond = (x_in - cond) * scale / sigma
    v_cfg = (x_in - guided) * scale / sigma
    dims = tuple(range(1, x.ndim))
    rescaled = v_cfg * (v_cond.std(dim=dims, keepdim=True) / v_cfg.std(dim=dims, keepdim=True))
    v_final = amount * rescaled + (1 - amount) * v_cfg
    return x_in - v_final * sigma / scale


def _mirror_areas(positive: list[_Entry], negative: list[_Entry]) -> None:
    """Give each area of one side an entry with the same area on the other side (the
    smallest entry there that covers it, moved to that area), so both sides are averaged
    over the same regions."""
    for side, other in ((positive, negative), (negative, positive)):
        for entry in list(side):
            if entry.area is None:
                continue
            h, w, y, x = entry.area
            smallest = None
            for cand in other:
                if cand.area is not None:
                    ch, cw, cy, cx = cand.area
                    if y >= cy and x >= cx and ch + cy >= h + y and cw + cx >= w + x:
                        if smallest is None or smallest.area is None or \
                                smallest.area[0] * smallest.area[1] > ch * cw:
                            smallest = cand
                elif smallest is None:
                    smallest = cand
            if smallest is None or smallest.area == entry.area:
                continue
            cond = replace(entry.cond, embeds=smallest.cond.embeds, pooled=smallest.cond.pooled,
                           others=())
            other.append(_Entry(cond, entry.area, entry.mask, entry.sigma_range, entry.hints))


def _share_controlnets(positive: list[_Entry], negative: list[_Entry]) -> None:
    """When only the positive side has ControlNets, the negative side's whole-picture entries
    get them too (ControlNets act on both halves of guidance)."""
    if any(e.hints for e in negative if e.area is None):
        return
    with_hints = [e.hints for e in positive if e.area is None and e.hints]
    plain = [e for e in negative if e.area is None]
    for i, hints in enumerate(with_hints):
        if plain:
            plain[i % len(plain)].hints = hints


def _check_inputs(model: DiffusionModel, positive: Conditioning, negative: Conditioning,
                  latent: Latent) -> None:
    for socket, cond in (("positive", positive), ("negative", negative)):
        for entry in cond.entries():
            if entry.family != model.family:
                raise NodeInputError(socket, f"this conditioning was encoded by a "
                                     f"{FAMILY_NAMES.get(entry.family)} text encoder, but the model is "
                                     f"{FAMILY_NAMES.get(model.family)}",
                                     hint="Encode the prompt with the same checkpoint's clip.")
            for hint in entry.hints:
                if hint.controlnet.family != model.family:
                    raise NodeInputError(socket, f"a ControlNet attached here is for "
                                         f"{FAMILY_NAMES.get(hint.controlnet.family)}, but the model "
                                         f"is {FAMILY_NAMES.get(model.family)}")
    if latent.width % model.latent_scale or latent.height % model.latent_scale:
        raise NodeInputError("latent_image", f"the latent's size {latent.width}×{latent.height} is not "
                             f"a multiple of {model.latent_scale}")
    if model.is_inpaint and (latent.mask is None or latent.is_empty):
        raise NodeInputError("latent_image", "this is an inpainting checkpoint (9-channel UNet): it "
                             "needs an encoded picture with a mask",
                             hint="Connect VAEEncode → SetLatentMask here.")


def _latent_mask(latent: Latent, shape: tuple[int, ...], device: Any) -> Any:
    """The latent's noise mask resized (bilinear) to the latent, one channel per latent channel."""
    import torch

    mask = torch.as_tensor(latent.mask, dtype=torch.float32)
    mask = mask.reshape(-1, 1, mask.shape[-2], mask.shape[-1])
    mask = torch.nn.functional.interpolate(mask, size=(shape[2], shape[3]), mode="bilinear")
    mask = mask.repeat(1, shape[1], 1, 1)
    if mask.shape[0] < shape[0]:
        mask = mask.repeat(math.ceil(shape[0] / mask.shape[0]), 1, 1, 1)[:shape[0]]
    return mask.to(device)


def ksample(ctx: RunContext, model: DiffusionModel, positive: Conditioning, negative: Conditioning,
            latent: Latent, seed: int, steps: int, cfg: float, sampler_name: str, scheduler: str,
            denoise: float = 1.0, add_noise: bool = True, start_step: int | None = None,
            last_step: int | None = None, force_full_denoise: bool = False,
            guidance_t: tuple[float, float] = (0.0, 1000.0), guidance_rescale: float = 0.0) -> Latent:
    """Sample as ComfyUI's ``common_ksampler`` does; returns the new latent."""
    import torch

    _check_inputs(model, positive, negative, latent)
    scale = model.latent_scale
    channels = model.in_channels if not model.is_inpaint else (model.in_channels - 1) // 2
    shape = (latent.batch, channels, latent.height // scale, latent.width // scale)
    if latent.is_empty:
        latent_image = torch.zeros(shape)
    else:
        latent_image = latent.samples.detach().float().cpu()
        shape = tuple(latent_image.shape)
    if add_noise:
        noise = prepare_noise(latent_image, seed, latent.extra.get("batch_index"))
    else:
        noise = torch.zeros(shape)
    ms = model_sampling(model.scheduler_config)
    sigmas = sampling_sigmas(ms, scheduler, sampler_name, steps, denoise)
    sigmas = step_range(sigmas, start_step, last_step, force_full_denoise)
    if len(sigmas) <= 1:  # nothing to run: the latent as it is
        return replace(latent, samples=latent_image, encoded=None)

    with ctx.models.use(model.unet, *_controlnets(positive, negative)) as device:
        latent_image = latent_image.to(device)
        mask = _latent_mask(latent, shape, device) if latent.mask is not None else None
        inpaint = None
        if mask is not None:
            inpaint_noise = noise
            if sampler_name == "ddim":  # ComfyUI's ddim draws the kept area's noise anew
                gen = torch.Generator("cpu").manual_seed(int(seed) + 1)
                inpaint_noise = torch.randn(shape, generator=gen)
            inpaint = (latent_image, inpaint_noise.to(device), mask)
        denoiser = GuidedDenoiser(model, ms, positive, negative, cfg, shape, device,
                                  guidance_t, guidance_rescale, inpaint)
        first = float(sigmas[0])
        max_denoise = math.isclose(ms.sigma_max, first, rel_tol=1e-5) or first > ms.sigma_max
        x = ms.noise_scaling(first, noise.to(device), latent_image, max_denoise)
        total = len(sigmas) - 1

        def callback(i: int, _x: Any, denoised: Any) -> None:
            ctx.progress(i + 1, total)
            if (i + 1) % PREVIEW_EVERY == 0 or i + 1 == total:
                ctx.preview(latent_preview(denoised, model.family))

        noise_source = NoiseSource(x, seed, sigmas, brownian=sampler_name in BROWNIAN)
        with torch.no_grad():
            samples = SOLVERS[sampler_name](denoiser, x, sigmas.to(device), noise_source, callback)
    return replace(latent, samples=samples, encoded=None)


def _controlnets(*conds: Conditioning) -> list[Any]:
    nets: list[Any] = []
    for cond in conds:
        for entry in cond.entries():
            for hint in entry.hints:
                if not any(n is hint.controlnet.model for n in nets):
                    nets.append(hint.controlnet.model)
    return nets


_COMMON_HEAD = (
    Input("model", MODEL, "The denoising model (from a checkpoint, optionally with LoRAs)."),
)
_COMMON_TAIL = (
    Input("cfg", FLOAT, "Classifier-free guidance scale (1: no guidance).", default=8.0, min=0.0,
          max=100.0, step=0.1),
    Input("sampler_name", STRING, "The sampler (ComfyUI's names).", default="euler",
          choices=SAMPLER_NAMES),
    Input("scheduler", STRING, "How the noise levels are spaced (ComfyUI's names).", default="normal",
          choices=SCHEDULER_NAMES),
    Input("positive", CONDITIONING, "What to make (regions, ControlNets attached)."),
    Input("negative", CONDITIONING, "What to steer away from."),
    Input("latent_image", LATENT, "Where to start: an empty latent, an encoded picture, a masked "
          "one, or a previous sampler's output."),
)


class KSampler(Node):
    """Denoise a latent as ComfyUI's KSampler does (its noise, schedules, samplers and denoise):
    the same model, seed and settings give ComfyUI's picture. ``denoise`` below 1 runs all
    ``steps`` steps at lower noise levels (image to image; from an empty latent, as in ComfyUI,
    from a latent of zeros)."""

    id = "diffusion.KSampler"
    version = "1.0.0"
    uses_accelerator = True
    category = "diffusion/sampling"
    inputs = (
        *_COMMON_HEAD,
        Input("seed", INT, "The noise seed (noise drawn on the CPU for the whole batch).", default=0,
              min=0, max=2**64 - 1, seed=True),
        Input("steps", INT, "Denoising steps.", default=20, min=1, max=10000),
        *_COMMON_TAIL,
        Input("denoise", FLOAT, "How much to change: 1 repaints everything; lower keeps more of the "
              "starting latent.", default=1.0, min=0.0, max=1.0, step=0.01),
        *GUIDANCE_INPUTS,
    )
    outputs = (Output("latent", LATENT, "The denoised latents."),)

    @classmethod
    def check(cls, values: Mapping[str, Any], settings: Settings) -> Iterable[tuple[str | None, str]]:
        yield from guidance_problems(values)

    @classmethod
    def estimate_memory(cls, values: Mapping[str, Any], upstream: Mapping[str, ValueEstimate],
                        ctx: EstimateContext) -> MemoryEstimate | None:
        """As diffusion.Sample's: the UNet, ControlNets and activations at the latent's size."""
        return sampler_estimate(values, upstream, "latent_image")

    def run(self, ctx: RunContext, model: DiffusionModel, seed: int, steps: int, cfg: float,
            sampler_name: str, scheduler: str, positive: Conditioning, negative: Conditioning,
            latent_image: Latent, denoise: float, guidance_min_t: float, guidance_max_t: float,
            guidance_rescale: float) -> Any:
        _check_choices(sampler_name, scheduler)
        _check_guidance(guidance_min_t, guidance_max_t)
        return ksample(ctx, model, positive, negative, latent_image, seed, steps, cfg, sampler_name,
                       scheduler, denoise, guidance_t=(guidance_min_t, guidance_max_t),
                       guidance_rescale=guidance_rescale)


class KSamplerAdvanced(Node):
    """ComfyUI's KSamplerAdvanced: run only steps [start_at_step, end_at_step) of a schedule of
    ``steps``. Chain two to hand a latent over mid-way (e.g. SDXL base → refiner): the first with
    ``return_with_leftover_noise``, the second with ``add_noise`` off."""

    id = "diffusion.KSamplerAdvanced"
    version = "1.0.0"
    uses_accelerator = True
    category = "diffusion/sampling"
    inputs = (
        *_COMMON_HEAD,
        Input("add_noise", BOOL, "Add the seed's noise to the starting latent (off: carry on from a "
              "latent that still has its noise).", default=True),
        Input("noise_seed", INT, "The noise seed.", default=0, min=0, max=2**64 - 1, seed=True),
        Input("steps", INT, "Steps of the whole schedule.", default=20, min=1, max=10000),
        *_COMMON_TAIL,
        Input("start_at_step", INT, "First step to run (at or past the last step: the latent passes "
              "through unchanged).", default=0, min=0, max=10000, widget="range.start"),
        Input("end_at_step", INT, "Stop before this step (past the last: run to the end).",
              default=10000, min=0, max=10000, widget="range.end"),
        Input("return_with_leftover_noise", BOOL, "Stop at the range's own noise level instead of "
              "denoising fully when the range ends early.", default=False),
        *GUIDANCE_INPUTS,
    )
    outputs = (Output("latent", LATENT, "The latents after the range."),)

    @classmethod
    def check(cls, values: Mapping[str, Any], settings: Settings) -> Iterable[tuple[str | None, str]]:
        yield from guidance_problems(values)
        start, end = values.get("start_at_step"), values.get("end_at_step")
        if isinstance(start, int) and isinstance(end, int) and start >= end:
            yield "end_at_step", (f"end_at_step ({end}) must be after start_at_step ({start}); "
                                  "no step would run")

    @classmethod
    def estimate_memory(cls, values: Mapping[str, Any], upstream: Mapping[str, ValueEstimate],
                        ctx: EstimateContext) -> MemoryEstimate | None:
        """As diffusion.Sample's: the UNet, ControlNets and activations at the latent's size."""
        return sampler_estimate(values, upstream, "latent_image")

    def run(self, ctx: RunContext, model: DiffusionModel, add_noise: bool, noise_seed: int, steps: int,
            cfg: float, sampler_name: str, scheduler: str, positive: Conditioning,
            negative: Conditioning, latent_image: Latent, start_at_step: int, end_at_step: int,
            return_with_leftover_noise: bool, guidance_min_t: float, guidance_max_t: float,
            guidance_rescale: float) -> Any:
        _check_choices(sampler_name, scheduler)
        _check_guidance(guidance_min_t, guidance_max_t)
        for socket, message in self.check({"start_at_step": start_at_step, "end_at_step": end_at_step,
                                           "steps": steps}, ctx.settings):
            raise NodeInputError(socket or "start_at_step", message)
        return ksample(ctx, model, positive, negative, latent_image, noise_seed, steps, cfg,
                       sampler_name, scheduler, 1.0, add_noise, start_at_step, end_at_step,
                       not return_with_leftover_noise, (guidance_min_t, guidance_max_t),
                       guidance_rescale)


def _check_choices(sampler_name: str, scheduler: str) -> None:
    if sampler_name not in SOLVERS:
        raise NodeInputError("sampler_name", f"unknown sampler {sampler_name!r}",
                             hint=f"Use one of: {', '.join(SOLVERS)}.")
    if scheduler not in SCHEDULERS:
        raise NodeInputError("scheduler", f"unknown scheduler {scheduler!r}",
                             hint=f"Use one of: {', '.join(SCHEDULERS)}.")


def _check_guidance(lo: float, hi: float) -> None:
    for socket, message in guidance_problems({"guidance_min_t": lo, "guidance_max_t": hi}):
        raise NodeInputError(socket or "guidance_max_t", message)
