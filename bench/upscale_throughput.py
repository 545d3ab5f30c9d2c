"""Upscaler throughput and memory: upscale.Upscale against calling spandrel directly.

Prints, for a Real-ESRGAN Compact 4x (realesr-general-x4v3 size) and a small ESRGAN 4x:
megapixels/s (of input) of spandrel's own call, of the node untiled and of the node
tiled, the median ratio of node time to spandrel time over repeats, the largest
difference between the tiled and the untiled output, and peak RSS of upscaling a
2048×2048 image 4x in a fresh process with a small 4x model (tiled node, also with glibc's
mmap threshold pinned so freed tiles go back to the system, vs spandrel's untiled call),
against "output buffer + what one tile costs". Memory is the peak resident size above the
resident size just before the call (the kernel's peak counter is reset there: the peak of
importing torch is not a baseline). Linux only.
Optionally writes a picture of the tiling error on a test pattern (--seam-png).

Usage: python bench/upscale_throughput.py [--size 128] [--repeats 7] [--no-memory]
       [--seam-png seams.png]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def make_models(folder: Path) -> dict[str, Path]:
    import torch
    from safetensors.torch import save_file
    from spandrel.architectures.Compact import Compact
    from spandrel.architectures.ESRGAN import ESRGAN

    torch.manual_seed(0)
    models = {
        "compact-64nf-16nc-4x": Compact(num_in_ch=3, num_out_ch=3, num_feat=64, num_conv=16, upscale=4),
        "esrgan-16nf-2nb-4x": ESRGAN(in_nc=3, out_nc=3, num_filters=16, num_blocks=2, scale=4),
        # Small ones for the 2048×2048 memory runs (the buffers, not the model, are the point).
        "compact-16nf-4nc-4x": Compact(num_in_ch=3, num_out_ch=3, num_feat=16, num_conv=4, upscale=4),
        "esrgan-8nf-1nb-4x": ESRGAN(in_nc=3, out_nc=3, num_filters=8, num_blocks=1, scale=4),
    }
    paths = {}
    for name, model in models.items():
        with torch.no_grad():
            for p in model.parameters():  # keep activations in a sensible range
                p.mul_(0.5)
        paths[name] = folder / "upscale" / f"{name}.safetensors"
        paths[name].parent.mkdir(parents=True, exist_ok=True)
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(paths[name]))
    return paths


# CPU time of this process: on a shared machine it is far steadier than wall time, and with
# one torch thread it is the same quantity.
CLOCK = time.process_time
THROUGHPUT_MODELS = ("compact-64nf-16nc-4x", "esrgan-16nf-2nb-4x")
MEMORY_MODELS = ("compact-16nf-4nc-4x", "esrgan-8nf-1nb-4x")


class Ctx:
    def __init__(self, settings):
        from nodeflow.models import ModelManager

        self.node_id, self.settings, self.models = "bench", settings, ModelManager()

    def progress(self, *a, **k):
        pass

    def check_cancelled(self):
        pass


def pattern(size: int) -> np.ndarray:
    y, x = np.mgrid[0:size, 0:size].astype(np.float32)
    img = np.stack([0.5 + 0.4 * np.sin(x / 5) * np.cos(y / 9),
                    ((x // 8 + y // 8) % 2) * 0.6 + 0.2, x / size], -1)
    return img[None].astype(np.float32)


def seam_picture(paths: dict[str, Path], out_png: Path) -> None:
    """Tiled-minus-untiled error maps on a test pattern: naive cut tiles vs feathered overlap."""
    import torch
    from PIL import Image

    from nodeflow.nodes.upscale import LoadModel, Upscale
    from nodeflow.settings import Settings

    torch.set_num_threads(1)
    ctx = Ctx(Settings(models_dirs=[next(iter(paths.values())).parent.parent]))
    image = pattern(96)
    model = LoadModel().run(ctx, paths["compact-16nf-4nc-4x"].name)["upscale_model"]
    whole = Upscale().run(ctx, model, image, 0, 0)
    runs = {label: Upscale().run(ctx, model, image, 40, overlap)
            for overlap, label in ((0, "cut edge to edge"), (8, "overlap 8"), (16, "overlap 16"))}
    gain = 1.0 / max(float(np.abs(runs["cut edge to edge"] - whole).max()), 1e-12)
    print("\nseams on a 96×96 test pattern, Compact 4x, 40-pixel tiles (|tiled - untiled|):")
    panels = [whole[0]]
    for label, tiled in runs.items():
        diff = np.abs(tiled - whole)
        print(f"  {label:18} max {diff.max():.2e}  mean {diff.mean():.2e}  "
              f"pixels off by ≥ 1/255: {(diff.max(-1) * 255 >= 1).sum()}")
        panels.append(np.clip(diff[0] * gain, 0, 1))
    strip = np.concatenate(panels, axis=1)
    Image.fromarray((strip * 255).round().astype(np.uint8)).save(out_png)
    print(f"  wrote {out_png}: untiled output, then each |tiled - untiled| × {gain:.0f}")


def throughput(paths: dict[str, Path], size: int, repeats: int) -> None:
    import spandrel
    import torch

    from nodeflow.nodes.upscale import LoadModel, Upscale
    from nodeflow.settings import Settings

    torch.set_num_threads(1)
    ctx = Ctx(Settings(models_dirs=[next(iter(paths.values())).parent.parent]))
    image = pattern(size)
    mp = size * size / 1e6
    print(f"input {size}×{size}, 4x, torch threads 1, {repeats} interleaved repeats; "
          "MP/s from the median CPU time, ratio = median of per-repeat node/spandrel time ratios")
    print(f"{'model':24} {'spandrel MP/s':>13} {'node MP/s':>10} {'ratio':>6} "
          f"{'tiled MP/s':>10} {'ratio':>6} {'tiled max|Δ|':>12}")
    for name, path in paths.items():
        if name not in THROUGHPUT_MODELS:
            continue
        desc = spandrel.ModelLoader().load_from_file(path).eval()
        model = LoadModel().run(ctx, path.name)["upscale_model"]

        def direct(desc=desc):
            x = torch.from_numpy(image[0].transpose(2, 0, 1).copy())[None]
            return desc(x)[0].numpy().transpose(1, 2, 0)[None]

        tile, overlap = size // 2, 16

        def node_untiled(model=model):
            return Upscale().run(ctx, model, image, 0, 0)

        def node_tiled(model=model, tile=tile, overlap=overlap):
            return Upscale().run(ctx, model, image, tile, overlap)
        times: dict[str, list[float]] = {"direct": [], "untiled": [], "tiled": []}
        direct(), node_untiled(), node_tiled()  # warm up
        for _ in range(repeats):  # interleaved, so drifts in machine load hit all three alike
            for key, fn in (("direct", direct), ("untiled", node_untiled), ("tiled", node_tiled)):
                t = CLOCK()
                fn()
                times[key].append(CLOCK() - t)
        ratio_u = statistics.median(u / d for u, d in zip(times["untiled"], times["direct"], strict=True))
        ratio_t = statistics.median(u / d for u, d in zip(times["tiled"], times["direct"], strict=True))
        exact = np.array_equal(node_untiled(), direct())
        diff = float(np.abs(node_tiled() - direct()).max())
        med = {k: statistics.median(v) for k, v in times.items()}
        print(f"{name:24} {mp / med['direct']:13.4f} {mp / med['untiled']:10.4f} {ratio_u:6.3f} "
              f"{mp / med['tiled']:10.4f} {ratio_t:6.3f} {diff:12.2e}"
              f"   (untiled == spandrel: {exact}; tiles {tile}, overlap {overlap})")


MEMORY_CHILD = r"""
import json, sys, time
import numpy as np, torch
torch.set_num_threads(int(sys.argv[5]))
from pathlib import Path
mode, path, size, tile = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
def status_mb(field):
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(field)
def start_measuring():
    # The peak so far includes what importing torch and friends briefly took; reset it, so the
    # peak measured is the call's own, above what the process holds now.
    Path("/proc/self/clear_refs").write_text("5")
    return status_mb("VmRSS")
