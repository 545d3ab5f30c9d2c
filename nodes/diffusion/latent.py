"""Latent nodes: empty latents, VAE encode/decode (with a tiled mode), inpainting masks, resizing.

Memory estimates (before a run): encoding or decoding W×H pixels keeps about
``VAE_ACTIVATION_FACTOR`` feature maps of the VAE's full-resolution width alive at
once, so it needs about 12 × channels × W × H × batch × bytes per number (SD's VAE,
128 channels, fp32: about 1.6 GB per 512×512 image, 6.4 GB at 1024×1024). Measured
on the CPU with the demo VAE: 10 to 14 such maps. A tiled pass needs that for one tile
(the VAE's sample size) plus the assembled pictures.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import replace
from typing import Any

from nodeflow.api import (
    BOOL,
    FLOAT,
    IMAGE,
    INT,
    MASK,
    STRING,
    EstimateContext,
    Input,
    MemoryEstimate,
    Node,
    NodeInputError,
    Output,
    RunContext,
    Settings,
    ValueEstimate,
)
from nodeflow.nodes.diffusion.resample import CROPS, LATENT_METHODS, keep_aspect
from nodeflow.nodes.diffusion.types import LATENT, VAE, Autoencoder, EncodedImage, Latent

MULTIPLE = 8
VAE_ACTIVATION_FACTOR = 12
"""Feature maps of the VAE's full-resolution width alive at once while it encodes or decodes."""


def _dims(upstream: Mapping[str, ValueEstimate], socket: str) -> tuple[int, int, int] | None:
    value = upstream.get(socket)
    return value.dims() if value is not None else None


def vae_activations(vae: ValueEstimate, width: int, height: int, batch: int, tiled: bool) -> int:
    """Rough working memory of a VAE encode or decode of ``batch`` pictures of width×height."""
    channels = int(vae.info.get("channels", 128))
    itemsize = int(vae.info.get("itemsize", 4))
    area = width * height
    extra = 0
    if tiled:
        tile = int(vae.info.get("tile", 512))
        area = min(width, tile) * min(height, tile)
        extra = 2 * 3 * width * height * batch * itemsize  # the tiles' pictures and the assembled one
    return VAE_ACTIVATION_FACTOR * channels * area * batch * itemsize + extra


def _vae_estimate(vae: ValueEstimate | None, dims: tuple[int, int, int] | None, tiled: Any,
                  output: str) -> MemoryEstimate | None:
    if vae is None:
        return None
    if dims is None:
        return MemoryEstimate(dict(vae.models))
    width, height, batch = dims
    tiled = tiled is True
    return MemoryEstimate(
        dict(vae.models), vae_activations(vae, width, height, batch, tiled),
        outputs={output: ValueEstimate(info={"width": width, "height": height, "batch": batch})},
        note=f"{width}×{height}, batch {batch}{', tiled' if tiled else ''}")


def _size_problems(values: Mapping[str, Any]) -> Iterable[tuple[str | None, str]]:
    for name in ("width", "height"):
        value = values.get(name)
        if isinstance(value, int) and value % MULTIPLE:
            lower = value - value % MULTIPLE
            yield name, (f"{name} {value} is not divisible by {MULTIPLE}; the autoencoder works on "
                         f"blocks of {MULTIPLE} pixels. Use {lower or MULTIPLE} or {lower + MULTIPLE}")


def empty_latent_estimate(values: Mapping[str, Any]) -> MemoryEstimate | None:
    """An empty latent's estimate: no memory of its own, its size carried to the sampler and
    decoder (None while width, height or batch are not known)."""
    dims = {k: values.get(k) for k in ("width", "height", "batch")}
    if not all(isinstance(v, int) for v in dims.values()):
        return None
    return MemoryEstimate(outputs={"latent": ValueEstimate(info=dims)})


