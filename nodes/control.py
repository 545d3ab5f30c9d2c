"""ControlNet preprocessors (controlnet-aux): turn a picture into a control image.

Canny, ContentShuffle and LineartStandard need no weights. The others (HED,
Lineart, OpenPose, Depth) take a folder of annotator weights (a name in the
models folder's annotators/ or an absolute path) and say which file is missing.
Outputs have the input picture's size, whatever resolution the detector works at.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from nodeflow.api import (
    BOOL,
    FLOAT,
    IMAGE,
    INT,
    STRING,
    Input,
    ModelKind,
    Node,
    NodeInputError,
    Output,
    RunContext,
    Settings,
)

RESOLUTION = Input("resolution", INT, "The size (short side, rounded to 64) the detector works at; "
                   "the result is resized back to the picture's size.", default=512, min=64,
                   max=4096, step=64)


def _each_frame(image: Any, detect: Callable[[Any], Any]) -> Any:
    """Run a detector on every picture of an IMAGE batch; results resized to the input's size."""
    import numpy as np
    from PIL import Image

    arr = np.asarray(image, dtype=np.float32)
    out = np.empty_like(arr)
    for i, frame in enumerate(arr):
        pixels = (np.clip(frame, 0.0, 1.0) * 255.0).round().astype(np.uint8)
        result = np.asarray(detect(pixels))
        if result.ndim == 2:
            result = np.repeat(result[..., None], 3, axis=2)
        if result.shape[:2] != frame.shape[:2]:
            result = np.asarray(Image.fromarray(result[..., :3]).resize(
                (frame.shape[1], frame.shape[0]), Image.Resampling.BILINEAR))
        out[i] = result[..., :3].astype(np.float32) / 255.0
    return out


class Canny(Node):
    """Canny edges: white lines on black where the picture has edges."""

    id = "control.Canny"
    category = "control"
    inputs = (
        Input("image", IMAGE, "The picture."),
        Input("low_threshold", INT, "Edges weaker than this are dropped.", default=100, min=0, max=255),
        Input("high_threshold", INT, "Edges stronger than this are always kept.", default=200, min=0,
              max=255),
        RESOLUTION,
    )
    outputs = (Output("image", IMAGE, "The edge map."),)

    @classmethod
    def check(cls, values: Mapping[str, Any], settings: Settings) -> Iterable[tuple[str | None, str]]:
        low, high = values.get("low_threshold"), values.get("high_threshold")
        if isinstance(low, int) and isinstance(high, int) and low > high:
            yield "high_threshold", f"high_threshold ({high}) is below low_threshold ({low})"

    def run(self, ctx: RunContext, image: Any, low_threshold: int, high_threshold: int,
            resolution: int) -> Any:
        from controlnet_aux.canny import CannyDetector

        detector = CannyDetector()
        return _each_frame(image, lambda px: detector(
            px, low_threshold=low_threshold, high_threshold=high_threshold,
            detect_resolution=resolution, image_resolution=resolution, output_type="np"))


class ContentShuffle(Node):
    """Shuffle the picture's content (for the shuffle ControlNet); the seed fixes the shuffle."""

    id = "control.ContentShuffle"
    category = "control"
    inputs = (
        Input("image", IMAGE, "The picture."),
        Input("seed", INT, "Seed of the random warp.", default=0, min=0, max=2**32 - 1, seed=True),
        RESOLUTION,
    )
    outputs = (Output("image", IMAGE, "The shuffled picture."),)

    def run(self, ctx: RunContext, image: Any, seed: int, resolution: int) -> Any:
        import numpy as np
        from controlnet_aux.shuffle import ContentShuffleDetector

        detector = ContentShuffleDetector()
        # The detector draws from numpy's global generator: seed it, and put it back afterwards.
        state = np.random.get_state()
        try:
            np.random.seed(seed)
            return _each_frame(image, lambda px: detector(
                px, detect_resolution=resolution, image_resolution=resolution, output_type="np"))
        finally:
            np.random.set_state(state)


