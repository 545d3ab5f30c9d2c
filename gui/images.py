"""IMAGE/MASK arrays (float32 numpy in [0, 1]) as QImages."""

from __future__ import annotations

from typing import Any

from PySide6.QtGui import QImage


def is_image_array(value: Any) -> bool:
    shape = getattr(value, "shape", None)
    return shape is not None and (len(shape) == 4 and shape[-1] == 3 or len(shape) == 3)


def array_to_qimages(value: Any, limit: int = 8) -> list[QImage]:
    """The frames of an IMAGE (b, h, w, 3) or MASK (b, h, w) batch as 8-bit QImages."""
    import numpy as np

    arr = np.asarray(value)
    if arr.ndim == 2 or (arr.ndim == 3 and arr.shape[-1] == 3):
        arr = arr[None]
    out = []
    for frame in arr[:limit]:
        data = np.ascontiguousarray((np.clip(frame, 0.0, 1.0) * 255.0).round().astype(np.uint8))
        h, w = data.shape[:2]
        if data.ndim == 3:
            img = QImage(data.data, w, h, 3 * w, QImage.Format.Format_RGB888)
        else:
            img = QImage(data.data, w, h, w, QImage.Format.Format_Grayscale8)
        out.append(img.copy())  # own the pixels: the numpy buffer goes away
    return out
