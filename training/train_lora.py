"""Train the demo "outlined" LoRA on top of the shipped nodeflow-shapes pipeline.

    python -m training.train_lora --minutes 25 --threads 1

The base pipeline (``--base``, default the shipped ``nodeflow-shapes`` folder)
is loaded and frozen; peft LoRA adapters (rank ``--rank``, alpha = rank,
gaussian init so ``lora_B`` starts at zero) are added to the UNet attention
projections ``to_q, to_k, to_v, to_out.0`` (with ``--targets all`` also the
resnet convolutions and the transformer blocks' ``proj_in``, ``proj_out`` and
feed-forward) and, unless ``--no-text-encoder``,
to the text encoder's ``q_proj, k_proj, v_proj, out_proj``.  They are trained
with the base model's objective (v-prediction, zero-terminal-SNR
``scaled_linear`` betas) on the frozen VAE's latents of the procedural world
rendered with ``outlined=True``, captioned ``world.caption(scene,
outlined=True)`` ("a red outlined circle on a blue background"), with 10%
caption dropout: the base model plus the LoRA draws outlines instead of filled
shapes.

Every ``--save-every`` minutes and at the end the EMA of the adapter weights is
written atomically (temp file + rename) as ONE ``.safetensors`` file in the
diffusers/peft layout (``unet.<module>.lora_A.weight``,
``text_encoder.<module>.lora_B.weight``...; fp16 unless ``--fp32``), which
``pipe.load_lora_weights`` and nodeflow's ``diffusion.LoadLoRA`` both read.
The training settings are in the file's metadata (``nodeflow_training``).
The last log line is a JSON report.

The helpers here (:func:`load_base`, :func:`encode_world`, :class:`ParamEMA`)
are shared with :mod:`training.train_controlnet`.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from . import common as C  # sets the offline environment first
from .common import MODELS
from .loop import ParamEMA, Trainer, ema_weights

if TYPE_CHECKING:
    import torch

DEFAULT_BASE = C.DEFAULT_OUT
DEFAULT_LORA = MODELS / "loras" / "nodeflow-shapes-outlined.safetensors"
UNET_TARGETS = ["to_q", "to_k", "to_v", "to_out.0"]
# ``--targets all``: also the resnet convolutions and the transformer blocks'
# projections and feed-forward, so the adapter can change how shapes are drawn,
# not only what the cross-attention reads from the caption
UNET_TARGETS_ALL = UNET_TARGETS + ["conv1", "conv2", "proj_in", "proj_out", "ff.net.0.proj", "ff.net.2"]
TEXT_TARGETS = ["q_proj", "k_proj", "v_proj", "out_proj"]
POOL_SEED_OFFSET = 2000  # training scenes: default_rng(seed + 2000); evaluation uses 777
VAL_SEED = 4242  # fixed held-out batch for the logged validation loss


# --------------------------------------------------------------------------- shared helpers


def adapter_parser(doc: str, *, out: Path, dropout: float, batch: int) -> argparse.ArgumentParser:
    """The command-line options shared by the trainers of adapters on a frozen base
    (this LoRA and :mod:`training.train_controlnet`)."""
    ap = C.base_parser(doc.splitlines()[0])
    ap.set_defaults(out=str(out), lr=1e-3, minutes=25.0, save_every=5.0, batch=batch)
    ap.add_argument("--base", default=str(DEFAULT_BASE), help="the base StableDiffusionPipeline folder (frozen)")
    ap.add_argument("--pool", type=int, default=4096, help="number of distinct training scenes")
    ap.add_argument("--dropout", type=float, default=dropout, help="probability of an empty caption")
    ap.add_argument("--ema", type=float, default=0.99, help="EMA decay of the saved weights (0: no EMA)")
    ap.add_argument("--log-every", type=int, default=25, help="steps between log lines (with a held-out loss)")
    ap.add_argument("--val", type=int, default=64, help="held-out scenes for the logged loss")
    ap.add_argument("--fp32", action="store_true", help="store fp32 weights instead of fp16")
    return ap


def load_base(base: str | Path) -> tuple[Any, Any, Any, Any, dict[str, Any]]:
    """(tokenizer, text_encoder, unet, vae, scheduler_config) of a pipeline folder: fp32, eval, frozen."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer

    base = Path(base)
    if not (base / "unet").is_dir():
        raise SystemExit(f"{base} is not a diffusers pipeline folder (no unet/)")
    tokenizer = CLIPTokenizer.from_pretrained(str(base / "tokenizer"), local_files_only=True)
    text_encoder = CLIPTextModel.from_pretrained(str(base / "text_encoder"), local_files_only=True).float()
    unet = UNet2DConditionModel.from_pretrained(str(base / "unet"), local_files_only=True).float()
    vae = AutoencoderKL.from_pretrained(str(base / "vae"), local_files_only=True).float()
    for m in (text_encoder, unet, vae):
        m.eval().requires_grad_(False)
    sched = json.loads((base / "scheduler" / "scheduler_config.json").read_text())
    return tokenizer, text_encoder, unet, vae, sched