class LineartStandard(Node):
    """Line art by a difference of Gaussians (no weights needed)."""

    id = "control.LineartStandard"
    category = "control"
    inputs = (
        Input("image", IMAGE, "The picture."),
        Input("gaussian_sigma", FLOAT, "Blur radius of the background estimate.", default=6.0,
              min=0.1, max=50.0, step=0.1),
        Input("intensity_threshold", INT, "Darkness below which a line is drawn.", default=8, min=0,
              max=255),
        RESOLUTION,
    )
    outputs = (Output("image", IMAGE, "The line art."),)

    def run(self, ctx: RunContext, image: Any, gaussian_sigma: float, intensity_threshold: int,
            resolution: int) -> Any:
        from controlnet_aux.lineart_standard import LineartStandardDetector

        detector = LineartStandardDetector()
        return _each_frame(image, lambda px: detector(
            px, guassian_sigma=gaussian_sigma, intensity_threshold=intensity_threshold,
            detect_resolution=resolution, output_type="np"))


# Annotators with weights: the files each needs in its folder.
ANNOTATOR_FILES = {
    "hed": ("ControlNetHED.pth",),
    "lineart": ("sk_model.pth", "sk_model2.pth"),
    "openpose": ("body_pose_model.pth", "hand_pose_model.pth", "facenet.pth"),
    "depth": ("dpt_hybrid-midas-501f0c75.pt",),
}
SOURCE = "the ControlNet authors' annotator weights, lllyasviel/Annotators"


def _weights_folder(settings: Settings, name: str) -> Path | None:
    return settings.resolve_path("annotators", name) if name else None


def _missing(folder: Path, files: Iterable[str]) -> list[str]:
    return [f for f in files if not (folder / f).is_file()]


def _check_annotator(values: Mapping[str, Any], settings: Settings,
                     kind: str) -> Iterable[tuple[str | None, str]]:
    name = values.get("path")
    folder = _weights_folder(settings, name) if isinstance(name, str) else None
    if folder is None:
        return
    if not folder.is_dir():
        yield "path", f"{folder} is a file; give the folder that holds {', '.join(ANNOTATOR_FILES[kind])}"
        return
    for missing in _missing(folder, ANNOTATOR_FILES[kind]):
        yield "path", f"{folder} has no {missing}; put it there (from {SOURCE})"


def _annotator_folder(ctx: RunContext, path: str, kind: str) -> Path:
    folder = _weights_folder(ctx.settings, path)
    if folder is None:
        raise NodeInputError("path", ctx.settings.describe_search("annotators", path or "''"))
    if not folder.is_dir():
        raise NodeInputError("path", f"{folder} is a file, not a folder of annotator weights")
    missing = _missing(folder, ANNOTATOR_FILES[kind])
    if missing:
        raise NodeInputError("path", f"{folder} has no {missing[0]}",
                             hint=f"Put {', '.join(missing)} there (from {SOURCE}).")
    return folder


def _state_dict(path: Path) -> Any:
    """Weights without unpickling: safetensors, or torch.load restricted to tensors."""
    import torch

    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable file is the user's to fix
        raise NodeInputError("path", f"cannot read {path}: {exc}",
                             hint="Use the original annotator weights file.") from None


def _load_hed(folder: Path) -> Any:
    from controlnet_aux.hed import ControlNetHED_Apache2, HEDdetector

    net = ControlNetHED_Apache2()
    net.load_state_dict(_state_dict(folder / "ControlNetHED.pth"))
    return HEDdetector(net.float().eval())


def _load_lineart(folder: Path) -> Any:
    from controlnet_aux.lineart import Generator, LineartDetector

    nets = []
    for name in ANNOTATOR_FILES["lineart"]:
        net = Generator(3, 1, 3)
        net.load_state_dict(_state_dict(folder / name))
        nets.append(net.eval())
    return LineartDetector(*nets)


def _load_openpose(folder: Path) -> Any:
    # Body/Hand/Face read their files with torch.load, which loads tensors only
    # (weights_only is torch's default since 2.6, and nodeflow needs a newer torch).
    from controlnet_aux.open_pose import OpenposeDetector

    return OpenposeDetector.from_pretrained(str(folder))


def _load_depth(folder: Path) -> Any:
    from controlnet_aux.midas import MidasDetector

    return MidasDetector.from_pretrained(str(folder))


_LOADERS = {"hed": _load_hed, "lineart": _load_lineart, "openpose": _load_openpose,
            "depth": _load_depth}


