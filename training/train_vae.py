"""Train the demo VAE: a small diffusers AutoencoderKL, 64x64x3 <-> 16x16x4.

    python -m training.train_vae --out DIR --minutes 10 --seed 0

Writes ``DIR/vae`` (diffusers format, safetensors) every ``--save-every``
minutes and at the end; the config's ``scaling_factor`` is set to 1/std of the
latents of a held-out set.  Trains on the procedural world (filled and, 30% of
the time, outlined shapes), generated on the fly from ``--seed``.

The world always has a shape in it, so a decoder trained on it alone turns a
latent of plain background (what inpainting gives when it paints a shape out,
or paints only a speck) into coloured noise over the whole picture: its group
norms have never seen a flat picture.  ``--empty P`` makes a fraction P of the
pictures plain background.

Plain background is not enough: the latents around an inpainted hole still
carry what the encoder saw there (its attention and group norms see the whole
picture), and a decoder that never met such a mix blows up on it too.
``--splice P`` (with ``--decoder-only``) trains on that mix: for a fraction P
of the pictures a region of the latents comes from a partner picture on the
same background, and the target is the two pictures composited the same way.

    python -m training.train_vae --init DIR/vae --decoder-only --empty 0.15 --splice 0.5 --minutes 10

``--decoder-only`` keeps the encoder, so the latent space and the UNet trained
on it stay valid.

The encoder of a VAE trained this way keeps a "register": for each pair of colours it codes
one edge direction (for yellow on blue, the top right of a shape, about 23 degrees above
horizontal) with latents far off any mix of the two colours' codes, and the decoder draws a
notch there that no decoder training removes.  Hold the encoder away from coding it and the
decoder draws a blotch in the picture's top-left corner instead, with or without the
mid-block attention; forbid that blotch in the same run and the encoder codes the notch again.

Two fine-tunes remove both, and keep the latent space (so a UNet trained on the init VAE's
latents needs only a fine-tune to follow):

    python -m training.train_vae --init DIR/vae --anchor 3 --empty 0.15 --lr 3e-4 --minutes 12
    python -m training.train_vae --init DIR/vae --decoder-only --worst 1 --empty 0.15 --splice 0.5 \
        --lr 3e-4 --minutes 12

``--anchor W`` holds the encoder's latents to the init VAE's with the register cells
replaced by the mean of their neighbours (:func:`clean_registers`; the replaced cells weigh
``--anchor-register`` times more), so the encoder stops coding the notch; the decoder learns
to draw without it.  ``--worst W`` then adds W times the mean of each picture's worst 1% of
pixel errors away from edges, which takes the decoder's corner blotch away while the
encoder, frozen, cannot move the register back.  ``bench/vae_blemish.py`` measures both.

``--edge W`` adds W times the mean error on the pixels at a shape's edge (:func:`edge_loss`).
Ten minutes of ``--decoder-only --edge 1 --worst 0.5`` on the shipped VAE cut the edge error
(``bench/vae_blemish.py``) from 26 to 20/255 but drew a dark ring just outside each shape and
raised the error away from edges (2.2 to 3.5/255), so the shipped demo leaves sharpening to
the upscaler, trained on this VAE's pictures (``training.train_upscaler --vae``).

``--outlier W`` adds W times the mean square of each cell's :func:`overshoot` (beyond
``OUTLIER_MARGIN``) to the loss of a run that trains the encoder.  Alone it moves the notch
off the shape's edge into the corner blotch, so it is off by default.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from . import common as C  # sets the offline environment first
from .loop import Trainer

if TYPE_CHECKING:
    import torch

OUTLIER_MARGIN = 0.5  # channel stds of overshoot the --outlier penalty leaves alone


def make_vae():
    from diffusers import AutoencoderKL

    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 3,
        up_block_types=("UpDecoderBlock2D",) * 3,
        block_out_channels=(16, 32, 64),
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=16,
        sample_size=64,
        scaling_factor=1.0,
    )


def to_tensor(images: np.ndarray):
    import torch

    return torch.from_numpy(images).permute(0, 3, 1, 2).float().div(127.5).sub(1.0)


def batch(rng: np.random.Generator, n: int, outlined_p: float = 0.3, empty_p: float = 0.0,
          backgrounds: list[str] | None = None) -> np.ndarray:
    """``n`` world pictures; a fraction ``empty_p`` of them plain background (the random
    stream is the same as without it when ``empty_p`` is 0).  Their background colours
    are appended to ``backgrounds`` when given."""
    from . import world

    out = np.empty((n, 64, 64, 3), np.uint8)
    for i in range(n):
        s = world.sample_scene(rng)
        out[i] = world.render_array(s, 64, outlined=bool(rng.random() < outlined_p))
        if empty_p > 0 and rng.random() < empty_p:
            out[i] = world.PALETTE[s.background]
        if backgrounds is not None:
            backgrounds.append(s.background)
    return out


def splice_partners(rng: np.random.Generator, backgrounds: list[str], p: float):
    """What inpainting hands the decoder: for a fraction ``p`` of the pictures, a region
    (a disc or a box, in 16x16 latent cells) to take from a partner picture on the same
    background, half the time plain background and half the time another shape.

    Returns (partner pictures uint8 (n, 64, 64, 3), latent masks float32 (n, 1, 16, 16))."""
    from . import world

    n = len(backgrounds)
    partners = np.empty((n, 64, 64, 3), np.uint8)
    masks = np.zeros((n, 1, 16, 16), np.float32)
    yy, xx = np.mgrid[0:16, 0:16] + 0.5
    for i, bg in enumerate(backgrounds):
        if rng.random() < 0.5:
            partners[i] = world.PALETTE[bg]
        else:
            partners[i] = world.render_array(world.sample_scene(rng, background=bg), 64)
        if rng.random() >= p:
            continue
        cx, cy = rng.uniform(2, 14, size=2)
        r = rng.uniform(2, 7)
        if rng.random() < 0.5:
            masks[i, 0] = (xx - cx) ** 2 + (yy - cy) ** 2 <= r * r
        else:
            masks[i, 0] = (np.abs(xx - cx) <= r) & (np.abs(yy - cy) <= r)
    return partners, masks


def overshoot(z: torch.Tensor, x: torch.Tensor, tol: float = 0.04) -> torch.Tensor:
    """How far each latent cell codes away from what the two colours of its picture code.

    ``z`` (n, c, 16, 16) are latents of the world pictures ``x`` (n, 3, 64, 64) in [-1, 1].
    A cell is plain when its 4x4 pixels and a 4-pixel margin around them are one colour
    (within ``tol``): its code is that colour's, untouched by any edge.  A colour's code is
    the mean of its plain cells' latents (the background's is the colour of the top-left
    pixel, which the world keeps clear of the shape).  A cell on the shape's edge should
    code a mix of the two colours' codes; a cell coding far off the line between them is
    what the decoder draws as a blemish.  Returns, per cell and channel, how far the cell's
    latent lies from the nearest point of the segment between the two codes, in units of
    the channel's standard deviation over the batch: (n, c, 16, 16).  Pictures without
    plain cells of both colours (plain background, small or outlined shapes) give 0.
    Means, not extremes, make the codes: an encoder cannot move them by coding one plain
    cell far out, as that cell then lies far from them.
    """
    import torch
    import torch.nn.functional as F

    c = z.shape[1]
    hi_px = F.max_pool2d(x, 12, stride=4, padding=4)
    lo_px = -F.max_pool2d(-x, 12, stride=4, padding=4)
    plain = (hi_px - lo_px).amax(1).flatten(1) <= tol  # (n, cells)
    colour = F.avg_pool2d(x, 4).flatten(2)  # (n, 3, cells)
    background = (colour - x[:, :, :1, :1].flatten(2)).abs().amax(1) <= 0.1  # (n, cells)
    groups = [(plain & background).to(z.dtype), (plain & ~background).to(z.dtype)]
    keep = ((groups[0].sum(1) > 0) & (groups[1].sum(1) > 0))[:, None, None]  # (n, 1, 1)
    flat = z.flatten(2)  # (n, c, cells)
    codes = [(flat * g[:, None]).sum(-1, keepdim=True) / g.sum(1).clamp_min(1)[:, None, None] for g in groups]
    std = flat.transpose(0, 1).reshape(c, -1).std(1).clamp_min(1e-4)[None, :, None]
    a, b = codes[0] / std, codes[1] / std  # (n, c, 1): the two colours' codes, in channel stds
    rel = flat / std - a
    step = b - a
    t = ((rel * step).sum(1, keepdim=True) / step.square().sum(1, keepdim=True).clamp_min(1e-8)).clamp(0, 1)
    out = (rel - t * step).abs()  # each channel's distance from the nearest code between the two
    return torch.where(keep, out, torch.zeros_like(out)).view_as(z)


def outlier_penalty(z: torch.Tensor, x: torch.Tensor, margin: float = OUTLIER_MARGIN) -> torch.Tensor:
    """The ``--outlier`` loss term: mean square of each cell's :func:`overshoot` beyond
    ``margin`` channel standard deviations (cells of one colour vary a little across the
    picture, at its border most; that is left alone)."""
    import torch

    return torch.relu(overshoot(z, x) - margin).square().mean()


def flat_pixels(x: torch.Tensor, radius: int = 3, tol: float = 0.04) -> torch.Tensor:
    """Pixels of the pictures ``x`` (n, 3, h, w) in [-1, 1] whose (2 * radius + 1)-square
    neighbourhood is one colour (every channel within ``tol``): (n, h, w) bool.  An error
    there is a blemish, not a soft edge."""
    import torch.nn.functional as F

    hi = F.max_pool2d(x, 2 * radius + 1, 1, radius)
    lo = -F.max_pool2d(-x, 2 * radius + 1, 1, radius)
    return (hi - lo).amax(1) <= tol


def edge_loss(rec: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """The ``--edge`` loss term: mean absolute error of ``rec`` on the pixels of ``x`` within a
    pixel of a change of colour (not :func:`flat_pixels` at radius 1), where a decoder trained on
    the plain loss, which those few pixels hardly move, draws soft edges."""
    near = (~flat_pixels(x, radius=1)).to(x.dtype)
    return ((rec - x).abs().mean(1) * near).sum() / near.sum().clamp_min(1)


def clean_registers(z: torch.Tensor, x: torch.Tensor, threshold: float = 1.5) -> tuple[torch.Tensor, torch.Tensor]:
    """``z`` with every cell whose :func:`overshoot` exceeds ``threshold`` channel standard
    deviations (in any channel) replaced by the mean of its plain neighbours (3x3): the code
    a cell on the edge between the picture's two colours would have without a register.
    Returns (cleaned latents, mask of the replaced cells (n, 1, 16, 16))."""
    import torch.nn.functional as F

    bad = (overshoot(z, x).amax(1, keepdim=True) > threshold).to(z.dtype)
    good = 1 - bad
    total = F.avg_pool2d(z * good, 3, 1, 1, count_include_pad=False)
    weight = F.avg_pool2d(good, 3, 1, 1, count_include_pad=False)
    return z * good + total / weight.clamp_min(1e-6) * bad, bad


def psnr(a, b) -> float:
    import torch

    mse = torch.mean(((a.clamp(-1, 1) - b) / 2) ** 2).item()
    return 10 * np.log10(1.0 / max(mse, 1e-12))


def evaluate(vae, n: int = 256, seed: int = 12345, empty: float = 0.0):
    """PSNR on held-out scenes (every 1/``empty``-th of them plain background) and the
    latents' (mean, std)."""
    import torch

    from . import world

    imgs, _, scenes = world.dataset(n, seed, outlined=0.3)
    if empty > 0:
        every = max(1, round(1 / empty))
        for i in range(0, n, every):
            imgs[i] = world.PALETTE[scenes[i].background]
    x = to_tensor(imgs)
    vae.eval()
    with torch.no_grad():
        lats, recs = [], []
        for i in range(0, n, 64):
            d = vae.encode(x[i : i + 64]).latent_dist
            lats.append(d.sample(generator=torch.Generator().manual_seed(i)))
            recs.append(vae.decode(d.mode()).sample)
        lat = torch.cat(lats)
        rec = torch.cat(recs)
    vae.train()
    return psnr(rec, x), lat.mean().item(), lat.std().item()


