"""Conversions between IMAGE/MASK values (float32 numpy arrays) and Pillow images."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np
    from PIL import Image


def pil_to_image(img: Image.Image) -> np.ndarray:
    """One Pillow image as an IMAGE batch of one (1, H, W, 3) in [0, 1]."""
    import numpy as np

    rgb = img.convert("RGB")
    return (np.asarray(rgb, dtype=np.float32) / 255.0)[None]


def pil_to_mask(img: Image.Image) -> np.ndarray:
    """A greyscale Pillow image as a MASK batch of one (1, H, W) in [0, 1]."""
    import numpy as np

    return (np.asarray(img.convert("L"), dtype=np.float32) / 255.0)[None]


def image_to_pils(image: Any) -> list[Image.Image]:
    """An IMAGE batch as 8-bit Pillow images (rounded, as diffusers does)."""
    import numpy as np
    from PIL import Image

    arr = np.asarray(image)
    if arr.ndim == 3:
        arr = arr[None]
    data = (np.clip(arr, 0.0, 1.0) * 255.0).round().astype(np.uint8)
    return [Image.fromarray(frame, "RGB") for frame in data]


def mask_to_pils(mask: Any) -> list[Image.Image]:
    import numpy as np
    from PIL import Image

    arr = np.asarray(mask)
    if arr.ndim == 2:
        arr = arr[None]
    data = (np.clip(arr, 0.0, 1.0) * 255.0).round().astype(np.uint8)
    return [Image.fromarray(frame, "L") for frame in data]


def image_size(image: Any) -> tuple[int, int]:
    """(width, height) of an IMAGE batch."""
    shape = image.shape
    return int(shape[-2]), int(shape[-3])