def rss_mb():
    return status_mb("VmHWM")
image = np.random.default_rng(0).random((1, size, size, 3), dtype=np.float32)
if mode == "node":
    from nodeflow.nodes.upscale import LoadModel, Upscale
    from nodeflow.settings import Settings
    from nodeflow.models import ModelManager
    class Ctx:
        node_id = "bench"; settings = Settings(models_dirs=[path.parent.parent]); models = ModelManager()
        def progress(self, *a, **k): pass
        def check_cancelled(self): pass
    ctx = Ctx()
    model = LoadModel().run(ctx, path.name)["upscale_model"]
    model.descriptor(torch.rand(1, 3, 8, 8))  # first call allocates torch's own pools
    base = start_measuring()
    t = time.perf_counter()
    out = Upscale().run(ctx, model, image, tile, 32)
else:
    import spandrel
    desc = spandrel.ModelLoader().load_from_file(path).eval()
    desc(torch.rand(1, 3, 8, 8))
    base = start_measuring()
    t = time.perf_counter()
    x = torch.from_numpy(image[0].transpose(2, 0, 1).copy())[None]
    out = desc(x)[0].numpy().transpose(1, 2, 0)[None]
print(json.dumps({"base_mb": base, "peak_mb": rss_mb(), "seconds": time.perf_counter() - t,
                  "out": list(out.shape)}))
