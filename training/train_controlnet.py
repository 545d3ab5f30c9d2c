"""Train the demo edge ControlNet on top of the shipped nodeflow-shapes pipeline.

    python -m training.train_controlnet --minutes 25 --threads 1

A diffusers ``ControlNetModel`` is initialised from the base pipeline's UNet
(``ControlNetModel.from_unet``: a copy of its encoder half, zero-initialised
output convolutions) with a 3-channel conditioning input.  Its conditioning
embedding has as many stride-2 stages as the base VAE downsamples (2 for the
shipped VAE: 64x64 edge maps -> 16x16, the latent size), channels
``16, 32, 64``.  The base UNet, text encoder and VAE stay frozen.

Training data: for each scene of the procedural world, the VAE latents of its
filled render, its caption (empty 50% of the time, ``--dropout``, so the
ControlNet also works with no prompt) and its ``world.edge_map`` (1-px white
edges on black, fed in [0, 1] as diffusers' ControlNet pipeline does); the loss
is the base model's (v-prediction, zero-terminal-SNR), through the frozen UNet
with the ControlNet's residuals added.  Timesteps are skewed towards high noise
(``--t-skew``), where the layout is decided and the edges help most.  Small
batches (8) at a high learning rate (1e-3): on one CPU thread the control only
starts to show after ~150-200 steps, so many cheap steps beat few large ones.
The log reports the held-out loss with the ControlNet next to the base model's
(overall and at t >= 600): the ControlNet learns when the latter drops.

Every ``--save-every`` minutes and at the end the EMA weights are written
atomically as a diffusers ``save_pretrained`` folder (safetensors, fp16 unless
``--fp32``; ``training.json`` and ``README.md`` beside), which nodeflow's
``diffusion.LoadControlNet`` and ``StableDiffusionControlNetPipeline`` load.
The last log line is a JSON report.
"""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path
from typing import Any

from . import common as C  # sets the offline environment first
from .common import MODELS
from .loop import ParamEMA, Trainer, ema_weights
from .train_lora import (
    VAL_SEED,
    adapter_parser,
    base_name,
    caption_table,
    command_line,
    encode_world,
    heldout_timesteps,
    load_base,
    noisy_batch,
    train_scheduler,
)

DEFAULT_CONTROLNET = MODELS / "controlnet" / "nodeflow-shapes-edges"
POOL_SEED_OFFSET = 3000  # training scenes: default_rng(seed + 3000); evaluation uses 777
HIGH_T = 600  # the held-out loss is also reported for t >= HIGH_T, where the layout is decided

README = """# nodeflow-shapes-edges

A ControlNet for nodeflow's demo model `nodeflow-shapes` (64x64 images): the
conditioning image is the shape's edges (1-px white lines on black, as
`training.world.edge_map` draws them) and the picture's shape appears
where the edges are.  Trained with empty captions half of the time, so it also
steers unprompted generations.  Initialised from the base UNet
(`ControlNetModel.from_unet`); a diffusers `save_pretrained` folder.

    pipe = StableDiffusionControlNetPipeline(..., controlnet=ControlNetModel.from_pretrained(DIR))
    pipe("a red circle on a blue background", image=world.edge_map(scene), height=64, width=64)

`training.json` records how far training got.  Retrain with
`python -m training.train_controlnet` (from a source checkout).
"""


def latent_factor(vae: Any) -> int:
    """Pixels per latent cell of an ``AutoencoderKL`` (2 ** number of downsampling blocks)."""
    return 2 ** (len(vae.config.block_out_channels) - 1)


def conditioning_channels_for(factor: int, first: int = 16) -> tuple[int, ...]:
    """Conditioning-embedding channels with log2(``factor``) stride-2 stages (16, 32, 64 for 4)."""
    stages = int(round(math.log2(factor)))
    if 2**stages != factor:
        raise ValueError(f"latent downscale factor {factor} is not a power of two")
    return tuple(first * 2**i for i in range(stages + 1))


