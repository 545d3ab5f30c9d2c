"""A VQ image tokenizer: a diffusers ``VQModel`` that turns images into codebook indices and back.

The token route is the one diffusers' VQ pipelines use: ``encode`` then the quantizer's
nearest-codebook indices; decoding looks the vectors up with ``get_codebook_entry`` and
calls ``decode(..., force_not_quantize=True)``.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nodeflow.api import ModelError
from nodeflow.nodes.ar.files import TOKENIZER_FORMAT, tokenizer_config


@dataclass
class VQTokenizer:
    """A loaded VQModel and the facts about its token grid."""

    vq: Any
    path: str
    codebook_size: int
    downscale: int
    """Image pixels per token along each axis."""
    fingerprint: str
    """Hash of the codebook: tokens are only meaningful to a tokenizer with the same one."""

    def parameters(self) -> Any:
        return self.vq.parameters()

    def buffers(self) -> Any:
        return self.vq.buffers()

    def to(self, *args: Any, **kwargs: Any) -> VQTokenizer:
        self.vq.to(*args, **kwargs)
        return self

    def __repr__(self) -> str:
        return (f"VQTokenizer({Path(self.path).name}: {self.codebook_size} codes, "
                f"1 token per {self.downscale}×{self.downscale} pixels)")

    def encode(self, image: Any, device: str) -> Any:
        """IMAGE (batch, H, W, 3) in [0, 1] → int64 numpy ids (batch, H/d, W/d)."""
        import numpy as np
        import torch

        dtype = next(self.vq.parameters()).dtype
        x = torch.from_numpy(np.ascontiguousarray(image.transpose(0, 3, 1, 2)))
        with torch.inference_mode():
            latents = self.vq.encode((x * 2.0 - 1.0).to(device=device, dtype=dtype)).latents
            _quant, _loss, (_p, _e, ids) = self.vq.quantize(latents)
        batch, _c, height, width = latents.shape
        return ids.reshape(batch, height, width).cpu().numpy().astype(np.int64)

    def decode(self, ids: Any, device: str) -> Any:
        """int64 ids (batch, h, w) → IMAGE (batch, h*d, w*d, 3) in [0, 1]."""
        import numpy as np
        import torch

        channels = self.vq.quantize.vq_embed_dim
        batch, height, width = ids.shape
        index = torch.from_numpy(np.ascontiguousarray(ids, dtype=np.int64)).to(device)
        with torch.inference_mode():
            quant = self.vq.quantize.get_codebook_entry(index.reshape(-1),
                                                        (batch, height, width, channels))
            sample = self.vq.decode(quant, force_not_quantize=True).sample
            sample = (sample / 2 + 0.5).clamp(0, 1)
        return np.ascontiguousarray(sample.float().cpu().numpy().transpose(0, 2, 3, 1),
                                    dtype=np.float32)


def load_tokenizer(path: Path) -> VQTokenizer:
    """Load a VQModel from a diffusers folder, a pipeline folder with 'vqvae', or a single file."""
    import torch
    from diffusers import VQModel

    try:
        config = tokenizer_config(path)
    except ValueError as exc:
        raise ModelError(str(exc), hint="Use a diffusers VQModel folder or a single .safetensors "
                         "file saved by nodeflow.") from None
    try:
        if path.is_dir():
            sub = "vqvae" if not (path / "config.json").is_file() else None
            vq = VQModel.from_pretrained(str(path), subfolder=sub, local_files_only=True)
        else:
            from safetensors.torch import load_file

            vq = VQModel.from_config({k: v for k, v in config.items() if not k.startswith("_")})
            missing, unexpected = vq.load_state_dict(load_file(str(path)), strict=False)
            if missing or unexpected:
                raise ModelError(f"{path} does not hold the weights its config describes "
                                 f"({len(missing)} missing, {len(unexpected)} unexpected, e.g. "
                                 f"{(missing or unexpected)[0]})")
    except ModelError:
        raise
    except (OSError, ValueError, RuntimeError, TypeError, KeyError) as exc:
        raise ModelError(f"cannot load the VQ tokenizer {path}: {exc}") from None
    vq.eval().requires_grad_(False)
    codebook = vq.quantize.embedding.weight.detach().float().cpu().contiguous()
    digest = hashlib.blake2b(digest_size=16)
    digest.update(json.dumps(list(codebook.shape)).encode())
    digest.update(codebook.numpy().tobytes())
    downscale = 2 ** (len(vq.config.block_out_channels) - 1)
    codebook_size = int(getattr(vq.quantize, "re_embed", codebook.shape[0]))
    if next(vq.parameters()).dtype != torch.float32:  # tokens are exact only in float32
        vq = vq.to(torch.float32)
    return VQTokenizer(vq=vq, path=str(path), codebook_size=codebook_size,
                       downscale=downscale, fingerprint=digest.hexdigest())


def save_tokenizer_file(vq: Any, path: Path) -> Path:
    """Write a VQModel as one .safetensors file with its config in the metadata."""
    from safetensors.torch import save_file

    state = {k: v.detach().contiguous() for k, v in vq.state_dict().items()}
    config = json.loads(vq.to_json_string())
    save_file(state, str(path), metadata={"format": TOKENIZER_FORMAT, "config": json.dumps(config)})
    return path
