"""Noise levels (sigmas) with ComfyUI's semantics: the model's discrete schedule and the
schedulers that pick ``steps`` noise levels from it.

A discrete diffusion model trained on ``N`` timesteps has one noise level per timestep,
σ_t = √((1 − ᾱ_t) / ᾱ_t), where ᾱ_t is the cumulative product of (1 − β). The table is
built in float64 from the checkpoint's scheduler config (β schedule, zero-terminal-SNR
rescaling, prediction type) and kept in float32, as ComfyUI keeps it, so the sigmas
here are ComfyUI's to the last bit for the same config. The samplers in ``solvers``
walk a decreasing list of sigmas ending at 0.

Schedulers (``SCHEDULERS``): ``normal`` (timesteps evenly spaced between the largest
and smallest noise level, log-σ interpolated), ``karras`` (Karras et al. 2022, ρ = 7),
``exponential`` (evenly spaced in log σ), ``sgm_uniform`` (``normal`` without the last
timestep), ``simple`` (every N/steps-th entry of the table), ``ddim_uniform`` (every
⌊N/steps⌋-th timestep from 1), ``beta`` (timesteps at the quantiles of a Beta(0.6, 0.6)
distribution), ``kl_optimal`` and ``linear_quadratic``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

ZSNR_LAST_ALPHA_BAR = 4.8973451890853435e-08
"""ᾱ of the last timestep after zero-terminal-SNR rescaling: not 0, so σ_max stays finite
(about 4519); the value ComfyUI uses."""

DISCARD_PENULTIMATE = frozenset({"dpm_2", "dpm_2_ancestral", "uni_pc", "uni_pc_bh2"})
"""Samplers for which one more step is planned and the next-to-last sigma dropped: their
last jump to 0 is unstable when it starts from a very small noise level."""


@dataclass(frozen=True, eq=False)
class ModelSampling:
    """The noise levels of a discrete model and how its input and output relate to them.

    ``sigmas`` and ``log_sigmas`` are float32 tensors of the ``N`` training timesteps,
    increasing. ``prediction`` is ``eps`` (the model predicts the noise) or ``v``.
    """

    sigmas: Any
    log_sigmas: Any
    prediction: str = "eps"

    @property
    def sigma_min(self) -> float:
        return float(self.sigmas[0])

    @property
    def sigma_max(self) -> float:
        return float(self.sigmas[-1])

    def timestep(self, sigma: Any) -> Any:
        """The training timestep whose noise level is nearest to σ (in log σ), as a float."""
        import torch

        sigma = torch.as_tensor(sigma, dtype=torch.float32)
        dists = sigma.log().reshape(1, -1) - self.log_sigmas.reshape(-1, 1)
        return dists.abs().argmin(dim=0).reshape(sigma.shape).float()

    def sigma(self, timestep: Any) -> Any:
        """The noise level at a (fractional) timestep, interpolated in log σ."""
        import torch

        t = torch.as_tensor(timestep, dtype=torch.float32).clamp(0, len(self.sigmas) - 1)
        low, high, w = t.floor().long(), t.ceil().long(), t.frac()
        return ((1 - w) * self.log_sigmas[low] + w * self.log_sigmas[high]).exp()

    def percent_to_sigma(self, percent: float) -> float:
        """The noise level a fraction of the way through sampling (0: the start, 1: the end)."""
        if percent <= 0.0:
            return 999999999.9
        if percent >= 1.0:
            return 0.0
        return float(self.sigma((1.0 - percent) * 999.0))

    def noise_scaling(self, sigma: float, noise: Any, latent: Any, max_denoise: bool) -> Any:
        """Starting point of sampling at σ: the latent plus noise of that level; from the
        largest level, noise of unit variance in the model's input scale, √(1 + σ²)."""
        scale = math.sqrt(1.0 + sigma * sigma) if max_denoise else sigma
        return latent + noise * scale

    def calculate_input(self, sigma: Any, x: Any) -> Any:
        """What the network sees at σ: x scaled to unit variance, x / √(σ² + 1)."""
        return x / (sigma * sigma + 1.0) ** 0.5

    def calculate_denoised(self, sigma: Any, output: Any, x: Any) -> Any:
        """The predicted clean latent from the network's output at σ."""
        if self.prediction == "v":
            return x / (sigma * sigma + 1.0) - output * sigma / (sigma * sigma + 1.0) ** 0.5
        return x - output * sigma