def _detector(ctx: RunContext, path: str, kind: str) -> Any:
    folder = _annotator_folder(ctx, path, kind)
    try:
        return ctx.models.load(folder, _LOADERS[kind], kind="annotator", variant=kind)
    except NodeInputError:
        raise
    except ImportError as exc:
        raise NodeInputError("path", f"the {kind} annotator needs a package that is missing: {exc}",
                             hint="Install controlnet-aux with its extras.") from None
    except (OSError, RuntimeError, KeyError, ValueError) as exc:
        raise NodeInputError("path", f"cannot load the {kind} annotator from {folder}: {exc}",
                             hint="Use the original annotator weights files.") from None


def _path_input(kind: str) -> Input:
    return Input("path", STRING, f"Folder of the {kind} annotator weights ("
                 f"{', '.join(ANNOTATOR_FILES[kind])}): a name in the models folder's annotators/ "
                 "or an absolute path.", default="Annotators", path_kind="annotators")


class HED(Node):
    """Soft edges (HED) of a picture."""

    id = "control.HED"
    uses_accelerator = True
    category = "control"
    inputs = (Input("image", IMAGE, "The picture."), _path_input("hed"),
              Input("safe", BOOL, "Quantise the edges (the 'safe' variant).", default=False),
              RESOLUTION)
    outputs = (Output("image", IMAGE, "The soft-edge map."),)

    @classmethod
    def check(cls, values: Mapping[str, Any], settings: Settings) -> Iterable[tuple[str | None, str]]:
        yield from _check_annotator(values, settings, "hed")

    def run(self, ctx: RunContext, image: Any, path: str, safe: bool, resolution: int) -> Any:
        detector = _detector(ctx, path, "hed")
        return _each_frame(image, lambda px: detector(
            px, detect_resolution=resolution, image_resolution=resolution, safe=safe,
            output_type="np"))


class Lineart(Node):
    """Line art drawn by a learned model (realistic, or coarse)."""

    id = "control.Lineart"
    uses_accelerator = True
    category = "control"
    inputs = (Input("image", IMAGE, "The picture."), _path_input("lineart"),
              Input("coarse", BOOL, "Use the coarse model.", default=False), RESOLUTION)
    outputs = (Output("image", IMAGE, "The line art."),)

    @classmethod
    def check(cls, values: Mapping[str, Any], settings: Settings) -> Iterable[tuple[str | None, str]]:
        yield from _check_annotator(values, settings, "lineart")

    def run(self, ctx: RunContext, image: Any, path: str, coarse: bool, resolution: int) -> Any:
        detector = _detector(ctx, path, "lineart")
        return _each_frame(image, lambda px: detector(
            px, coarse=coarse, detect_resolution=resolution, image_resolution=resolution,
            output_type="np"))


class OpenPose(Node):
    """Human pose skeletons (body, optionally hands and face)."""

    id = "control.OpenPose"
    uses_accelerator = True
    category = "control"
    inputs = (Input("image", IMAGE, "The picture."), _path_input("openpose"),
              Input("hands", BOOL, "Also draw hands.", default=False),
              Input("face", BOOL, "Also draw faces.", default=False), RESOLUTION)
    outputs = (Output("image", IMAGE, "The pose map."),)

    @classmethod
    def check(cls, values: Mapping[str, Any], settings: Settings) -> Iterable[tuple[str | None, str]]:
        yield from _check_annotator(values, settings, "openpose")

    def run(self, ctx: RunContext, image: Any, path: str, hands: bool, face: bool,
            resolution: int) -> Any:
        detector = _detector(ctx, path, "openpose")
        return _each_frame(image, lambda px: detector(
            px, detect_resolution=resolution, image_resolution=resolution, include_body=True,
            include_hand=hands, include_face=face, output_type="np"))


class Depth(Node):
    """A depth map (MiDaS): near is bright."""

    id = "control.Depth"
    uses_accelerator = True
    category = "control"
    inputs = (Input("image", IMAGE, "The picture."), _path_input("depth"), RESOLUTION)
    outputs = (Output("image", IMAGE, "The depth map."),)

    @classmethod
    def check(cls, values: Mapping[str, Any], settings: Settings) -> Iterable[tuple[str | None, str]]:
        yield from _check_annotator(values, settings, "depth")

    def run(self, ctx: RunContext, image: Any, path: str, resolution: int) -> Any:
        detector = _detector(ctx, path, "depth")
        return _each_frame(image, lambda px: detector(
            px, detect_resolution=resolution, image_resolution=resolution, output_type="np"))


MODEL_KINDS = [ModelKind("annotators", "ControlNet annotator (preprocessor) folders: hed, lineart, "
                         "openpose and depth weights as controlnet-aux reads them.")]
