"""Tiled inference: upscale an image piece by piece with overlapping, feathered tiles.

Tiles are laid out on a grid per axis, evenly spread and all the same size, the
first at one image edge and the last at the other. Each
tile's output is weighted by a separable linear ramp across the middle of the
overlap it shares with each neighbour (its outermost pixels, which see the
zero padding at the tile border, get no weight). The 1-D ramps are normalised so that they sum to 1
at every pixel, so their products sum to 1 over the image: the blend needs no
weight buffer, only the output image itself, and there is no seam.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class AxisTiles:
    """The tiles along one axis: start offsets (input pixels), tile length, blend weights."""

    starts: tuple[int, ...]
    length: int
    weights: tuple[np.ndarray, ...]
    """Per tile, float32 weights over its output pixels (length * scale)."""


def plan_axis(size: int, tile: int, overlap: int, scale: int, multiple_of: int = 1) -> AxisTiles:
    """Where the tiles go along an axis of ``size`` input pixels, and how they blend.

    As few tiles as ``tile`` and ``overlap`` allow, then shrunk to the smallest equal
    length (a multiple of ``multiple_of``) that still covers the axis with at least
    ``overlap`` shared pixels: no work is wasted on a last tile that sticks out.
    """
    if tile >= size:
        return AxisTiles((0,), size, (np.ones(size * scale, dtype=np.float32),))
    overlap = min(overlap, tile - 1)
    count = math.ceil((size - overlap) / max(1, tile - overlap))
    balanced = math.ceil((size + (count - 1) * overlap) / count)
    tile = min(tile, math.ceil(balanced / multiple_of) * multiple_of)
    starts = [i * (size - tile) // (count - 1) for i in range(count)]
    raw = []
    for i, start in enumerate(starts):
        w = np.ones(tile * scale, dtype=np.float64)
        if i > 0:  # ramp up across the overlap with the previous tile
            shared = (starts[i - 1] + tile - start) * scale
            w[:shared] = np.minimum(w[:shared], _ramp(shared))
        if i < len(starts) - 1:  # ramp down across the overlap with the next tile
            shared = (start + tile - starts[i + 1]) * scale
            w[tile * scale - shared:] = np.minimum(w[tile * scale - shared:], _ramp(shared)[::-1])
        raw.append(w)
    total = np.zeros(size * scale, dtype=np.float64)
    for start, w in zip(starts, raw, strict=True):
        total[start * scale:(start + tile) * scale] += w
    weights = tuple((w / total[s * scale:(s + tile) * scale]).astype(np.float32)
                    for s, w in zip(starts, raw, strict=True))
    return AxisTiles(tuple(starts), tile, weights)


def _ramp(shared: int) -> np.ndarray:
    """Weights rising from 0 to 1 across ``shared`` pixels of overlap.

    The outer quarter keeps weight 0 (a tile's border pixels see the zero padding
    of its convolutions) and the middle half is a linear ramp; a tile's ramp and
    its neighbour's mirrored ramp add up to 1.
    """
    margin = shared // 4
    width = max(shared - 2 * margin, 1)
    return np.clip((np.arange(shared) - margin + 0.5) / width, 0.0, 1.0)


def tile_count(height: int, width: int, tile: int, overlap: int) -> int:
    rows = plan_axis(height, tile, overlap, 1)
    cols = plan_axis(width, tile, overlap, 1)
    return len(rows.starts) * len(cols.starts)


def upscale_tiled(run_tile: Callable[[np.ndarray], np.ndarray], image: np.ndarray,
                  out: np.ndarray, scale: int, tile: int, overlap: int,
                  on_tile: Callable[[], None] = lambda: None, multiple_of: int = 1) -> None:
    """Upscale one (H, W, 3) image into ``out`` (H*scale, W*scale, 3), tile by tile.

    ``run_tile`` maps an (h, w, 3) float32 tile to a new (h*scale, w*scale, 3) float32 array
    (possibly a strided view of the model's output), which is weighted in place.
    ``tile`` <= 0 runs the whole image at once. ``out`` is overwritten.
    """
    height, width = image.shape[:2]
    if tile <= 0:
        tile = max(height, width)
    rows = plan_axis(height, tile, overlap, scale, multiple_of)
    cols = plan_axis(width, tile, overlap, scale, multiple_of)
    if len(rows.starts) == 1 and len(cols.starts) == 1:
        out[...] = run_tile(image)
        on_tile()
        return
    out.fill(0.0)
    for y, wy in zip(rows.starts, rows.weights, strict=True):
        for x, wx in zip(cols.starts, cols.weights, strict=True):
            result = run_tile(image[y:y + rows.length, x:x + cols.length])
            result *= wy[:, None, None]  # in place: no temporaries the size of a tile
            result *= wx[None, :, None]
            out[y * scale:(y + rows.length) * scale, x * scale:(x + cols.length) * scale] += result
            del result  # before the next tile runs: peak memory is one tile, not two
            on_tile()


def is_out_of_memory(exc: BaseException) -> bool:
    """Did a computation fail for lack of (device or host) memory?"""
    if isinstance(exc, MemoryError):
        return True
    try:
        import torch

        if isinstance(exc, torch.OutOfMemoryError):
            return True
    except (ImportError, AttributeError):
        pass
    text = str(exc).lower()
    return isinstance(exc, RuntimeError) and ("out of memory" in text or "can't allocate memory" in text)


def smaller_tile(tile: int, minimum: int, multiple_of: int) -> int | None:
    """Half the tile, kept a multiple of what the model needs; None below a useful size."""
    new = (tile // 2) // multiple_of * multiple_of
    floor = max(minimum, multiple_of, 16)
    return new if new >= floor else None


def to_tile_output(result: Any) -> np.ndarray:
    """A (1, C, h, w) float32 CPU torch tensor as an (h, w, 3) array, a view where possible."""
    arr = result[0].numpy().transpose(1, 2, 0)
    if arr.shape[2] == 1:
        arr = np.repeat(arr, 3, axis=2)
    return arr
