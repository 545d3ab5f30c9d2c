"""How cleanly a demo VAE round-trips world pictures, and whether its encoder keeps a "register" cell.

For each VAE folder given (default: the shipped ``nodeflow-shapes/vae``), on ``--n`` held-out
world scenes (30% outlined, seed ``--seed``; training never draws from that stream):

- reconstruction error, encoded with the posterior's mode and decoded, in 0..255 per pixel
  (the mean over the three colour channels of |decoded - original|): the mean over all
  pixels, the worst 1% (per picture, the mean of its worst 1% of pixels, averaged over the
  pictures) and the largest single pixel;
- the edge error: the mean error on pixels within a pixel of a change of colour (what a soft
  edge costs; ``training.train_vae.edge_loss`` trains on it), and the flat error: the mean
  error on pixels 3 or more pixels away from any edge (faint marks, a frame, a colour cast);
- the blemish figures: per picture, the largest error at a pixel 3 or more pixels away from
  any edge (where the original is one colour all around, so a soft edge does not count),
  averaged over the pictures, and the fraction of pictures where it exceeds 24/255 (a
  blotch one sees);
- the latent outlier figure: per picture and latent channel, how far the most extreme
  latent cell lies from that channel's mean over the picture, in that channel's standard
  deviations; the largest over the channels, averaged over the pictures;
- the overshoot figure (``training.train_vae.overshoot``): how far the most extreme cell
  lies off the line between the codes of the picture's two colours (the mean latents of
  its plain cells, well inside the shape or the background), in channel standard
  deviations over the set, averaged over the pictures that have plain cells of both
  colours.  A cell coding something far from any mix of the two colours is what the
  decoder draws as a blemish;
- for a centred yellow circle on blue (the demo prompt's picture): each channel's most
  extreme cell against the channel's mean, and the reconstruction error there.

``--crops out.png`` writes the circle, each VAE's decoding and its error (x4, white is
255/4 or more), 4x enlarged, above a 8x enlargement of the circle's top-right quarter.

Usage: python bench/vae_blemish.py [VAE_DIR [VAE_DIR]] [--n 128] [--seed 4242]
       [--crops crops.png] [--json out.json] [--threads 1]
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from training import common as C  # noqa: E402
from training import world  # noqa: E402

SHIPPED = C.DEFAULT_OUT / "vae"
CIRCLE = world.Scene("circle", "yellow", "blue", 0.5, 0.5, 0.25)
BLEMISH = 24.0  # /255: an error this big away from any edge is a visible blotch


def load(folder: Path):
    from diffusers import AutoencoderKL

    if not (Path(folder) / "config.json").is_file():
        raise SystemExit(f"{folder}: not a VAE folder (no config.json); give a diffusers AutoencoderKL folder")
    return AutoencoderKL.from_pretrained(folder).float().eval()


def round_trip(vae, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(decoded uint8-range float pictures (n, 64, 64, 3), latent modes (n, 4, 16, 16))."""
    import torch

    x = torch.from_numpy(images).permute(0, 3, 1, 2).float().div(127.5).sub(1.0)
    recs, lats = [], []
    with torch.no_grad():
        for i in range(0, len(x), 32):
            z = vae.encode(x[i : i + 32]).latent_dist.mode()
            rec = vae.decode(z).sample.clamp(-1, 1)
            recs.append(((rec + 1) * 127.5).permute(0, 2, 3, 1).numpy())
            lats.append(z.numpy())
    return np.concatenate(recs), np.concatenate(lats)


def outlier_figure(lat: np.ndarray) -> float:
    """Mean over pictures of the largest distance of a cell from its channel's mean over the
    picture, in that channel's standard deviations over the picture."""
    n, c = lat.shape[:2]
    flat = lat.reshape(n, c, -1)
    dist = np.abs(flat - flat.mean(-1, keepdims=True)) / (flat.std(-1, keepdims=True) + 1e-6)
    return float(dist.max(axis=(1, 2)).mean())


def overshoot_figure(lat: np.ndarray, images: np.ndarray) -> float:
    """Mean, over the pictures with plain cells of two colours, of the largest overshoot."""
    import torch

    from training.train_vae import overshoot, to_tensor

    worst = overshoot(torch.from_numpy(lat), to_tensor(images)).flatten(1).amax(1).numpy()
    return float(worst[worst > 0].mean()) if (worst > 0).any() else 0.0


def errors(images: np.ndarray, recs: np.ndarray) -> np.ndarray:
    """Per-pixel error in 0..255 (mean over colour channels), (n, 64, 64)."""
    return np.abs(recs - images.astype(np.float32)).mean(-1)


def flat_mask(images: np.ndarray, radius: int = 3) -> np.ndarray:
    """Pixels of uint8 pictures (n, 64, 64, 3) whose (2 * radius + 1)-square neighbourhood is
    one colour (within 2/255 per channel): (n, 64, 64) bool."""
    from training.train_vae import flat_pixels, to_tensor

    return flat_pixels(to_tensor(images), radius, tol=2.5 / 127.5).numpy()