class EmptyLatent(Node):
    """An empty latent of a size: the starting point of text-to-image (the sampler fills it with
    seeded noise)."""

    id = "diffusion.EmptyLatent"
    category = "diffusion/latent"
    inputs = (
        Input("width", INT, "Image width in pixels (a multiple of 8).", default=512, min=8,
              max=8192, step=8),
        Input("height", INT, "Image height in pixels (a multiple of 8).", default=512, min=8,
              max=8192, step=8),
        Input("batch", INT, "How many images to make at once.", default=1, min=1, max=64),
    )
    outputs = (Output("latent", LATENT, "The empty latent."),)

    @classmethod
    def check(cls, values: Mapping[str, Any], settings: Settings) -> Iterable[tuple[str | None, str]]:
        yield from _size_problems(values)

    @classmethod
    def estimate_memory(cls, values: Mapping[str, Any], upstream: Mapping[str, ValueEstimate],
                        ctx: EstimateContext) -> MemoryEstimate | None:
        """Needs nothing; tells the sampler and decoder the size."""
        return empty_latent_estimate(values)

    def run(self, ctx: RunContext, width: int, height: int, batch: int) -> Any:
        for socket, message in _size_problems({"width": width, "height": height}):
            raise NodeInputError(socket or "width", message)
        return Latent(width=width, height=height, batch=batch)


def image_to_pixels(image: Any) -> Any:
    """IMAGE (batch, h, w, 3) in [0, 1] → tensor (batch, 3, h, w) in [-1, 1], as diffusers does."""
    import numpy as np
    import torch

    arr = np.asarray(image, dtype=np.float32)
    pixels = torch.from_numpy(np.ascontiguousarray(arr.transpose(0, 3, 1, 2)))
    return 2.0 * pixels - 1.0


def pixels_to_image(pixels: Any) -> Any:
    """Decoder output in [-1, 1] → IMAGE in [0, 1], as diffusers' image processor computes it."""
    out = (pixels / 2 + 0.5).clamp(0, 1)
    return out.cpu().permute(0, 2, 3, 1).float().numpy()


def to_model_space(vae: Any, latents: Any) -> Any:
    """Encoder latents → the scaled latents the UNet works on."""
    config = vae.config
    mean = getattr(config, "latents_mean", None)
    std = getattr(config, "latents_std", None)
    if mean is not None and std is not None:
        import torch

        m = torch.tensor(mean).view(1, -1, 1, 1).to(latents)
        s = torch.tensor(std).view(1, -1, 1, 1).to(latents)
        return (latents - m) * config.scaling_factor / s
    return config.scaling_factor * latents


def from_model_space(vae: Any, latents: Any) -> Any:
    """The UNet's scaled latents → what the decoder takes."""
    config = vae.config
    mean = getattr(config, "latents_mean", None)
    std = getattr(config, "latents_std", None)
    if mean is not None and std is not None:
        import torch

        m = torch.tensor(mean).view(1, -1, 1, 1).to(latents)
        s = torch.tensor(std).view(1, -1, 1, 1).to(latents)
        return latents * s / config.scaling_factor + m
    return latents / config.scaling_factor


def encode_pixels(autoencoder: Autoencoder, pixels: Any, tiled: bool) -> Any:
    """The encoder's latent distribution of pixels in [-1, 1]."""
    import torch

    vae = autoencoder.vae
    with torch.no_grad():
        pixels = pixels.to(device=vae.device, dtype=vae.dtype)
        if tiled:
            if hasattr(vae, "_tiled_encode"):  # what encode() itself calls when tiling is on
                from diffusers.models.autoencoders.vae import DiagonalGaussianDistribution

                return DiagonalGaussianDistribution(vae._tiled_encode(pixels))
            return vae.tiled_encode(pixels).latent_dist
        return vae.encode(pixels).latent_dist


class VAEEncode(Node):
    """Encode images into latents (for image-to-image and inpainting). The encoder's distribution
    is sampled later by the sampler, with its seed."""

    id = "diffusion.VAEEncode"
    uses_accelerator = True
    category = "diffusion/latent"
    inputs = (
        Input("vae", VAE, "The autoencoder."),
        Input("image", IMAGE, "The images to encode (width and height multiples of 8)."),
        Input("tiled", BOOL, "Encode in overlapping tiles to save memory on large images.",
              default=False),
    )
    outputs = (Output("latent", LATENT, "The encoded latents."),)

    @classmethod
    def estimate_memory(cls, values: Mapping[str, Any], upstream: Mapping[str, ValueEstimate],
                        ctx: EstimateContext) -> MemoryEstimate | None:
        """The VAE, and its activations when the image size is known before the run."""
        return _vae_estimate(upstream.get("vae"), _dims(upstream, "image"), values.get("tiled"),
                             "latent")

    def run(self, ctx: RunContext, vae: Autoencoder, image: Any, tiled: bool) -> Any:
        import torch

        batch, height, width = image.shape[:3]
        for name, value in (("width", width), ("height", height)):
            if value % MULTIPLE:
                raise NodeInputError("image", f"the image {name} {value} is not divisible by "
                                     f"{MULTIPLE}", hint="Resize or crop it first (image.Resize).")
        pixels = image_to_pixels(image)
        with ctx.models.use(vae.vae):
            dist = encode_pixels(vae, pixels, tiled)
            with torch.no_grad():
                samples = to_model_space(vae.vae, dist.mode())
        return Latent(width=int(width), height=int(height), batch=int(batch), samples=samples,
                      encoded=EncodedImage(pixels, dist, vae, tiled))


