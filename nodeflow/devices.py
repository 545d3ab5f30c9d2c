"""Compute devices and their memory: the abstraction the model manager budgets against.

A `Device` is a CUDA or MPS accelerator, the CPU, or a simulated accelerator
(``sim:N``) that computes on the CPU but is budgeted like a GPU, so the
placement policy can be tested on any machine.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from nodeflow.errors import UsageError

GiB = 1024**3
RESERVE = 1 * GiB
"""Memory left free for activations and other programs when a budget is derived."""

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?i?b?)?\s*$", re.IGNORECASE)
_UNITS = {"": 1, "b": 1, "k": 1000, "kb": 1000, "kib": 1024, "m": 1000**2, "mb": 1000**2,
          "mib": 1024**2, "g": 1000**3, "gb": 1000**3, "gib": 1024**3, "t": 1000**4, "tb": 1000**4,
          "tib": 1024**4}


def parse_size(text: str) -> int:
    """Bytes in a size such as ``6GB``, ``512MiB`` or ``1.5G``."""
    match = _SIZE.match(text)
    if not match or (match.group(2) or "").lower() not in _UNITS:
        raise UsageError(f"{text!r} is not a memory size; write it like 6GB, 512MB or 1.5GiB")
    return int(float(match.group(1)) * _UNITS[(match.group(2) or "").lower()])


def format_size(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if abs(n) < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} GB"


@dataclass
class Device:
    """One place to compute, with the memory budget the model manager keeps to."""

    name: str
    """'cpu', 'cuda:0', 'mps', or 'sim:0' (simulated accelerator, computes on the CPU)."""
    budget: int
    """Bytes of model weights allowed to be resident at once."""

    @property
    def torch_device(self) -> str:
        """Where tensors actually go."""
        return "cpu" if self.name.startswith("sim") else self.name

    @property
    def is_accelerator(self) -> bool:
        return self.name != "cpu"

    @property
    def shares_host_memory(self) -> bool:
        """Weights on this device live in the same RAM as offloaded ones."""
        return self.torch_device == "cpu" or self.name == "mps"


def available_ram() -> int:
    try:
        import psutil

        return int(psutil.virtual_memory().available)
    except ImportError:  # pragma: no cover - psutil is a dependency
        import os

        return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))


def free_device_memory(name: str) -> int | None:
    """Free bytes on a real accelerator, or None when the device cannot be asked."""
    if name.startswith("cuda"):
        import torch

        index = int(name.split(":")[1]) if ":" in name else 0
        free, _total = torch.cuda.mem_get_info(index)
        return int(free)
    if name == "mps":
        return available_ram()
    if name == "cpu":
        return available_ram()
    return None


def detect_devices() -> list[str]:
    """Accelerators present, else the CPU."""
    import torch

    if torch.cuda.is_available():
        return [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        return ["mps"]
    return ["cpu"]


def check_device_names(names: list[str], *, present: bool = True) -> list[str]:
    """The device names normalised (``cuda`` is ``cuda:0``); UsageError for a name that is not
    a device, or (with ``present``) an accelerator this machine does not have."""
    out = []
    for name in names:
        name = name.strip()
        if name == "cuda":
            name = "cuda:0"
        if not re.fullmatch(r"cpu|mps|cuda:\d{1,3}|sim:\d{1,3}", name):
            raise UsageError(f"unknown device {name!r}; use cpu, mps, cuda:N (or sim:N to simulate)")
        if present and name.startswith("cuda"):
            import torch

            count = torch.cuda.device_count() if torch.cuda.is_available() else 0
            index = int(name.split(":")[1])
            if index >= count:
                have = (f"it has {count} CUDA GPU{'s' if count != 1 else ''} (cuda:0"
                        f"{f' to cuda:{count - 1}' if count > 1 else ''})" if count
                        else "this machine has no usable CUDA GPU (no NVIDIA driver or device found)")
                raise UsageError(f"device {name} is not available: {have}",
                                 hint="Use --devices cpu, or leave --devices out to use what is found.")
        elif present and name == "mps":
            import torch

            mps = getattr(torch.backends, "mps", None)
            if mps is None or not mps.is_available():
                raise UsageError("device mps is not available on this machine",
                                 hint="Use --devices cpu, or leave --devices out to use what is found.")
        out.append(name)
    return out


def make_devices(names: list[str] | None = None, budget: int | None = None) -> list[Device]:
    """Devices by name (default: detected), each with ``budget`` or free memory minus a reserve."""
    devices = []
    # With a budget given nothing asks the device, so a policy can be planned for GPUs this
    # machine lacks; without one its free memory is asked, so it must be there.
    for name in check_device_names(names, present=budget is None) if names else detect_devices():
        if budget is not None:
            devices.append(Device(name, budget))
            continue
        free = free_device_memory(name)
        if free is None:
            raise UsageError(f"simulated device {name} needs a budget (--vram-budget)")
        devices.append(Device(name, max(0, free - RESERVE)))
    return devices
