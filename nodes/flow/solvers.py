"""ComfyUI's samplers other than Euler on SD3.x and Flux (``flow.Sample`` with semantics comfyui).

A flow model predicts the velocity v at noise level σ, where x_σ = (1 − σ)·x₀ + σ·noise; its
estimate of the clean latent is ``denoised = x − σ·v``. These samplers step along ComfyUI's
sigmas with that estimate, as ComfyUI's k-diffusion samplers do on flow models:

- ``heun``: the Euler step, corrected by the slope at its end (two model calls per step; the
  last step, to σ = 0, is a plain Euler step);
- ``dpmpp_2m``: DPM-Solver++(2M) in log σ: each step extrapolates from the last two estimates
  (the first and the last step are first order);
- ``euler_ancestral``: the rectified-flow form ComfyUI uses for these models: step down to
  σ_down = σ_next·(1 + (σ_next/σ − 1)·eta), scale back to the signal level of σ_next and add
  fresh noise so the latent is again at σ_next. The fresh noise comes from its own CPU
  generator seeded with ``seed + 1`` (ComfyUI's noise sampler on the CPU), drawn in float32 at
  the unpacked latent's shape, so a seed gives the same picture on any device.

``euler`` stays with the diffusers scheduler's step (the same update, see ``sample``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

Denoiser = Callable[[Any, Any, int], Any]
"""(latents, σ as a 0-d tensor, step index) -> the model's clean-latent estimate."""
AfterStep = Callable[[int, Any], Any]
"""(step index, latents after the step) -> latents (masking, progress, previews)."""
NoiseSource = Callable[[], Any]
"""The next standard-normal tensor of the latents' (packed) shape, device and dtype."""

ETA = 1.0
"""euler_ancestral's noise amount, ComfyUI's default."""


def heun(denoise: Denoiser, x: Any, sigmas: Any, after: AfterStep, noise: NoiseSource) -> Any:
    for i in range(len(sigmas) - 1):
        sigma, nxt = sigmas[i], sigmas[i + 1]
        slope = (x - denoise(x, sigma, i)) / sigma
        dt = nxt - sigma
        if nxt == 0:
            x = x + slope * dt
        else:
            guess = x + slope * dt
            end_slope = (guess - denoise(guess, nxt, i)) / nxt
            x = x + (slope + end_slope) / 2 * dt
        x = after(i, x)
    return x


def dpmpp_2m(denoise: Denoiser, x: Any, sigmas: Any, after: AfterStep, noise: NoiseSource) -> Any:
    previous: Any = None
    for i in range(len(sigmas) - 1):
        sigma, nxt = sigmas[i], sigmas[i + 1]
        estimate = denoise(x, sigma, i)
        lam, lam_next = -sigma.log(), -nxt.log()  # λ = −log σ; λ_next is +inf at σ = 0
        h = lam_next - lam
        ratio = (-lam_next).exp() / (-lam).exp()
        if previous is None or nxt == 0:
            x = ratio * x - (-h).expm1() * estimate
        else:
            r = (lam - (-sigmas[i - 1].log())) / h
            blended = (1 + 1 / (2 * r)) * estimate - (1 / (2 * r)) * previous
            x = ratio * x - (-h).expm1() * blended
        previous = estimate
        x = after(i, x)
    return x


def euler_ancestral(denoise: Denoiser, x: Any, sigmas: Any, after: AfterStep, noise: NoiseSource) -> Any:
    for i in range(len(sigmas) - 1):
        sigma, nxt = sigmas[i], sigmas[i + 1]
        estimate = denoise(x, sigma, i)
        if nxt == 0:
            x = estimate
        else:
            down = nxt * (1 + (nxt / sigma - 1) * ETA)
            alpha_next, alpha_down = 1 - nxt, 1 - down
            renoise = (nxt ** 2 - down ** 2 * alpha_next ** 2 / alpha_down ** 2) ** 0.5
            x = (down / sigma) * x + (1 - down / sigma) * estimate
            x = (alpha_next / alpha_down) * x + noise() * renoise
        x = after(i, x)
    return x


SOLVERS: dict[str, Callable[[Denoiser, Any, Any, AfterStep, NoiseSource], Any]] = {
    "heun": heun, "dpmpp_2m": dpmpp_2m, "euler_ancestral": euler_ancestral}
"""ComfyUI sampler names -> their step loops on a flow model's sigmas."""

ANCESTRAL_SEED_OFFSET = 1
"""The ancestral noise generator's seed is the sampler's seed plus this (as ComfyUI's on the CPU)."""
