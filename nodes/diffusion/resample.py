"""Resizing latents and pictures with ComfyUI's methods, for two-pass ("hires fix") generation.

``nearest-exact``, ``bilinear``, ``area`` and ``bicubic`` are torch's interpolation modes
(no antialiasing, corners not aligned); ``lanczos`` (pictures only) resizes 8-bit RGB
with Pillow; ``bislerp`` (latents) interpolates like bilinear, but between two latent
vectors along the great circle (slerp) with their lengths interpolated linearly, which
keeps the latents' statistics better than averaging. ``crop: center`` first cuts the
source to the target's aspect ratio.
"""

from __future__ import annotations

from typing import Any

LATENT_METHODS = ("nearest-exact", "bilinear", "area", "bicubic", "bislerp")
IMAGE_METHODS = ("nearest-exact", "bilinear", "area", "bicubic", "lanczos")
CROPS = ("disabled", "center")


def center_crop(width: int, height: int, new_width: int, new_height: int) -> tuple[int, int, int, int]:
    """(x, y, width, height) of the centred part of a width×height source with the target's aspect."""
    old_aspect, new_aspect = width / height, new_width / new_height
    x = y = 0
    if old_aspect > new_aspect:
        x = round((width - width * (new_aspect / old_aspect)) / 2)
    elif old_aspect < new_aspect:
        y = round((height - height * (old_aspect / new_aspect)) / 2)
    return x, y, width - 2 * x, height - 2 * y


def _slerp(a: Any, b: Any, t: Any) -> Any:
    """Spherical interpolation of rows of ``a`` and ``b`` (N, C) by ``t`` (N, 1), with the length
    interpolated linearly; nearly parallel rows give ``a``, opposite rows a straight mix."""
    import torch

    len_a = a.norm(dim=-1, keepdim=True)
    len_b = b.norm(dim=-1, keepdim=True)
    unit_a = torch.where(len_a == 0, torch.zeros_like(a), a / len_a)
    unit_b = torch.where(len_b == 0, torch.zeros_like(b), b / len_b)
    dot = (unit_a * unit_b).sum(-1)
    omega = torch.acos(dot)
    sin_omega = torch.sin(omega)
    tt = t.squeeze(1)
    out = ((torch.sin((1 - tt) * omega) / sin_omega)[:, None] * unit_a
           + (torch.sin(tt * omega) / sin_omega)[:, None] * unit_b)
    out = out * (len_a * (1 - t) + len_b * t)
    parallel = (dot > 1 - 1e-5)[:, None]
    opposite = (dot < 1e-5 - 1)[:, None]
    out = torch.where(parallel, a, out)
    return torch.where(opposite, a * (1 - t) + b * t, out)


def _positions(old: int, new: int) -> tuple[Any, Any, Any]:
    """For each of ``new`` output positions: the two source indices and the fraction between them,
    where bilinear interpolation (corners not aligned) would sample."""
    import torch

    index = torch.arange(old, dtype=torch.float32).reshape(1, 1, 1, -1)
    where = torch.nn.functional.interpolate(index, size=(1, new), mode="bilinear").flatten()
    low = where.to(torch.int64)
    frac = where - where.floor()
    high = (low + 1).clamp(max=old - 1)
    return low, high, frac


def bislerp(samples: Any, width: int, height: int) -> Any:
    """Resize (N, C, H, W) latents by slerping between neighbouring latent vectors, first along
    the width, then along the height."""
    dtype = samples.dtype
    z = samples.float()
    n, c, h, w = z.shape

    low, high, frac = _positions(w, width)
    rows_a = z[..., low].permute(0, 2, 3, 1).reshape(-1, c)
    rows_b = z[..., high].permute(0, 2, 3, 1).reshape(-1, c)
    t = frac.reshape(1, 1, -1).expand(n, h, -1).reshape(-1, 1)
    z = _slerp(rows_a, rows_b, t).reshape(n, h, width, c).permute(0, 3, 1, 2)

    low, high, frac = _positions(h, height)
    rows_a = z[:, :, low].permute(0, 2, 3, 1).reshape(-1, c)
    rows_b = z[:, :, high].permute(0, 2, 3, 1).reshape(-1, c)
    t = frac.reshape(1, -1, 1).expand(n, -1, width).reshape(-1, 1)
    z = _slerp(rows_a, rows_b, t).reshape(n, height, width, c).permute(0, 3, 1, 2)
    return z.contiguous().to(dtype)


def _lanczos(samples: Any, width: int, height: int) -> Any:
    """Pillow's Lanczos on 8-bit pictures, as ComfyUI resizes pictures with it."""
    import numpy as np
    import torch
    from PIL import Image

    frames = []
    for frame in samples.movedim(1, -1).cpu().numpy():
        pixels = np.clip(255.0 * frame, 0, 255).astype(np.uint8)
        pil = Image.fromarray(pixels[..., 0] if pixels.shape[-1] == 1 else pixels)
        out = np.asarray(pil.resize((width, height), Image.Resampling.LANCZOS), dtype=np.float32) / 255.0
        frames.append(out[..., None] if out.ndim == 2 else out)
    return torch.from_numpy(np.stack(frames)).movedim(-1, 1).to(samples.dtype)


def resize(samples: Any, width: int, height: int, method: str, crop: str = "disabled") -> Any:
    """(N, C, H, W) tensor resized to width×height by a method of ``LATENT_METHODS`` or
    ``IMAGE_METHODS``, optionally centre-cropped to the target's aspect first."""
    import torch

    if crop == "center":
        x, y, w, h = center_crop(samples.shape[-1], samples.shape[-2], width, height)
        samples = samples[..., y:y + h, x:x + w]
    if method == "bislerp":
        return bislerp(samples, width, height)
    if method == "lanczos":
        return _lanczos(samples, width, height)
    return torch.nn.functional.interpolate(samples, size=(height, width), mode=method)


def keep_aspect(width: int, height: int, old_width: int, old_height: int, multiple: int) -> tuple[int, int]:
    """A target size where 0 means "from the other side, keeping the aspect ratio"."""
    if width == 0 and height == 0:
        return old_width, old_height
    if width == 0:
        width = max(multiple, round(old_width * height / old_height / multiple) * multiple)
    elif height == 0:
        height = max(multiple, round(old_height * width / old_width / multiple) * multiple)
    return width, height
