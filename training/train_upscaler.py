"""Train the demo 4x upsampler: a small Real-ESRGAN Compact (or ESRGAN RRDBNet) that spandrel detects.

    python -m training.train_upscaler --out DIR --minutes 25 --seed 0 --threads 1

The default generator is Real-ESRGAN's compact network (``--arch compact``, spandrel's
``Compact``, SRVGGNetCompact): every conv runs at the low resolution, a pixel shuffle
makes the 4x output and the network adds what it learns to a nearest-neighbour
upscale, so it trains an order of magnitude faster per step on this CPU than the
RRDBNet (``--arch esrgan``), whose convs after each x2 step run at the higher
resolutions.

Trains on the procedural world's (64x64 low, 256x256 high) pairs (``world.sr_pair``,
filled and, 30% of the time, outlined shapes), generated on the fly from ``--seed``,
on random crops; with ``--vae DIR``, a fraction ``--vae-p`` of the low pictures are that
VAE's round trips (what the demo pipeline hands the upscaler: softer edges, faint marks), so
the network learns to draw them sharp.  The first part of the budget uses a pixel loss only (MSE by default: PSNR is what it is judged by); the rest
adds a relativistic-average GAN loss from a small patch discriminator (weight
``--adv``).  The saved weights are an exponential moving average of the generator.

Writes ``DIR/nodeflow-shapes-4x.safetensors`` (old-arch ESRGAN keys, ``model.N...``;
fp16 unless that costs PSNR) every ``--save-every`` minutes and at the end, each
time through a temporary file and a rename.  PSNR is measured against bicubic on
held-out scenes (``world.dataset(n, HELDOUT_SEED)``), which training never sees.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from . import common as C  # sets the offline environment first
from .common import MODELS

if TYPE_CHECKING:
    import torch

FILENAME = "nodeflow-shapes-4x.safetensors"
DEFAULT_DIR = MODELS / "upscale"
HELDOUT_SEED = 424242  # evaluation scenes; the training stream is seeded by --seed
SCALE = 4


def make_generator(num_filters: int = 32, num_blocks: int = 2) -> torch.nn.Module:
    """spandrel's own ESRGAN (old-arch RRDBNet; growth channels 32), 4x."""
    import torch
    from spandrel.architectures.ESRGAN import ESRGAN

    net = ESRGAN(in_nc=3, out_nc=3, num_filters=num_filters, num_blocks=num_blocks, scale=SCALE)
    with torch.no_grad():
        # The residual (RRDB) branches start small, as in ESRGAN ...
        for m in net.model[1].sub.modules():
            if isinstance(m, torch.nn.Conv2d):
                m.weight.mul_(0.1)
                m.bias.zero_()  # type: ignore[union-attr]
        # ... and the main path carries the RGB channels through unchanged (the
        # upsampling layers are nearest-x2 then a conv), so the untrained network
        # already is a nearest-neighbour upsampler and training learns what to add
        # to that.  Inputs are >= 0, so the LeakyReLUs on that path are identities.
        # (A bilinear start, a [1,2,1] blur in the up-convs, does worse: the zero
        # padding darkens the image border.)
        convs = [m for m in net.model if isinstance(m, torch.nn.Conv2d)]  # first, up x2, up x2, hr0, last
        assert len(convs) == 5, convs
        for conv in convs:
            # He initialisation (for LeakyReLU(0.2)) keeps the other channels' features at
            # the input's scale through the five layers (torch's default shrinks them).
            torch.nn.init.kaiming_normal_(conv.weight, a=0.2, nonlinearity="leaky_relu")
            conv.bias.zero_()  # type: ignore[union-attr]
            conv.weight[:3] = 0.0  # the RGB channels see only themselves at first
            conv.bias[:3] = 0.0  # type: ignore[index]
            for c in range(3):
                conv.weight[c, c, 1, 1] = 1.0
        # The trunk's last conv starts at zero, so the RRDB trunk starts as an identity.
        trunk_last = [m for m in net.model[1].sub.modules() if isinstance(m, torch.nn.Conv2d)][-1]
        trunk_last.weight.zero_()
    return net