def save(vae, out_dir, scaling_factor: float) -> None:
    import copy

    def write(tmp):
        v = copy.deepcopy(vae).eval()
        v.register_to_config(scaling_factor=float(scaling_factor))
        v.save_pretrained(tmp, safe_serialization=True)

    C.atomic_dir(out_dir, write)


def main(argv: list[str] | None = None) -> None:
    ap = C.base_parser(__doc__.splitlines()[0])
    ap.add_argument("--kl", type=float, default=1e-6, help="KL weight")
    ap.add_argument("--init", default="", help="start from this VAE folder (fine-tune) instead of random weights")
    ap.add_argument(
        "--decoder-only",
        action="store_true",
        help="with --init: train only the decoder (the latent space, and so a UNet trained on it, stays valid)",
    )
    ap.add_argument("--empty", type=float, default=0.0,
                    help="fraction of training pictures that are plain background (no shape)")
    ap.add_argument("--splice", type=float, default=0.0,
                    help="with --decoder-only: fraction of pictures whose latents are partly another "
                         "picture's (as after inpainting), composited the same way in the target")
    ap.add_argument("--outlier", type=float, default=0.0,
                    help="weight of the latent overshoot penalty (see overshoot()), which keeps the encoder "
                         "from coding a shape's edge far off its colours' codes; not with --decoder-only")
    ap.add_argument("--anchor", type=float, default=0.0,
                    help="with --init, training the encoder: weight of a loss holding the encoder's latents "
                         "to the init VAE's with its register cells cleaned (see clean_registers()), so a "
                         "UNet trained on the init's latents needs only a fine-tune; keeps the scaling factor")
    ap.add_argument("--anchor-register", type=float, default=30.0,
                    help="with --anchor: how many times more a cleaned register cell weighs in that loss")
    ap.add_argument("--worst", type=float, default=0.0,
                    help="weight of a loss on each picture's worst 1%% of pixels away from edges (blemishes)")
    ap.add_argument("--edge", type=float, default=0.0,
                    help="weight of an L1 loss on the pixels at a shape's edge (within a pixel of a "
                         "change of colour), which the plain loss averages away: sharper edges")
    ap.add_argument("--vae-dir", default="", help="where to write the VAE (default: OUT/vae)")
    args = ap.parse_args(argv)
    if args.decoder_only and not args.init:
        raise SystemExit("--decoder-only needs --init")
    if args.splice > 0 and not args.decoder_only:
        raise SystemExit("--splice needs --decoder-only")
    if args.anchor > 0 and (args.decoder_only or not args.init):
        raise SystemExit("--anchor holds a trained encoder near the --init one: it needs --init and not --decoder-only")
    if args.outlier > 0 and args.decoder_only:
        raise SystemExit("--outlier shapes the encoder's latents: it cannot be used with --decoder-only")
    C.setup(args)
    from pathlib import Path

    import torch

    out = Path(args.out)
    vae_dir = Path(args.vae_dir) if args.vae_dir else out / "vae"
    if args.init:
        from diffusers import AutoencoderKL

        vae = AutoencoderKL.from_pretrained(args.init).float().train()
    else:
        vae = make_vae()
    C.log(f"VAE params: {C.n_params(vae):,}")
    fixed_sf = None
    reference = None
    if args.anchor > 0:
        from diffusers import AutoencoderKL

        fixed_sf = float(vae.config.scaling_factor)
        reference = AutoencoderKL.from_pretrained(args.init).float().eval().requires_grad_(False)
    if args.decoder_only:
        fixed_sf = float(vae.config.scaling_factor)
        vae.encoder.requires_grad_(False)
        if vae.quant_conv is not None:
            vae.quant_conv.requires_grad_(False)
        vae.encoder.eval()
    best = -1.0
    if args.init:
        best = evaluate(vae, empty=args.empty)[0]
        C.log(f"initial PSNR {best:.2f} dB")
    trainable = [p for p in vae.parameters() if p.requires_grad]
    C.log(f"trainable params: {sum(p.numel() for p in trainable):,}")
    opt = torch.optim.AdamW(trainable, lr=args.lr, weight_decay=0.0)
    rng = np.random.default_rng(args.seed)
    gen = torch.Generator().manual_seed(args.seed)

    def loss() -> torch.Tensor:
        backgrounds: list[str] = []
        x = to_tensor(batch(rng, args.batch, empty_p=args.empty, backgrounds=backgrounds))
        if args.decoder_only:
            with torch.no_grad():
                post = vae.encode(x).latent_dist
                z = post.sample(generator=gen)
                if args.splice > 0:
                    partners, masks = splice_partners(rng, backgrounds, args.splice)
                    xb = to_tensor(partners)
                    zb = vae.encode(xb).latent_dist.sample(generator=gen)
                    m = torch.from_numpy(masks)
                    z = z * (1 - m) + zb * m
                    big = torch.nn.functional.interpolate(m, size=x.shape[-2:], mode="nearest")
                    x = x * (1 - big) + xb * big
        else:
            post = vae.encode(x).latent_dist
            z = post.sample(generator=gen)
        rec = vae.decode(z).sample
        rec_loss = torch.nn.functional.mse_loss(rec, x) + 0.5 * torch.nn.functional.l1_loss(rec, x)
        if args.worst > 0:
            # only where the picture is flat for 3 pixels around: a blotch there is a blemish,
            # while weighting the worst pixels on edges sharpens them into ringing
            flat = flat_pixels(x).to(x.dtype)
            per_pixel = ((rec - x).abs().mean(1) * flat).flatten(1)  # (n, pixels)
            k = max(1, per_pixel.shape[1] // 100)
            rec_loss = rec_loss + args.worst * per_pixel.topk(k, dim=1).values.mean()
        if args.edge > 0:
            rec_loss = rec_loss + args.edge * edge_loss(rec, x)
        if args.decoder_only:
            return rec_loss
        kl = post.kl().mean() / (64 * 64 * 3)
        total = rec_loss + args.kl * kl * (64 * 64 * 3) / 1000.0
        if args.outlier > 0:
            total = total + args.outlier * outlier_penalty(post.mean, x)
        if reference is not None:
            with torch.no_grad():
                target, cleaned = clean_registers(reference.encode(x).latent_dist.mean, x)
                std = target.transpose(0, 1).flatten(1).std(1).clamp_min(1e-4)[None, :, None, None]
                weight = 1 + args.anchor_register * cleaned
            total = total + args.anchor * (weight * ((post.mean - target) / std).square()).mean()
        return total

    def checkpoint(final: bool) -> None:
        nonlocal best
        p, m, s = evaluate(vae, empty=args.empty)
        sf = fixed_sf or 1.0 / s
        if p > best or not args.decoder_only or args.worst > 0 or args.edge > 0:
            save(vae, vae_dir, sf)
            best = max(best, p)
        elif final:
            C.log(f"not saved: PSNR {p:.2f} dB is not better than {best:.2f} dB")
        if final:
            C.log(f"done: {trainer.step} steps in {trainer.elapsed() / 60:.1f} min; PSNR {p:.2f} dB; "
                  f"latent mean {m:.3f} std {s:.3f}; scaling_factor {sf:.4f}")
        else:
            C.log(f"checkpoint: PSNR {p:.2f} dB, latent mean {m:.3f} std {s:.3f}")

    trainer = Trainer(
        params=trainable, optimizer=opt, loss=loss, checkpoint=checkpoint,
        lr=lambda frac: C.cosine_lr(args.lr, frac), minutes=args.minutes, steps=args.steps,
        save_every=args.save_every, log_every=50, loss_decay=0.98,
    )
    trainer.run()


if __name__ == "__main__":
    main()
