"""Quality metrics for the demo LoRA ("outlined" style) and the demo edge ControlNet.

Two per-image metrics on 64x64 RGB pictures of the procedural world (PIL images
or uint8 arrays):

* :func:`outlined_fraction` -- how hollow the shape is: ~0 for a filled shape,
  ~1 for an outlined one.
* :func:`edge_iou` -- how well the picture's shape covers the ground-truth
  filled shape of a scene (the ControlNet's job: put the shape where the
  edges say).

and two model evaluations that generate with diffusers pipelines on ``n``
scenes of an unseen seed (balanced over shapes, as :func:`evaluate.prompts`):

* :func:`lora_sweep` -- the base pipeline plus the LoRA at several strengths,
  prompted with the outlined captions.
* :func:`controlnet_eval` -- ``StableDiffusionControlNetPipeline`` fed the
  scenes' edge maps, with and without captions, at several conditioning scales.

    python -m training.control_eval --lora FILE --controlnet DIR --n 16

prints both as one JSON table (``--world`` adds the metrics of ground-truth
renders, the ceiling to compare with).
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import argparse
import json
import math
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from . import evaluate, world
from .common import MODELS

if TYPE_CHECKING:
    import torch
    from PIL import Image

DEFAULT_BASE = MODELS / "checkpoints" / "nodeflow-shapes"
DEFAULT_LORA = MODELS / "loras" / "nodeflow-shapes-outlined.safetensors"
DEFAULT_CONTROLNET = MODELS / "controlnet" / "nodeflow-shapes-edges"
EVAL_SEED = 777  # unseen by every training stream
INTERIOR_PX = world.OUTLINE_PX + 1.5  # interior = farther than this from the shape's edge
MIN_INTERIOR = 4  # fewer interior pixels than this: too small to tell (NaN)


# --------------------------------------------------------------------------- metrics


def _rgb(image: Any) -> np.ndarray:
    """float32 (H, W, 3) in 0..255 of a PIL image, a uint8 array or a float array in [0, 1]."""
    if hasattr(image, "convert"):
        image = image.convert("RGB")
    a = np.asarray(image)
    if a.ndim == 2:
        a = np.repeat(a[..., None], 3, -1)
    out = a[..., :3].astype(np.float32)
    if a.dtype.kind == "f" and out.size and float(out.max()) <= 1.0:
        out = np.clip(out, 0.0, 1.0) * 255.0  # a node's IMAGE (floats in [0, 1])
    return out


def _detect(a: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """(mask, background rgb, shape rgb) as :func:`evaluate.analyse` finds them.

    ``mask`` is the largest component of the pixels clearly differing from the
    background (the border's median colour); for an outlined shape that is the
    outline ring.  ``shape rgb`` is None when no shape was found.
    """
    border = np.concatenate([a[:2].reshape(-1, 3), a[-2:].reshape(-1, 3), a[:, :2].reshape(-1, 3), a[:, -2:].reshape(-1, 3)])
    bg = np.median(border, axis=0)
    dist = np.sqrt(((a - bg) ** 2).sum(-1))
    strong = np.percentile(dist, 99.5)
    mask = evaluate._largest_component(dist > max(40.0, 0.5 * strong))
    if mask.sum() < 20:
        return mask, bg, None
    core = mask & (dist > max(40.0, 0.75 * strong))
    fg = np.median(a[core] if core.sum() >= 5 else a[mask], axis=0)
    return mask, bg, fg


def _filled(mask: np.ndarray) -> np.ndarray:
    """The region a (possibly hollow, possibly slightly broken) shape mask encloses."""
    from scipy import ndimage

    if not mask.any():
        return mask
    closed = ndimage.binary_closing(mask, iterations=2, border_value=0) | mask
    return evaluate._largest_component(ndimage.binary_fill_holes(closed))


def outlined_fraction(image: Any, scene: world.Scene | None = None, *, locate: bool = True) -> float:
    """How outlined (hollow) the shape in a 64x64 picture is: ~0 filled, ~1 outlined.

    The shape's interior is the region farther than ``OUTLINE_PX + 1.5`` pixels
    from its edge; the result is the fraction of interior pixels whose colour is
    closer to the background colour than to the shape colour (both estimated
    from the picture, as :func:`evaluate.analyse` does: the border's median, and
    the median of the pixels that clearly differ from it).

    The region is the picture's own shape (the detected shape or outline with
    its holes filled) when ``locate`` is true -- needed for text-to-image
    results, whose shape is anywhere -- and the ``scene``'s ground-truth filled
    shape when ``locate`` is false (for position-controlled results).

    Returns NaN when it cannot tell: no shape found, or an interior of fewer than
    4 pixels (a small star or triangle whose outline fills it).  Average with
    ``np.nanmean``.
    """
    from scipy import ndimage

    a = _rgb(image)
    mask, bg, fg = _detect(a)
    if fg is None:
        return math.nan
    if locate or scene is None:
        region = _filled(mask)
    else:
        region = world.shape_mask(scene, a.shape[0])
    interior = ndimage.distance_transform_edt(np.pad(region, 1))[1:-1, 1:-1] > INTERIOR_PX
    if interior.sum() < MIN_INTERIOR:
        return math.nan
    pix = a[interior]
    d_bg = ((pix - bg) ** 2).sum(-1)
    d_fg = ((pix - fg) ** 2).sum(-1)
    return float((d_bg < d_fg).mean())


def hollowness(image: Any) -> float:
    """How much of the shape's outer hull is not drawn: 1 - area / convex-hull area of
    the largest patch of shape colour (NaN when no shape is found).

    Unlike :func:`outlined_fraction` it needs no closed interior, so it also counts
    an outline that is broken open, or one around a small shape.  On the world's
    renders (medians): filled circles, squares and triangles 0.00-0.06, filled
    stars 0.41; outlined circles and squares 0.47, outlined triangles 0.19 (the
    outline fills most of a small triangle); an outlined star scores like a
    filled one (0.44), so stars do not tell.  Averaged over the four shapes:
    0.13 filled, 0.39 outlined.
    """
    a = _rgb(image)
    mask, _, fg = _detect(a)
    if fg is None:
        return math.nan
    return float(1.0 - mask.sum() / max(1.0, evaluate._hull_area(mask)))


def image_mask(image: Any) -> np.ndarray:
    """bool (H, W): the picture's shape as :func:`evaluate.analyse` finds it, holes filled."""
    a = _rgb(image)
    mask, _, fg = _detect(a)
    if fg is None:
        return np.zeros(a.shape[:2], bool)
    return _filled(mask)


