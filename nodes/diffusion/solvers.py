"""The samplers: update rules that walk latents down a list of sigmas.

Each sampler takes ``denoise(x, σ) → x̂₀`` (the model's prediction of the clean latent,
guidance included), the starting latents, the sigmas (decreasing, usually ending at 0),
a `NoiseSource` for the stochastic ones and a per-step callback. They follow the
definitions of k-diffusion (Karras et al. 2022; Lu et al. 2022 for DPM-Solver++), with
ComfyUI's choices where it made them (ancestral noise drawn from a generator seeded by
the sampler's seed; SDE samplers driven by a Brownian tree seeded the same way; ``ddim``
is Euler on the given sigmas), so the same sigmas, model and seed give ComfyUI's latents.

Notation: d = (x − x̂₀)/σ is the derivative of the probability-flow ODE; λ = −log σ.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

Denoise = Callable[[Any, Any], Any]
Callback = Callable[[int, Any, Any], None]
"""Called after each step with (step index, x, x̂₀)."""


class NoiseSource:
    """Fresh noise for ancestral and SDE steps, reproducible from a seed on any device.

    Ancestral samplers draw from a CPU generator seeded with the seed (ComfyUI's default
    noise sampler, as it draws on a CPU); the SDE samplers sample a Brownian tree over
    [σ_min, σ_max] seeded the same way, so their noise is consistent across step sizes.
    """

    def __init__(self, x: Any, seed: int, sigmas: Any, brownian: bool = False) -> None:
        import torch

        self.shape, self.dtype, self.device = x.shape, x.dtype, x.device
        self.generator = torch.Generator("cpu").manual_seed(int(seed))
        self.tree = None
        if brownian:
            import torchsde

            positive = sigmas[sigmas > 0]
            lo, hi = float(positive.min()), float(sigmas.max())
            self.tree = torchsde.BrownianTree(torch.tensor(lo), torch.zeros(self.shape),
                                              torch.tensor(hi), entropy=int(seed))

    def __call__(self, sigma: Any, sigma_next: Any) -> Any:
        import torch

        if self.tree is None:
            noise = torch.randn(self.shape, dtype=self.dtype, generator=self.generator)
        else:
            a, b = float(sigma), float(sigma_next)
            lo, hi, sign = (a, b, 1.0) if a < b else (b, a, -1.0)
            # The tree's increment over [lo, hi] scaled to unit variance.
            noise = self.tree(torch.tensor(lo), torch.tensor(hi)) * sign / math.sqrt(abs(b - a))
        return noise.to(device=self.device, dtype=self.dtype)


def to_d(x: Any, sigma: Any, denoised: Any) -> Any:
    """The ODE derivative dx/dσ at σ."""
    return (x - denoised) / sigma


def ancestral_step(sigma: float, sigma_next: float, eta: float = 1.0) -> tuple[float, float]:
    """(σ_down, σ_up): step deterministically to σ_down, then add noise of σ_up, so the
    variance reaches σ_next² (σ_down² + σ_up² = σ_next²)."""
    if not eta:
        return sigma_next, 0.0
    up = min(sigma_next, eta * math.sqrt(max(sigma_next ** 2 * (sigma ** 2 - sigma_next ** 2), 0.0)
                                          / sigma ** 2))
    return math.sqrt(sigma_next ** 2 - up ** 2), up


def _f(s: Any) -> float:
    return float(s)


def euler(denoise: Denoise, x: Any, sigmas: Any, noise: NoiseSource, callback: Callback) -> Any:
    for i in range(len(sigmas) - 1):
        s, s_next = _f(sigmas[i]), _f(sigmas[i + 1])
        denoised = denoise(x, s)
        x = x + to_d(x, s, denoised) * (s_next - s)
        callback(i, x, denoised)
    return x


def euler_ancestral(denoise: Denoise, x: Any, sigmas: Any, noise: NoiseSource,
                    callback: Callback) -> Any:
    for i in range(len(sigmas) - 1):
        s, s_next = _f(sigmas[i]), _f(sigmas[i + 1])
        denoised = denoise(x, s)
        down, up = ancestral_step(s, s_next)
        x = x + to_d(x, s, denoised) * (down - s)
        if s_next > 0:
            x = x + noise(s, s_next) * up
        callback(i, x, denoised)
    return x


def heun(denoise: Denoise, x: Any, sigmas: Any, noise: NoiseSource, callback: Callback) -> Any:
    for i in range(len(sigmas) - 1):
        s, s_next = _f(sigmas[i]), _f(sigmas[i + 1])
        denoised = denoise(x, s)
        d = to_d(x, s, denoised)
        dt = s_next - s
        if s_next == 0:
            x = x + d * dt
        else:
            x_2 = x + d * dt
            d_2 = to_d(x_2, s_next, denoise(x_2, s_next))
            x = x + (d + d_2) / 2 * dt
        callback(i, x, denoised)
    return x


def _log_midpoint(a: float, b: float) -> float:
    return math.exp((math.log(a) + math.log(b)) / 2)


def dpm_2(denoise: Denoise, x: Any, sigmas: Any, noise: NoiseSource, callback: Callback) -> Any:
    for i in range(len(sigmas) - 1):
        s, s_next = _f(sigmas[i]), _f(sigmas[i + 1])
        denoised = denoise(x, s)
        d = to_d(x, s, denoised)
        if s_next == 0:
            x = x + d * (s_next - s)
        else:
            mid = _log_midpoint(s, s_next)
            x_2 = x + d * (mid - s)
            x = x + to_d(x_2, mid, denoise(x_2, mid)) * (s_next - s)
        callback(i, x, denoised)
    return x


def dpm_2_ancestral(denoise: Denoise, x: Any, sigmas: Any, noise: NoiseSource,
                    callback: Callback) -> Any:
    for i in range(len(sigmas) - 1):
        s, s_next = _f(sigmas[i]), _f(sigmas[i + 1])
        denoised = denoise(x, s)
        down, up = ancestral_step(s, s_next)
        d = to_d(x, s, denoised)
        if down == 0:
            x = x + d * (down - s)
        else:
            mid = _log_midpoint(s, down)
            x_2 = x + d * (mid - s)
            x = x + to_d(x_2, mid, denoise(x_2, mid)) * (down - s)
        x = x + noise(s, s_next) * up
        callback(i, x, denoised)
    return x


def lms_coefficient(order: int, t: Any, i: int, j: int) -> float:
    """∫ from t_i to t_(i+1) of the Lagrange basis polynomial of t_(i−j) over the nodes
    t_i, …, t_(i−order+1): the weight of the j-th newest derivative (integrated exactly)."""
    import numpy as np

    nodes = [float(t[i - k]) for k in range(order)]
    poly = np.poly1d([1.0])
    for k in range(order):
        if k != j:
            poly = poly * np.poly1d([1.0, -nodes[k]]) / (nodes[j] - nodes[k])
    integral = poly.integ()
    return float(integral(float(t[i + 1])) - integral(float(t[i])))


def lms(denoise: Denoise, x: Any, sigmas: Any, noise: NoiseSource, callback: Callback,
        order: int = 4) -> Any:
    points = sigmas.detach().cpu().double().numpy()
    ds: list[Any] = []
    for i in range(len(sigmas) - 1):
        s = _f(sigmas[i])
        denoised = denoise(x, s)
        ds.append(to_d(x, s, denoised))
        if len(ds) > order:
            ds.pop(0)
        current = min(i + 1, order)
        coeffs = [lms_coefficient(current, points, i, j) for j in range(current)]
        x = x + sum(c * d for c, d in zip(coeffs, reversed(ds), strict=True))
        callback(i, x, denoised)
    return x


def dpmpp_2s_ancestral(denoise: Denoise, x: Any, sigmas: Any, noise: NoiseSource,
                       callback: Callback) -> Any:
    for i in range(len(sigmas) - 1):
        s, s_next = _f(sigmas[i]), _f(sigmas[i + 1])
        denoised = denoise(x, s)
        down, up = ancestral_step(s, s_next)
        if down == 0:
            x = x + to_d(x, s, denoised) * (down - s)
        else:
            lam, lam_next = -math.log(s), -math.log(down)
            h = lam_next - lam
            mid = math.exp(-(lam + h / 2))
            x_2 = (mid / s) * x - math.expm1(-h / 2) * denoised
            x = (down / s) * x - math.expm1(-h) * denoise(x_2, mid)
        if s_next > 0:
            x = x + noise(s, s_next) * up
        callback(i, x, denoised)
    return x


def dpmpp_sde(denoise: Denoise, x: Any, sigmas: Any, noise: NoiseSource, callback: Callback,
              r: float = 0.5) -> Any:
    for i in range(len(sigmas) - 1):
        s, s_next = _f(sigmas[i]), _f(sigmas[i + 1])
        denoised = denoise(x, s)
        if s_next == 0:
            x = x + to_d(x, s, denoised) * (s_next - s)
        else:
            lam, lam_next = -math.log(s), -math.log(s_next)
            h = lam_next - lam
            s_mid = math.exp(-(lam + h * r))
            fac = 1 / (2 * r)
            # Stage 1: an ancestral DPM-Solver-1 step to the intermediate level.
            down, up = ancestral_step(s, s_mid)
            x_2 = (down / s) * x - math.expm1(lam + math.log(down)) * denoised
            x_2 = x_2 + noise(s, s_mid) * up
            denoised_2 = denoise(x_2, s_mid)
            # Stage 2: the full step with the two predictions combined.
            down, up = ancestral_step(s, s_next)
            mixed = (1 - fac) * denoised + fac * denoised_2
            x = (down / s) * x - math.expm1(lam + math.log(down)) * mixed
            x = x + noise(s, s_next) * up
        callback(i, x, denoised)
    return x


def dpmpp_2m(denoise: Denoise, x: Any, sigmas: Any, noise: NoiseSource, callback: Callback) -> Any:
    old = None
    for i in range(len(sigmas) - 1):
        s, s_next = _f(sigmas[i]), _f(sigmas[i + 1])
        denoised = denoise(x, s)
        if s_next == 0:
            x = denoised  # the limit of the update below as σ_next → 0
        else:
            h = math.log(s) - math.log(s_next)
            if old is None:
                x = (s_next / s) * x - math.expm1(-h) * denoised
            else:
                r = (math.log(_f(sigmas[i - 1])) - math.log(s)) / h
                corrected = (1 + 1 / (2 * r)) * denoised - (1 / (2 * r)) * old
                x = (s_next / s) * x - math.expm1(-h) * corrected
        old = denoised
        callback(i, x, denoised)
    return x


def dpmpp_2m_sde(denoise: Denoise, x: Any, sigmas: Any, noise: NoiseSource, callback: Callback,
                 eta: float = 1.0) -> Any:
    old = None
    h_last = None
    for i in range(len(sigmas) - 1):
        s, s_next = _f(sigmas[i]), _f(sigmas[i + 1])
        denoised = denoise(x, s)
        h = None
        if s_next == 0:
            x = denoised
        else:
            h = math.log(s) - math.log(s_next)
            eta_h = eta * h
            x = (s_next / s) * math.exp(-eta_h) * x - math.expm1(-h - eta_h) * denoised
            if old is not None and h_last is not None:
                r = h_last / h
                x = x - 0.5 * math.expm1(-h - eta_h) * (1 / r) * (denoised - old)  # midpoint
            if eta:
                x = x + noise(s, s_next) * s_next * math.sqrt(-math.expm1(-2 * eta_h))
        old, h_last = denoised, h
        callback(i, x, denoised)
    return x


def dpmpp_3m_sde(denoise: Denoise, x: Any, sigmas: Any, noise: NoiseSource, callback: Callback,
                 eta: float = 1.0) -> Any:
    d_1 = d_2 = None
    h_1 = h_2 = None
    for i in range(len(sigmas) - 1):
        s, s_next = _f(sigmas[i]), _f(sigmas[i + 1])
        denoised = denoise(x, s)
        h = None
        if s_next == 0:
            x = denoised
        else:
            h = math.log(s) - math.log(s_next)
            h_eta = h * (eta + 1)
            x = math.exp(-h_eta) * x - math.expm1(-h_eta) * denoised
            phi_2 = math.expm1(-h_eta) / h_eta + 1
            if h_2 is not None and h_1 is not None and d_2 is not None:
                r0, r1 = h_1 / h, h_2 / h
                d1_0 = (denoised - d_1) / r0
                d1_1 = (d_1 - d_2) / r1
                d1 = d1_0 + (d1_0 - d1_1) * r0 / (r0 + r1)
                d2 = (d1_0 - d1_1) / (r0 + r1)
                phi_3 = phi_2 / h_eta - 0.5
                x = x + phi_2 * d1 - phi_3 * d2
            elif h_1 is not None:
                x = x + phi_2 * (denoised - d_1) / (h_1 / h)
            if eta:
                x = x + noise(s, s_next) * s_next * math.sqrt(-math.expm1(-2 * h * eta))
        d_1, d_2 = denoised, d_1
        h_1, h_2 = h, h_1
        callback(i, x, denoised)
    return x


def lcm(denoise: Denoise, x: Any, sigmas: Any, noise: NoiseSource, callback: Callback) -> Any:
    for i in range(len(sigmas) - 1):
        s, s_next = _f(sigmas[i]), _f(sigmas[i + 1])
        denoised = denoise(x, s)
        x = denoised
        if s_next > 0:
            x = x + noise(s, s_next) * s_next
        callback(i, x, denoised)
    return x


def _unipc_update(denoise_vp: Callable[[Any, float], Any], x: Any, prev: list[Any],
                  prev_sigmas: list[float], sigma: float, order: int, corrector: bool,
                  variant: str) -> tuple[Any, Any]:
    """One UniPC step (Zhao et al. 2023, data prediction, B(h) = h for bh1, e^h − 1 for bh2) in
    variance-preserving coordinates: from the newest previous point to σ, with the predictor of
    the given order and, when asked, the corrector (which calls the model at σ)."""
    import torch

    def lam(s: float) -> float:
        return -math.log(s)

    def std(s: float) -> float:
        return s / math.sqrt(s * s + 1)

    s0 = prev_sigmas[-1]
    m0 = prev[-1]
    alpha_t = 1 / math.sqrt(sigma * sigma + 1)
    h = lam(sigma) - lam(s0)
    rks: list[float] = []
    d1s = []
    for i in range(1, order):
        rk = (lam(prev_sigmas[-(i + 1)]) - lam(s0)) / h
        rks.append(rk)
        d1s.append((prev[-(i + 1)] - m0) / rk)
    rks.append(1.0)
    hh = -h
    h_phi_1 = math.expm1(hh)
    h_phi_k = h_phi_1 / hh - 1
    factorial = 1
    b_h = hh if variant == "bh1" else math.expm1(hh)
    rows, b = [], []
    r = torch.tensor(rks, dtype=torch.float64)
    for i in range(1, order + 1):
        rows.append(r ** (i - 1))
        b.append(h_phi_k * factorial / b_h)
        factorial *= i + 1
        h_phi_k = h_phi_k / hh - 1 / factorial
    big_r, big_b = torch.stack(rows), torch.tensor(b, dtype=torch.float64)
    x_base = std(sigma) / std(s0) * x - alpha_t * h_phi_1 * m0
    if d1s:
        rhos_p = [0.5] if order == 2 else torch.linalg.solve(big_r[:-1, :-1], big_b[:-1]).tolist()
        x_t = x_base - alpha_t * b_h * sum(rho * d for rho, d in zip(rhos_p, d1s, strict=True))
    else:
        x_t = x_base
    model_t = None
    if corrector:
        rhos_c = [0.5] if order == 1 else torch.linalg.solve(big_r, big_b).tolist()
        model_t = denoise_vp(x_t, sigma)
        corr = sum((rho * d for rho, d in zip(rhos_c[:-1], d1s, strict=True)), torch.zeros_like(x))
        x_t = x_base - alpha_t * b_h * (corr + rhos_c[-1] * (model_t - m0))
    return x_t, model_t


def _unipc(denoise: Denoise, x: Any, sigmas: Any, noise: NoiseSource, callback: Callback,
           variant: str) -> Any:
    """UniPC multistep, order min(3, steps − 1), lower orders at the start and the end, the
    corrector at every step but the last; as ComfyUI runs it (σ = 0 replaced by 0.001)."""
    sig = [float(s) for s in sigmas]
    if sig[-1] == 0:
        sig[-1] = 0.001
    steps = len(sig) - 1
    order = min(3, len(sig) - 2)

    def denoise_vp(x_vp: Any, s: float) -> Any:
        return denoise(x_vp * math.sqrt(s * s + 1), s)

    x = x / math.sqrt(1 + sig[0] ** 2)
    prev: list[Any] = []
    prev_sigmas: list[float] = []
    for index in range(steps):
        if index == 0:
            prev, prev_sigmas = [denoise_vp(x, sig[0])], [sig[0]]
        elif index < order:
            x, model_x = _unipc_update(denoise_vp, x, prev, prev_sigmas, sig[index], index, True,
                                       variant)
            prev.append(model_x if model_x is not None else denoise_vp(x, sig[index]))
            prev_sigmas.append(sig[index])
        else:
            last = index + (2 if index == steps - 1 else 1)
            for step in range(index, last):
                step_order = min(order, steps + 1 - step)
                x, model_x = _unipc_update(denoise_vp, x, prev, prev_sigmas, sig[step], step_order,
                                           step != steps, variant)
                prev, prev_sigmas = prev[1:] + prev[-1:], prev_sigmas[1:] + [sig[step]]
                if step < steps:
                    prev[-1] = model_x if model_x is not None else denoise_vp(x, sig[step])
        callback(index, x, prev[-1])
    return x * math.sqrt(1 + sig[-1] ** 2)


def uni_pc(denoise: Denoise, x: Any, sigmas: Any, noise: NoiseSource, callback: Callback) -> Any:
    return _unipc(denoise, x, sigmas, noise, callback, "bh1")


def uni_pc_bh2(denoise: Denoise, x: Any, sigmas: Any, noise: NoiseSource, callback: Callback) -> Any:
    return _unipc(denoise, x, sigmas, noise, callback, "bh2")


Solver = Callable[[Denoise, Any, Any, NoiseSource, Callback], Any]

SOLVERS: dict[str, Solver] = {
    "euler": euler,
    "euler_ancestral": euler_ancestral,
    "heun": heun,
    "dpm_2": dpm_2,
    "dpm_2_ancestral": dpm_2_ancestral,
    "lms": lms,
    "dpmpp_2s_ancestral": dpmpp_2s_ancestral,
    "dpmpp_sde": dpmpp_sde,
    "dpmpp_2m": dpmpp_2m,
    "dpmpp_2m_sde": dpmpp_2m_sde,
    "dpmpp_3m_sde": dpmpp_3m_sde,
    "lcm": lcm,
    "ddim": euler,
    "uni_pc": uni_pc,
    "uni_pc_bh2": uni_pc_bh2,
}
"""ComfyUI's sampler names (in its order) and their update rules."""

BROWNIAN = frozenset({"dpmpp_sde", "dpmpp_2m_sde", "dpmpp_3m_sde"})
"""Samplers whose noise comes from a Brownian tree."""
