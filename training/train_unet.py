"""Train the demo text encoder + UNet (latent diffusion on the demo VAE's latents).

    python -m training.train_unet --out DIR --minutes 90 --seed 0

Needs ``DIR/vae`` (from :mod:`training.train_vae`); writes the tokenizer
if ``DIR/tokenizer`` is missing.  A small ``CLIPTextModel`` and a small
``UNet2DConditionModel`` are trained jointly on the frozen VAE's latents of
the procedural world (filled shapes), with 10% caption dropout (empty caption,
for classifier-free guidance), a zero-terminal-SNR ``scaled_linear`` schedule
and v-prediction.  Every ``--save-every`` minutes (and at the end) the whole
``DIR`` is rewritten atomically as a diffusers ``StableDiffusionPipeline``
folder (EMA weights; the UNet stored as fp16 safetensors unless
``--fp32``), and the full training state goes to ``--work`` so ``--resume``
can continue an interrupted run.

Samples are judged at the end of a run, when the cosine learning rate is
low: in the run that made the shipped weights, shape kind was right 45% of the
time midway (lr 1.7e-4) and 77% at the end (lr 4e-5).  ``make demo-models``
trains in two runs so that it too ends on a resumed run with such a tail;
``training.json`` beside the checkpoint has the shipped weights' full history.

Sample with the saved ``DDIMScheduler`` (v_prediction, trailing timestep
spacing, zero-terminal-SNR betas), guidance scale ~7.5.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from . import common as C  # sets the offline environment first
from .loop import ParamEMA, Trainer

if TYPE_CHECKING:
    import torch

SCHEDULER_KW = dict(
    num_train_timesteps=1000,
    beta_start=0.00085,
    beta_end=0.012,
    beta_schedule="scaled_linear",
    rescale_betas_zero_snr=True,
    prediction_type="v_prediction",
    timestep_spacing="trailing",
    clip_sample=False,
)


def make_text_encoder(tokenizer: Any, hidden: int = 64, layers: int = 3) -> Any:
    from transformers import CLIPTextConfig, CLIPTextModel

    cfg = CLIPTextConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        intermediate_size=4 * hidden,
        projection_dim=hidden,
        num_hidden_layers=layers,
        num_attention_heads=4,
        max_position_embeddings=77,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    return CLIPTextModel(cfg)


def make_unet(cross_dim: int, channels: Sequence[int] = (48, 96, 128)) -> Any:
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel(
        sample_size=16,
        in_channels=4,
        out_channels=4,
        down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
        block_out_channels=tuple(channels),
        layers_per_block=1,
        cross_attention_dim=cross_dim,
        attention_head_dim=8,
        norm_num_groups=16,
    )


def make_train_scheduler() -> Any:
    from diffusers import DDPMScheduler

    return DDPMScheduler(**SCHEDULER_KW)


def make_sample_scheduler() -> Any:
    from diffusers import DDIMScheduler

    return DDIMScheduler(**SCHEDULER_KW, set_alpha_to_one=True, steps_offset=1)


def encode_pool(vae: Any, n: int, seed: int, batch: int = 64) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """Render ``n`` world scenes (seeded) and encode them: (mean, std, captions)."""
    import torch

    from . import world
    from .train_vae import to_tensor

    rng = np.random.default_rng(seed)
    means, stds, caps = [], [], []
    vae.eval()
    with torch.no_grad():
        for i in range(0, n, batch):
            k = min(batch, n - i)
            imgs = np.empty((k, 64, 64, 3), np.uint8)
            for j in range(k):
                s = world.sample_scene(rng)
                imgs[j] = world.render_array(s, 64)
                caps.append(world.caption(s))
            d = vae.encode(to_tensor(imgs)).latent_dist
            means.append(d.mean.half())
            stds.append(d.std.half())
    return torch.cat(means), torch.cat(stds), caps


def write_pipeline(final: Path, static: Path, unet: Any, text_encoder: Any, tokenizer: Any, fp16: bool, meta: dict[str, Any]) -> None:
    """Write the full pipeline folder to a temp dir, then swap it into place."""
    from diffusers import AutoencoderKL, StableDiffusionPipeline

    def write(tmp: Path) -> None:
        vae = AutoencoderKL.from_pretrained(static / "vae")
        u = copy.deepcopy(unet).eval()
        te = copy.deepcopy(text_encoder).eval()
        if fp16:
            # diffusers up-casts fp16 weights to fp32 on load; transformers 5
            # would keep the text encoder in fp16, so it stays fp32 (it is tiny)
            u = u.half()
        pipe = StableDiffusionPipeline(
            vae=vae,
            text_encoder=te,
            tokenizer=tokenizer,
            unet=u,
            scheduler=make_sample_scheduler(),
            safety_checker=None,
            feature_extractor=None,
            requires_safety_checker=False,
        )
        pipe.save_pretrained(tmp, safe_serialization=True)  # type: ignore[attr-defined]  # diffusers is untyped here
        # keep our own tokenizer files byte-for-byte (vocab/merges/config)
        shutil.rmtree(tmp / "tokenizer")
        shutil.copytree(static / "tokenizer", tmp / "tokenizer")
        (tmp / "training.json").write_text(json.dumps(meta, indent=2) + "\n")
        readme = static / "README.md"
        if readme.exists():
            shutil.copy(readme, tmp / "README.md")

    C.atomic_dir(final, write)


def main(argv: list[str] | None = None) -> None:
    ap = C.base_parser(__doc__.splitlines()[0])
    ap.set_defaults(lr=6e-4, minutes=90.0, save_every=5.0)
    ap.add_argument("--work", default="/tmp/nodeflow-demo-train/unet", help="training state (for --resume) and caches")
    ap.add_argument("--resume", action="store_true", help="continue from the state in --work")
    ap.add_argument("--pool", type=int, default=32768, help="number of distinct training scenes")
    ap.add_argument("--text-hidden", type=int, default=64)
    ap.add_argument("--text-layers", type=int, default=3)
    ap.add_argument("--channels", default="48,96,128")
    ap.add_argument("--dropout", type=float, default=0.1, help="caption dropout probability")
    ap.add_argument("--fp32", action="store_true", help="store fp32 weights instead of fp16")
    ap.add_argument("--init", default="", help="start from the UNet and text encoder of this pipeline folder (e.g. the shipped one) instead of random weights")
    args = ap.parse_args(argv)
    C.setup(args)
    import torch
    from diffusers import AutoencoderKL

    from . import tokenizer as tok_mod

    out = Path(args.out)
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    static = work / "static"
    if not (out / "vae").exists():
        raise SystemExit(f"{out / 'vae'} not found: run training.train_vae first")
    # snapshot of the parts this run does not train (the output folder is rewritten)
    if static.exists():
        shutil.rmtree(static)
    static.mkdir()
    shutil.copytree(out / "vae", static / "vae")
    if (out / "tokenizer").exists():
        shutil.copytree(out / "tokenizer", static / "tokenizer")
    else:
        tok_mod.save(static / "tokenizer")
    if (out / "README.md").exists():
        shutil.copy(out / "README.md", static / "README.md")
    tokenizer = tok_mod.load(static / "tokenizer")
    vae = AutoencoderKL.from_pretrained(static / "vae").float()
    vae.requires_grad_(False)
    sf = float(vae.config.scaling_factor)

    text_encoder = make_text_encoder(tokenizer, args.text_hidden, args.text_layers)
    unet = make_unet(text_encoder.config.hidden_size, [int(c) for c in args.channels.split(",")])
    if args.init and not (args.resume and (work / "state.pt").exists()):
        from diffusers import UNet2DConditionModel
        from transformers import CLIPTextModel

        init = Path(args.init)
        unet = UNet2DConditionModel.from_pretrained(init / "unet").float()
        text_encoder = CLIPTextModel.from_pretrained(init / "text_encoder").float()
        C.log(f"initialised from {init}")
    C.log(f"UNet params {C.n_params(unet):,}; text encoder params {C.n_params(text_encoder):,}; VAE scaling_factor {sf:.4f}")
    params = list(unet.parameters()) + list(text_encoder.parameters())
    opt = torch.optim.AdamW(params, lr=args.lr, weight_decay=1e-2)
    ema = ParamEMA(params, 0.999)
    state_path = work / "state.pt"
    command = "python -m training.train_unet " + " ".join(argv if argv is not None else sys.argv[1:])

    def checkpoint(final: bool) -> None:
        state = {"unet": unet.state_dict(), "text_encoder": text_encoder.state_dict(), **trainer.state_dict()}
        torch.save(state, work / "state.tmp")
        os.replace(work / "state.tmp", state_path)
        with ema.swapped():
            u, te = copy.deepcopy(unet), copy.deepcopy(text_encoder)
        meta = {
            "steps": trainer.step,
            "minutes": round(trainer.elapsed() / 60, 1),
            "batch": args.batch,
            "seed": args.seed,
            "final": final,
            "command": command,
            "sampling": {"scheduler": "DDIMScheduler", "prediction_type": "v_prediction", "timestep_spacing": "trailing", "rescale_betas_zero_snr": True, "guidance_scale": 7.5},
        }
        write_pipeline(out, static, u, te, tokenizer, not args.fp32, meta)
        C.log(f"checkpoint written at step {trainer.step}")

    def loss() -> torch.Tensor:
        idx = torch.randint(0, len(caps), (args.batch,), generator=gen)
        z = (means[idx].float() + stds[idx].float() * torch.randn(means[idx].shape, generator=gen)) * sf
        ci = cap_idx[idx].clone()
        drop = torch.rand(args.batch, generator=gen) < args.dropout
        ci[drop] = empty_idx
        ids = ids_table[ci]
        noise = torch.randn(z.shape, generator=gen)
        t = torch.randint(0, sched.config.num_train_timesteps, (args.batch,), generator=gen)
        noisy = sched.add_noise(z, noise, t)
        target = sched.get_velocity(z, noise, t)
        hidden = text_encoder(ids).last_hidden_state
        pred = unet(noisy, t, hidden).sample
        return torch.nn.functional.mse_loss(pred, target)

    trainer = Trainer(
        params=params, optimizer=opt, loss=loss, checkpoint=checkpoint, ema=ema, minutes=args.minutes, steps=args.steps,
        lr=lambda frac: C.cosine_lr(args.lr, frac, warmup=0.01, floor=0.2),
        save_every=args.save_every, log_every=50, loss_decay=0.99,
    )
    if args.resume and state_path.exists():
        st = torch.load(state_path, weights_only=True)
        unet.load_state_dict(st["unet"])
        text_encoder.load_state_dict(st["text_encoder"])
        trainer.load_state_dict(st)
        C.log(f"resumed at step {trainer.step}")

    t0 = C.Clock(0, 0)
    vae_hash = hashlib.sha256((static / "vae" / "diffusion_pytorch_model.safetensors").read_bytes()).hexdigest()[:12]
    pool_path = work / f"pool-{args.seed + 1000}-{args.pool}-{vae_hash}.pt"
    if pool_path.exists():
        pool = torch.load(pool_path, weights_only=True)
        means, stds, caps = pool["means"], pool["stds"], pool["caps"]
    else:
        means, stds, caps = encode_pool(vae, args.pool, args.seed + 1000)
        torch.save({"means": means, "stds": stds, "caps": caps}, work / "pool.tmp")
        os.replace(work / "pool.tmp", pool_path)
    C.log(f"encoded {len(caps)} scenes in {t0.elapsed():.0f}s; latent*sf std {(means.float() * sf).std():.3f}")
    del vae
    # tokenize every distinct caption once
    uniq = sorted(set(caps)) + [""]
    index = {c: i for i, c in enumerate(uniq)}
    ids_table = tokenizer(uniq, padding="max_length", max_length=tokenizer.model_max_length, truncation=True, return_tensors="pt").input_ids
    cap_idx = torch.tensor([index[c] for c in caps])
    empty_idx = index[""]

    sched = make_train_scheduler()
    gen = torch.Generator().manual_seed(args.seed + trainer.step)
    unet.train()
    text_encoder.train()
    trainer.run()
    C.log(f"done: {trainer.step} steps, {trainer.elapsed() / 60:.1f} min")

if __name__ == "__main__":
    main()
