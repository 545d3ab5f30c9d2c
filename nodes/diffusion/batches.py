"""Latent batches: repeat a batch, take part of one, paste one latent into another.

Semantics follow ComfyUI's RepeatLatentBatch, LatentFromBatch and LatentComposite, so
imported workflows behave the same. Positions and sizes are in pixels; latents move in
whole cells (8 pixels for Stable Diffusion), so pixel positions are rounded down to cells.

Latents taken from a batch remember where they came from (``extra["batch_index"]``, as
ComfyUI's ``batch_index``, and ``extra["noise_batch"]``, the size of the batch those
indices number): a sampler gives each the noise it had in the whole batch, so the third
picture of a batch of four can be made again alone, or given a second pass alone.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import replace
from typing import Any

from nodeflow.api import INT, Input, Node, NodeInputError, Output, RunContext, Settings
from nodeflow.nodes.diffusion.latent import MULTIPLE, latent_scale
from nodeflow.nodes.diffusion.types import LATENT, Latent

BATCH_INDEX = "batch_index"
NOISE_BATCH = "noise_batch"


def picked_rows(latent: Latent) -> tuple[list[int], int] | None:
    """The batch indices a latent's items had in the batch they were taken from, and that
    batch's size; None for a batch taken whole."""
    indices = latent.extra.get(BATCH_INDEX)
    if not indices or len(indices) != latent.batch:
        return None
    rows = max(int(latent.extra.get(NOISE_BATCH, 0)), max(indices) + 1)
    return [int(i) for i in indices], rows


def _repeat(value: Any, times: int) -> Any:
    if value is None:
        return None
    import numpy as np

    if isinstance(value, np.ndarray):
        return np.concatenate([value] * times)
    return value.repeat(times, *([1] * (value.ndim - 1)))


class RepeatLatentBatch(Node):
    """Repeat a batch of latents: [a, b] twice gives [a, b, a, b] (with any inpainting mask)."""

    id = "diffusion.RepeatLatentBatch"
    category = "diffusion/latent"
    inputs = (
        Input("latent", LATENT, "The latents to repeat."),
        Input("amount", INT, "How many copies of the batch.", default=1, min=1, max=64),
    )
    outputs = (Output("latent", LATENT, "The longer batch."),)

    def run(self, ctx: RunContext, latent: Latent, amount: int) -> Any:
        if latent.batch * amount > 4096:
            raise NodeInputError("amount", f"{amount} copies of a batch of {latent.batch} make "
                                 f"{latent.batch * amount} latents, more than 4096")
        indices = latent.extra.get(BATCH_INDEX)
        extra = latent.extra
        if indices:
            # Copies of picked items get indices past the picked span, as ComfyUI numbers them.
            span = max(indices) - min(indices) + 1
            indices = [*indices, *(i + k * span for k in range(1, amount) for i in indices)]
            extra = {**latent.extra, BATCH_INDEX: indices,
                     NOISE_BATCH: max(int(latent.extra.get(NOISE_BATCH, 0)), max(indices) + 1)}
        out = replace(latent, batch=latent.batch * amount, samples=_repeat(latent.samples, amount),
                      extra=extra,
                      mask=_repeat(latent.mask, amount) if latent.mask is not None and
                      latent.mask.shape[0] == latent.batch else latent.mask)
        if latent.encoded is not None and amount > 1:
            # The sampler draws an encoded picture's latents with its seed per picture: repeat
            # the encoder's output too.
            from nodeflow.nodes.diffusion.latent import encode_repeat

            out = replace(out, encoded=encode_repeat(latent.encoded, amount))
        return out


class LatentFromBatch(Node):
    """Take `length` latents of a batch starting at `batch_index` (0 is the first). A sampler
    gives the taken latents the noise they had in the whole batch (also when taken from an
    empty latent: the picture that place of the batch would get)."""

    id = "diffusion.LatentFromBatch"
    category = "diffusion/latent"
    inputs = (
        Input("latent", LATENT, "The batch."),
        Input("batch_index", INT, "The first latent to take (0-based).", default=0, min=0, max=4095),
        Input("length", INT, "How many latents to take.", default=1, min=1, max=4096),
    )
    outputs = (Output("latent", LATENT, "The part of the batch."),)

    def run(self, ctx: RunContext, latent: Latent, batch_index: int, length: int) -> Any:
        if batch_index >= latent.batch:
            raise NodeInputError("batch_index", f"batch_index {batch_index} is past the end of this "
                                 f"batch of {latent.batch}", hint=f"Use 0 to {latent.batch - 1}.")
        end = min(latent.batch, batch_index + length)
        picked = latent.extra.get(BATCH_INDEX)
        indices = list(picked[batch_index:end]) if picked else list(range(batch_index, end))
        extra = {**latent.extra, BATCH_INDEX: indices,
                 NOISE_BATCH: int(latent.extra.get(NOISE_BATCH, latent.batch))}
        if latent.is_empty:
            return replace(latent, batch=end - batch_index, extra=extra)
        mask = latent.mask
        if mask is not None and mask.shape[0] == latent.batch:
            mask = mask[batch_index:end]
        encoded = latent.encoded
        if encoded is not None:
            from nodeflow.nodes.diffusion.latent import encode_slice

            encoded = encode_slice(encoded, batch_index, end)
        return replace(latent, batch=end - batch_index, samples=latent.samples[batch_index:end].clone(),
                       mask=mask, encoded=encoded, extra=extra)


