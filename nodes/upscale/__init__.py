"""Learned upscalers: GAN and transformer super-resolution models loaded through spandrel.

Memory estimate (before a run): the model, sized from its file, plus for a tile of T×T
input pixels about ``UPSCALE_ACTIVATION_FACTOR`` × scale × T² × bytes per number (an
ESRGAN 4x with 512-pixel tiles in fp32: about 4.8 GB), when the image size is known
before the run. The upscaler halves its tiles when memory runs out, so only the
smallest tile has to fit.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from nodeflow.api import (
    DTYPE_BYTES,
    IMAGE,
    INT,
    STRING,
    EstimateContext,
    Input,
    MemoryEstimate,
    ModelError,
    ModelKind,
    Node,
    NodeInputError,
    Output,
    RunContext,
    Settings,
    SocketType,
    ValueEstimate,
)

UPSCALE_MODEL = SocketType(
    "UPSCALE_MODEL", color="#ba68c8",
    description="A single-image super-resolution model (ESRGAN, SwinIR, HAT, ...) with its "
    "scale, architecture and input size requirements.")

DEFAULT_TILE = 512
FALLBACK_TILE = 512
"""Where the whole-image mode (tile 0) starts tiling when memory runs out."""
UPSCALE_ACTIVATION_FACTOR = 3 * 384
"""Bytes of activations per input pixel of a tile, per unit of scale and per byte of the dtype
(ComfyUI's figure for spandrel models: generous for small architectures)."""
SMALLEST_TILE = 16
"""The smallest tile the upscaler falls back to."""


class LoadModel(Node):
    """Load a super-resolution model (ESRGAN/Real-ESRGAN, SwinIR, HAT, DAT, Compact, ...)
    from a .pth or .safetensors file. The architecture and scale are detected from the weights."""

    id = "upscale.LoadModel"
    category = "upscale"
    inputs = (
        Input("path", STRING, "The model file, in the 'upscale' folder of a models folder or an "
              "absolute path.", path_kind="upscale"),
    )
    outputs = (
        Output("upscale_model", UPSCALE_MODEL, "The loaded model."),
        Output("scale", INT, "How many times larger the model makes an image."),
        Output("architecture", STRING, "The detected architecture, e.g. 'ESRGAN (64nf, 23nb), 4x'."),
    )

    @classmethod
    def check(cls, values: Mapping[str, Any], settings: Settings) -> Iterable[tuple[str | None, str]]:
        from nodeflow.nodes.upscale.model import check_weights_file

        path = values.get("path")
        if isinstance(path, str) and path:
            found = settings.resolve_path("upscale", path)
            if found is not None:
                problem = check_weights_file(found)
                if problem:
                    yield ("path", problem)

    @classmethod
    def estimate_memory(cls, values: Mapping[str, Any], upstream: Mapping[str, ValueEstimate],
                        ctx: EstimateContext) -> MemoryEstimate | None:
        """The model sized from its file, in the dtype it loads in."""
        from nodeflow.api import estimate_file_bytes

        path = values.get("path")
        found = ctx.settings.resolve_path("upscale", path) if isinstance(path, str) and path else None
        if found is None:
            return None
        dtype = ctx.dtype("upscale")
        try:
            size = estimate_file_bytes(found, dtype)
        except (OSError, ValueError, ModelError):
            return None
        model = ValueEstimate({found.name: size}, {"itemsize": DTYPE_BYTES[dtype]})
        return MemoryEstimate(dict(model.models), outputs={"upscale_model": model})

    def run(self, ctx: RunContext, path: str) -> Any:
        from nodeflow.nodes.upscale.model import check_weights_file, load_upscale_model

        found = ctx.settings.resolve_path("upscale", path)
        if found is None:
            raise NodeInputError("path", ctx.settings.describe_search("upscale", path))
        problem = check_weights_file(found)
        if problem:
            raise NodeInputError("path", problem)
        dtype = ctx.models.dtype("upscale")
        try:
            model = ctx.models.load(found, lambda p: load_upscale_model(p, dtype), kind="upscale",
                                    variant=str(dtype))
        except ModelError as exc:
            raise NodeInputError("path", exc.message, hint=exc.hint) from None
        return {"upscale_model": model, "scale": model.scale, "architecture": model.describe()}


class Upscale(Node):
    """Upscale images with a super-resolution model, in overlapping tiles blended without seams.

    Memory use is that of one tile (plus the input and output images), whatever the
    image size. When memory runs out the tile size is halved and the image is redone.
    """

    id = "upscale.Upscale"
    uses_accelerator = True
    category = "upscale"
    inputs = (
        Input("upscale_model", UPSCALE_MODEL, "The model, from upscale.LoadModel."),
        Input("image", IMAGE, "The images to upscale."),
        Input("tile", INT, "Largest tile side in input pixels (tiles are evened out to cover the "
              "image with as few as possible); 0 runs the whole image at once.",
              default=DEFAULT_TILE, min=0, max=8192, step=8),
        Input("overlap", INT, "How many input pixels neighbouring tiles share and blend over.",
              default=32, min=0, max=1024, step=4),
    )
    outputs = (Output("image", IMAGE, "The upscaled images, `scale` times larger."),)

    @classmethod
    def check(cls, values: Mapping[str, Any], settings: Settings) -> Iterable[tuple[str | None, str]]:
        tile, overlap = values.get("tile"), values.get("overlap")
        if isinstance(tile, int) and isinstance(overlap, int) and 0 < tile <= overlap:
            yield ("tile", f"tile {tile} must be larger than overlap {overlap}; make the tile "
                   "bigger (or the overlap smaller), or use 0 for the whole image")

    @classmethod
    def estimate_memory(cls, values: Mapping[str, Any], upstream: Mapping[str, ValueEstimate],
                        ctx: EstimateContext) -> MemoryEstimate | None:
        """The model, and one tile's activations when the image size is known (see the module
        docstring; the scale is taken as 4 before the model is read)."""
        model = upstream.get("upscale_model")
        if model is None:
            return None
        image = upstream.get("image")
        dims = image.dims() if image is not None else None
        tile = values.get("tile")
        if dims is None or not isinstance(tile, int):
            return MemoryEstimate(dict(model.models))
        width, height, batch = dims
        scale = int(model.info.get("scale", 4))
        per_pixel = UPSCALE_ACTIVATION_FACTOR * scale * int(model.info.get("itemsize", 4))
        side = tile if tile > 0 else max(width, height)
        outputs = {}
        if "scale" in model.info:  # only a known scale gives the output's size
            outputs["image"] = ValueEstimate(info={"width": width * scale, "height": height * scale,
                                                   "batch": batch})
        return MemoryEstimate(
            dict(model.models), per_pixel * min(side, width) * min(side, height),
            min_activations=per_pixel * min(SMALLEST_TILE, width) * min(SMALLEST_TILE, height),
            outputs=outputs,
            note=f"{min(side, width)}×{min(side, height)} tiles" if tile > 0 else f"{width}×{height}")

    def run(self, ctx: RunContext, upscale_model: Any, image: Any, tile: int, overlap: int) -> Any:
        import numpy as np

        from nodeflow.nodes.upscale.model import UpscaleModel
        from nodeflow.nodes.upscale.tiling import is_out_of_memory, smaller_tile, tile_count, upscale_tiled

        model = upscale_model
        if not isinstance(model, UpscaleModel):
            raise NodeInputError("upscale_model", f"expected an upscale model, got {type(model).__name__}")
        if 0 < tile <= overlap:
            raise NodeInputError("tile", f"tile {tile} must be larger than overlap {overlap}")
        batch, height, width = image.shape[:3]
        if min(height, width) < model.minimum:
            raise NodeInputError(
                "image", f"the image is {width}×{height} but this {model.architecture} model needs "
                f"at least {model.minimum}×{model.minimum} pixels",
                hint="Enlarge it first (image.ResizeBy) or use another model.")
        if 0 < tile < model.minimum:
            raise NodeInputError("tile", f"tile {tile} is smaller than the {model.minimum} pixels "
                                 f"this {model.architecture} model needs; use {model.minimum} or more")
        if tile > 0 and model.multiple_of > 1:
            tile = max(model.multiple_of, tile // model.multiple_of * model.multiple_of)
        scale = model.scale
        out = np.zeros((batch, height * scale, width * scale, 3), dtype=np.float32)

        with ctx.models.use(model) as device:
            run_tile = _tile_runner(model, device)
            b = 0
            while b < batch:
                total = batch * tile_count(height, width, tile if tile > 0 else max(height, width),
                                           overlap)
                done = b * (total // batch)

                try:
                    upscale_tiled(run_tile, image[b], out[b], scale, tile, overlap,
                                  _ticker(ctx, done, total), model.multiple_of)
                except Exception as exc:
                    if not is_out_of_memory(exc):
                        raise
                    current = tile if tile > 0 else min(FALLBACK_TILE * 2, max(height, width))
                    new = smaller_tile(current, model.minimum, model.multiple_of)
                    _free_device_memory(device)
                    if new is None:
                        raise NodeInputError(
                            "tile", f"out of memory even with {current}×{current} tiles",
                            hint="Free memory (close other programs or models) or use a smaller "
                            "model.") from None
                    tile = new
                    overlap = min(overlap, tile // 4)
                    ctx.progress(done, total, f"out of memory; retrying with {tile}×{tile} tiles")
                    continue
                b += 1
        return out


def _ticker(ctx: RunContext, done: int, total: int) -> Any:
    """A callback reporting one more finished tile each call (also a cancellation point)."""
    count = done

    def tick() -> None:
        nonlocal count
        count += 1
        ctx.progress(count, total)

    return tick


def _tile_runner(model: Any, device: str) -> Any:
    """A function that upscales one (h, w, 3) numpy tile with the model on ``device``."""
    import numpy as np
    import torch

    from nodeflow.nodes.upscale.tiling import to_tile_output

    dtype = model.dtype
    grey = model.input_channels == 1

    def run_tile(tile: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(np.ascontiguousarray(tile.transpose(2, 0, 1)))[None]
        if grey:
            weights = torch.tensor([0.299, 0.587, 0.114], dtype=x.dtype).view(1, 3, 1, 1)
            x = (x * weights).sum(dim=1, keepdim=True)
        x = x.to(device=device, dtype=dtype)
        return to_tile_output(model.descriptor(x).to(device="cpu", dtype=torch.float32))

    return run_tile


def _free_device_memory(device: str) -> None:
    import gc

    gc.collect()
    if device.startswith("cuda"):
        import torch

        torch.cuda.empty_cache()


NODES = [LoadModel, Upscale]
MODEL_KINDS = [ModelKind("upscale", "Upscaler models (ESRGAN, SwinIR... through spandrel).",
                         suffixes=(".safetensors", ".pth", ".pt", ".ckpt", ".bin"),
                         folders=("upscale", "upscale_models"))]
__all__ = ["UPSCALE_MODEL", "LoadModel", "Upscale", "NODES", "MODEL_KINDS"]