def model_sampling(config: Mapping[str, Any]) -> ModelSampling:
    """The noise levels of a checkpoint from its diffusers scheduler config."""
    import torch

    n = int(config.get("num_train_timesteps", 1000))
    start = float(config.get("beta_start", 0.00085))
    end = float(config.get("beta_end", 0.012))
    kind = str(config.get("beta_schedule", "scaled_linear"))
    trained = config.get("trained_betas")
    if trained is not None:
        betas = torch.tensor(list(trained), dtype=torch.float64)
    elif kind == "scaled_linear":
        betas = torch.linspace(start ** 0.5, end ** 0.5, n, dtype=torch.float64) ** 2
    elif kind == "linear":
        betas = torch.linspace(start, end, n, dtype=torch.float64)
    elif kind == "squaredcos_cap_v2":
        steps = torch.arange(n + 1, dtype=torch.float64) / n
        alpha_bar = torch.cos((steps + 0.008) / 1.008 * math.pi / 2) ** 2
        betas = (1 - alpha_bar[1:] / alpha_bar[:-1]).clamp(max=0.999)
    else:
        raise ValueError(f"unsupported beta schedule {kind!r}")
    alphas_cumprod = torch.cumprod(1.0 - betas, dim=0)
    sigmas = ((1 - alphas_cumprod) / alphas_cumprod) ** 0.5
    if config.get("rescale_betas_zero_snr"):
        sigmas = _zero_terminal_snr(sigmas)
    prediction = "v" if config.get("prediction_type") == "v_prediction" else "eps"
    return ModelSampling(sigmas.float(), sigmas.log().float(), prediction)


def _zero_terminal_snr(sigmas: Any) -> Any:
    """Rescale √ᾱ linearly so the last timestep is (almost) pure noise (Lin et al. 2023)."""
    root = (1 / (sigmas * sigmas + 1)).sqrt()
    first, last = root[0].clone(), root[-1].clone()
    root = (root - last) * first / (first - last)
    alpha_bar = root * root
    alpha_bar[-1] = ZSNR_LAST_ALPHA_BAR
    return ((1 - alpha_bar) / alpha_bar) ** 0.5


def _append_zero(sigmas: Any) -> Any:
    import torch

    return torch.cat([sigmas, sigmas.new_zeros(1)])


def normal(ms: ModelSampling, steps: int, sgm: bool = False) -> Any:
    import torch

    start, end = float(ms.timestep(ms.sigma_max)), float(ms.timestep(ms.sigma_min))
    append_zero = True
    if sgm:
        timesteps = torch.linspace(start, end, steps + 1)[:-1]
    else:
        if math.isclose(float(ms.sigma(end)), 0.0, abs_tol=1e-5):
            steps += 1  # the table already ends at 0
            append_zero = False
        timesteps = torch.linspace(start, end, steps)
    sigs = [float(ms.sigma(t)) for t in timesteps]
    if append_zero:
        sigs.append(0.0)
    return torch.tensor(sigs, dtype=torch.float32)


def sgm_uniform(ms: ModelSampling, steps: int) -> Any:
    return normal(ms, steps, sgm=True)


def karras(ms: ModelSampling, steps: int, rho: float = 7.0) -> Any:
    import torch

    ramp = torch.linspace(0, 1, steps)
    lo, hi = ms.sigma_min ** (1 / rho), ms.sigma_max ** (1 / rho)
    return _append_zero((hi + ramp * (lo - hi)) ** rho)


def exponential(ms: ModelSampling, steps: int) -> Any:
    import torch

    return _append_zero(torch.linspace(math.log(ms.sigma_max), math.log(ms.sigma_min), steps).exp())


def simple(ms: ModelSampling, steps: int) -> Any:
    import torch

    stride = len(ms.sigmas) / steps
    sigs = [float(ms.sigmas[-(1 + int(i * stride))]) for i in range(steps)]
    return torch.tensor([*sigs, 0.0], dtype=torch.float32)