def write_controlnet(final: Path, controlnet: Any, fp16: bool, meta: dict[str, Any]) -> None:
    def write(tmp: Path) -> None:
        net = copy.deepcopy(controlnet).eval()
        if fp16:
            net = net.half()
        net.save_pretrained(tmp, safe_serialization=True)
        (tmp / "training.json").write_text(json.dumps(meta, indent=2) + "\n")
        (tmp / "README.md").write_text(README)
        for f in tmp.iterdir():
            f.chmod(0o644)

    C.atomic_dir(final, write)


def main(argv: list[str] | None = None) -> None:
    ap = adapter_parser(__doc__, out=DEFAULT_CONTROLNET, dropout=0.5, batch=8)
    ap.add_argument("--cond-channels", default="", help="conditioning embedding channels, e.g. 16,32,64 (default: one stride-2 stage per VAE downsampling)")
    ap.add_argument("--t-skew", type=float, default=2.0, help="timestep skew towards high noise (1: uniform; k: t = T(1-(1-u)^k))")
    args = ap.parse_args(argv)
    C.setup(args)
    import torch
    from diffusers import ControlNetModel

    out = Path(args.out)
    tokenizer, text_encoder, unet, vae, sched_cfg = load_base(args.base)
    sf = float(vae.config.scaling_factor)
    sched = train_scheduler(sched_cfg)
    factor = latent_factor(vae)
    cond_ch = tuple(int(c) for c in args.cond_channels.split(",")) if args.cond_channels else conditioning_channels_for(factor)
    if 2 ** (len(cond_ch) - 1) != factor:
        raise SystemExit(f"--cond-channels {cond_ch} downsample {2 ** (len(cond_ch) - 1)}x, the VAE {factor}x")
    controlnet = ControlNetModel.from_unet(unet, conditioning_embedding_out_channels=cond_ch, conditioning_channels=3).float()
    controlnet.train()
    params = [p for p in controlnet.parameters()]
    for p in params:
        p.requires_grad_(True)
    C.log(f"ControlNet from the base UNet: {C.n_params(controlnet):,} params; conditioning embedding {cond_ch} ({factor}x down, VAE {factor}x)")

    clock0 = C.Clock(0, 0)
    means, stds, caps, edges = encode_world(vae, args.pool, args.seed + POOL_SEED_OFFSET)
    vmeans, vstds, vcaps, vedges = encode_world(vae, args.val, VAL_SEED)
    del vae
    ids_table, cap_idx, empty_idx = caption_table(tokenizer, caps + vcaps)
    with torch.no_grad():  # the text encoder is frozen: encode every distinct caption once
        hidden_table = torch.cat([text_encoder(ids_table[i : i + 64]).last_hidden_state for i in range(0, len(ids_table), 64)])
    del text_encoder
    vcap_idx, cap_idx = cap_idx[len(caps) :], cap_idx[: len(caps)]
    edges_t = torch.from_numpy(edges)
    vedges_t = torch.from_numpy(vedges)
    C.log(f"encoded {len(caps)} scenes (+{args.val} held out) in {clock0.elapsed():.0f}s")

    def cond_image(e: torch.Tensor) -> torch.Tensor:  # uint8 (B, 64, 64) in {0, 255} -> float (B, 3, 64, 64) in [0, 1]
        return (e.float() / 255.0)[:, None].expand(-1, 3, -1, -1).contiguous()

    def predict(noisy: torch.Tensor, t: torch.Tensor, hidden: torch.Tensor, cond: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
        down, mid = controlnet(noisy, t, encoder_hidden_states=hidden, controlnet_cond=cond, conditioning_scale=scale, return_dict=False)
        return unet(noisy, t, hidden, down_block_additional_residuals=down, mid_block_additional_residual=mid).sample

    vgen = torch.Generator().manual_seed(VAL_SEED)
    val = noisy_batch(sched, vmeans, vstds, torch.arange(len(vcaps)), sf, vgen, t=heldout_timesteps(sched, len(vcaps)))
    vcond = cond_image(vedges_t)
    # held out with half of the captions empty, as in training
    vci = vcap_idx.clone()
    vci[1::2] = empty_idx
    vhidden = hidden_table[vci]

    high = val[1] >= HIGH_T

    def val_loss(scale: float = 1.0) -> tuple[float, float]:
        """Held-out loss over all noise levels, and over the high ones (t >= 600: the layout)."""
        controlnet.eval()
        with torch.no_grad():
            pred = predict(val[0], val[1], vhidden, vcond, scale)
        controlnet.train()
        per = ((pred - val[2]) ** 2).mean(dim=(1, 2, 3))
        return float(per.mean()), float(per[high].mean())

    opt = torch.optim.AdamW(params, lr=args.lr, weight_decay=1e-2)
    ema = ParamEMA(params, args.ema) if args.ema > 0 else None
    gen = torch.Generator().manual_seed(args.seed)
    val_base = val_loss(0.0)  # the base model alone (also the ControlNet's loss at init)
    C.log(f"held-out loss of the base model (no control) {val_base[0]:.4f}, at t>={HIGH_T} {val_base[1]:.4f}")

    def loss() -> torch.Tensor:
        idx = torch.randint(0, len(caps), (args.batch,), generator=gen)
        noisy, t, target = noisy_batch(sched, means, stds, idx, sf, gen, skew=args.t_skew)
        ci = cap_idx[idx].clone()
        ci[torch.rand(args.batch, generator=gen) < args.dropout] = empty_idx
        pred = predict(noisy, t, hidden_table[ci], cond_image(edges_t[idx]))
        return torch.nn.functional.mse_loss(pred, target)

    def checkpoint(final: bool) -> None:
        meta = {
            "steps": trainer.step, "minutes": round(trainer.elapsed() / 60, 1), "batch": args.batch, "lr": args.lr,
            "seed": args.seed, "final": final, "caption_dropout": args.dropout, "base": base_name(args.base),
            "conditioning": "world.edge_map: 1-px white shape edges on black, RGB in [0, 1]",
            "conditioning_embedding_out_channels": list(cond_ch),
            "command": command_line("training.train_controlnet", argv),
            "sampling": {"scheduler": "DDIMScheduler", "guidance_scale": 7.5, "size": 64},
        }
        with ema_weights(ema):
            write_controlnet(out, controlnet, not args.fp32, meta)
        C.log(f"checkpoint written at step {trainer.step}: {out}")

    def held_out() -> str:
        v = val_loss()
        return f" held-out {v[0]:.4f} (base {val_base[0]:.4f}), t>={HIGH_T} {v[1]:.4f} (base {val_base[1]:.4f})"

    trainer = Trainer(
        params=params, optimizer=opt, loss=loss, checkpoint=checkpoint, ema=ema,
        lr=lambda frac: C.cosine_lr(args.lr, frac, warmup=0.02, floor=0.1),
        minutes=args.minutes, steps=args.steps, save_every=args.save_every,
        log_every=args.log_every, loss_decay=0.95, log_extra=held_out,
    )
    trainer.run()
    step, clock = trainer.step, trainer.clock
    with ema_weights(ema):
        val_end = val_loss()
    report = {
        "out": str(out), "steps": step, "minutes": round(clock.elapsed() / 60, 2),
        "s_per_step": round(clock.elapsed() / max(1, step), 3), "loss": round(trainer.smoothed_loss or 0.0, 4),
        "heldout_loss_base": round(val_base[0], 4), "heldout_loss_end": round(val_end[0], 4),
        "heldout_high_t_loss_base": round(val_base[1], 4), "heldout_high_t_loss_end": round(val_end[1], 4),
        "params": C.n_params(controlnet), "conditioning_embedding_out_channels": list(cond_ch),
    }
    print(json.dumps(report), flush=True)


if __name__ == "__main__":
    main()