def make_compact(num_feat: int = 32, num_conv: int = 8) -> torch.nn.Module:
    """spandrel's Real-ESRGAN Compact, 4x; the last conv starts at zero so the untrained
    network is exactly a nearest-neighbour upscaler (its built-in residual base)."""
    import torch
    from spandrel.architectures.Compact import Compact

    net = Compact(num_in_ch=3, num_out_ch=3, num_feat=num_feat, num_conv=num_conv, upscale=SCALE)
    with torch.no_grad():
        last = [m for m in net.body if isinstance(m, torch.nn.Conv2d)][-1]
        last.weight.mul_(0.01)
        last.bias.zero_()  # type: ignore[union-attr]
    return net


def patch_discriminator(ch: int = 32) -> torch.nn.Module:
    """A small spectral-normalised patch discriminator."""
    import torch.nn as nn
    from torch.nn.utils.parametrizations import spectral_norm as sn

    def block(i: int, o: int, s: int) -> list[nn.Module]:
        return [sn(nn.Conv2d(i, o, 4 if s == 2 else 3, s, 1)), nn.LeakyReLU(0.2, True)]

    return nn.Sequential(
        *block(3, ch, 1),
        *block(ch, ch, 2),
        *block(ch, 2 * ch, 2),
        *block(2 * ch, 4 * ch, 2),
        *block(4 * ch, 4 * ch, 1),
        sn(nn.Conv2d(4 * ch, 1, 3, 1, 1)),
    )


def random_pair(rng: np.random.Generator, outlined_p: float = 0.3) -> tuple[np.ndarray, np.ndarray]:
    from . import world

    scene = world.sample_scene(rng)
    low, high = world.sr_pair(scene, outlined=bool(rng.random() < outlined_p))
    return np.asarray(low), np.asarray(high)


def heldout_pairs(n: int, seed: int = HELDOUT_SEED) -> tuple[np.ndarray, np.ndarray]:
    """(low uint8 (n,64,64,3), high uint8 (n,256,256,3)) from scenes of ``world.dataset(n, seed)``."""
    from . import world

    rng = np.random.default_rng(seed)
    lows, highs = [], []
    for _ in range(n):
        scene = world.sample_scene(rng)
        o = bool(rng.random() < 0.3)
        low, high = world.sr_pair(scene, outlined=o)
        lows.append(np.asarray(low))
        highs.append(np.asarray(high))
    return np.stack(lows), np.stack(highs)


class VaeRoundTrip:
    """Low-resolution pictures as the demo pipeline hands them to the upscaler: encoded and
    decoded by a VAE (its softer edges and faint marks), uint8 (n, h, w, 3) to the same."""

    def __init__(self, folder: str | Path):
        from diffusers import AutoencoderKL

        if not (Path(folder) / "config.json").is_file():
            raise SystemExit(f"--vae {folder}: not a VAE folder (no config.json)")
        self.vae = AutoencoderKL.from_pretrained(str(folder)).float().eval().requires_grad_(False)

    def __call__(self, lows: np.ndarray) -> np.ndarray:
        from .evaluate import round_trip

        return np.stack(round_trip(self.vae, list(lows), batch=32))


def to_tensor(a: np.ndarray) -> torch.Tensor:
    import torch

    return torch.from_numpy(np.ascontiguousarray(a)).permute(0, 3, 1, 2).float().div(255.0)


def to_uint8(t: torch.Tensor) -> np.ndarray:
    return t.clamp(0, 1).mul(255).round().byte().permute(0, 2, 3, 1).numpy()