"""


def memory(paths: dict[str, Path], names: list[str], size: int, tile: int, threads: int) -> None:
    def child(mode: str, path: Path, n: int, t: int, env: dict[str, str] | None = None) -> dict:
        proc = subprocess.run([sys.executable, "-c", MEMORY_CHILD, mode, str(path), str(n), str(t),
                               str(threads)], capture_output=True, text=True, check=True,
                              env={**os.environ, **(env or {})})
        return json.loads(proc.stdout.strip().splitlines()[-1])

    in_mb = size * size * 3 * 4 / 2**20
    out_mb = in_mb * 16
    print(f"\npeak RSS upscaling {size}×{size} 4x in a fresh process (input {in_mb:.0f} MB, made "
          f"before the baseline; output {out_mb:.0f} MB float32). 'one tile' = peak growth of "
          f"spandrel's call on one {tile}×{tile} tile; extra = growth - output - one tile")
    print(f"{'model':22} {'how':34} {'base MB':>7} {'peak MB':>7} {'growth':>6} {'one tile':>8} "
          f"{'extra':>6} {'s':>6}")
    fixed = {"MALLOC_MMAP_THRESHOLD_": str(1 << 20)}
    for name in names:
        path = paths[name]
        tile_mb = (lambda r: r["peak_mb"] - r["base_mb"])(child("spandrel", path, tile, 0))
        runs = [(f"node, {tile} tiles", child("node", path, size, tile)),
                (f"node, {tile} tiles, mmap threshold 1M", child("node", path, size, tile, fixed))]
        if name.startswith("compact"):
            runs.append(("spandrel, untiled", child("spandrel", path, size, 0)))
        for how, r in runs:
            growth = r["peak_mb"] - r["base_mb"]
            extra = f"{growth - out_mb - tile_mb:6.0f}" if how.startswith("node") else ""
            print(f"{name:22} {how:34} {r['base_mb']:7.0f} {r['peak_mb']:7.0f} {growth:6.0f} "
                  f"{tile_mb:8.0f} {extra:>6} {r['seconds']:6.1f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=128, help="input size for the throughput runs")
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--memory-size", type=int, default=2048)
    ap.add_argument("--tile", type=int, default=512)
    ap.add_argument("--memory-models", nargs="+", default=["compact-16nf-4nc-4x"],
                    choices=MEMORY_MODELS)
    ap.add_argument("--threads", type=int, default=2, help="torch threads for the memory runs")
    ap.add_argument("--no-memory", action="store_true")
    ap.add_argument("--no-throughput", action="store_true")
    ap.add_argument("--seam-png", type=Path, help="write the seam comparison picture here")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        paths = make_models(Path(tmp))
        if not args.no_throughput:
            throughput(paths, args.size, args.repeats)
        if args.seam_png:
            seam_picture(paths, args.seam_png)
        if not args.no_memory:
            memory(paths, args.memory_models, args.memory_size, args.tile, args.threads)
    print(f"\nbench process peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB")


if __name__ == "__main__":
    main()
