"""Outpainting and inpainting with masks: ComfyUI's ImagePadForOutpaint and VAEEncodeForInpaint.

``ImagePadForOutpaint`` puts a picture on a bigger mid-grey canvas and returns the mask of
the new room (1) and, with ``feathering``, a soft seam: inside the picture, within
``feathering`` pixels of a padded side, the mask is ``((feathering - d) / feathering)²``
(d = distance to that side), so the sampler may retouch the old picture near the seam.

``VAEEncodeForInpaint`` greys out the area to repaint (mask ≥ 0.5) before encoding, as
inpainting checkpoints were trained on, and grows the mask the sampler uses by
``grow_mask_by`` pixels so the seam falls outside the old picture's border in latent
space. With ``grow_mask_by`` 0 and a 9-channel inpainting checkpoint at denoise 1 it
gives the diffusers inpainting pipeline's pixels.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

from nodeflow.api import IMAGE, INT, MASK, Input, Node, NodeInputError, Output, RunContext, Settings
from nodeflow.nodes.diffusion.latent import MULTIPLE, encode_pixels, image_to_pixels, to_model_space
from nodeflow.nodes.diffusion.types import LATENT, VAE, Autoencoder, EncodedImage, Latent

MAX_PAD = 8192


def outpaint_mask(height: int, width: int, top: int, bottom: int, left: int, right: int,
                  feathering: int) -> Any:
    """The (height+top+bottom, width+left+right) float32 mask of ImagePadForOutpaint."""
    import numpy as np

    mask = np.ones((height + top + bottom, width + left + right), dtype=np.float32)
    inner = np.zeros((height, width), dtype=np.float32)
    if feathering > 0 and feathering * 2 < height and feathering * 2 < width:
        rows = np.arange(height, dtype=np.float64)[:, None]
        cols = np.arange(width, dtype=np.float64)[None, :]
        far_h, far_w = np.full_like(rows, height), np.full_like(cols, width)
        distance = np.minimum(
            np.minimum(rows if top else far_h, (height - rows) if bottom else far_h),
            np.minimum(cols if left else far_w, (width - cols) if right else far_w))
        rise = (feathering - distance) / feathering
        inner = np.where(distance < feathering, rise * rise, 0.0).astype(np.float32)
    mask[top:top + height, left:left + width] = inner
    return mask


class ImagePadForOutpaint(Node):
    """Pad pictures with mid grey for outpainting and return the mask of the new room (1 = draw
    here), softened over `feathering` pixels inside the old picture along the padded sides."""

    id = "diffusion.ImagePadForOutpaint"
    category = "diffusion/inpaint"
    inputs = (
        Input("image", IMAGE, "The pictures to extend."),
        Input("left", INT, "Pixels to add on the left.", default=0, min=0, max=MAX_PAD, step=8),
        Input("top", INT, "Pixels to add at the top.", default=0, min=0, max=MAX_PAD, step=8),
        Input("right", INT, "Pixels to add on the right.", default=0, min=0, max=MAX_PAD, step=8),
        Input("bottom", INT, "Pixels to add at the bottom.", default=0, min=0, max=MAX_PAD, step=8),
        Input("feathering", INT, "Width of the soft seam inside the old picture, in pixels (0: a "
              "hard edge; ignored when it is half the picture or more).", default=40, min=0,
              max=MAX_PAD),
    )
    outputs = (
        Output("image", IMAGE, "The padded pictures."),
        Output("mask", MASK, "1 over the new room, fading into the old picture along the seams."),
    )

    @classmethod
    def check(cls, values: Mapping[str, Any], settings: Settings) -> Iterable[tuple[str | None, str]]:
        sides = [values.get(k) for k in ("left", "top", "right", "bottom")]
        if all(isinstance(v, int) for v in sides) and not any(sides):
            yield None, "no padding on any side: there is nothing to outpaint; set left, top, right or bottom"

    def run(self, ctx: RunContext, image: Any, left: int, top: int, right: int, bottom: int,
            feathering: int) -> Any:
        import numpy as np

        arr = np.asarray(image, dtype=np.float32)
        batch, height, width, channels = arr.shape
        new_h, new_w = height + top + bottom, width + left + right
        if new_h * new_w > 16384 * 16384:
            raise NodeInputError("right", f"the padded picture would be {new_w}×{new_h}, too large")
        out = np.full((batch, new_h, new_w, channels), 0.5, dtype=np.float32)
        out[:, top:top + height, left:left + width] = arr
        mask = outpaint_mask(height, width, top, bottom, left, right, feathering)
        return {"image": out, "mask": mask[None]}


def grow_mask(mask: Any, pixels: int) -> Any:
    """A (batch, 1, h, w) 0/1 tensor mask grown by ``pixels`` (a box of that size around each
    masked pixel), as ComfyUI grows it."""
    import torch

    rounded = mask.round()
    if pixels == 0:
        return rounded
    kernel = torch.ones((1, 1, pixels, pixels), dtype=rounded.dtype)
    padding = math.ceil((pixels - 1) / 2)
    grown = torch.nn.functional.conv2d(rounded, kernel, padding=padding).clamp(0, 1)
    return grown[:, :, :mask.shape[2], :mask.shape[3]].round()


class VAEEncodeForInpaint(Node):
    """Encode pictures for inpainting or outpainting (ComfyUI's VAEEncodeForInpaint): the area
    the mask marks is greyed out before encoding, and the mask the sampler repaints is grown by
    `grow_mask_by` pixels. Sizes that are not multiples of 8 are cropped to them, centred."""

    id = "diffusion.VAEEncodeForInpaint"
    uses_accelerator = True
    category = "diffusion/inpaint"
    inputs = (
        Input("vae", VAE, "The autoencoder."),
        Input("image", IMAGE, "The pictures (e.g. from ImagePadForOutpaint)."),
        Input("mask", MASK, "The area to repaint (1) — resized to the picture when it differs."),
        Input("grow_mask_by", INT, "Grow the repainted area by this many pixels, so the seam is "
              "hidden.", default=6, min=0, max=64),
    )
    outputs = (Output("latent", LATENT, "The encoded pictures with their inpainting mask."),)

    def run(self, ctx: RunContext, vae: Autoencoder, image: Any, mask: Any, grow_mask_by: int) -> Any:
        import numpy as np
        import torch

        arr = np.asarray(image, dtype=np.float32)
        batch, height, width = arr.shape[:3]
        m = np.asarray(mask, dtype=np.float32)
        if m.ndim == 2:
            m = m[None]
        if m.ndim != 3:
            raise NodeInputError("mask", f"expected a MASK (batch, height, width), got shape {m.shape}")
        if m.shape[0] not in (1, batch):
            raise NodeInputError("mask", f"{m.shape[0]} masks for {batch} pictures",
                                 hint="Give one mask, or one per picture.")
        mask_t = torch.from_numpy(np.ascontiguousarray(m))[:, None]
        if mask_t.shape[-2:] != (height, width):
            mask_t = torch.nn.functional.interpolate(mask_t, size=(height, width), mode="bilinear")
        new_h, new_w = height - height % MULTIPLE, width - width % MULTIPLE
        if not new_h or not new_w:
            raise NodeInputError("image", f"the picture {width}×{height} is smaller than "
                                 f"{MULTIPLE}×{MULTIPLE}")
        y0, x0 = (height % MULTIPLE) // 2, (width % MULTIPLE) // 2
        arr = arr[:, y0:y0 + new_h, x0:x0 + new_w]
        mask_t = mask_t[:, :, y0:y0 + new_h, x0:x0 + new_w]
        repaint = (mask_t.round() > 0).numpy()[:, 0, :, :, None]
        filled = np.where(repaint, np.float32(0.5), arr).astype(np.float32)
        noise_mask = grow_mask(mask_t, grow_mask_by)[:, 0].numpy().astype(np.float32)
        pixels = image_to_pixels(filled)
        with ctx.models.use(vae.vae):
            dist = encode_pixels(vae, pixels, False)
            with torch.no_grad():
                samples = to_model_space(vae.vae, dist.mode())
        return Latent(width=int(new_w), height=int(new_h), batch=int(batch), samples=samples,
                      encoded=EncodedImage(pixels, dist, vae), mask=noise_mask)


OUTPAINT_NODES = [ImagePadForOutpaint, VAEEncodeForInpaint]