def ddim_uniform(ms: ModelSampling, steps: int) -> Any:
    import torch

    stride = max(len(ms.sigmas) // steps, 1)
    sigs = [float(ms.sigmas[i]) for i in range(1, len(ms.sigmas), stride)]
    return torch.tensor([*sigs[::-1], 0.0], dtype=torch.float32)


def beta(ms: ModelSampling, steps: int, alpha: float = 0.6, beta_: float = 0.6) -> Any:
    import numpy as np
    import scipy.stats
    import torch

    last = len(ms.sigmas) - 1
    quantiles = 1 - np.linspace(0, 1, steps, endpoint=False)
    timesteps = np.rint(scipy.stats.beta.ppf(quantiles, alpha, beta_) * last)
    sigs: list[float] = []
    previous = -1.0
    for t in timesteps:
        if t != previous:
            sigs.append(float(ms.sigmas[int(t)]))
        previous = t
    return torch.tensor([*sigs, 0.0], dtype=torch.float32)


def kl_optimal(ms: ModelSampling, steps: int) -> Any:
    import torch

    frac = torch.arange(steps, dtype=torch.float32) / max(steps - 1, 1)
    sigmas = torch.zeros(steps + 1)
    sigmas[:-1] = (frac * math.atan(ms.sigma_min) + (1 - frac) * math.atan(ms.sigma_max)).tan()
    return sigmas


def linear_quadratic(ms: ModelSampling, steps: int, threshold: float = 0.025) -> Any:
    import torch

    if steps == 1:
        schedule = [1.0, 0.0]
    else:
        linear_steps = steps // 2
        linear = [i * threshold / linear_steps for i in range(linear_steps)]
        diff = linear_steps - threshold * steps
        quadratic_steps = steps - linear_steps
        quad_coef = diff / (linear_steps * quadratic_steps ** 2)
        lin_coef = threshold / linear_steps - 2 * diff / (quadratic_steps ** 2)
        const = quad_coef * linear_steps ** 2
        quadratic = [quad_coef * i ** 2 + lin_coef * i + const for i in range(linear_steps, steps)]
        schedule = [1.0 - x for x in [*linear, *quadratic, 1.0]]
    return torch.tensor(schedule, dtype=torch.float32) * ms.sigma_max


SCHEDULERS: dict[str, Callable[[ModelSampling, int], Any]] = {
    "normal": normal,
    "karras": karras,
    "exponential": exponential,
    "sgm_uniform": sgm_uniform,
    "simple": simple,
    "ddim_uniform": ddim_uniform,
    "beta": beta,
    "linear_quadratic": linear_quadratic,
    "kl_optimal": kl_optimal,
}
"""ComfyUI's scheduler names, in its order, and the functions that compute them."""


def calculate_sigmas(ms: ModelSampling, scheduler: str, steps: int, sampler: str = "") -> Any:
    """``steps`` + 1 decreasing sigmas ending at 0 for a scheduler and sampler."""
    import torch

    discard = sampler in DISCARD_PENULTIMATE
    sigmas = SCHEDULERS[scheduler](ms, steps + 1 if discard else steps)
    if discard:
        sigmas = torch.cat([sigmas[:-2], sigmas[-1:]])
    return sigmas


def sampling_sigmas(ms: ModelSampling, scheduler: str, sampler: str, steps: int,
                    denoise: float = 1.0) -> Any:
    """ComfyUI's KSampler sigmas: with denoise below 1, the last ``steps`` + 1 sigmas of a
    schedule of ⌊steps / denoise⌋ steps, so all ``steps`` steps run at the low noise levels."""
    import torch

    if denoise > 0.9999:
        return calculate_sigmas(ms, scheduler, steps, sampler)
    if denoise <= 0.0:
        return torch.zeros(0)
    return calculate_sigmas(ms, scheduler, int(steps / denoise), sampler)[-(steps + 1):]


def step_range(sigmas: Any, start_step: int | None, last_step: int | None,
               force_full_denoise: bool) -> Any:
    """The sigmas for steps [start_step, last_step) of a schedule, as KSamplerAdvanced takes
    them; ``force_full_denoise`` makes a cut-short range still end at σ = 0. An empty result
    (a start at or past the end) means: return the latent unchanged."""
    if last_step is not None and last_step < len(sigmas) - 1:
        sigmas = sigmas[:last_step + 1].clone()
        if force_full_denoise:
            sigmas[-1] = 0
    if start_step is not None:
        if start_step < len(sigmas) - 1:
            sigmas = sigmas[start_step:]
        else:
            return sigmas[:0]
    return sigmas
