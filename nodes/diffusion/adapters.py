"""T2I-Adapters: small networks that turn a control image into features added inside the UNet's
down blocks (``down_intrablock_additional_residuals``), computed once per sampling.

Several adapters (and ControlNets) stack: each adapter's features are scaled by its strength
and summed, in the order they were attached, while the step is inside the adapter's
start/end fraction — as diffusers' ``MultiAdapter`` sums them and as
``StableDiffusionAdapterPipeline`` applies them. ``diffusion.LoadControlNet`` loads an
adapter from its diffusers folder (config.json naming ``T2IAdapter``) as it loads ControlNets.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nodeflow.nodes.diffusion.types import ControlHint, ControlNet

ADAPTER = "t2i_adapter"
CONTROLNET = "controlnet"


def is_adapter_model(model: Any) -> bool:
    return type(model).__name__ in ("T2IAdapter", "MultiAdapter")


def adapter_family(model: Any) -> str:
    """'sdxl' for an SDXL adapter, else 'sd1' (it fits SD 1.x and 2.x alike)."""
    kind = str(getattr(model.config, "adapter_type", ""))
    return "sdxl" if kind.endswith("_xl") else "sd1"


@dataclass
class PreparedAdapter:
    """An adapter's scaled features for the whole (guided) batch, and when it acts."""

    features: list[Any]
    start: float
    end: float


def prepare_adapters(hints: tuple[ControlHint, ...], width: int, height: int, batch: int, cfg: bool,
                     device: Any) -> list[PreparedAdapter]:
    """Run each adapter attached to a conditioning on its control image, once."""
    import numpy as np
    import torch

    prepared = []
    for hint in hints:
        if hint.controlnet.kind != ADAPTER:
            continue
        adapter = hint.controlnet.model
        image = torch.from_numpy(np.ascontiguousarray(
            np.asarray(hint.image, dtype=np.float32).transpose(0, 3, 1, 2)))
        if image.shape[-2:] != (height, width):
            image = torch.nn.functional.interpolate(image, size=(height, width))
        image = image.to(device=device, dtype=adapter.dtype)
        with torch.no_grad():
            features = [f * hint.strength for f in adapter(image)]
        if features[0].shape[0] == 1 and batch > 1:
            features = [f.repeat(batch, 1, 1, 1) for f in features]
        if cfg:
            features = [torch.cat([f] * 2) for f in features]
        prepared.append(PreparedAdapter(features, hint.start, hint.end))
    return prepared


def adapter_residuals(prepared: list[PreparedAdapter], step: int, total: int) -> list[Any] | None:
    """The summed features of the adapters acting at this step (a fresh list: the UNet consumes
    it), or None when none acts."""
    summed: list[Any] | None = None
    for adapter in prepared:
        if step / total < adapter.start or (step + 1) / total > adapter.end:
            continue
        if summed is None:
            summed = [f.clone() for f in adapter.features]
        else:
            summed = [a + b for a, b in zip(summed, adapter.features, strict=True)]
    return summed


def is_adapter_folder(path: Path) -> bool:
    """A diffusers T2I-Adapter folder (its config names the T2IAdapter class)."""
    config = path / "config.json"
    if not path.is_dir() or not config.is_file():
        return False
    try:
        data = json.loads(config.read_text())
    except (OSError, ValueError):
        return False
    return isinstance(data, dict) and data.get("_class_name") in ("T2IAdapter", "MultiAdapter")


def load_adapter_folder(path: Path, dtype: Any) -> ControlNet:
    """A T2I-Adapter from its diffusers folder, as a ControlNet record of kind 't2i_adapter'."""
    from diffusers import T2IAdapter

    kwargs: dict[str, Any] = {"local_files_only": True}
    if dtype is not None:
        kwargs["torch_dtype"] = dtype
    model = T2IAdapter.from_pretrained(path, **kwargs)
    model.eval().requires_grad_(False)
    return ControlNet(model, adapter_family(model), str(path), kind=ADAPTER)
