"""Train the demo VQ image tokenizer: a small diffusers VQModel, 64x64x3 <-> 16x16 tokens.

    python -m training.train_vq --out DIR --minutes 20 --seed 0

Trains on the procedural world (filled and, 30% of the time, outlined shapes),
generated on the fly from ``--seed``, with a reconstruction loss (MSE + L1) plus the
quantizer's codebook/commitment loss.  Images are in [-1, 1], as diffusers' VQ
pipelines (and nodeflow's tokenizer nodes) use them.  The codebook starts from
encoder outputs, and codes that go unused are re-seeded from encoder outputs
during the first part of training, so that most of the codebook is in use.

Writes ``DIR`` (diffusers format, ``save_pretrained`` with safetensors) every
``--save-every`` minutes and at the end, each time into a temporary folder that
then replaces ``DIR``.  Reconstruction PSNR and codebook usage are measured on
held-out scenes (``world.dataset(n, HELDOUT_SEED)``), which training never sees.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from . import common as C  # sets the offline environment first
from .common import MODELS
from .loop import Trainer

if TYPE_CHECKING:
    import torch

DEFAULT_DIR = MODELS / "tokenizers" / "nodeflow-shapes-vq"
HELDOUT_SEED = 515151  # evaluation scenes; the training stream is seeded by --seed


def make_vq(codes: int = 256, dim: int = 8) -> Any:
    from diffusers import VQModel

    return VQModel(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 3,  # 64 -> 32 -> 16
        up_block_types=("UpDecoderBlock2D",) * 3,
        block_out_channels=(16, 32, 64),
        layers_per_block=1,
        latent_channels=dim,
        vq_embed_dim=dim,
        num_vq_embeddings=codes,
        norm_num_groups=16,
        sample_size=64,
        scaling_factor=1.0,
    )


def to_tensor(images: np.ndarray) -> torch.Tensor:
    import torch

    return torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float().div(127.5).sub(1.0)


def batch(rng: np.random.Generator, n: int, outlined_p: float = 0.3) -> np.ndarray:
    from . import world

    out = np.empty((n, 64, 64, 3), np.uint8)
    for i in range(n):
        s = world.sample_scene(rng)
        out[i] = world.render_array(s, 64, outlined=bool(rng.random() < outlined_p))
    return out


def heldout(n: int, seed: int = HELDOUT_SEED) -> np.ndarray:
    from . import world

    return world.dataset(n, seed, outlined=0.3)[0]


def roundtrip(vq: Any, images: np.ndarray, chunk: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """(uint8 reconstructions, int64 token ids (n, h, w)) of uint8 images, via the codebook."""
    import torch

    recs, ids = [], []
    with torch.no_grad():
        for i in range(0, len(images), chunk):
            x = to_tensor(images[i : i + chunk])
            h = vq.encode(x).latents
            quant, _loss, (_p, _e, idx) = vq.quantize(h)
            rec = vq.decode(quant, force_not_quantize=True).sample
            recs.append(((rec.clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).numpy())
            ids.append(idx.reshape(h.shape[0], h.shape[2], h.shape[3]).numpy())
    return np.concatenate(recs), np.concatenate(ids)


def psnr_u8(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float(10 * np.log10(255.0**2 / max(float(mse), 1e-10)))


def evaluate(vq: Any, n: int = 256) -> dict[str, Any]:
    """Held-out reconstruction PSNR (mean of per-image dB) and codebook usage."""
    images = heldout(n)
    was = vq.training
    vq.eval()
    rec, ids = roundtrip(vq, images)
    vq.train(was)
    codes = vq.config.num_vq_embeddings
    counts = np.bincount(ids.ravel(), minlength=codes)
    p = counts / counts.sum()
    nz = p[p > 0]
    return {
        "psnr_db": float(np.mean([psnr_u8(r, x) for r, x in zip(rec, images)])),
        "codes_used": int((counts > 0).sum()),
        "codebook_size": int(codes),
        "perplexity": float(np.exp(-(nz * np.log(nz)).sum())),
        "grid": list(ids.shape[1:]),
        "n": n,
    }


def save(vq: Any, out_dir: str | Path) -> None:
    import copy

    def write(tmp: Path) -> None:
        copy.deepcopy(vq).eval().save_pretrained(tmp, safe_serialization=True)

    C.atomic_dir(out_dir, write)


def reseed_codes(vq: Any, z_flat: torch.Tensor, used: torch.Tensor) -> int:
    """Move unused codebook vectors onto random encoder outputs (plus a little noise)."""
    import torch

    dead = (~used).nonzero().flatten()
    if len(dead) == 0:
        return 0
    pick = torch.randint(0, len(z_flat), (len(dead),))
    with torch.no_grad():
        w = vq.quantize.embedding.weight
        w[dead] = z_flat[pick] + 0.01 * z_flat.std() * torch.randn(len(dead), w.shape[1])
    return len(dead)


def main(argv: list[str] | None = None) -> None:
    ap = C.base_parser(__doc__.splitlines()[0])
    ap.set_defaults(out=str(DEFAULT_DIR), batch=16, lr=1e-3, minutes=20.0)
    ap.add_argument("--codes", type=int, default=256, help="codebook size (num_vq_embeddings)")
    ap.add_argument("--dim", type=int, default=8, help="codebook vector size (vq_embed_dim)")
    ap.add_argument("--commit", type=float, default=1.0, help="weight of the quantizer's codebook/commitment loss")
    ap.add_argument("--reseed-until", type=float, default=0.6, help="re-seed unused codes until this fraction of the budget")
    ap.add_argument("--reseed-every", type=int, default=25, help="steps between re-seeding unused codes")
    args = ap.parse_args(argv)
    C.setup(args)
    import torch
    import torch.nn.functional as F

    out = Path(args.out)
    vq = make_vq(args.codes, args.dim).train()
    C.log(f"VQModel params: {C.n_params(vq):,}")
    opt = torch.optim.AdamW(vq.parameters(), lr=args.lr, weight_decay=0.0)
    rng = np.random.default_rng(args.seed)
    used = torch.zeros(args.codes, dtype=torch.bool)
    recent = []  # recent encoder outputs, to re-seed unused codes from

    # Start the codebook on encoder outputs of the untrained encoder.
    with torch.no_grad():
        x0 = to_tensor(batch(rng, 64))
        z0 = vq.encode(x0).latents.permute(0, 2, 3, 1).reshape(-1, args.dim)
    reseed_codes(vq, z0, used)

    last: dict[str, Any] = {}  # what the step left for after_step: latents, codes, losses
    codes = {"used": 0, "reseeded": 0}
    smoothed: dict[str, float] = {}

    def loss() -> torch.Tensor:
        last["frac"] = trainer.clock.fraction(trainer.step)
        x = to_tensor(batch(rng, args.batch))
        h = vq.encode(x).latents
        quant, q_loss, (_p, _e, idx) = vq.quantize(h)
        rec = vq.decoder(vq.post_quant_conv(quant))
        rec_loss = F.mse_loss(rec, x) + 0.5 * F.l1_loss(rec, x)
        last.update(h=h, idx=idx, rec=rec_loss.item(), vq=q_loss.item())
        return rec_loss + args.commit * q_loss

    def after_step() -> None:
        nonlocal recent
        used[last["idx"].flatten()] = True
        recent.append(last["h"].detach().permute(0, 2, 3, 1).reshape(-1, args.dim)[::4])
        recent = recent[-8:]
        if trainer.step % args.reseed_every == 0:
            codes["reseeded"] = reseed_codes(vq, torch.cat(recent), used) if last["frac"] < args.reseed_until else 0
            codes["used"] = int(used.sum())
            used[:] = False
        for k in ("rec", "vq"):
            smoothed[k] = last[k] if k not in smoothed else 0.95 * smoothed[k] + 0.05 * last[k]

    def checkpoint(final: bool) -> None:
        m = evaluate(vq, 256 if final else 64)
        save(vq, out)
        last["metrics"] = m
        if not final:
            C.log(f"checkpoint at step {trainer.step}: held-out PSNR {m['psnr_db']:.2f} dB, "
                  f"codes used {m['codes_used']}/{m['codebook_size']}, perplexity {m['perplexity']:.1f}")

    trainer = Trainer(
        params=list(vq.parameters()), optimizer=opt, loss=loss, checkpoint=checkpoint, after_step=after_step,
        lr=lambda frac: C.cosine_lr(args.lr, frac), minutes=args.minutes, steps=args.steps,
        save_every=args.save_every, log_every=args.reseed_every, loss_decay=0.95,
        log_extra=lambda: (f" (rec {smoothed['rec']:.4f} vq {smoothed['vq']:.4f}) codes used {codes['used']}/{args.codes}"
                           f" (re-seeded {codes['reseeded']})"),
    )
    trainer.run()
    m, step, clock = last["metrics"], trainer.step, trainer.clock
    size = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
    report = {"dir": str(out), "bytes": size, "params": C.n_params(vq), "steps": step,
              "minutes": round(clock.elapsed() / 60, 2), **m}
    C.log("done: " + json.dumps(report))


if __name__ == "__main__":
    main()