def edge_iou(image: Any, scene: world.Scene) -> float:
    """IoU of the picture's shape mask and the ``scene``'s ground-truth filled shape.

    The picture's mask is the largest component of pixels clearly differing from
    the background (as :func:`evaluate.analyse`), holes filled; 0 when nothing
    is found.
    """
    m = image_mask(image)
    gt = world.shape_mask(scene, m.shape[0])
    union = int((m | gt).sum())
    return float((m & gt).sum() / union) if union else 0.0


# --------------------------------------------------------------------------- generation


def _scheduler(pipe: Any) -> None:
    from diffusers import DDIMScheduler

    pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config)
    pipe.set_progress_bar_config(disable=True)


def load_pipeline(base: Any = DEFAULT_BASE) -> Any:
    """A ``StableDiffusionPipeline`` (fp32, DDIM from the shipped scheduler config) from a path,
    or ``base`` itself when it already is a pipeline."""
    if not isinstance(base, (str, os.PathLike)):
        return base
    import torch
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline.from_pretrained(str(base), safety_checker=None, requires_safety_checker=False, dtype=torch.float32, local_files_only=True)
    _scheduler(pipe)
    return pipe


def _generators(seed: int, n: int) -> list[torch.Generator]:
    import torch

    return [torch.Generator().manual_seed(seed + i) for i in range(n)]


def _colour_scores(scenes: Sequence[world.Scene], images: Sequence[Image.Image]) -> dict[str, float]:
    an = [evaluate.analyse(im) for im in images]
    n = max(1, len(scenes))
    return {
        "colour": sum(a.colour == s.colour for a, s in zip(an, scenes)) / n,
        "background": sum(a.background == s.background for a, s in zip(an, scenes)) / n,
    }


def _nanmean(xs: Iterable[float]) -> float | None:
    xs = [x for x in xs if not math.isnan(x)]
    return round(float(np.mean(xs)), 4) if xs else None


