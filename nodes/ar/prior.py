"""A small decoder-only causal transformer over a VQ codebook, with a key/value cache.

The sequence for one image is ``[start, t0, t1, ..., t(N-2)]`` where ``start`` is the
embedding of a class label (or of "no label") and ``t`` are the grid's tokens in raster
order; the output at position ``i`` predicts token ``i``. Positions are learned (1-D).

Config keys (saved with the weights): ``vocab_size`` (the codebook size), ``height``
and ``width`` (the token grid), ``dim``, ``layers``, ``heads``, ``mlp_ratio`` (4),
``num_classes`` (0: unconditional), optional ``class_names`` and ``tokenizer`` (the
fingerprint of the codebook it was trained on).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from nodeflow.api import ModelError
from nodeflow.nodes.ar.files import PRIOR_FORMAT, prior_config


class LayerCache:
    """Keys and values of one attention layer for every position fed so far."""

    def __init__(self, batch: int, heads: int, length: int, head_dim: int, device: Any,
                 dtype: Any) -> None:
        self.k = torch.zeros(batch, heads, length, head_dim, device=device, dtype=dtype)
        self.v = torch.zeros_like(self.k)


class KVCache:
    """The cache of every layer, sized for a whole sequence."""

    def __init__(self, model: TokenPrior, batch: int) -> None:
        p = next(model.parameters())
        heads = model.config["heads"]
        head_dim = model.config["dim"] // heads
        self.layers = [LayerCache(batch, heads, model.length, head_dim, p.device, p.dtype)
                       for _ in model.blocks]


class CausalSelfAttention(nn.Module):
    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, cache: LayerCache | None, start: int) -> torch.Tensor:
        batch, length, dim = x.shape
        q, k, v = (t.view(batch, length, self.heads, dim // self.heads).transpose(1, 2)
                   for t in self.qkv(x).split(dim, dim=2))
        if cache is not None:
            cache.k[:, :, start:start + length] = k
            cache.v[:, :, start:start + length] = v
            k, v = cache.k[:, :, :start + length], cache.v[:, :, :start + length]
        if length == 1:  # one new position sees everything before it
            y = F.scaled_dot_product_attention(q, k, v)
        elif start == 0:
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        else:
            mask = torch.ones(length, start + length, dtype=torch.bool, device=x.device)
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask.tril(diagonal=start))
        return self.proj(y.transpose(1, 2).reshape(batch, length, dim))


class Block(nn.Module):
    """Pre-norm transformer block: x + attn(norm(x)), then x + mlp(norm(x))."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float) -> None:
        super().__init__()
        hidden = int(dim * mlp_ratio)
        self.norm1 = nn.LayerNorm(dim)
        self.attn = CausalSelfAttention(dim, heads)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))

    def forward(self, x: torch.Tensor, cache: LayerCache | None, start: int) -> torch.Tensor:
        x = x + self.attn(self.norm1(x), cache, start)
        return x + self.mlp(self.norm2(x))


class TokenPrior(nn.Module):
    """Predicts a token grid one token at a time, in raster order, optionally given a class."""

    def __init__(self, config: dict[str, Any]) -> None:
        super().__init__()
        self.config = dict(config)
        dim, heads = config["dim"], config["heads"]
        if dim % heads:
            raise ValueError(f"dim {dim} is not divisible by heads {heads}")
        self.num_classes = int(config.get("num_classes", 0))
        self.length = config["height"] * config["width"]
        self.token_embedding = nn.Embedding(config["vocab_size"], dim)
        # Row num_classes is the "no label" start token.
        self.start_embedding = nn.Embedding(self.num_classes + 1, dim)
        self.position = nn.Parameter(torch.zeros(1, self.length, dim))
        self.blocks = nn.ModuleList(Block(dim, heads, float(config.get("mlp_ratio", 4.0)))
                                    for _ in range(config["layers"]))
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, config["vocab_size"], bias=False)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for module in self.modules():
            if isinstance(module, nn.Linear | nn.Embedding):
                nn.init.normal_(module.weight, std=0.02)
            if isinstance(module, nn.Linear) and module.bias is not None:
                nn.init.zeros_(module.bias)
        nn.init.normal_(self.position, std=0.02)
        for name, param in self.named_parameters():  # scaled residual projections (GPT-2)
            if name.endswith("attn.proj.weight"):
                nn.init.normal_(param, std=0.02 / math.sqrt(2 * len(self.blocks)))

    @property
    def vocab_size(self) -> int:
        return int(self.config["vocab_size"])

    @property
    def grid(self) -> tuple[int, int]:
        return int(self.config["height"]), int(self.config["width"])

    def forward(self, labels: torch.Tensor, tokens: torch.Tensor | None,
                cache: KVCache | None = None, start: int = 0) -> torch.Tensor:
        """Next-token logits (batch, n, vocab) for sequence positions start .. start+n-1.

        Position 0 is the start token (``labels``: class ids, ``num_classes`` for none);
        position p >= 1 holds token p-1, so ``tokens`` are the tokens at the positions fed
        after the start token. Without a cache, feed from start 0.
        """
        parts = []
        if start == 0:
            parts.append(self.start_embedding(labels)[:, None])
        if tokens is not None and tokens.shape[1] > 0:
            parts.append(self.token_embedding(tokens))
        x = torch.cat(parts, dim=1) if len(parts) > 1 else parts[0]
        x = x + self.position[:, start:start + x.shape[1]]
        for i, block in enumerate(self.blocks):
            x = block(x, cache.layers[i] if cache is not None else None, start)
        return self.head(self.norm(x))

    def labels_for(self, label: int | None, batch: int, device: Any) -> torch.Tensor:
        value = self.num_classes if label is None else label
        return torch.full((batch,), value, dtype=torch.long, device=device)


