"""Image nodes: load, save, resize, crop, blend, invert (Pillow and numpy), and ComfyUI's
ImageScale/ImageScaleBy (torch, imported only when they run)."""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from nodeflow.api import (
    FLOAT,
    IMAGE,
    INT,
    MASK,
    STRING,
    Input,
    Node,
    NodeInputError,
    Output,
    RefusedInput,
    RunContext,
    Settings,
)

RESAMPLE = ("lanczos", "bicubic", "bilinear", "nearest", "area")


def _resample(method: str) -> int:
    from PIL import Image

    return {
        "lanczos": Image.Resampling.LANCZOS,
        "bicubic": Image.Resampling.BICUBIC,
        "bilinear": Image.Resampling.BILINEAR,
        "nearest": Image.Resampling.NEAREST,
        "area": Image.Resampling.BOX,
    }[method]


def resize_array(image: Any, width: int, height: int, method: str) -> Any:
    """Resize an IMAGE or MASK batch in float precision, channel by channel."""
    import numpy as np
    from PIL import Image

    arr = np.asarray(image, dtype=np.float32)
    mask = arr.ndim == 3
    frames = arr[..., None] if mask else arr
    out = np.empty((frames.shape[0], height, width, frames.shape[3]), dtype=np.float32)
    flt = _resample(method)
    for b in range(frames.shape[0]):
        for c in range(frames.shape[3]):
            channel = Image.fromarray(np.ascontiguousarray(frames[b, :, :, c]), mode="F")
            out[b, :, :, c] = np.asarray(channel.resize((width, height), flt))
    if method in ("lanczos", "bicubic"):
        np.clip(out, 0.0, 1.0, out=out)
    return out[..., 0] if mask else out


class Load(Node):
    """Load a picture file (PNG, JPEG, WebP, ...) as an image, with its transparency as a mask."""

    id = "image.Load"
    category = "image"
    inputs = (Input("path", STRING, "The picture file: an absolute path, or relative to the "
                    "current folder or the graph file's folder.", path_kind="image"),)
    outputs = (
        Output("image", IMAGE, "The picture as RGB."),
        Output("mask", MASK, "1 where the picture is transparent (for inpainting), else 0."),
    )

    def run(self, ctx: RunContext, path: str) -> Any:
        import numpy as np
        from PIL import ImageOps, UnidentifiedImageError

        from nodeflow.api import open_picture, pil_to_image

        found = ctx.settings.resolve_path("image", path)
        if found is None:
            raise NodeInputError("path", ctx.settings.describe_search("image", path))
        try:
            with open_picture(found) as opened:
                im = ImageOps.exif_transpose(opened)
                im.load()
        except RefusedInput as exc:
            raise NodeInputError("path", exc.message, hint=exc.hint) from None
        except (UnidentifiedImageError, OSError, SyntaxError) as exc:
            raise NodeInputError("path", f"{found} is not a picture nodeflow can read ({exc})",
                                 hint="Use a PNG, JPEG or WebP file.") from None
        image = pil_to_image(im)
        if "A" in im.getbands():
            alpha = np.asarray(im.getchannel("A"), dtype=np.float32) / 255.0
            mask = (1.0 - alpha)[None]
        else:
            mask = np.zeros(image.shape[:3], dtype=np.float32)
        return {"image": image, "mask": mask}