def lora_sweep(
    base: Any = DEFAULT_BASE,
    lora: str | Path = DEFAULT_LORA,
    n: int = 16,
    seed: int = EVAL_SEED,
    strengths: Sequence[float] = (0.0, 0.5, 1.0),
    steps: int = 20,
    guidance: float = 7.5,
    batch: int = 16,
    return_images: bool = False,
) -> dict:
    """Generate ``n`` pictures per LoRA strength and measure how outlined they are.

    ``base``: a pipeline folder or a loaded ``StableDiffusionPipeline`` (the LoRA
    is loaded into it as adapter ``"outline"`` and unloaded again afterwards).
    Prompts are ``world.caption(scene, outlined=True)`` of ``evaluate.prompts(n,
    seed)``; every strength uses the same generator seeds (paired comparison).
    The strength is applied to the UNet and the text encoder alike
    (``pipe.set_adapters``).

    Returns ``{"n", "strengths": {"0.0": {"outlined_fraction", "colour",
    "background", "measured", "hollowness"}, ...}}`` where ``outlined_fraction`` is
    the nanmean over the pictures it could be measured on (``measured`` of them),
    ``hollowness`` the mean :func:`hollowness` of the pictures with a shape, and
    ``colour``/``background`` the accuracies of :func:`evaluate.analyse` (the
    LoRA should keep them).  With ``return_images`` also ``"images"``:
    strength -> list of PIL images.
    """
    pipe = load_pipeline(base)
    scenes = evaluate.prompts(n, seed)
    texts = [world.caption(s, outlined=True) for s in scenes]
    pipe.load_lora_weights(str(lora), adapter_name="outline")
    out: dict = {"n": n, "seed": seed, "steps": steps, "guidance": guidance, "strengths": {}}
    images_by: dict = {}
    try:
        for s in strengths:
            pipe.set_adapters(["outline"], adapter_weights=[float(s)])
            images = []
            for i in range(0, n, batch):
                chunk = texts[i : i + batch]
                images += pipe(chunk, num_inference_steps=steps, guidance_scale=guidance, generator=_generators(seed + i, len(chunk)), height=64, width=64).images
            fr = [outlined_fraction(im, sc) for im, sc in zip(images, scenes)]
            row = {"outlined_fraction": _nanmean(fr), "measured": sum(not math.isnan(x) for x in fr),
                   "hollowness": _nanmean([hollowness(im) for im in images])}
            row.update(_colour_scores(scenes, images))
            out["strengths"][str(float(s))] = row
            images_by[str(float(s))] = images
    finally:
        pipe.delete_adapters(["outline"])
    if return_images:
        out["images"] = images_by
    return out