def train_scheduler(config: dict[str, Any]) -> Any:
    """A ``DDPMScheduler`` with the base pipeline's noise schedule and prediction type."""
    from diffusers import DDPMScheduler

    keep = ("num_train_timesteps", "beta_start", "beta_end", "beta_schedule", "trained_betas", "rescale_betas_zero_snr", "prediction_type", "clip_sample")
    return DDPMScheduler(**{k: config[k] for k in keep if k in config})


def encode_world(vae: Any, n: int, seed: int, outlined: bool = False, batch: int = 64) -> tuple[torch.Tensor, torch.Tensor, list[str], np.ndarray]:
    """``n`` world scenes from ``default_rng(seed)``, rendered and VAE-encoded.

    Returns ``(means, stds, captions, edges)``: fp16 latent means/stds (n, 4, h, w),
    the captions (``outlined`` ones when rendering outlined) and the scenes' edge
    maps as uint8 (n, 64, 64) in {0, 255}.
    """
    import torch

    from . import world
    from .train_vae import to_tensor

    rng = np.random.default_rng(seed)
    means, stds, caps = [], [], []
    edges = np.empty((n, world.BASE_SIZE, world.BASE_SIZE), np.uint8)
    with torch.no_grad():
        for i in range(0, n, batch):
            k = min(batch, n - i)
            imgs = np.empty((k, world.BASE_SIZE, world.BASE_SIZE, 3), np.uint8)
            for j in range(k):
                s = world.sample_scene(rng)
                imgs[j] = world.render_array(s, world.BASE_SIZE, outlined)
                edges[i + j] = world.edge_map_array(s, world.BASE_SIZE)[..., 0]
                caps.append(world.caption(s, outlined=outlined))
            d = vae.encode(to_tensor(imgs)).latent_dist
            means.append(d.mean.half())
            stds.append(d.std.half())
    return torch.cat(means), torch.cat(stds), caps, edges


def caption_table(tokenizer: Any, caps: list[str]) -> tuple[torch.Tensor, torch.Tensor, int]:
    """(ids table (k, 77), index of each caption in it, index of the empty caption)."""
    import torch

    uniq = sorted(set(caps)) + [""]
    index = {c: i for i, c in enumerate(uniq)}
    ids = tokenizer(uniq, padding="max_length", max_length=tokenizer.model_max_length, truncation=True, return_tensors="pt").input_ids
    return ids, torch.tensor([index[c] for c in caps]), index[""]


def sample_timesteps(sched: Any, n: int, gen: torch.Generator, skew: float = 1.0) -> torch.Tensor:
    """``n`` training timesteps: uniform for ``skew`` 1; for ``skew`` k > 1 t = T * (1 - (1 - u) ** k),
    which favours high noise levels (where a picture's layout is decided) but covers all."""
    import torch

    T = sched.config.num_train_timesteps
    if skew == 1.0:
        return torch.randint(0, T, (n,), generator=gen)
    u = torch.rand(n, generator=gen)
    return (T * (1 - (1 - u) ** skew)).long().clamp(0, T - 1)


