"""Geometric / colour checks for images of the demo world, and a model evaluation.

:func:`analyse` looks at one 64x64 RGB image and estimates the background
colour (from the border pixels), the shape's colour (from pixels that differ
clearly from the background) and the kind of shape (from the mask's
solidity = area / convex-hull area, which separates the star from the convex
shapes, and its fill ratio = area / bounding-box area, which orders square >
circle > triangle).

    python -m nodeflow.demo.evaluate --model DIR --n 64 --seed 777

generates one image per prompt (captions of unseen random scenes) with the
diffusers ``StableDiffusionPipeline`` in ``DIR`` and reports accuracies.
``--world`` runs the same checks on ground-truth renders instead (a sanity
check of the analyser itself).
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import argparse
import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from . import world

_PAL_NAMES = list(world.PALETTE)
_PAL = np.array([world.PALETTE[c] for c in _PAL_NAMES], dtype=np.float32)


def nearest_colour(rgb) -> str:
    d = ((_PAL - np.asarray(rgb, np.float32)) ** 2).sum(-1)
    return _PAL_NAMES[int(np.argmin(d))]


@dataclass
class Analysis:
    background: str
    colour: str | None
    shape: str | None
    area: int
    fill: float  # area / bbox area
    solidity: float  # area / convex hull area
    bbox: tuple[int, int, int, int] | None


def _largest_component(mask: np.ndarray) -> np.ndarray:
    from scipy import ndimage

    lab, n = ndimage.label(mask)
    if n <= 1:
        return mask
    sizes = ndimage.sum(mask, lab, index=range(1, n + 1))
    return lab == (1 + int(np.argmax(sizes)))


def _hull_area(mask: np.ndarray) -> float:
    from scipy.spatial import ConvexHull

    ys, xs = np.nonzero(mask)
    # use pixel corners so a filled square's hull equals its area
    pts = np.concatenate([np.stack([xs + dx, ys + dy], 1) for dx in (0, 1) for dy in (0, 1)])
    try:
        return float(ConvexHull(pts).volume)
    except Exception:
        return float(mask.sum())


def classify_mask(mask: np.ndarray) -> tuple[str | None, float, float]:
    """(shape, fill ratio, solidity) of a binary mask."""
    area = int(mask.sum())
    if area < 20:
        return None, 0.0, 0.0
    ys, xs = np.nonzero(mask)
    bbox_area = float((xs.max() - xs.min() + 1) * (ys.max() - ys.min() + 1))
    fill = area / bbox_area
    solidity = area / max(1.0, _hull_area(mask))
    if solidity < 0.78:
        shape = "star"
    elif fill > 0.89:
        shape = "square"
    elif fill > 0.64:
        shape = "circle"
    else:
        shape = "triangle"
    return shape, fill, solidity


def analyse(img) -> Analysis:
    """Estimate background colour, shape colour and shape kind of a 64x64 image."""
    a = np.asarray(img.convert("RGB") if hasattr(img, "convert") else img).astype(np.float32)
    border = np.concatenate([a[:2].reshape(-1, 3), a[-2:].reshape(-1, 3), a[:, :2].reshape(-1, 3), a[:, -2:].reshape(-1, 3)])
    bg_rgb = np.median(border, axis=0)
    background = nearest_colour(bg_rgb)
    dist = np.sqrt(((a - bg_rgb) ** 2).sum(-1))
    # pixels clearly different from the background; threshold at half of the
    # strongest contrast present (robust to blurred edges), at least 40
    strong = np.percentile(dist, 99.5)
    mask = dist > max(40.0, 0.5 * strong)
    mask = _largest_component(mask)
    if mask.sum() < 20:
        return Analysis(background, None, None, int(mask.sum()), 0.0, 0.0, None)
    core = dist > max(40.0, 0.75 * strong)
    core &= mask
    pix = a[core] if core.sum() >= 5 else a[mask]
    colour = nearest_colour(np.median(pix, axis=0))
    shape, fill, solidity = classify_mask(mask)
    ys, xs = np.nonzero(mask)
    bbox = (int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1)
    return Analysis(background, colour, shape, int(mask.sum()), round(fill, 3), round(solidity, 3), bbox)


def prompts(n: int, seed: int) -> list[world.Scene]:
    """``n`` scenes from an unseen seed, balanced over shapes."""
    rng = np.random.default_rng(seed)
    return [world.sample_scene(rng, shape=world.SHAPES[i % len(world.SHAPES)]) for i in range(n)]


def score(scenes, images) -> dict:
    res = {"colour": 0, "background": 0, "shape": 0, "all": 0, "n": len(scenes)}
    per_shape: dict[str, list[int]] = {s: [0, 0] for s in world.SHAPES}
    rows = []
    for s, im in zip(scenes, images):
        an = analyse(im)
        ok_c, ok_b, ok_s = an.colour == s.colour, an.background == s.background, an.shape == s.shape
        res["colour"] += ok_c
        res["background"] += ok_b
        res["shape"] += ok_s
        res["all"] += ok_c and ok_b and ok_s
        per_shape[s.shape][0] += ok_s
        per_shape[s.shape][1] += 1
        rows.append({"prompt": world.caption(s), **asdict(an)})
    n = max(1, len(scenes))
    acc: dict = {k: res[k] / n for k in ("colour", "background", "shape", "all")}
    acc["per_shape"] = {k: v[0] / max(1, v[1]) for k, v in per_shape.items()}
    acc["n"] = len(scenes)
    return {"accuracy": acc, "rows": rows}


def load_pipeline(model: str | Path):
    import torch
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline.from_pretrained(str(model), safety_checker=None, dtype=torch.float32, local_files_only=True)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def generate(pipe, texts: list[str], seed: int, steps: int = 25, guidance: float = 7.5, guidance_rescale: float = 0.0, batch: int = 16):
    import torch

    images = []
    for i in range(0, len(texts), batch):
        chunk = texts[i : i + batch]
        gens = [torch.Generator().manual_seed(seed + i + j) for j in range(len(chunk))]
        out = pipe(chunk, num_inference_steps=steps, guidance_scale=guidance, guidance_rescale=guidance_rescale, generator=gens, height=64, width=64)
        images += out.images
    return images


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=str(Path(__file__).parent / "models" / "checkpoints" / "nodeflow-shapes"))
    ap.add_argument("--n", type=int, default=64)
    ap.add_argument("--seed", type=int, default=777)
    ap.add_argument("--steps", type=int, default=25)
    ap.add_argument("--guidance", type=float, default=7.5)
    ap.add_argument("--rescale", type=float, default=0.0, help="guidance_rescale")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--world", action="store_true", help="check the analyser on ground-truth renders")
    ap.add_argument("--grid", default="", help="save a grid PNG of the images here")
    ap.add_argument("--json", default="", help="save the per-image results here")
    args = ap.parse_args(argv)
    scenes = prompts(args.n, args.seed)
    t0 = time.time()
    if args.world:
        images = [world.render(s) for s in scenes]
    else:
        import torch

        torch.set_num_threads(args.threads)
        pipe = load_pipeline(args.model)
        images = generate(pipe, [world.caption(s) for s in scenes], args.seed, args.steps, args.guidance, args.rescale)
    dt = time.time() - t0
    result = score(scenes, images)
    result["seconds"] = round(dt, 1)
    result["settings"] = {k: getattr(args, k) for k in ("model", "n", "seed", "steps", "guidance", "rescale", "world")}
    print(json.dumps({"accuracy": result["accuracy"], "seconds": result["seconds"]}, indent=2))
    if args.grid:
        world.grid(images, 8).save(args.grid)
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