class Save(Node):
    """Save images as PNG files in the output folder, with the graph that made them embedded.

    Files are named PREFIX_00001.png, PREFIX_00002.png, ...: an existing file is never
    overwritten, and a file appears only once it is completely written.
    """

    id = "image.Save"
    category = "image"
    output_node = True
    inputs = (
        Input("image", IMAGE, "The images to save."),
        Input("prefix", STRING, "File name prefix; may include a subfolder ('renders/cat').",
              default="nodeflow"),
    )
    outputs = ()

    @classmethod
    def check(cls, values: Mapping[str, Any], settings: Settings) -> Iterable[tuple[str | None, str]]:
        prefix = values.get("prefix")
        if isinstance(prefix, str):
            yield from _check_prefix(prefix)

    def run(self, ctx: RunContext, image: Any, prefix: str) -> Any:
        import io

        from PIL.PngImagePlugin import PngInfo

        from nodeflow.api import image_to_pils, png_text_chunks, write_new_numbered

        for _socket, message in _check_prefix(prefix):
            raise NodeInputError("prefix", message)
        sub, _, stem = prefix.rpartition("/")
        folder = ctx.settings.out_dir / sub if sub else ctx.settings.out_dir
        info = PngInfo()
        for key, text in png_text_chunks(ctx.graph_json, getattr(ctx, "notes", None)):
            info.add_itxt(key, text)
        pictures = image_to_pils(image)
        for i, picture in enumerate(pictures):
            ctx.check_cancelled()
            buffer = io.BytesIO()
            picture.save(buffer, format="PNG", pnginfo=info, compress_level=4)
            path = write_new_numbered(folder, stem, ".png", buffer.getvalue(),
                                      inside=ctx.settings.out_dir)
            ctx.record_file(path)
            ctx.progress(i + 1, len(pictures))
        return None


PREVIEW_KEEP = 200
"""Preview files kept per process; older ones are deleted, so a long-lived editor or server
does not fill the temporary folder."""
_preview_dir: Path | None = None
_preview_lock = threading.Lock()


def preview_folder() -> Path:
    """This process's folder for preview pictures, in the system's temporary folder; removed
    when the process exits."""
    global _preview_dir
    with _preview_lock:
        if _preview_dir is None or not _preview_dir.is_dir():
            import atexit
            import shutil
            import tempfile

            _preview_dir = Path(tempfile.mkdtemp(prefix="nodeflow-preview-"))
            atexit.register(shutil.rmtree, _preview_dir, True)
        return _preview_dir


def _prune_previews(folder: Path, keep: int) -> None:
    files = sorted(folder.glob("*.png"), key=lambda p: p.stat().st_mtime_ns)
    for old in files[:-keep]:
        old.unlink(missing_ok=True)


class PreviewImage(Node):
    """Show images in the editor without saving them: they are written only to a temporary
    folder (deleted when nodeflow exits), never to the output folder."""

    id = "image.PreviewImage"
    category = "image"
    output_node = True
    deterministic = False  # runs on every run (its inputs still come from the cache), so it always shows
    inputs = (Input("image", IMAGE, "The images to show."),)
    outputs = ()

    def run(self, ctx: RunContext, image: Any) -> Any:
        import io

        from nodeflow.api import image_to_pils, write_new_numbered

        folder = preview_folder()
        pictures = image_to_pils(image)
        ctx.preview(image)
        for i, picture in enumerate(pictures):
            ctx.check_cancelled()
            buffer = io.BytesIO()
            picture.save(buffer, format="PNG", compress_level=1)
            ctx.record_file(write_new_numbered(folder, "preview", ".png", buffer.getvalue()))
            ctx.progress(i + 1, len(pictures))
        with _preview_lock:
            _prune_previews(folder, PREVIEW_KEEP)
        return None


def _check_prefix(prefix: str) -> Iterable[tuple[str | None, str]]:
    from nodeflow.api import save_prefix_problem

    problem = save_prefix_problem(prefix)
    if problem:
        yield ("prefix", problem)


class Resize(Node):
    """Resize images to an exact width and height."""

    id = "image.Resize"
    category = "image"
    inputs = (
        Input("image", IMAGE, "The images to resize."),
        Input("width", INT, "Width in pixels.", default=512, min=1, max=16384, step=8),
        Input("height", INT, "Height in pixels.", default=512, min=1, max=16384, step=8),
        Input("method", STRING, "Resampling filter.", default="lanczos", choices=RESAMPLE),
    )
    outputs = (Output("image", IMAGE, "The resized images."),)

    def run(self, ctx: RunContext, image: Any, width: int, height: int, method: str) -> Any:
        return resize_array(image, width, height, method)