def psnr_u8(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float(10 * np.log10(255.0**2 / max(float(mse), 1e-10)))


def bicubic(lows: np.ndarray, scale: int = SCALE) -> np.ndarray:
    from PIL import Image

    return np.stack(
        [np.asarray(Image.fromarray(a).resize((a.shape[1] * scale, a.shape[0] * scale), Image.Resampling.BICUBIC)) for a in lows]
    )


def upscale(net: torch.nn.Module, lows: np.ndarray, chunk: int = 4) -> np.ndarray:
    import torch

    out = []
    with torch.no_grad():
        for i in range(0, len(lows), chunk):
            out.append(to_uint8(net(to_tensor(lows[i : i + chunk])).float()))
    return np.concatenate(out)


def evaluate(net: torch.nn.Module, n: int = 16, degrade: VaeRoundTrip | None = None) -> tuple[float, float]:
    """(model PSNR, bicubic PSNR) in dB, averaged over ``n`` held-out pairs (per-image PSNR);
    with ``degrade``, the low pictures are its round trips (the target stays the clean render)."""
    lows, highs = heldout_pairs(n)
    if degrade is not None:
        lows = degrade(lows)
    was = net.training
    net.eval()
    sr = upscale(net, lows)
    net.train(was)
    bc = bicubic(lows)
    pm = float(np.mean([psnr_u8(s, h) for s, h in zip(sr, highs)]))
    pb = float(np.mean([psnr_u8(s, h) for s, h in zip(bc, highs)]))
    return pm, pb


def state_dict_for(net: torch.nn.Module, dtype: torch.dtype) -> dict[str, torch.Tensor]:
    return {k: v.detach().to(dtype).contiguous().clone() for k, v in net.state_dict().items()}


def save(net: torch.nn.Module, path: Path, dtype: torch.dtype, meta: dict[str, Any]) -> None:
    """Write the generator's weights to ``path`` via a temporary file and a rename."""
    from safetensors.torch import save_file

    tensors = state_dict_for(net, dtype)
    C.atomic_file(path, lambda tmp: save_file(tensors, str(tmp), metadata={k: str(v) for k, v in meta.items()}))


def choose_dtype(net: torch.nn.Module, n: int = 16) -> tuple[torch.dtype, float, float]:
    """fp16 unless rounding the weights to fp16 costs more than 0.05 dB on held-out pairs."""
    import torch

    p32, _ = evaluate(net, n)
    half = copy.deepcopy(net)
    half.load_state_dict({k: v.float() for k, v in state_dict_for(net, torch.float16).items()})
    p16, _ = evaluate(half, n)
    return (torch.float16 if p32 - p16 <= 0.05 else torch.float32), p32, p16


class Pool:
    """A pool of training pairs, part of which is re-rendered every step."""

    def __init__(self, rng: np.random.Generator, size: int, degrade: VaeRoundTrip | None = None,
                 degrade_p: float = 0.0):
        self.rng = rng
        self.degrade, self.degrade_p = degrade, degrade_p
        pairs = [random_pair(rng) for _ in range(size)]
        self.low = np.stack([p[0] for p in pairs])
        self.high = np.stack([p[1] for p in pairs])
        if degrade is not None:
            chosen = np.nonzero(rng.random(size) < degrade_p)[0]
            if len(chosen):
                self.low[chosen] = degrade(self.low[chosen])

    def refresh(self, k: int) -> None:
        for i in self.rng.integers(0, len(self.low), size=k):
            self.low[i], self.high[i] = random_pair(self.rng)
            if self.degrade is not None and self.rng.random() < self.degrade_p:
                self.low[i] = self.degrade(self.low[i][None])[0]

    def batch(self, n: int, crop: int, edge_p: float = 0.8) -> tuple[torch.Tensor, torch.Tensor]:
        """``n`` random low crops (``crop`` px) and their aligned high crops, randomly flipped/rotated.

        With probability ``edge_p`` a crop is centred (with jitter) on a pixel of the shape's
        edge: flat areas are easy, and the edges are where an upsampler earns its keep.
        """
        lo = np.empty((n, crop, crop, 3), np.uint8)
        hi = np.empty((n, crop * SCALE, crop * SCALE, 3), np.uint8)
        size = self.low.shape[1]
        for j in range(n):
            i = int(self.rng.integers(len(self.low)))
            y, x = (int(v) for v in self.rng.integers(0, size - crop + 1, size=2))
            if self.rng.random() < edge_p:
                img = self.low[i].astype(np.int16)
                g = np.zeros((size, size), bool)
                g[:, 1:] |= np.abs(np.diff(img, axis=1)).sum(-1) > 24
                g[1:, :] |= np.abs(np.diff(img, axis=0)).sum(-1) > 24
                ys, xs = np.nonzero(g)
                if len(ys):
                    k = int(self.rng.integers(len(ys)))
                    jy, jx = self.rng.integers(-crop // 4, crop // 4 + 1, size=2)
                    y = int(np.clip(ys[k] - crop // 2 + jy, 0, size - crop))
                    x = int(np.clip(xs[k] - crop // 2 + jx, 0, size - crop))
            a = self.low[i, y : y + crop, x : x + crop]
            b = self.high[i, y * SCALE : (y + crop) * SCALE, x * SCALE : (x + crop) * SCALE]
            k = int(self.rng.integers(4))
            a, b = np.rot90(a, k), np.rot90(b, k)
            if self.rng.random() < 0.5:
                a, b = a[:, ::-1], b[:, ::-1]
            lo[j], hi[j] = a, b
        return to_tensor(lo), to_tensor(hi)


def main(argv: list[str] | None = None) -> None:
    ap = C.base_parser(__doc__.splitlines()[0])
    ap.set_defaults(out=str(DEFAULT_DIR), batch=8, lr=5e-4, minutes=25.0)
    ap.add_argument("--arch", choices=("compact", "esrgan"), default="compact")
    ap.add_argument("--filters", type=int, default=32, help="num_feat (compact) / num_filters (esrgan)")
    ap.add_argument("--blocks", type=int, default=8, help="num_conv (compact) / num_blocks (esrgan)")
    ap.add_argument("--crop", type=int, default=32, help="low-resolution crop size (px)")
    ap.add_argument("--gan-start", type=float, default=0.7, help="fraction of the budget before the GAN loss is added")
    ap.add_argument("--adv", type=float, default=5e-3, help="adversarial loss weight (pixel loss weight is 1)")
    ap.add_argument("--pixel-loss", choices=("mse", "l1"), default="mse",
                    help="mse (scaled by 1/0.01) maximises PSNR; l1 favours nearest-like edges on this world")
    ap.add_argument("--pool", type=int, default=512, help="training pairs kept in memory")
    ap.add_argument("--refresh", type=int, default=1, help="pool pairs re-rendered per step (rendering costs ~0.15 s a pair)")
    ap.add_argument("--eval-n", type=int, default=32, help="held-out pairs for the final PSNR")
    ap.add_argument("--init", default="", help="start the generator from this .safetensors (e.g. the shipped weights)")
    ap.add_argument("--vae", default="",
                    help="a VAE folder: a fraction --vae-p of the low pictures are its round trips, as "
                         "the demo pipeline's pictures come out of its VAE, so the upscaler learns to "
                         "draw their soft edges sharp")
    ap.add_argument("--vae-p", type=float, default=0.5, help="with --vae: the fraction of such pictures")
    args = ap.parse_args(argv)
    if not 0 <= args.vae_p <= 1:
        raise SystemExit(f"--vae-p {args.vae_p:g}: give a fraction between 0 and 1")
    C.setup(args)
    import torch
    import torch.nn.functional as F

    path = Path(args.out) / FILENAME
    if args.arch == "compact":
        G = make_compact(args.filters, args.blocks).train()
    else:
        G = make_generator(args.filters, args.blocks).train()
    if args.init:
        from safetensors.torch import load_file

        G.load_state_dict({k: v.float() for k, v in load_file(args.init).items()})
        C.log(f"initialised from {args.init}")
    D = patch_discriminator().train()
    ema = copy.deepcopy(G).eval().requires_grad_(False)
    C.log(f"generator params: {C.n_params(G):,}; discriminator params: {C.n_params(D):,}")
    opt_g = torch.optim.Adam(G.parameters(), lr=args.lr, betas=(0.9, 0.99))
    opt_d = torch.optim.Adam(D.parameters(), lr=args.lr, betas=(0.9, 0.99))
    rng = np.random.default_rng(args.seed)
    degrade = VaeRoundTrip(args.vae) if args.vae else None
    pool = Pool(rng, args.pool, degrade, args.vae_p)
    C.log(f"pool of {args.pool} pairs ready")
    trained_on = "training.world sr_pair 64->256"
    if degrade is not None:
        trained_on += f", {args.vae_p:.0%} of the low pictures through the VAE {args.vae}"
    meta = {"architecture": "Compact" if args.arch == "compact" else "ESRGAN", "scale": SCALE,
            "num_filters": args.filters, "num_blocks": args.blocks,
            "trained_on": trained_on, "seed": args.seed}

    clock = C.Clock(args.minutes, args.steps)
    step, last_save, ema_l1, ema_adv, gan_steps = 0, 0.0, None, None, 0
    while not clock.done(step):
        frac = clock.fraction(step)
        gan = frac >= args.gan_start
        if gan:  # GAN phase: restart a gentle cosine at a lower rate
            lr = C.cosine_lr(args.lr * 0.5, (frac - args.gan_start) / (1 - args.gan_start), warmup=0.05)
        else:
            lr = C.cosine_lr(args.lr, frac / args.gan_start, floor=0.2)
        for o in (opt_g, opt_d):
            for g in o.param_groups:
                g["lr"] = lr
        pool.refresh(args.refresh)
        lo, hi = pool.batch(args.batch, args.crop)

        sr = G(lo)
        l1 = F.l1_loss(sr, hi)
        loss = F.mse_loss(sr, hi) / 0.01 if args.pixel_loss == "mse" else l1
        if gan:
            D.requires_grad_(False)
            real = D(hi).detach()
            fake = D(sr)
            # relativistic average GAN (generator side)
            adv = 0.5 * (
                F.binary_cross_entropy_with_logits(real - fake.mean(), torch.zeros_like(real))
                + F.binary_cross_entropy_with_logits(fake - real.mean(), torch.ones_like(fake))
            )
            loss = l1 + args.adv * adv
        opt_g.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(G.parameters(), 1.0)
        opt_g.step()
        if gan:
            D.requires_grad_(True)
            real = D(hi)
            fake = D(sr.detach())
            d_loss = 0.5 * (
                F.binary_cross_entropy_with_logits(real - fake.mean(), torch.ones_like(real))
                + F.binary_cross_entropy_with_logits(fake - real.mean(), torch.zeros_like(fake))
            )
            opt_d.zero_grad(set_to_none=True)
            d_loss.backward()
            opt_d.step()
            gan_steps += 1
            ema_adv = adv.item() if ema_adv is None else 0.95 * ema_adv + 0.05 * adv.item()
        step += 1
        decay = min(0.999, (1 + step) / (10 + step))
        with torch.no_grad():
            for pe, pg in zip(ema.parameters(), G.parameters()):
                pe.lerp_(pg, 1 - decay)
        ema_l1 = l1.item() if ema_l1 is None else 0.95 * ema_l1 + 0.05 * l1.item()
        if step % 25 == 0:
            extra = f" adv {ema_adv:.3f} d {d_loss.item():.3f}" if gan else ""
            C.log(f"step {step} l1 {ema_l1:.4f}{extra} lr {lr:.2e} {clock.elapsed() / step:.2f}s/step")
        if clock.elapsed() - last_save > 60 * args.save_every:
            pm, pb = evaluate(ema, 8)
            save(ema, path, torch.float16, {**meta, "steps": step})
            last_save = clock.elapsed()
            C.log(f"checkpoint at step {step}: held-out PSNR {pm:.2f} dB vs bicubic {pb:.2f} dB ({pm - pb:+.2f})")
            if degrade is not None:
                vm, vb = evaluate(ema, 8, degrade)
                C.log(f"  through the VAE: {vm:.2f} dB vs bicubic {vb:.2f} dB ({vm - vb:+.2f})")

    dtype, p32, p16 = choose_dtype(ema, 16)
    pm, pb = evaluate(ema, args.eval_n)
    minutes = clock.elapsed() / 60
    save(ema, path, dtype, {**meta, "steps": step, "gan_steps": gan_steps, "minutes": round(minutes, 1),
                            "psnr_db": round(pm, 2), "bicubic_psnr_db": round(pb, 2)})
    report = {"file": str(path), "bytes": path.stat().st_size, "dtype": str(dtype), "params": C.n_params(ema),
              "steps": step, "gan_steps": gan_steps, "minutes": round(minutes, 2),
              "heldout_n": args.eval_n, "psnr_db": round(pm, 3), "bicubic_psnr_db": round(pb, 3),
              "gain_db": round(pm - pb, 3), "fp32_vs_fp16_psnr_db": [round(p32, 3), round(p16, 3)]}
    if degrade is not None:
        vm, vb = evaluate(ema, args.eval_n, degrade)
        report.update(vae_psnr_db=round(vm, 3), vae_bicubic_psnr_db=round(vb, 3))
    C.log("done: " + json.dumps(report))


if __name__ == "__main__":
    main()