def filter_logits(logits: torch.Tensor, temperature: float, top_k: int, top_p: float) -> torch.Tensor:
    """Logits scaled by temperature with all but the top-k / nucleus (top-p) tokens removed."""
    logits = logits / temperature
    vocab = logits.shape[-1]
    if 0 < top_k < vocab:
        kth = torch.topk(logits, top_k, dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p < 1.0:
        ordered, order = torch.sort(logits, dim=-1, descending=True)
        probs = ordered.softmax(dim=-1)
        before = probs.cumsum(dim=-1) - probs  # probability mass ranked above each token
        drop = before >= top_p
        drop[..., 0] = False  # the most likely token always stays
        logits = logits.masked_fill(torch.zeros_like(drop).scatter(-1, order, drop), float("-inf"))
    return logits


def choose(logits: torch.Tensor, temperature: float, top_k: int, top_p: float,
           generator: torch.Generator) -> torch.Tensor:
    """One token per row of ``logits`` (batch, vocab), drawn on the CPU for any device."""
    logits = logits.float().cpu()
    if temperature <= 0.0 or top_k == 1:
        return logits.argmax(dim=-1)
    probs = filter_logits(logits, temperature, top_k, top_p).softmax(dim=-1)
    return torch.multinomial(probs, 1, generator=generator)[:, 0]


@torch.inference_mode()
def generate(model: TokenPrior, ids: torch.Tensor, known: int, label: int | None, seed: int,
             temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0, use_cache: bool = True,
             on_token: Callable[[int], None] = lambda i: None, cfg: float = 1.0) -> torch.Tensor:
    """Fill ``ids`` (batch, N) from position ``known`` on; the first ``known`` are kept.

    With a ``label`` and ``cfg`` other than 1, classifier-free guidance: every step also
    runs the grid without a label and draws from ``uncond + cfg * (cond - uncond)`` logits
    (the prior is trained with labels dropped now and then, so it knows both).
    ``on_token(i)`` is called after token i is chosen (for progress and cancellation).
    Returns the completed (batch, N) int64 tensor on the CPU.
    """
    device = next(model.parameters()).device
    batch, length = ids.shape
    if length != model.length:
        raise ValueError(f"the prior makes {model.length} tokens, not {length}")
    ids = ids.clone().cpu()
    generator = torch.Generator("cpu").manual_seed(seed)
    guided = label is not None and cfg != 1.0
    labels = model.labels_for(label, batch, device)
    if guided:
        labels = torch.cat([labels, model.labels_for(None, batch, device)])
    if known >= length:
        return ids

    def rows(x: torch.Tensor) -> torch.Tensor:  # the conditional and unconditional halves
        return torch.cat([x, x]) if guided else x

    def mix(logits: torch.Tensor) -> torch.Tensor:
        if not guided:
            return logits
        cond, uncond = logits.float().chunk(2)
        return uncond + cfg * (cond - uncond)

    cache = KVCache(model, len(labels)) if use_cache else None
    logits = mix(model(labels, rows(ids[:, :known]).to(device), cache, 0)[:, -1])
    for i in range(known, length):
        token = choose(logits, temperature, top_k, top_p, generator)
        ids[:, i] = token
        on_token(i)
        if i + 1 == length:
            break
        if cache is not None:
            logits = model(labels, rows(token[:, None]).to(device), cache, i + 1)[:, -1]
        else:
            logits = model(labels, rows(ids[:, :i + 1]).to(device))[:, -1]
        logits = mix(logits)
    return ids


def save_prior(model: TokenPrior, path: Path) -> Path:
    """Save as one .safetensors file (config in the metadata) or, for another path, a folder
    with config.json and model.safetensors."""
    from safetensors.torch import save_file

    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    config = json.dumps(model.config)
    if path.suffix.lower() == ".safetensors":
        save_file(state, str(path), metadata={"format": PRIOR_FORMAT, "config": config})
    else:
        path.mkdir(parents=True, exist_ok=True)
        (path / "config.json").write_text(config, encoding="utf-8")
        save_file(state, str(path / "model.safetensors"), metadata={"format": PRIOR_FORMAT})
    return path


def load_prior(path: Path) -> TokenPrior:
    """Load a prior saved by `save_prior`; ModelError if the file is not one."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        config = prior_config(path)
    except ValueError as exc:
        raise ModelError(str(exc), hint="Use a prior saved by nodeflow (a .safetensors file with "
                         "its config, or a folder with config.json and model.safetensors).") from None
    weights = path / "model.safetensors" if path.is_dir() else path
    try:
        model = TokenPrior(config)
        missing, unexpected = model.load_state_dict(load_file(str(weights)), strict=False)
    except (SafetensorError, OSError, ValueError, RuntimeError, TypeError) as exc:
        raise ModelError(f"cannot load the prior {path}: {exc}") from None
    if missing or unexpected:
        raise ModelError(f"{path} does not hold the weights its config describes "
                         f"({len(missing)} missing, {len(unexpected)} unexpected, e.g. "
                         f"{(missing or unexpected)[0]})")
    return model.eval().requires_grad_(False)