def measure(vae, images: np.ndarray) -> dict:
    recs, lat = round_trip(vae, images)
    err = errors(images, recs)
    per = err.reshape(len(err), -1)
    k = max(1, per.shape[1] // 100)
    worst = np.sort(per, axis=1)[:, -k:].mean(1)
    flat = flat_mask(images)
    flat_worst = np.where(flat, err, 0).reshape(len(err), -1).max(1)
    edge = ~flat_mask(images, radius=1)
    return {
        "edge_error": float(err[edge].mean()),
        "flat_error": float(err[flat].mean()),
        "blemish_error": float(flat_worst.mean()),
        "blemished_pictures": float((flat_worst > BLEMISH).mean()),
        "mean_error": float(err.mean()),
        "worst1pct_error": float(worst.mean()),
        "max_error": float(err.max()),
        "latent_outlier_std": outlier_figure(lat),
        "latent_overshoot_std": overshoot_figure(lat, images),
    }


def circle_report(vae) -> tuple[np.ndarray, np.ndarray, list[str]]:
    img = world.render_array(CIRCLE, 64)[None]
    rec, lat = round_trip(vae, img)
    err = errors(img, rec)[0]
    lines = []
    for ch in range(lat.shape[1]):
        m = lat[0, ch]
        lo = np.unravel_index(int(m.argmin()), m.shape)
        hi = np.unravel_index(int(m.argmax()), m.shape)
        lines.append(f"    channel {ch}: mean {m.mean():+.2f} std {m.std():.2f}; min {m[lo]:+.2f} at cell "
                     f"({lo[0]},{lo[1]}), max {m[hi]:+.2f} at cell ({hi[0]},{hi[1]})")
    cells = err.reshape(16, 4, 16, 4).mean((1, 3))
    y, x = np.unravel_index(int(cells.argmax()), cells.shape)
    angle = np.degrees(np.arctan2(-(4 * y + 2 - 32), 4 * x + 2 - 32))
    lines.append(f"    worst cell ({y},{x}) ({angle:.0f} deg from the centre, 0 = right, 90 = up): "
                 f"error {cells[y, x]:.1f}/255; worst pixel {err.max():.1f}/255; mean {err.mean():.2f}/255")
    return rec[0], err, lines


def write_crops(path: Path, vaes: list, names: list[str]) -> None:
    from PIL import Image, ImageDraw

    img = world.render_array(CIRCLE, 64)
    tiles = [("original", img.astype(np.float32))]
    for vae, name in zip(vaes, names, strict=True):
        rec, err, _ = circle_report(vae)
        tiles.append((name, rec))
        tiles.append((f"{name} error x4", np.repeat(np.clip(err * 4, 0, 255)[..., None], 3, -1)))
    cell, label = 256, 14
    sheet = Image.new("RGB", (cell * len(tiles), 2 * (cell + label)), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    for i, (name, arr) in enumerate(tiles):
        pic = Image.fromarray(np.clip(arr + 0.5, 0, 255).astype(np.uint8))
        whole = pic.resize((cell, cell), Image.Resampling.NEAREST)
        quarter = pic.crop((32, 0, 64, 32)).resize((cell, cell), Image.Resampling.NEAREST)
        draw.text((i * cell + 3, 1), name[:40], fill=(0, 0, 0))
        sheet.paste(whole, (i * cell, label))
        draw.text((i * cell + 3, cell + label + 1), "top-right quarter", fill=(0, 0, 0))
        sheet.paste(quarter, (i * cell, cell + 2 * label))
    path.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(path)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("vaes", nargs="*", help=f"VAE folders (default: the shipped one, {SHIPPED})")
    ap.add_argument("--n", type=int, default=128, help="held-out scenes")
    ap.add_argument("--seed", type=int, default=4242)
    ap.add_argument("--crops", default="", help="write the centred circle's before/after crops to this PNG")
    ap.add_argument("--json", default="", help="also write the figures here")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    import torch

    torch.set_num_threads(max(1, args.threads))
    folders = [Path(v) for v in (args.vaes or [str(SHIPPED)])]
    vaes = [load(f) for f in folders]
    names = [f"{f.parent.name}/{f.name}" for f in folders]
    images, _, _ = world.dataset(args.n, args.seed, outlined=0.3)
    results = {}
    print(f"{args.n} held-out world scenes (seed {args.seed}); errors in /255 per pixel")
    print(f"{'VAE':40s} {'mean':>6s} {'edge':>6s} {'flat':>6s} {'worst1%':>8s} {'max':>6s} {'blemish':>8s} "
          f"{'blotched':>8s} {'outlier':>8s} {'overshoot':>9s}")
    for vae, name, folder in zip(vaes, names, folders, strict=True):
        r = measure(vae, images)
        results[str(folder)] = r
        print(f"{name[:40]:40s} {r['mean_error']:6.2f} {r['edge_error']:6.1f} {r['flat_error']:6.2f} "
              f"{r['worst1pct_error']:8.1f} {r['max_error']:6.1f} "
              f"{r['blemish_error']:8.1f} {r['blemished_pictures']:8.0%} "
              f"{r['latent_outlier_std']:8.2f} {r['latent_overshoot_std']:9.2f}")
    for vae, name in zip(vaes, names, strict=True):
        print(f"centred yellow circle on blue, {name}:")
        for line in circle_report(vae)[2]:
            print(line)
    if args.crops:
        write_crops(Path(args.crops), vaes, names)
        print(f"crops: {args.crops}")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
