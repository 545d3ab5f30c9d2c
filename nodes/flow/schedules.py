"""Noise levels of SD3.x and Flux with ComfyUI's semantics, for imported workflows.

ComfyUI keeps a table of the shifted noise levels of a flow model and picks the sampling
sigmas from it with the same schedulers it uses for SD (``nodes.diffusion.sigmas``):

- SD3.x and Flux schnell: 1000 entries σ(t) = shift·t / (1 + (shift − 1)·t), t = 1/1000 … 1;
- Flux dev: 10000 entries σ(t) = e^μ / (e^μ + 1/t − 1), t = 1/10000 … 1, where μ comes from
  ``ModelSamplingFlux`` for the size it names, or is 1.15 (its value at 1024×1024) without one.

The table is computed in float32, as ComfyUI computes it. With the defaults (euler; ``normal``
for SD3, ``simple`` for Flux) these are the diffusers pipelines' sigmas to float32 rounding.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from nodeflow.nodes.diffusion.sigmas import ModelSampling, sampling_sigmas
from nodeflow.nodes.flow.types import FlowModel

COMFY_SAMPLERS = ("euler", "heun", "dpmpp_2m", "euler_ancestral")
"""ComfyUI sampler names nodeflow runs on flow models: euler with the flow-matching Euler step,
the others with ``solvers``."""


@dataclass(frozen=True, eq=False)
class FlowSampling(ModelSampling):
    """A flow model's noise-level table; ``mu`` set: Flux dev's exponential shift, else ``shift``."""

    shift: float = 1.0
    mu: float | None = None

    def _shifted(self, t: Any) -> Any:
        if self.mu is not None:
            return math.exp(self.mu) / (math.exp(self.mu) + (1 / t - 1))
        if self.shift == 1.0:
            return t
        return self.shift * t / (1 + (self.shift - 1) * t)

    def timestep(self, sigma: Any) -> Any:
        import torch

        return torch.as_tensor(sigma, dtype=torch.float32)

    def sigma(self, timestep: Any) -> Any:
        import torch

        return self._shifted(torch.as_tensor(timestep, dtype=torch.float32))


def flow_sampling(model: FlowModel) -> FlowSampling:
    """ComfyUI's noise-level table for a model as its shift settings stand."""
    import torch

    s = model.shift
    if s.dynamic:
        slope = (s.max_shift - s.base_shift) / (s.max_seq_len - s.base_seq_len)
        tokens = (s.size[0] * s.size[1]) // 256 if s.size is not None else s.max_seq_len
        mu: float | None = tokens * slope + s.base_shift - slope * s.base_seq_len
        count = 10000
    else:
        mu, count = None, 1000
    # ComfyUI scales the table's timesteps by SD3's 1000 and divides again: the same float32 steps
    multiplier = 1000.0 if model.family == "sd3" else 1.0
    probe = FlowSampling(torch.zeros(1), torch.zeros(1), "flow", float(s.shift), mu)
    table = probe.sigma((torch.arange(1, count + 1, 1) / count) * multiplier / multiplier).float()
    return FlowSampling(table, table.log(), "flow", float(s.shift), mu)


def comfy_sigmas(model: FlowModel, scheduler: str, sampler: str, steps: int, denoise: float) -> Any:
    """The ``steps`` + 1 sigmas ComfyUI samples with (BasicScheduler's and KSampler's denoise rule:
    below 1, the last ``steps`` + 1 of a schedule of ⌊steps / denoise⌋ steps)."""
    return sampling_sigmas(flow_sampling(model), scheduler, sampler, steps, denoise)