class VAEDecode(Node):
    """Decode latents into images."""

    id = "diffusion.VAEDecode"
    uses_accelerator = True
    category = "diffusion/latent"
    inputs = (
        Input("vae", VAE, "The autoencoder."),
        Input("latent", LATENT, "The latents to decode (from a sampler)."),
        Input("tiled", BOOL, "Decode in overlapping tiles to save memory on large images.",
              default=False),
    )
    outputs = (Output("image", IMAGE, "The decoded images."),)

    @classmethod
    def estimate_memory(cls, values: Mapping[str, Any], upstream: Mapping[str, ValueEstimate],
                        ctx: EstimateContext) -> MemoryEstimate | None:
        """The VAE, and its activations at the latent's size (see the module docstring)."""
        return _vae_estimate(upstream.get("vae"), _dims(upstream, "latent"), values.get("tiled"),
                             "image")

    def run(self, ctx: RunContext, vae: Autoencoder, latent: Latent, tiled: bool) -> Any:
        import torch

        if latent.is_empty:
            raise NodeInputError("latent", "this latent is empty: there is nothing to decode yet",
                                 hint="Run it through diffusion.Sample first.")
        model = vae.vae
        with ctx.models.use(model), torch.no_grad():
            z = from_model_space(model, latent.samples.to(device=model.device, dtype=model.dtype))
            if tiled:
                pixels = model.tiled_decode(z, return_dict=False)[0]
            else:
                pixels = model.decode(z, return_dict=False)[0]
        return pixels_to_image(pixels)


class SetLatentMask(Node):
    """Mark the area of an encoded image to repaint (inpainting): 1 = change, 0 = keep. Works with
    regular checkpoints (the kept area is restored every step) and with 9-channel inpainting ones."""

    id = "diffusion.SetLatentMask"
    category = "diffusion/latent"
    inputs = (
        Input("latent", LATENT, "The encoded picture (from VAEEncode)."),
        Input("mask", MASK, "The area to repaint, at the picture's size."),
    )
    outputs = (Output("latent", LATENT, "The latent with its inpainting mask."),)

    def run(self, ctx: RunContext, latent: Latent, mask: Any) -> Any:
        import numpy as np

        if latent.encoded is None:
            raise NodeInputError("latent", "inpainting needs the encoded picture, but this latent "
                                 "did not come from VAEEncode",
                                 hint="Connect diffusion.VAEEncode's output here.")
        arr = np.asarray(mask, dtype=np.float32)
        if arr.ndim == 2:
            arr = arr[None]
        if arr.shape[1:] != (latent.height, latent.width):
            raise NodeInputError("mask", f"the mask is {arr.shape[2]}×{arr.shape[1]} but the picture "
                                 f"is {latent.width}×{latent.height}",
                                 hint="Resize the mask to the picture's size.")
        return replace(latent, mask=arr)


