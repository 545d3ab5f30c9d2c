"""The UPSCALE_MODEL value: a spandrel super-resolution model and what a tiler needs to know.

Loading never unpickles arbitrary objects: ``.safetensors`` files are read with
safetensors and ``.pth``/``.ckpt``/``.bin`` files with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nodeflow.api import ModelError, safetensors_header

WEIGHT_SUFFIXES = (".pth", ".safetensors", ".ckpt", ".bin", ".pt")


@dataclass
class UpscaleModel:
    """A single-image super-resolution model loaded by spandrel."""

    descriptor: Any
    """The ``spandrel.ImageModelDescriptor``; calling it upscales one (1, C, H, W) tensor."""
    path: str
    architecture: str
    scale: int
    input_channels: int
    output_channels: int
    minimum: int = 0
    """Smallest width and height the model accepts, in pixels."""
    multiple_of: int = 1
    """Width and height are padded up to a multiple of this (spandrel does the padding)."""
    square: bool = False
    tiling: str = "supported"
    """spandrel's advice: 'supported', 'discouraged' or 'internal' (the model tiles itself)."""
    tags: list[str] = field(default_factory=list)

    @property
    def module(self) -> Any:
        return self.descriptor.model

    @property
    def dtype(self) -> Any:
        return self.descriptor.dtype

    # The model manager sizes and places models through these.
    def parameters(self) -> Any:
        return self.module.parameters()

    def buffers(self) -> Any:
        return self.module.buffers()

    def to(self, *args: Any, **kwargs: Any) -> UpscaleModel:
        self.descriptor.to(*args, **kwargs)
        return self

    def describe(self) -> str:
        tags = f" ({', '.join(self.tags)})" if self.tags else ""
        return f"{self.architecture}{tags}, {self.scale}x"

    def __repr__(self) -> str:
        return f"UpscaleModel({self.describe()}, {Path(self.path).name})"


def load_upscale_model(path: Path, dtype: Any = None) -> UpscaleModel:
    """Load a super-resolution model file with spandrel; ModelError if it is not one."""
    import spandrel
    import torch

    state_dict = read_state_dict(path)
    try:
        descriptor = spandrel.ModelLoader().load_from_state_dict(state_dict)
    except spandrel.UnsupportedModelError:
        raise ModelError(
            f"{path} is not a model architecture spandrel recognises",
            hint="Use an ESRGAN/Real-ESRGAN, SwinIR, HAT, DAT, Compact, ... upscaler file.") from None
    except (KeyError, RuntimeError, ValueError, AssertionError, IndexError) as exc:
        raise ModelError(f"{path} looks like a {_guess_arch(state_dict)} model but its weights "
                         f"do not fit that architecture ({type(exc).__name__}: {exc})",
                         hint="The file may be damaged or a variant spandrel does not support.") from None
    arch = descriptor.architecture.name
    if not isinstance(descriptor, spandrel.ImageModelDescriptor):
        raise ModelError(f"{path} is a {arch} {descriptor.purpose.lower()} model, not a "
                         "super-resolution model (it needs a mask as well as an image)",
                         hint="Load an upscaler (ESRGAN, SwinIR, HAT, ...) instead.")
    if descriptor.purpose != "SR":
        what = {"Restoration": "restoration (denoise/deblur/JPEG) model that keeps the size",
                "FaceSR": "face restoration model"}.get(descriptor.purpose, descriptor.purpose)
        raise ModelError(f"{path} is a {arch} {what}, not a single-image super-resolution model",
                         hint="Load an upscaler with a scale of 2x or more.")
    channels = (descriptor.input_channels, descriptor.output_channels)
    if channels not in ((3, 3), (1, 1)):
        raise ModelError(f"{path} is a {arch} model for {channels[0]}-channel input and "
                         f"{channels[1]}-channel output; nodeflow upscales RGB or greyscale images")
    if dtype is not None and dtype != torch.float32:
        supported = (descriptor.supports_half if dtype == torch.float16
                     else descriptor.supports_bfloat16 if dtype == torch.bfloat16 else False)
        if supported:
            descriptor.to(dtype)
    descriptor.eval()
    req = descriptor.size_requirements
    return UpscaleModel(
        descriptor=descriptor, path=str(path), architecture=arch, scale=int(descriptor.scale),
        input_channels=descriptor.input_channels, output_channels=descriptor.output_channels,
        minimum=int(req.minimum), multiple_of=int(req.multiple_of), square=bool(req.square),
        tiling=descriptor.tiling.name.lower(), tags=list(descriptor.tags))