def _composite_problems(values: Mapping[str, Any]) -> Iterable[tuple[str | None, str]]:
    for name in ("x", "y", "feather"):
        value = values.get(name)
        if isinstance(value, int) and value % MULTIPLE:
            yield name, (f"{name} {value} is not a multiple of {MULTIPLE}: latents move in cells of "
                         f"{MULTIPLE} pixels (it would be rounded down to {value - value % MULTIPLE})")


def feather_mask(height: int, width: int, feather: int, top: bool, bottom: bool, left: bool,
                 right: bool) -> Any:
    """(1, 1, height, width) weights of a pasted patch: 1 inside, ramping down over ``feather``
    cells along the edges that lie inside the destination."""
    import torch

    mask = torch.ones(1, 1, height, width)
    for t in range(feather):
        ramp = (t + 1) / feather
        if top:
            mask[:, :, t] *= ramp
        if bottom:
            mask[:, :, height - 1 - t] *= ramp
        if left:
            mask[:, :, :, t] *= ramp
        if right:
            mask[:, :, :, width - 1 - t] *= ramp
    return mask


class LatentComposite(Node):
    """Paste latents (`source`) into others (`destination`) at x, y; with `feather`, the pasted
    patch fades into the destination over that many pixels along its inner edges."""

    id = "diffusion.LatentComposite"
    category = "diffusion/latent"
    inputs = (
        Input("destination", LATENT, "The latents pasted into (ComfyUI: samples_to)."),
        Input("source", LATENT, "The latents to paste (ComfyUI: samples_from)."),
        Input("x", INT, "Left edge of the paste, in pixels (a multiple of 8).", default=0, min=0,
              max=16384, step=8),
        Input("y", INT, "Top edge of the paste, in pixels (a multiple of 8).", default=0, min=0,
              max=16384, step=8),
        Input("feather", INT, "Width of the fade along the patch's inner edges, in pixels.",
              default=0, min=0, max=16384, step=8),
    )
    outputs = (Output("latent", LATENT, "The destination with the source pasted in."),)

    @classmethod
    def check(cls, values: Mapping[str, Any], settings: Settings) -> Iterable[tuple[str | None, str]]:
        yield from _composite_problems(values)

    def run(self, ctx: RunContext, destination: Latent, source: Latent, x: int, y: int,
            feather: int) -> Any:
        for socket, latent in (("destination", destination), ("source", source)):
            if latent.is_empty:
                raise NodeInputError(socket, "this latent is empty: there is nothing to composite yet",
                                     hint="Composite the output of a sampler or of VAEEncode.")
        scale = latent_scale(destination)
        if latent_scale(source) != scale or source.samples.shape[1] != destination.samples.shape[1]:
            raise NodeInputError("source", "the source latents come from another kind of model than "
                                 "the destination's")
        if x >= destination.width or y >= destination.height:
            socket = "x" if x >= destination.width else "y"
            raise NodeInputError(socket, f"the paste at x={x}, y={y} starts outside the "
                                 f"{destination.width}×{destination.height} destination",
                                 hint="Move it inside the destination.")
        dst = destination.samples.clone()
        src = source.samples
        if src.shape[0] not in (1, dst.shape[0]):
            if dst.shape[0] != 1:
                raise NodeInputError("source", f"batch sizes {src.shape[0]} (source) and "
                                     f"{dst.shape[0]} (destination) do not match")
            dst = dst.repeat(src.shape[0], 1, 1, 1)
        cx, cy, cf = x // scale, y // scale, feather // scale
        src = src[:, :, :dst.shape[2] - cy, :dst.shape[3] - cx].to(dst)
        h, w = src.shape[2], src.shape[3]
        region = dst[:, :, cy:cy + h, cx:cx + w]
        if cf == 0:
            blended = src.expand_as(region)
        else:
            mask = feather_mask(h, w, cf, cy != 0, cy + h < dst.shape[2], cx != 0,
                                cx + w < dst.shape[3]).to(dst)
            blended = src * mask + region * (1 - mask)
        dst[:, :, cy:cy + h, cx:cx + w] = blended
        return replace(destination, batch=int(dst.shape[0]), samples=dst, encoded=None, mask=None)


BATCH_NODES = [RepeatLatentBatch, LatentFromBatch, LatentComposite]