def latent_scale(latent: Latent) -> int:
    """Pixels per latent cell: from the samples when there are any, else the usual 8."""
    if latent.samples is not None and latent.samples.shape[-1]:
        return max(1, latent.width // int(latent.samples.shape[-1]))
    return MULTIPLE


def resized_latent(latent: Latent, width: int, height: int, method: str, crop: str) -> Latent:
    """The latent at width×height pixels. An empty latent just changes size; samples are resized
    (the encoded picture and any inpainting mask are dropped: they no longer fit)."""
    from nodeflow.nodes.diffusion.resample import resize

    if latent.is_empty:
        return replace(latent, width=width, height=height)
    scale = latent_scale(latent)
    samples = resize(latent.samples, width // scale, height // scale, method, crop)
    return replace(latent, width=width, height=height, samples=samples, encoded=None, mask=None)


def _upscale_problems(values: Mapping[str, Any]) -> Iterable[tuple[str | None, str]]:
    for name in ("width", "height"):
        value = values.get(name)
        if isinstance(value, int) and value % MULTIPLE:
            lower = value - value % MULTIPLE
            yield name, (f"{name} {value} is not divisible by {MULTIPLE}; latents have one cell per "
                         f"{MULTIPLE} pixels. Use {lower or MULTIPLE} or {lower + MULTIPLE} (0 keeps "
                         "the aspect ratio)")
    if values.get("crop") == "center" and 0 in (values.get("width"), values.get("height")):
        yield "crop", "crop 'center' needs both width and height; 0 already keeps the aspect ratio"


class LatentUpscale(Node):
    """Resize latents to a size in pixels (ComfyUI's LatentUpscale): the middle step of a two-pass
    "hires fix". Width or height 0 follows the other, keeping the aspect ratio."""

    id = "diffusion.LatentUpscale"
    category = "diffusion/latent"
    inputs = (
        Input("latent", LATENT, "The latents to resize (e.g. from a first sampler)."),
        Input("upscale_method", STRING, "How latent cells are interpolated; bislerp keeps the "
              "latents' statistics best.", default="nearest-exact", choices=LATENT_METHODS),
        Input("width", INT, "New width in pixels (a multiple of 8; 0: keep the aspect ratio).",
              default=1024, min=0, max=16384, step=8),
        Input("height", INT, "New height in pixels (a multiple of 8; 0: keep the aspect ratio).",
              default=1024, min=0, max=16384, step=8),
        Input("crop", STRING, "center: cut the latents to the new aspect ratio first.",
              default="disabled", choices=CROPS),
    )
    outputs = (Output("latent", LATENT, "The resized latents."),)

    @classmethod
    def check(cls, values: Mapping[str, Any], settings: Settings) -> Iterable[tuple[str | None, str]]:
        yield from _upscale_problems(values)

    def run(self, ctx: RunContext, latent: Latent, upscale_method: str, width: int, height: int,
            crop: str) -> Any:
        for socket, message in _upscale_problems({"width": width, "height": height, "crop": crop}):
            raise NodeInputError(socket or "width", message)
        width, height = keep_aspect(width, height, latent.width, latent.height, MULTIPLE)
        return resized_latent(latent, width, height, upscale_method, crop)


class LatentUpscaleBy(Node):
    """Scale latents by a factor (ComfyUI's LatentUpscaleBy); the size is rounded to whole latent
    cells."""

    id = "diffusion.LatentUpscaleBy"
    category = "diffusion/latent"
    inputs = (
        Input("latent", LATENT, "The latents to scale."),
        Input("upscale_method", STRING, "How latent cells are interpolated.",
              default="nearest-exact", choices=LATENT_METHODS),
        Input("scale_by", FLOAT, "The factor.", default=1.5, min=0.01, max=8.0, step=0.01),
    )
    outputs = (Output("latent", LATENT, "The scaled latents."),)

    def run(self, ctx: RunContext, latent: Latent, upscale_method: str, scale_by: float) -> Any:
        scale = latent_scale(latent)
        cells_w = round(latent.width // scale * scale_by)
        cells_h = round(latent.height // scale * scale_by)
        if cells_w < 1 or cells_h < 1:
            raise NodeInputError("scale_by", f"scale_by {scale_by} shrinks the {latent.width}×"
                                 f"{latent.height} latent to nothing", hint="Use a larger factor.")
        return resized_latent(latent, cells_w * scale, cells_h * scale, upscale_method, "disabled")


def _with_parameters(encoded: EncodedImage, pixels: Any, parameters: Any) -> EncodedImage:
    from diffusers.models.autoencoders.vae import DiagonalGaussianDistribution

    return replace(encoded, pixels=pixels, dist=DiagonalGaussianDistribution(parameters))


def encode_repeat(encoded: EncodedImage, times: int) -> EncodedImage:
    """An encoded batch repeated ``times`` (pictures and the encoder's distribution)."""
    return _with_parameters(encoded, encoded.pixels.repeat(times, 1, 1, 1),
                            encoded.dist.parameters.repeat(times, 1, 1, 1))


def encode_slice(encoded: EncodedImage, start: int, end: int) -> EncodedImage:
    """Pictures start..end of an encoded batch."""
    return _with_parameters(encoded, encoded.pixels[start:end], encoded.dist.parameters[start:end])
