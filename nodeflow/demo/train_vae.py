"""Train the demo VAE: a small diffusers AutoencoderKL, 64x64x3 <-> 16x16x4.

    python -m nodeflow.demo.train_vae --out DIR --minutes 10 --seed 0

Writes ``DIR/vae`` (diffusers format, safetensors) every ``--save-every``
minutes and at the end; the config's ``scaling_factor`` is set to 1/std of the
latents of a held-out set.  Trains on the procedural world (filled and, 30% of
the time, outlined shapes), generated on the fly from ``--seed``.
"""

from __future__ import annotations

import numpy as np

from . import _train_common as C  # sets the offline environment first


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


def batch(rng: np.random.Generator, n: int, outlined_p: float = 0.3) -> np.ndarray:
    from . import world

    out = np.empty((n, 64, 64, 3), np.uint8)
    for i in range(n):
        s = world.sample_scene(rng)
        out[i] = world.render_array(s, 64, outlined=bool(rng.random() < outlined_p))
    return out


def psnr(a, b) -> float:
    import torch

    mse = torch.mean(((a.clamp(-1, 1) - b) / 2) ** 2).item()
    return 10 * np.log10(1.0 / max(mse, 1e-12))


def evaluate(vae, n: int = 256, seed: int = 12345):
    """PSNR on held-out scenes and the latents' (mean, std)."""
    import torch

    from . import world

    imgs, _, _ = world.dataset(n, seed, outlined=0.3)
    x = to_tensor(imgs)
    vae.eval()
    with torch.no_grad():
        lat = []
        rec = []
        for i in range(0, n, 64):
            d = vae.encode(x[i : i + 64]).latent_dist
            lat.append(d.sample(generator=torch.Generator().manual_seed(i)))
            rec.append(vae.decode(d.mode()).sample)
        lat = torch.cat(lat)
        rec = torch.cat(rec)
    vae.train()
    return psnr(rec, x), lat.mean().item(), lat.std().item()


def save(vae, out_dir, scaling_factor: float) -> None:
    import copy

    def write(tmp):
        v = copy.deepcopy(vae).eval()
        v.register_to_config(scaling_factor=float(scaling_factor))
        v.save_pretrained(tmp, safe_serialization=True)

    C.atomic_dir(out_dir, write)


def main(argv=None) -> None:
    ap = C.base_parser(__doc__.splitlines()[0])
    ap.add_argument("--kl", type=float, default=1e-6, help="KL weight")
    ap.add_argument("--init", default="", help="start from this VAE folder (fine-tune) instead of random weights")
    ap.add_argument(
        "--decoder-only",
        action="store_true",
        help="with --init: train only the decoder (the latent space, and so a UNet trained on it, stays valid)",
    )
    ap.add_argument("--vae-dir", default="", help="where to write the VAE (default: OUT/vae)")
    args = ap.parse_args(argv)
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
    if args.decoder_only:
        if not args.init:
            raise SystemExit("--decoder-only needs --init")
        fixed_sf = float(vae.config.scaling_factor)
        vae.encoder.requires_grad_(False)
        if vae.quant_conv is not None:
            vae.quant_conv.requires_grad_(False)
        vae.encoder.eval()
    best = -1.0
    if args.init:
        best = evaluate(vae)[0]
        C.log(f"initial PSNR {best:.2f} dB")
    trainable = [p for p in vae.parameters() if p.requires_grad]
    C.log(f"trainable params: {sum(p.numel() for p in trainable):,}")
    opt = torch.optim.AdamW(trainable, lr=args.lr, weight_decay=0.0)
    rng = np.random.default_rng(args.seed)
    gen = torch.Generator().manual_seed(args.seed)
    clock = C.Clock(args.minutes, args.steps)
    step, last_save, ema_loss = 0, 0.0, None
    while not clock.done(step):
        lr = C.cosine_lr(args.lr, clock.fraction(step))
        for g in opt.param_groups:
            g["lr"] = lr
        x = to_tensor(batch(rng, args.batch))
        if args.decoder_only:
            with torch.no_grad():
                post = vae.encode(x).latent_dist
                z = post.sample(generator=gen)
        else:
            post = vae.encode(x).latent_dist
            z = post.sample(generator=gen)
        rec = vae.decode(z).sample
        rec_loss = torch.nn.functional.mse_loss(rec, x) + 0.5 * torch.nn.functional.l1_loss(rec, x)
        if args.decoder_only:
            loss = rec_loss
        else:
            kl = post.kl().mean() / (64 * 64 * 3)
            loss = rec_loss + args.kl * kl * (64 * 64 * 3) / 1000.0
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(trainable, 1.0)
        opt.step()
        step += 1
        ema_loss = loss.item() if ema_loss is None else 0.98 * ema_loss + 0.02 * loss.item()
        if step % 50 == 0:
            C.log(f"step {step} loss {ema_loss:.4f} lr {lr:.2e} {clock.elapsed() / step:.3f}s/step")
        if clock.elapsed() - last_save > 60 * args.save_every:
            p, m, s = evaluate(vae)
            if p > best or not args.decoder_only:
                save(vae, vae_dir, fixed_sf or 1.0 / s)
                best = max(best, p)
            last_save = clock.elapsed()
            C.log(f"checkpoint: PSNR {p:.2f} dB, latent mean {m:.3f} std {s:.3f}")
    p, m, s = evaluate(vae)
    sf = fixed_sf or 1.0 / s
    if p > best or not args.decoder_only:
        save(vae, vae_dir, sf)
    else:
        C.log(f"not saved: PSNR {p:.2f} dB is not better than {best:.2f} dB")
    C.log(f"done: {step} steps in {clock.elapsed() / 60:.1f} min; PSNR {p:.2f} dB; latent mean {m:.3f} std {s:.3f}; scaling_factor {sf:.4f}")


if __name__ == "__main__":
    main()