class ResizeBy(Node):
    """Scale images by a factor with a classic filter (the non-learned comparison for upscalers)."""

    id = "image.ResizeBy"
    category = "image"
    inputs = (
        Input("image", IMAGE, "The images to scale."),
        Input("factor", FLOAT, "Scale factor.", default=2.0, min=0.01, max=16.0, step=0.25),
        Input("method", STRING, "Resampling filter.", default="bicubic", choices=RESAMPLE),
    )
    outputs = (Output("image", IMAGE, "The scaled images."),)

    def run(self, ctx: RunContext, image: Any, factor: float, method: str) -> Any:
        height, width = image.shape[1:3]
        new_w, new_h = max(1, round(width * factor)), max(1, round(height * factor))
        return resize_array(image, new_w, new_h, method)


IMAGE_SCALE_METHODS = ("nearest-exact", "bilinear", "area", "bicubic", "lanczos")


def scale_array(image: Any, width: int, height: int, method: str, crop: str) -> Any:
    """Resize an IMAGE batch as ComfyUI's ImageScale does (torch interpolation; lanczos on 8-bit)."""
    import numpy as np
    import torch

    from nodeflow.nodes.diffusion.resample import resize

    t = torch.from_numpy(np.ascontiguousarray(np.asarray(image, dtype=np.float32))).movedim(-1, 1)
    out = resize(t, width, height, method, crop).movedim(1, -1).contiguous().numpy()
    return out.astype(np.float32, copy=False)


def _scale_problems(values: Mapping[str, Any]) -> Iterable[tuple[str | None, str]]:
    if values.get("crop") == "center" and 0 in (values.get("width"), values.get("height")):
        yield "crop", "crop 'center' needs both width and height; 0 already keeps the aspect ratio"


class ImageScale(Node):
    """Resize images to a size (ComfyUI's ImageScale). Width or height 0 follows the other,
    keeping the aspect ratio; crop 'center' cuts to the new aspect ratio first."""

    id = "image.ImageScale"
    category = "image"
    inputs = (
        Input("image", IMAGE, "The images to resize."),
        Input("upscale_method", STRING, "Interpolation.", default="nearest-exact",
              choices=IMAGE_SCALE_METHODS),
        Input("width", INT, "New width in pixels (0: keep the aspect ratio).", default=512, min=0,
              max=16384),
        Input("height", INT, "New height in pixels (0: keep the aspect ratio).", default=512, min=0,
              max=16384),
        Input("crop", STRING, "center: cut to the new aspect ratio first.", default="disabled",
              choices=("disabled", "center")),
    )
    outputs = (Output("image", IMAGE, "The resized images."),)

    @classmethod
    def check(cls, values: Mapping[str, Any], settings: Settings) -> Iterable[tuple[str | None, str]]:
        yield from _scale_problems(values)

    def run(self, ctx: RunContext, image: Any, upscale_method: str, width: int, height: int,
            crop: str) -> Any:
        from nodeflow.nodes.diffusion.resample import keep_aspect

        for socket, message in _scale_problems({"width": width, "height": height, "crop": crop}):
            raise NodeInputError(socket or "crop", message)
        old_h, old_w = image.shape[1:3]
        width, height = keep_aspect(width, height, int(old_w), int(old_h), 1)
        return scale_array(image, width, height, upscale_method, crop)


