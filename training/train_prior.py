"""Train the demo autoregressive prior (nodeflow-shapes-prior) over the demo VQ tokenizer.

Scenes of the procedural world are rendered, tokenized once with the shipped VQ tokenizer
exactly as ``ar.Tokenize`` does (cached in memory), and a small causal transformer
(``nodeflow.nodes.ar.prior.TokenPrior``) learns next-token prediction with cross-entropy.
The class label is the colour of the scene's shape (``world.COLOURS``); about 10% of the
labels are replaced by the "no label" entry so the prior also samples unconditionally.

    python -m training.train_prior \\
        --out nodeflow/demo/models/priors/nodeflow-shapes-prior.safetensors \\
        --minutes 15 --seed 0 --threads 1

The prior is saved atomically every ``--save-every`` minutes and at the end, as one
.safetensors file with its config in the metadata (the format ``ar.LoadPrior`` reads).
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .common import MODELS, Clock, base_parser, cosine_lr, log, n_params, setup
from .loop import Trainer

if TYPE_CHECKING:
    import torch

DEFAULT_PRIOR = MODELS / "priors" / "nodeflow-shapes-prior.safetensors"
DEFAULT_TOKENIZER = MODELS / "tokenizers" / "nodeflow-shapes-vq"


def tokenize_world(tokenizer: Any, n: int, seed: int, chunk: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
    """(ids int64 (n, h*w), colour labels int64 (n,)) for ``n`` filled scenes from ``seed``."""
    import numpy as np
    import torch

    from . import world

    images, _captions, scenes = world.dataset(n, seed)
    ids = []
    for i in range(0, n, chunk):
        batch = images[i:i + chunk].astype(np.float32) / 255.0
        ids.append(tokenizer.encode(batch, "cpu"))
    grid = np.concatenate(ids)
    labels = np.array([world.COLOURS.index(s.colour) for s in scenes], dtype=np.int64)
    return torch.from_numpy(grid.reshape(n, -1)), torch.from_numpy(labels)


def save_atomic(model: torch.nn.Module, out: Path) -> None:
    from nodeflow.nodes.ar.prior import save_prior

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.stem}.tmp-{uuid.uuid4().hex[:8]}.safetensors")
    try:
        save_prior(model, tmp)
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)


def main(argv: list[str] | None = None) -> None:
    ap = base_parser(__doc__.splitlines()[0])
    ap.set_defaults(out=str(DEFAULT_PRIOR), minutes=15.0, batch=32, lr=1e-3)
    ap.add_argument("--tokenizer", default=str(DEFAULT_TOKENIZER), help="the VQ tokenizer folder")
    ap.add_argument("--images", type=int, default=4000, help="world scenes to tokenize")
    ap.add_argument("--dim", type=int, default=128)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--label-dropout", type=float, default=0.1)
    ap.add_argument("--weight-decay", type=float, default=0.05)
    ap.add_argument("--init", default="", help="continue from the weights of this prior file "
                    "(same config) instead of a fresh model")
    args = ap.parse_args(argv)
    setup(args)

    import torch
    import torch.nn.functional as F

    from nodeflow.nodes.ar.prior import TokenPrior
    from nodeflow.nodes.ar.tokenizer import load_tokenizer

    from . import world

    out = Path(args.out)
    tokenizer = load_tokenizer(Path(args.tokenizer))
    clock0 = Clock(0, 0)
    # Training scenes come from seed+1000 (evaluation and tests use large, unrelated seeds).
    tokens, labels = tokenize_world(tokenizer, args.images, 1000 + args.seed)
    height = width = int(tokens.shape[1] ** 0.5)
    log(f"tokenized {len(tokens)} scenes into {height}x{width} grids in {clock0.elapsed():.0f}s "
        f"({len(torch.unique(tokens))} of {tokenizer.codebook_size} codes used)")

    config = {
        "vocab_size": tokenizer.codebook_size, "height": height, "width": width,
        "dim": args.dim, "layers": args.layers, "heads": args.heads, "mlp_ratio": 4.0,
        "num_classes": len(world.COLOURS), "class_names": list(world.COLOURS),
        "tokenizer": tokenizer.fingerprint,
    }
    model = TokenPrior(config)
    if args.init:
        from safetensors.torch import load_file

        model.load_state_dict(load_file(args.init))
        log(f"starting from the weights of {args.init}")
    log(f"prior: {n_params(model) / 1e6:.2f}M parameters, config {config}")
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2 and "embedding" not in n]
    other = [p for n, p in model.named_parameters() if not (p.ndim >= 2 and "embedding" not in n)]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": args.weight_decay},
                             {"params": other, "weight_decay": 0.0}], lr=args.lr, betas=(0.9, 0.95))
    gen = torch.Generator().manual_seed(args.seed)

    def loss() -> torch.Tensor:
        idx = torch.randint(len(tokens), (args.batch,), generator=gen)
        x, y = tokens[idx], labels[idx].clone()
        drop = torch.rand(args.batch, generator=gen) < args.label_dropout
        y[drop] = model.num_classes  # the "no label" start token
        logits = model(y, x[:, :-1])
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), x.reshape(-1))

    def checkpoint(final: bool) -> None:
        model.eval()
        save_atomic(model, out)
        if final:
            log(f"done: {trainer.step} steps in {trainer.elapsed() / 60:.1f} min, loss {trainer.smoothed_loss}, "
                f"saved {out} ({out.stat().st_size / 1024:.0f} KiB)")
        else:
            model.train()
            log(f"saved {out} at step {trainer.step}")

    trainer = Trainer(
        params=list(model.parameters()), optimizer=opt, loss=loss, checkpoint=checkpoint,
        lr=lambda frac: cosine_lr(args.lr, frac, warmup=0.03), minutes=args.minutes, steps=args.steps,
        save_every=args.save_every, log_every=25, loss_decay=0.98,
    )
    model.train()
    trainer.run()


if __name__ == "__main__":
    main()
