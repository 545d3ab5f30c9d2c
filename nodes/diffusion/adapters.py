"""T2I-Adapters: small networks that turn a control image into features added inside the UNet's
down blocks (``down_intrablock_additional_residuals``), computed once per sampling.

Several adapters (and ControlNets) stack: each adapter's features are scaled by its strength
and summed, in the order they were attached, while the step is inside the adapter's
start/end fraction — as diffusers' ``MultiAdapter`` sums them and as
``StableDiffusionAdapterPipeline`` applies them. ``diffusion.LoadControlNet`` loads an
adapter as it loads ControlNets: a diffusers folder (config.json naming ``T2IAdapter``), or a
single .safetensors file of a full adapter in diffusers' layout (``adapter.*``) or
TencentARC's original one (``conv_in``, ``body.K.block1``...), its shape read from the
weights.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nodeflow.api import ModelError
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


# ---------------------------------------------------------------- single files

def adapter_file_layout(path: Path) -> str | None:
    """'diffusers' or 'original' (TencentARC's) for a single-file full T2I-Adapter, else None."""
    from nodeflow.api import safetensors_header

    if not path.is_file() or path.suffix.lower() != ".safetensors":
        return None
    try:
        keys = set(safetensors_header(path))
    except (OSError, ValueError):
        return None
    if "adapter.conv_in.weight" in keys and any(k.startswith("adapter.body.") for k in keys):
        return "diffusers"
    if "conv_in.weight" in keys and "body.0.block1.weight" in keys:
        return "original"
    return None


def _in_and_downscale(conv_in_inputs: int) -> tuple[int, int]:
    """(picture channels, downscale factor) from conv_in's input channels (channels × factor²)."""
    for channels in (3, 1):
        if conv_in_inputs % channels == 0:
            factor = math.isqrt(conv_in_inputs // channels)
            if factor * factor * channels == conv_in_inputs:
                return channels, factor
    raise ModelError(f"a T2I-Adapter whose first layer takes {conv_in_inputs} channels: not a picture "
                     "of 1 or 3 channels unshuffled by a square factor")


def _from_original(state: dict[str, Any], path: Path) -> dict[str, Any]:
    """TencentARC's flat ``body.K`` blocks → diffusers' ``adapter.body.I.resnets.J``.

    The blocks per stage are the largest count that divides the blocks and puts every
    ``in_conv`` (a change of width) at the start of a stage.
    """
    blocks = sorted({int(k.split(".")[1]) for k in state if k.startswith("body.")})
    total = len(blocks)
    starts = {int(k.split(".")[1]) for k in state if k.startswith("body.") and ".in_conv." in k}
    if blocks != list(range(total)) or not starts:
        raise ModelError(f"{path.name} is a T2I-Adapter of a layout nodeflow cannot read (blocks "
                         f"{blocks[:8]})", hint="Use the adapter's diffusers folder.")
    per_stage = max(n for n in range(1, total + 1)
                    if total % n == 0 and all(s % n == 0 for s in starts) and total // n >= 2)
    out: dict[str, Any] = {}
    for key, tensor in state.items():
        if key.startswith("body."):
            _, index, rest = key.split(".", 2)
            stage, block = divmod(int(index), per_stage)
            if rest.startswith("in_conv."):
                out[f"adapter.body.{stage}.{rest}"] = tensor
            elif rest.startswith(("block1.", "block2.")):
                out[f"adapter.body.{stage}.resnets.{block}.{rest}"] = tensor
            else:
                raise ModelError(f"{path.name} has a T2I-Adapter block part nodeflow does not know "
                                 f"({key}); only full adapters with skip connections are read")
        else:
            out[f"adapter.{key}"] = tensor
    return out


def adapter_config(state: dict[str, Any]) -> dict[str, Any]:
    """T2IAdapter's constructor arguments, from a diffusers-layout state dict's shapes."""
    stages = sorted({int(k.split(".")[2]) for k in state if k.startswith("adapter.body.")})
    channels = [int(state[f"adapter.body.{i}.resnets.0.block1.weight"].shape[0]) for i in stages]
    blocks = len({k.split(".")[4] for k in state if k.startswith("adapter.body.0.resnets.")})
    in_channels, factor = _in_and_downscale(int(state["adapter.conv_in.weight"].shape[1]))
    return {"in_channels": in_channels, "channels": channels, "num_res_blocks": blocks,
            "downscale_factor": factor, "adapter_type": "full_adapter_xl" if factor == 16 else "full_adapter"}


def load_adapter_file(path: Path, dtype: Any) -> ControlNet:
    """A full T2I-Adapter from a single .safetensors file (diffusers' or TencentARC's layout)."""
    from diffusers import T2IAdapter
    from safetensors.torch import load_file

    state = load_file(str(path))
    if adapter_file_layout(path) == "original":
        state = _from_original(state, path)
    try:
        model: Any = T2IAdapter(**adapter_config(state))  # diffusers' stubs omit nn.Module's methods
        model.load_state_dict(state, strict=True)
    except (KeyError, RuntimeError, ValueError) as exc:
        raise ModelError(f"{path.name} looks like a T2I-Adapter but does not fit a full adapter: "
                         f"{str(exc).splitlines()[0]}", hint="Use the adapter's diffusers folder.") from None
    if dtype is not None:
        model = model.to(dtype)
    model.eval().requires_grad_(False)
    return ControlNet(model, adapter_family(model), str(path), kind=ADAPTER)