class ImageScaleBy(Node):
    """Scale images by a factor (ComfyUI's ImageScaleBy)."""

    id = "image.ImageScaleBy"
    category = "image"
    inputs = (
        Input("image", IMAGE, "The images to scale."),
        Input("upscale_method", STRING, "Interpolation.", default="nearest-exact",
              choices=IMAGE_SCALE_METHODS),
        Input("scale_by", FLOAT, "The factor.", default=1.0, min=0.01, max=8.0, step=0.01),
    )
    outputs = (Output("image", IMAGE, "The scaled images."),)

    def run(self, ctx: RunContext, image: Any, upscale_method: str, scale_by: float) -> Any:
        old_h, old_w = image.shape[1:3]
        width, height = round(int(old_w) * scale_by), round(int(old_h) * scale_by)
        if width < 1 or height < 1:
            raise NodeInputError("scale_by", f"scale_by {scale_by} shrinks the {old_w}×{old_h} "
                                 "image to nothing", hint="Use a larger factor.")
        return scale_array(image, width, height, upscale_method, "disabled")


class Crop(Node):
    """Cut a rectangle out of images."""

    id = "image.Crop"
    category = "image"
    inputs = (
        Input("image", IMAGE, "The images to crop."),
        Input("x", INT, "Left edge in pixels.", default=0, min=0, max=16384),
        Input("y", INT, "Top edge in pixels.", default=0, min=0, max=16384),
        Input("width", INT, "Width of the rectangle.", default=512, min=1, max=16384),
        Input("height", INT, "Height of the rectangle.", default=512, min=1, max=16384),
    )
    outputs = (Output("image", IMAGE, "The cropped images."),)

    def run(self, ctx: RunContext, image: Any, x: int, y: int, width: int, height: int) -> Any:
        img_h, img_w = image.shape[1:3]
        if x + width > img_w or y + height > img_h:
            socket = "width" if x + width > img_w else "height"
            raise NodeInputError(socket, f"the rectangle x={x}, y={y}, {width}×{height} reaches "
                                 f"outside the {img_w}×{img_h} image",
                                 hint="Make it smaller or move it inside the image.")
        return image[:, y:y + height, x:x + width, :].copy()


BLEND_MODES = ("normal", "multiply", "screen", "add", "difference")


class Blend(Node):
    """Mix two images of the same size: factor 0 gives a, 1 gives b blended by the mode."""

    id = "image.Blend"
    category = "image"
    inputs = (
        Input("a", IMAGE, "The base images."),
        Input("b", IMAGE, "The images blended on top."),
        Input("factor", FLOAT, "How much of the blend to apply.", default=0.5, min=0.0, max=1.0,
              step=0.05),
        Input("mode", STRING, "How b is combined with a.", default="normal", choices=BLEND_MODES),
    )
    outputs = (Output("image", IMAGE, "The mixed images."),)

    def run(self, ctx: RunContext, a: Any, b: Any, factor: float, mode: str) -> Any:
        import numpy as np

        if a.shape[1:] != b.shape[1:]:
            raise NodeInputError("b", f"image b is {b.shape[2]}×{b.shape[1]} but a is "
                                 f"{a.shape[2]}×{a.shape[1]}; blend needs equal sizes",
                                 hint="Put an image.Resize before one of them.")
        if a.shape[0] != b.shape[0] and 1 not in (a.shape[0], b.shape[0]):
            raise NodeInputError("b", f"batch sizes {a.shape[0]} and {b.shape[0]} do not match")
        blended = {
            "normal": lambda: b,
            "multiply": lambda: a * b,
            "screen": lambda: 1.0 - (1.0 - a) * (1.0 - b),
            "add": lambda: np.minimum(a + b, 1.0),
            "difference": lambda: np.abs(a - b),
        }[mode]()
        return (a * (1.0 - factor) + blended * factor).astype(np.float32)


class Invert(Node):
    """Invert the colours of images (1 - value)."""

    id = "image.Invert"
    category = "image"
    inputs = (Input("image", IMAGE, "The images to invert."),)
    outputs = (Output("image", IMAGE, "The inverted images."),)

    def run(self, ctx: RunContext, image: Any) -> Any:
        return (1.0 - image).astype("float32")