def heldout_timesteps(sched: Any, n: int) -> torch.Tensor:
    """Evenly spaced timesteps over the whole schedule (a low-variance held-out loss)."""
    import torch

    T = sched.config.num_train_timesteps
    return ((torch.arange(n) + 0.5) * T / n).long().clamp(0, T - 1)


def noisy_batch(sched: Any, means: torch.Tensor, stds: torch.Tensor, idx: torch.Tensor, sf: float, gen: torch.Generator,
                t: torch.Tensor | None = None, skew: float = 1.0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(noisy latents, timesteps, target) for pool items ``idx``: the base model's objective."""
    import torch

    z = (means[idx].float() + stds[idx].float() * torch.randn(means[idx].shape, generator=gen)) * sf
    noise = torch.randn(z.shape, generator=gen)
    if t is None:
        t = sample_timesteps(sched, len(idx), gen, skew)
    noisy = sched.add_noise(z, noise, t)
    target = sched.get_velocity(z, noise, t) if sched.config.prediction_type == "v_prediction" else noise
    return noisy, t, target


def base_name(base: str | Path) -> str:
    """The base pipeline as recorded in metadata: relative to the shipped models folder when inside it."""
    path = Path(base).resolve()
    return str(path.relative_to(MODELS)) if path.is_relative_to(MODELS) else str(base)


def command_line(module: str, argv: list[str] | None) -> str:
    return f"python -m {module} " + " ".join(argv if argv is not None else sys.argv[1:])


# --------------------------------------------------------------------------- LoRA


def lora_tensors(unet: Any, text_encoder: Any, fp16: bool) -> dict[str, torch.Tensor]:
    """The adapters' weights in the diffusers/peft single-file layout."""
    from peft.utils import get_peft_model_state_dict

    out = {}
    for prefix, module in (("unet", unet), ("text_encoder", text_encoder)):
        if module is None:
            continue
        for k, v in get_peft_model_state_dict(module).items():
            if prefix == "text_encoder" and not k.startswith("text_model."):
                # transformers 5's CLIPTextModel has no ``text_model`` level; keep the
                # usual SD 1.x key names (diffusers loads either)
                k = "text_model." + k
            v = v.detach().clone().contiguous()
            out[f"{prefix}.{k}"] = v.half() if fp16 else v
    return out


def save_lora(path: Path, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
    from safetensors.torch import save_file

    C.atomic_file(path, lambda tmp: save_file(tensors, str(tmp), metadata={"format": "pt", "nodeflow_training": json.dumps(meta)}))


def main(argv: list[str] | None = None) -> None:
    ap = adapter_parser(__doc__, out=DEFAULT_LORA, dropout=0.1, batch=32)
    ap.add_argument("--rank", type=int, default=8, help="LoRA rank (alpha = rank)")
    ap.add_argument("--no-text-encoder", action="store_true", help="adapt the UNet only")
    ap.add_argument("--targets", choices=("attn", "all"), default="attn",
                    help="UNet modules to adapt: attention projections only, or also resnet convs and transformer projections")
    args = ap.parse_args(argv)
    C.setup(args)
    import torch
    from peft import LoraConfig, inject_adapter_in_model

    out = Path(args.out)
    tokenizer, text_encoder, unet, vae, sched_cfg = load_base(args.base)
    sf = float(vae.config.scaling_factor)
    sched = train_scheduler(sched_cfg)
    unet.add_adapter(LoraConfig(r=args.rank, lora_alpha=args.rank, init_lora_weights="gaussian", target_modules=UNET_TARGETS_ALL if args.targets == "all" else UNET_TARGETS))
    te_lora = not args.no_text_encoder
    if te_lora:
        # peft directly (transformers' add_adapter may demand a newer peft than diffusers does)
        inject_adapter_in_model(LoraConfig(r=args.rank, lora_alpha=args.rank, init_lora_weights="gaussian", target_modules=TEXT_TARGETS), text_encoder, adapter_name="default")
    params = [p for m in (unet, text_encoder) for p in m.parameters() if p.requires_grad]
    n_lora = sum(p.numel() for p in params)
    n_frozen = sum(p.numel() for m in (unet, text_encoder) for p in m.parameters() if not p.requires_grad)
    C.log(f"LoRA rank {args.rank} on the UNet{' and text encoder' if te_lora else ''}: {n_lora:,} trainable params ({n_frozen:,} frozen)")

    clock0 = C.Clock(0, 0)
    means, stds, caps, _ = encode_world(vae, args.pool, args.seed + POOL_SEED_OFFSET, outlined=True)
    vmeans, vstds, vcaps, _ = encode_world(vae, args.val, VAL_SEED, outlined=True)
    del vae
    C.log(f"encoded {len(caps)} outlined scenes (+{args.val} held out) in {clock0.elapsed():.0f}s")
    ids_table, cap_idx, empty_idx = caption_table(tokenizer, caps + vcaps)
    vcap_idx = cap_idx[len(caps):]
    cap_idx = cap_idx[: len(caps)]

    vgen = torch.Generator().manual_seed(VAL_SEED)
    val = noisy_batch(sched, vmeans, vstds, torch.arange(len(vcaps)), sf, vgen, t=heldout_timesteps(sched, len(vcaps)))

    def val_loss() -> float:
        unet.eval()
        text_encoder.eval()
        with torch.no_grad():
            hidden = text_encoder(ids_table[vcap_idx]).last_hidden_state
            pred = unet(val[0], val[1], hidden).sample
        unet.train()
        text_encoder.train(te_lora)
        return float(torch.nn.functional.mse_loss(pred, val[2]))

    opt = torch.optim.AdamW(params, lr=args.lr, weight_decay=1e-4)
    ema = ParamEMA(params, args.ema) if args.ema > 0 else None
    gen = torch.Generator().manual_seed(args.seed)
    val0 = val_loss()
    C.log(f"held-out loss before training {val0:.4f}")
    unet.train()
    text_encoder.train(te_lora)

    def loss() -> torch.Tensor:
        idx = torch.randint(0, len(caps), (args.batch,), generator=gen)
        noisy, t, target = noisy_batch(sched, means, stds, idx, sf, gen)
        ci = cap_idx[idx].clone()
        ci[torch.rand(args.batch, generator=gen) < args.dropout] = empty_idx
        hidden = text_encoder(ids_table[ci]).last_hidden_state
        pred = unet(noisy, t, hidden).sample
        return torch.nn.functional.mse_loss(pred, target)

    def checkpoint(final: bool) -> None:
        meta = {
            "steps": trainer.step, "minutes": round(trainer.elapsed() / 60, 1), "batch": args.batch, "lr": args.lr,
            "rank": args.rank, "alpha": args.rank, "targets": args.targets, "text_encoder": te_lora, "seed": args.seed, "final": final,
            "base": base_name(args.base), "trigger": "outlined", "command": command_line("training.train_lora", argv),
        }
        with ema_weights(ema):
            tensors = lora_tensors(unet, text_encoder if te_lora else None, not args.fp32)
        save_lora(out, tensors, meta)
        C.log(f"checkpoint written at step {trainer.step}: {out}")

    trainer = Trainer(
        params=params, optimizer=opt, loss=loss, checkpoint=checkpoint, ema=ema,
        lr=lambda frac: C.cosine_lr(args.lr, frac, warmup=0.02, floor=0.1),
        minutes=args.minutes, steps=args.steps, save_every=args.save_every,
        log_every=args.log_every, loss_decay=0.95, log_extra=lambda: f" held-out {val_loss():.4f}",
    )
    trainer.run()
    step, clock = trainer.step, trainer.clock
    with ema_weights(ema):
        val_end = val_loss()
    report = {
        "out": str(out), "steps": step, "minutes": round(clock.elapsed() / 60, 2),
        "s_per_step": round(clock.elapsed() / max(1, step), 3), "loss": round(trainer.smoothed_loss or 0.0, 4),
        "heldout_loss_start": round(val0, 4), "heldout_loss_end": round(val_end, 4),
        "trainable_params": n_lora, "bytes": out.stat().st_size,
    }
    print(json.dumps(report), flush=True)


if __name__ == "__main__":
    main()