def read_state_dict(path: Path) -> dict[str, Any]:
    """The tensors of a weights file, read without unpickling arbitrary objects."""
    import pickle

    import torch

    suffix = path.suffix.lower()
    if suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(path), device="cpu")
        except (SafetensorError, OSError, ValueError) as exc:
            raise ModelError(f"{path} is not a readable safetensors file ({exc})") from None
    if suffix not in WEIGHT_SUFFIXES:
        raise ModelError(f"{path} is not a weights file nodeflow can read",
                         hint="Use a .pth or .safetensors file.")
    try:
        loaded = torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise ModelError(
            f"{path} contains Python objects other than tensors; nodeflow does not unpickle them "
            f"because that can run arbitrary code ({str(exc).splitlines()[0]})",
            hint="Convert it to .safetensors, or save only the state dict.") from None
    except (RuntimeError, OSError, EOFError, ValueError) as exc:
        raise ModelError(f"{path} is not a readable PyTorch weights file ({exc})") from None
    if not isinstance(loaded, dict):
        raise ModelError(f"{path} holds a {type(loaded).__name__}, not a dictionary of weights")
    import spandrel

    state = spandrel.canonicalize_state_dict(loaded)
    if not any(isinstance(v, torch.Tensor) for v in state.values()):
        raise ModelError(f"{path} holds no tensors")
    return state


def _guess_arch(state_dict: dict[str, Any]) -> str:
    import spandrel

    for support in spandrel.MAIN_REGISTRY.architectures("detection"):
        try:
            if support.detect(state_dict):
                return support.architecture.name
        except Exception:  # noqa: BLE001 - a guess for a message only
            continue
    return "known"


# Torch-free inspection, used by validation.

# Tensor-name prefixes of files that are something else entirely, for a message that says what.
_OTHER_KINDS = (
    ("model.diffusion_model.", "a Stable Diffusion checkpoint", "checkpoints"),
    ("first_stage_model.", "a Stable Diffusion checkpoint", "checkpoints"),
    ("lora_unet_", "a LoRA", "loras"),
    ("control_model.", "a ControlNet", "controlnet"),
    ("controlnet_", "a ControlNet", "controlnet"),
    ("quantize.embedding.", "a VQ image tokenizer", "tokenizers"),
    ("encoder.down_blocks.", "a VAE", "vae"),
    ("encoder.down.", "a VAE", "vae"),
    ("down_blocks.", "a diffusion UNet", "checkpoints"),
)


def describe_other_kind(keys: list[str]) -> tuple[str, str] | None:
    """(what it is, the models folder it belongs in) for well-known non-upscaler files."""
    for prefix, what, folder in _OTHER_KINDS:
        if any(k.startswith(prefix) or f".{prefix}" in k for k in keys[:2000]):
            return what, folder
    if any(".lora_" in k or ".lora." in k for k in keys[:2000]):
        return "a LoRA", "loras"
    return None


def check_weights_file(path: Path) -> str | None:
    """Why ``path`` cannot be an upscaler file, from its name and header alone; None if it may be."""
    if path.is_dir():
        return (f"{path} is a folder; an upscaler is a single .pth or .safetensors file")
    suffix = path.suffix.lower()
    if suffix not in WEIGHT_SUFFIXES:
        return f"{path.name} is not a weights file (expected .pth or .safetensors)"
    try:
        if suffix == ".safetensors":
            keys = list(safetensors_header(path))
            if not keys:
                return f"{path.name} holds no tensors"
            other = describe_other_kind(keys)
            if other:
                return (f"{path.name} is {other[0]}, not an upscaler; "
                        f"it belongs in the '{other[1]}' folder and its own loader")
            return None
        with open(path, "rb") as f:
            magic = f.read(4)
    except ValueError as exc:
        return f"{path.name} is not a valid safetensors file: {exc}"
    except OSError as exc:
        return f"cannot read {path}: {exc.strerror or exc}"
    # torch.save writes a zip archive; very old files are a bare pickle (protocol 2+).
    if magic[:2] != b"PK" and magic[:1] != b"\x80":
        return f"{path.name} is not a PyTorch weights file"
    return None
