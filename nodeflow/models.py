"""The model manager: every loaded model is owned here, loaded once, placed on a device.

Nodes ask it for models (``load``) and for the device to compute on
(``use``); they never call ``.to("cuda")`` themselves. Memory budgets and
offloading build on this accounting.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from nodeflow.errors import ModelError

T = TypeVar("T")


@dataclass
class LoadedModel:
    key: tuple[Any, ...]
    kind: str
    path: Path | None
    model: Any
    size: int


def file_identity(path: Path) -> tuple[str, int, int]:
    """Resolved path, size and modification time: a changed file is a different model."""
    resolved = path.resolve()
    try:
        if resolved.is_dir():
            size = 0
            mtime = 0
            for root, _dirs, files in os.walk(resolved):
                for name in files:
                    st = os.stat(os.path.join(root, name))
                    size += st.st_size
                    mtime = max(mtime, st.st_mtime_ns)
            return str(resolved), size, mtime
        st = resolved.stat()
    except OSError as exc:
        raise ModelError(f"cannot read model file {path}: {exc.strerror or exc}") from None
    return str(resolved), st.st_size, st.st_mtime_ns


def model_size(model: Any) -> int:
    """Bytes of parameters and buffers of a torch module (0 for other objects)."""
    total = 0
    params = getattr(model, "parameters", None)
    buffers = getattr(model, "buffers", None)
    if callable(params):
        total += sum(p.numel() * p.element_size() for p in params())
    if callable(buffers):
        total += sum(b.numel() * b.element_size() for b in buffers())
    return total


def default_device() -> str:
    import torch

    if torch.cuda.is_available():
        return "cuda"
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return "mps"
    return "cpu"


class ModelManager:
    """Loads each model file once per process and shares it between nodes and branches."""

    def __init__(self, device: str | None = None, dtype: str | None = None) -> None:
        self._device = device
        self.dtype_override = dtype
        self._models: OrderedDict[tuple[Any, ...], LoadedModel] = OrderedDict()
        self._lock = threading.RLock()
        self.loads = 0
        """How many times a model was actually read from disk."""

    @property
    def device(self) -> str:
        if self._device is None:
            self._device = default_device()
        return self._device

    def dtype(self, kind: str = "") -> Any:
        """The compute dtype for a model kind on this device."""
        import torch

        names = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
        if self.dtype_override:
            return names[self.dtype_override]
        if self.device.startswith("cuda") and kind != "vae":
            return torch.float16
        return torch.float32

    def load(self, path: Path, loader: Callable[[Path], T], *, kind: str,
             variant: str = "") -> T:
        """The model at ``path``, loaded once by ``loader`` and kept for every later request."""
        identity = file_identity(path)
        key = (kind, variant, *identity)
        with self._lock:
            entry = self._models.get(key)
            if entry is not None:
                self._models.move_to_end(key)
                return entry.model  # type: ignore[no-any-return]
            model = loader(path)
            self.loads += 1
            self._models[key] = LoadedModel(key, kind, path, model, model_size(model))
            return model

    def register(self, key: tuple[Any, ...], kind: str, model: T) -> T:
        """Own a model made in memory (e.g. a LoRA-patched variant)."""
        with self._lock:
            entry = self._models.get(key)
            if entry is not None:
                return entry.model  # type: ignore[no-any-return]
            self._models[key] = LoadedModel(key, kind, None, model, model_size(model))
            return model

    def get(self, key: tuple[Any, ...]) -> Any | None:
        with self._lock:
            entry = self._models.get(key)
            return entry.model if entry is not None else None

    @contextmanager
    def use(self, *models: Any) -> Iterator[str]:
        """Place the models on the compute device for the duration of the block."""
        device = self.device
        for model in models:
            to = getattr(model, "to", None)
            if callable(to) and device != "cpu":
                to(device)
        yield device

    def resident(self) -> list[LoadedModel]:
        with self._lock:
            return list(self._models.values())

    def clear(self) -> None:
        with self._lock:
            self._models.clear()