def load_controlnet_pipeline(base: Any = DEFAULT_BASE, controlnet: Any = DEFAULT_CONTROLNET) -> Any:
    """A ``StableDiffusionControlNetPipeline`` from the base pipeline (path or pipeline) and a
    ControlNet folder (or a loaded ``ControlNetModel``)."""
    import torch
    from diffusers import ControlNetModel, StableDiffusionControlNetPipeline

    pipe = load_pipeline(base)
    if isinstance(controlnet, (str, os.PathLike)):
        controlnet = ControlNetModel.from_pretrained(str(controlnet), dtype=torch.float32, local_files_only=True)
    parts = {k: v for k, v in pipe.components.items() if k in ("vae", "text_encoder", "tokenizer", "unet", "scheduler")}
    cpipe = StableDiffusionControlNetPipeline(**parts, controlnet=controlnet.float().eval(), safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    _scheduler(cpipe)
    return cpipe


def controlnet_eval(
    base: Any = DEFAULT_BASE,
    controlnet: Any = DEFAULT_CONTROLNET,
    n: int = 16,
    seed: int = EVAL_SEED,
    scales: Sequence[float] = (0.0, 1.0),
    prompts: Sequence[str] = ("caption", "empty"),
    steps: int = 20,
    guidance: float = 7.5,
    batch: int = 16,
    return_images: bool = False,
) -> dict:
    """Generate ``n`` pictures from the edge maps of unseen scenes and measure where the shape is.

    ``base``: pipeline folder or ``StableDiffusionPipeline``; ``controlnet``:
    ControlNet folder or ``ControlNetModel``.  For every conditioning scale in
    ``scales`` (0 = the base model alone, the baseline) and every prompt mode
    (``"caption"``: the scene's caption; ``"empty"``: no prompt) the result has
    ``{"edge_iou", "colour", "background"}`` (means over the ``n`` pictures; the
    colours only mean something with captions), keyed ``"caption@1.0"`` etc.
    Same generator seeds for every setting.
    """
    pipe = load_controlnet_pipeline(base, controlnet)
    scenes = evaluate.prompts(n, seed)
    edges = [world.edge_map(s) for s in scenes]
    out: dict = {"n": n, "seed": seed, "steps": steps, "guidance": guidance, "settings": {}}
    images_by: dict = {}
    for mode in prompts:
        if mode not in ("caption", "empty"):
            raise ValueError(f"prompt mode {mode!r}: expected 'caption' or 'empty'")
        texts = [world.caption(s) if mode == "caption" else "" for s in scenes]
        for scale in scales:
            images = []
            for i in range(0, n, batch):
                chunk = texts[i : i + batch]
                images += pipe(chunk, image=edges[i : i + batch], controlnet_conditioning_scale=float(scale), num_inference_steps=steps, guidance_scale=guidance, generator=_generators(seed + i, len(chunk)), height=64, width=64).images
            row = {"edge_iou": round(float(np.mean([edge_iou(im, s) for im, s in zip(images, scenes)])), 4)}
            row.update(_colour_scores(scenes, images))
            key = f"{mode}@{float(scale)}"
            out["settings"][key] = row
            images_by[key] = images
    if return_images:
        out["images"] = images_by
    return out


def world_reference(n: int = 16, seed: int = EVAL_SEED) -> dict:
    """The metrics of ground-truth renders (filled and outlined) of the evaluation scenes."""
    scenes = evaluate.prompts(n, seed)
    return {
        "outlined_fraction": {
            "filled": _nanmean([outlined_fraction(world.render(s), s) for s in scenes]),
            "outlined": _nanmean([outlined_fraction(world.render(s, outlined=True), s) for s in scenes]),
        },
        "edge_iou": {
            "filled": round(float(np.mean([edge_iou(world.render(s), s) for s in scenes])), 4),
            "other_scene": round(float(np.mean([edge_iou(world.render(s), scenes[(i + 1) % n]) for i, s in enumerate(scenes)])), 4),
        },
    }


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--base", default=str(DEFAULT_BASE), help="the base StableDiffusionPipeline folder")
    ap.add_argument("--lora", default="", help="LoRA .safetensors to sweep ('' = skip)")
    ap.add_argument("--controlnet", default="", help="ControlNet folder to evaluate ('' = skip)")
    ap.add_argument("--n", type=int, default=16)
    ap.add_argument("--seed", type=int, default=EVAL_SEED)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--guidance", type=float, default=7.5)
    ap.add_argument("--strengths", default="0,0.5,1", help="LoRA strengths, comma separated")
    ap.add_argument("--scales", default="0,1", help="ControlNet conditioning scales, comma separated")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--world", action="store_true", help="also report the metrics of ground-truth renders")
    ap.add_argument("--grid", default="", help="save grids of the pictures as PREFIX-<setting>.png")
    args = ap.parse_args(argv)
    import torch

    torch.set_num_threads(max(1, args.threads))
    result: dict = {}
    t0 = time.time()
    if args.world:
        result["world"] = world_reference(args.n, args.seed)
    pipe = None
    if args.lora:
        pipe = load_pipeline(args.base)
        strengths = [float(x) for x in args.strengths.split(",")]
        r = lora_sweep(pipe, args.lora, args.n, args.seed, strengths, args.steps, args.guidance, return_images=bool(args.grid))
        for key, images in r.pop("images", {}).items():
            world.grid(images, 8).save(f"{args.grid}-lora-{key}.png")
        result["lora"] = r
    if args.controlnet:
        scales = [float(x) for x in args.scales.split(",")]
        r = controlnet_eval(pipe or args.base, args.controlnet, args.n, args.seed, scales, steps=args.steps, guidance=args.guidance, return_images=bool(args.grid))
        for key, images in r.pop("images", {}).items():
            world.grid(images, 8).save(f"{args.grid}-controlnet-{key}.png")
        result["controlnet"] = r
    result["seconds"] = round(time.time() - t0, 1)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
