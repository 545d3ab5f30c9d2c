"""Regional and combined prompts: ComfyUI's Conditioning* nodes.

These nodes only describe; ``diffusion.KSampler`` does the work. At each step it runs the
model once per entry of the positive (and negative) conditioning, on the latent crop of
the entry's area (or the mask's bounding box), and averages the predictions pixel by
pixel, each weighted by its strength (times its mask, or ramped down over 8 latent cells
at area edges inside the picture). An area prompt combined with a whole-picture prompt
thus paints the box with its own prompt while the rest follows the other.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import replace
from typing import Any

from nodeflow.api import FLOAT, INT, MASK, STRING, Input, Node, NodeInputError, Output, RunContext, Settings
from nodeflow.nodes.diffusion.types import CONDITIONING, Conditioning

MAX_RESOLUTION = 16384


def _same_width(a: Conditioning, b: Conditioning, socket: str) -> None:
    if a.family != b.family or a.embeds.shape[-1] != b.embeds.shape[-1]:
        raise NodeInputError(socket, f"these conditionings come from different text encoders "
                             f"({a.family}, {int(a.embeds.shape[-1])} wide and {b.family}, "
                             f"{int(b.embeds.shape[-1])} wide)",
                             hint="Encode both prompts with the same checkpoint's clip.")


class ConditioningCombine(Node):
    """Use two prompts together: the sampler averages their predictions (weighted by area and
    strength where they have areas or masks)."""

    id = "diffusion.ConditioningCombine"
    category = "diffusion/conditioning"
    inputs = (
        Input("conditioning_1", CONDITIONING, "The first prompt(s)."),
        Input("conditioning_2", CONDITIONING, "The second prompt(s)."),
    )
    outputs = (Output("conditioning", CONDITIONING, "Both, as entries of one conditioning."),)

    def run(self, ctx: RunContext, conditioning_1: Conditioning, conditioning_2: Conditioning) -> Any:
        _same_width(conditioning_1, conditioning_2, "conditioning_2")
        return Conditioning.of_entries((*conditioning_1.entries(), *conditioning_2.entries()))


class ConditioningAverage(Node):
    """Blend prompt embeddings: to × strength + from × (1 − strength), token by token (the first
    entry of `conditioning_from` is used; shorter embeddings are padded with zeros)."""

    id = "diffusion.ConditioningAverage"
    category = "diffusion/conditioning"
    inputs = (
        Input("conditioning_to", CONDITIONING, "The prompt(s) to blend into."),
        Input("conditioning_from", CONDITIONING, "The prompt to blend in."),
        Input("conditioning_to_strength", FLOAT, "Weight of `conditioning_to` (1: it alone).",
              default=1.0, min=0.0, max=1.0, step=0.01),
    )
    outputs = (Output("conditioning", CONDITIONING, "The blended conditioning."),)

    def run(self, ctx: RunContext, conditioning_to: Conditioning, conditioning_from: Conditioning,
            conditioning_to_strength: float) -> Any:
        import torch

        _same_width(conditioning_to, conditioning_from, "conditioning_from")
        source = conditioning_from.entries()[0]
        w = float(conditioning_to_strength)

        def blend(entry: Conditioning) -> Conditioning:
            target = entry.embeds
            other = source.embeds[:, :target.shape[1]].to(target)
            if other.shape[1] < target.shape[1]:
                pad = torch.zeros((other.shape[0], target.shape[1] - other.shape[1], target.shape[2]),
                                  dtype=target.dtype, device=target.device)
                other = torch.cat([other, pad], dim=1)
            pooled = entry.pooled
            if source.pooled is not None and pooled is not None:
                pooled = pooled * w + source.pooled.to(pooled) * (1.0 - w)
            elif source.pooled is not None:
                pooled = source.pooled
            return replace(entry, embeds=target * w + other * (1.0 - w), pooled=pooled)

        return conditioning_to.map_entries(blend)


class ConditioningConcat(Node):
    """Append the tokens of one prompt to another's (each entry of `conditioning_to` gets the
    first entry of `conditioning_from`): both sets of words attended to at once."""

    id = "diffusion.ConditioningConcat"
    category = "diffusion/conditioning"
    inputs = (
        Input("conditioning_to", CONDITIONING, "The prompt(s) to extend."),
        Input("conditioning_from", CONDITIONING, "The prompt whose tokens are appended."),
    )
    outputs = (Output("conditioning", CONDITIONING, "The concatenated conditioning."),)

    def run(self, ctx: RunContext, conditioning_to: Conditioning, conditioning_from: Conditioning) -> Any:
        import torch

        _same_width(conditioning_to, conditioning_from, "conditioning_from")
        extra = conditioning_from.entries()[0].embeds
        return conditioning_to.map_entries(
            lambda e: replace(e, embeds=torch.cat([e.embeds, extra.to(e.embeds)], dim=1)))


class ConditioningSetArea(Node):
    """Limit a prompt to a box of the picture (in pixels, placed on the latent grid: each value is
    rounded down to a multiple of 8). Combine it with a whole-picture prompt (ConditioningCombine):
    the box gets this prompt, blended in over its edges."""

    id = "diffusion.ConditioningSetArea"
    category = "diffusion/conditioning"
    inputs = (
        Input("conditioning", CONDITIONING, "The prompt to place."),
        Input("width", INT, "Box width in pixels.", default=64, min=8, max=MAX_RESOLUTION, step=8,
              widget="area.width"),
        Input("height", INT, "Box height in pixels.", default=64, min=8, max=MAX_RESOLUTION, step=8,
              widget="area.height"),
        Input("x", INT, "Left edge of the box in pixels.", default=0, min=0, max=MAX_RESOLUTION, step=8,
              widget="area.x"),
        Input("y", INT, "Top edge of the box in pixels.", default=0, min=0, max=MAX_RESOLUTION, step=8,
              widget="area.y"),
        Input("strength", FLOAT, "Weight of this prompt where it overlaps others.", default=1.0,
              min=0.0, max=10.0, step=0.01),
    )
    outputs = (Output("conditioning", CONDITIONING, "The prompt limited to the box."),)

    def run(self, ctx: RunContext, conditioning: Conditioning, width: int, height: int, x: int, y: int,
            strength: float) -> Any:
        return conditioning.map_entries(
            lambda e: replace(e, area=(x, y, width, height), area_fraction=None, strength=float(strength),
                              mask=None))


class ConditioningSetAreaPercentage(Node):
    """Limit a prompt to a box given as fractions of the picture (so it fits any size)."""

    id = "diffusion.ConditioningSetAreaPercentage"
    category = "diffusion/conditioning"
    inputs = (
        Input("conditioning", CONDITIONING, "The prompt to place."),
        Input("width", FLOAT, "Box width, as a fraction of the picture's.", default=1.0, min=0.0,
              max=1.0, step=0.01, widget="area.width"),
        Input("height", FLOAT, "Box height, as a fraction of the picture's.", default=1.0, min=0.0,
              max=1.0, step=0.01, widget="area.height"),
        Input("x", FLOAT, "Left edge, as a fraction of the width.", default=0.0, min=0.0, max=1.0,
              step=0.01, widget="area.x"),
        Input("y", FLOAT, "Top edge, as a fraction of the height.", default=0.0, min=0.0, max=1.0,
              step=0.01, widget="area.y"),
        Input("strength", FLOAT, "Weight of this prompt where it overlaps others.", default=1.0,
              min=0.0, max=10.0, step=0.01),
    )
    outputs = (Output("conditioning", CONDITIONING, "The prompt limited to the box."),)

    def run(self, ctx: RunContext, conditioning: Conditioning, width: float, height: float, x: float,
            y: float, strength: float) -> Any:
        return conditioning.map_entries(
            lambda e: replace(e, area=None, area_fraction=(float(x), float(y), float(width), float(height)),
                              strength=float(strength), mask=None))


class ConditioningSetAreaStrength(Node):
    """Change the weight of a prompt where it overlaps others."""

    id = "diffusion.ConditioningSetAreaStrength"
    category = "diffusion/conditioning"
    inputs = (
        Input("conditioning", CONDITIONING, "The prompt."),
        Input("strength", FLOAT, "Its weight.", default=1.0, min=0.0, max=10.0, step=0.01),
    )
    outputs = (Output("conditioning", CONDITIONING, "The prompt with the new weight."),)

    def run(self, ctx: RunContext, conditioning: Conditioning, strength: float) -> Any:
        return conditioning.map_entries(lambda e: replace(e, strength=float(strength)))


class ConditioningSetMask(Node):
    """Limit a prompt to the parts of a mask (1 = here), weighted by the mask's values.
    'mask bounds' runs the model only on the mask's bounding box (a tighter composition)."""

    id = "diffusion.ConditioningSetMask"
    category = "diffusion/conditioning"
    inputs = (
        Input("conditioning", CONDITIONING, "The prompt to place."),
        Input("mask", MASK, "Where it acts; resized to the picture."),
        Input("strength", FLOAT, "Weight of this prompt inside the mask.", default=1.0, min=0.0,
              max=10.0, step=0.01),
        Input("set_cond_area", STRING, "'default': the model sees the whole picture; 'mask bounds': "
              "only the mask's bounding box.", default="default", choices=("default", "mask bounds")),
    )
    outputs = (Output("conditioning", CONDITIONING, "The prompt limited to the mask."),)

    def run(self, ctx: RunContext, conditioning: Conditioning, mask: Any, strength: float,
            set_cond_area: str) -> Any:
        import numpy as np
        import torch

        arr = np.asarray(mask, dtype=np.float32)
        if arr.ndim == 2:
            arr = arr[None]
        if arr.ndim != 3 or min(arr.shape) == 0:
            raise NodeInputError("mask", f"expected a MASK (height, width) or (batch, height, width), "
                                 f"got shape {arr.shape}")
        tensor = torch.from_numpy(np.ascontiguousarray(arr))
        return conditioning.map_entries(
            lambda e: replace(e, mask=tensor, mask_strength=float(strength),
                              mask_bounds=set_cond_area == "mask bounds"))


