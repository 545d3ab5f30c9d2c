"""Opening picture files safely, and conversions between IMAGE/MASK values (float32 numpy
arrays) and Pillow images."""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nodeflow.errors import Location, RefusedInput

if TYPE_CHECKING:
    import numpy as np
    from PIL import Image

PICTURE_FORMATS = ("PNG", "JPEG", "WEBP", "TIFF", "BMP")
"""The only formats nodeflow opens. Pillow picks a decoder by a file's content, not its name,
and some decoders run external programs (EPS hands the file to Ghostscript): an allow-list
keeps a picture from being anything else."""
MAX_PICTURE_PIXELS = 16384 * 8192
"""Pixels in the largest picture nodeflow opens (below Pillow's own decompression-bomb limit,
so every refusal carries the same message)."""
FORMAT_NAMES = "PNG, JPEG, WebP, TIFF or BMP"


def open_picture(path: str | os.PathLike[str]) -> Image.Image:
    """Open a picture file of an allowed format (see `PICTURE_FORMATS`), pixels loaded.

    Raises `RefusedInput` (also an OSError) naming the file and saying why: not a regular
    file, a format outside the allow-list, too many pixels, or unreadable data.
    """
    from PIL import Image, UnidentifiedImageError

    from nodeflow.files import regular_file_problem

    path = Path(path)
    where = Location(file=str(path))
    problem = regular_file_problem(path)
    if problem is None and path.is_dir():
        problem = f"{path} is a folder, not a picture"
    if problem:
        raise RefusedInput(problem, location=where)
    with open(path, "rb") as fh:
        head = fh.read(64)
    kind = _sniff(head)
    try:
        with warnings.catch_warnings():
            # Pillow warns from ~89 million pixels; nodeflow's own limit below decides.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            im = Image.open(path, formats=PICTURE_FORMATS)
        with im:
            width, height = im.size
            if width * height > MAX_PICTURE_PIXELS:
                raise RefusedInput(
                    f"the picture is {width}×{height} pixels ({width * height:,}), more than the "
                    f"{MAX_PICTURE_PIXELS:,} nodeflow opens", location=where,
                    hint="Scale it down with another program first.")
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                im.load()
            # A copy detached from the file: the caller needs no open file handle.
            loaded = im.copy()
            loaded.format = im.format
            if hasattr(im, "info"):
                loaded.info = dict(im.info)
            return loaded
    except RefusedInput:
        raise
    except Image.DecompressionBombError as exc:
        import re

        found = re.search(r"\((\d+) pixels\)", str(exc))
        count = f"{int(found.group(1)):,} pixels" if found else "too many pixels"
        raise RefusedInput(f"the picture has {count}, more than the {MAX_PICTURE_PIXELS:,} "
                           "nodeflow opens", location=where,
                           hint="Scale it down with another program first.") from None
    except UnidentifiedImageError:
        what = f"a {kind} file" if kind else "not a picture nodeflow can read"
        raise RefusedInput(f"{path.name} is {what}; nodeflow opens only {FORMAT_NAMES} pictures",
                           location=where,
                           hint="Convert it to PNG or JPEG with another program.") from None
    except (OSError, SyntaxError, ValueError, EOFError, MemoryError) as exc:
        raise RefusedInput(f"the picture cannot be read: {exc}", location=where,
                           hint="The file may be truncated or damaged.") from None


def _sniff(head: bytes) -> str | None:
    """A name for a few formats Pillow would otherwise open, for the refusal message."""
    signatures = ((b"%!PS", "PostScript/EPS"), (b"\xc5\xd0\xd3\xc6", "EPS"), (b"%PDF", "PDF"),
                  (b"GIF8", "GIF"), (b"\x00\x00\x01\x00", "ICO"), (b"8BPS", "PSD"))
    for magic, name in signatures:
        if head.startswith(magic):
            return name
    if head.lstrip().startswith((b"<svg", b"<?xml")):
        return "SVG/XML"
    return None


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