class ConditioningSetTimestepRange(Node):
    """Let a prompt act only during part of the sampling (0: the start, 1: the end), e.g. a
    composition prompt early and a detail prompt late."""

    id = "diffusion.ConditioningSetTimestepRange"
    category = "diffusion/conditioning"
    inputs = (
        Input("conditioning", CONDITIONING, "The prompt."),
        Input("start", FLOAT, "Fraction of the sampling at which it starts acting.", default=0.0,
              min=0.0, max=1.0, step=0.001, widget="range.start"),
        Input("end", FLOAT, "Fraction at which it stops.", default=1.0, min=0.0, max=1.0, step=0.001,
              widget="range.end"),
    )
    outputs = (Output("conditioning", CONDITIONING, "The prompt with its range."),)

    @classmethod
    def check(cls, values: Mapping[str, Any], settings: Settings) -> Iterable[tuple[str | None, str]]:
        start, end = values.get("start"), values.get("end")
        if isinstance(start, int | float) and isinstance(end, int | float) and start > end:
            yield "end", f"end ({end}) is before start ({start}); the prompt would never act"

    def run(self, ctx: RunContext, conditioning: Conditioning, start: float, end: float) -> Any:
        if start > end:
            raise NodeInputError("end", f"end ({end}) is before start ({start})")
        return conditioning.map_entries(lambda e: replace(e, percent_range=(float(start), float(end))))


class ConditioningZeroOut(Node):
    """A conditioning of zeros with the same shape (an 'empty' negative for some models)."""

    id = "diffusion.ConditioningZeroOut"
    category = "diffusion/conditioning"
    inputs = (Input("conditioning", CONDITIONING, "The prompt whose shape to keep."),)
    outputs = (Output("conditioning", CONDITIONING, "Zeros in its place."),)

    def run(self, ctx: RunContext, conditioning: Conditioning) -> Any:
        import torch

        return conditioning.map_entries(lambda e: replace(
            e, embeds=torch.zeros_like(e.embeds),
            pooled=None if e.pooled is None else torch.zeros_like(e.pooled)))


REGION_NODES = [ConditioningCombine, ConditioningAverage, ConditioningConcat, ConditioningSetArea,
                ConditioningSetAreaPercentage, ConditioningSetAreaStrength, ConditioningSetMask,
                ConditioningSetTimestepRange, ConditioningZeroOut]
