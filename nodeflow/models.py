"""The model manager: owns every loaded model, loads each file once, and keeps the
models resident on each compute device within that device's memory budget.

Nodes ask it for models (``load``) and for a device to compute on (``use``);
they never call ``.to("cuda")`` themselves. Inside ``use`` the manager makes
room on the device by offloading the least recently used idle models to CPU
memory, and past the RAM budget it drops idle models altogether (they are read
from disk again when next needed). The same accounting runs when the CPU is
the compute device, so the policy is testable on any machine.

Before a run, ``estimate_file_bytes`` sizes model files without loading them
(safetensors headers, the weight files of a diffusers folder), for the plan-time
memory estimates of loader nodes (see `Node.estimate_memory`).
"""

from __future__ import annotations

import contextvars
import dataclasses
import functools
import json
import math
import os
import struct
import threading
import weakref
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from nodeflow.devices import Device, available_ram, format_size, make_devices
from nodeflow.errors import ModelError
from nodeflow.node import DTYPE_BYTES, MemoryEstimate

T = TypeVar("T")

current_node: contextvars.ContextVar[str | None] = contextvars.ContextVar("nodeflow_node", default=None)
"""The node running in this thread (set by the executor)."""
current_device: contextvars.ContextVar[str | None] = contextvars.ContextVar("nodeflow_device",
                                                                            default=None)
"""The device the executor assigned to the node running in this thread."""

HOST = "host"
"""Where offloaded models live: CPU memory, not a compute device."""


@dataclass(eq=False)
class Component:
    """One torch module the manager places: a UNet, a text encoder, an upscaler..."""

    name: str
    size: int
    device: str = HOST
    in_use: int = 0
    last_used: int = 0
    file_key: tuple[Any, ...] | None = None
    ref: Any = None
    """The module itself (files) or a weak reference to it (modules made at run time)."""

    def module(self) -> Any:
        return self.ref() if isinstance(self.ref, weakref.ref) else self.ref


@dataclass(eq=False)
class LoadedModel:
    """A model file loaded once: what the loader returned and the components inside it."""

    key: tuple[Any, ...]
    kind: str
    path: Path | None
    model: Any
    size: int
    components: list[Component] = field(default_factory=list)
    node: str | None = None
    """The node that loaded it (its cached outputs hold the model)."""


@dataclass
class NodeMemory:
    """What `--memory-report` shows for one node."""

    device: str = HOST
    models: list[str] = field(default_factory=list)
    peak: int = 0
    estimate: MemoryEstimate | None = None
    """The plan-time estimate (models and activations), when the node's type gives one."""


def file_identity(path: Path) -> tuple[str, int, int]:
    """Resolved path, size and modification time: a changed file is a different model."""
    resolved = path.resolve()
    try:
        if resolved.is_dir():
            size = 0
            mtime = 0
            for root, _dirs, files in os.walk(resolved):
                for name in files:
                    file = os.path.join(root, name)
                    try:
                        st = os.stat(file)
                    except FileNotFoundError:
                        if not os.path.islink(file):
                            raise
                        _warn_dangling(Path(file))
                        continue
                    size += st.st_size
                    mtime = max(mtime, st.st_mtime_ns)
            return str(resolved), size, mtime
        st = resolved.stat()
    except OSError as exc:
        raise ModelError(f"cannot read model file {path}: {exc.strerror or exc}") from None
    return str(resolved), st.st_size, st.st_mtime_ns


_SAFETENSORS_BYTES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "F8_E4M3": 1, "F8_E5M2": 1,
                      "I64": 8, "U64": 8, "I32": 4, "U32": 4, "I16": 2, "U16": 2, "I8": 1, "U8": 1,
                      "BOOL": 1}
_FLOATS = frozenset({"F64", "F32", "F16", "BF16", "F8_E4M3", "F8_E5M2"})
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt")


def safetensors_header(path: Path, *, metadata: bool = False) -> dict[str, Any]:
    """Tensor names of a .safetensors file to ``{"dtype", "shape", ...}``; reads no weights.

    With ``metadata=True`` the file's ``__metadata__`` entry (a str-to-str dict, when
    the file has one) is kept in the result. Raises ValueError saying what is wrong
    when the file is not a safetensors file.
    """
    from nodeflow.files import regular_file_problem

    problem = regular_file_problem(path)
    if problem:
        raise ValueError(problem)
    with open(path, "rb") as fh:
        file_size = os.fstat(fh.fileno()).st_size
        head = fh.read(8)
        if len(head) != 8:
            raise ValueError("the file is too short to be a safetensors file")
        (size,) = struct.unpack("<Q", head)
        if size <= 1 or size > 100_000_000:
            raise ValueError("the file has no safetensors header (its header length is implausible)")
        raw = fh.read(size)
    if len(raw) != size:
        raise ValueError("the safetensors header is truncated")
    try:
        header = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise ValueError("the file has no safetensors header (it is not JSON)") from None
    except ValueError as exc:  # e.g. an integer of thousands of digits
        raise ValueError(f"the safetensors header is not valid ({exc})") from None
    if not isinstance(header, dict):
        raise ValueError("the file has no safetensors header (it is not a JSON object)")
    check_tensor_extents(header, file_size - 8 - size)
    if not metadata:
        header.pop("__metadata__", None)
    return header


def check_tensor_extents(header: Mapping[str, Any], data_bytes: int) -> None:
    """Check a safetensors header against the data that follows it: every tensor's byte range
    must fit its dtype and shape and lie inside the file. Raises ValueError saying what is
    wrong (a truncated download, a damaged file, a header that lies about its sizes)."""
    end = 0
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        if not isinstance(entry, dict):
            raise ValueError(f"the safetensors header entry '{name}' is not an object")
        dtype, shape, offsets = entry.get("dtype"), entry.get("shape"), entry.get("data_offsets")
        if (not isinstance(shape, list) or not all(isinstance(n, int) and n >= 0 for n in shape)
                or not isinstance(offsets, list) or len(offsets) != 2
                or not all(isinstance(n, int) and n >= 0 for n in offsets) or offsets[1] < offsets[0]):
            raise ValueError(f"the safetensors header entry '{name}' is malformed")
        width = _SAFETENSORS_BYTES.get(str(dtype))
        if width is not None and math.prod(shape) * width != offsets[1] - offsets[0]:
            raise ValueError(f"tensor '{name}' declares shape {shape} ({dtype}) but "
                             f"{offsets[1] - offsets[0]:,} bytes of data; the file is damaged")
        end = max(end, offsets[1])
    if end > data_bytes:
        raise ValueError(f"the file is truncated: its header describes {end:,} bytes of tensors "
                         f"but only {max(data_bytes, 0):,} follow it. Download or copy it again")


def tensor_bytes(entry: dict[str, Any], dtype: str | None = None) -> int:
    """Bytes of one tensor of a safetensors header once loaded: floating-point tensors in
    ``dtype`` ('fp32', 'fp16', 'bf16'; None: as stored), the others as stored."""
    count = math.prod(int(n) for n in entry.get("shape", ()))
    stored = str(entry.get("dtype", "F32"))
    if dtype is not None and stored in _FLOATS:
        return count * DTYPE_BYTES[dtype]
    return count * _SAFETENSORS_BYTES.get(stored, 4)


def weight_files(folder: Path) -> list[Path]:
    """The weight files diffusers or transformers read from one component folder: the
    .safetensors files (all shards) without a variant such as ``.fp16``, else the others."""
    files = []
    for p in sorted(folder.iterdir()):
        if p.suffix.lower() not in WEIGHT_SUFFIXES:
            continue
        if p.is_symlink() and not p.exists():
            _warn_dangling(p)
        elif p.is_file():
            files.append(p)
    for group in ([p for p in files if p.suffix.lower() == ".safetensors"],
                  [p for p in files if p.suffix.lower() != ".safetensors"]):
        plain = [p for p in group if "." not in p.stem]
        if plain or group:
            return plain or group
    return []


def estimate_file_bytes(path: Path, dtype: str | None = None) -> int:
    """Bytes a model file or folder takes once loaded with floating-point weights in ``dtype``
    (None: as stored), read without loading it: the tensor sizes of a .safetensors header, the
    weight files of every folder inside a diffusers folder, or else the file size.

    Raises ModelError or ValueError when it cannot be read.
    """
    return _estimate_file_bytes(file_identity(path), dtype)


@functools.lru_cache(maxsize=256)
def _estimate_file_bytes(identity: tuple[str, int, int], dtype: str | None) -> int:
    path = Path(identity[0])
    if path.is_dir():
        total = 0
        for root, _dirs, _files in os.walk(path):
            total += sum(_estimate_file_bytes(file_identity(f), dtype) for f in weight_files(Path(root)))
        return total
    if path.suffix.lower() == ".safetensors":
        return sum(tensor_bytes(entry, dtype) for entry in safetensors_header(path).values())
    return path.stat().st_size


def _warn_dangling(link: Path) -> None:
    import warnings

    from nodeflow.errors import NodeflowWarning

    warnings.warn(f"skipping {link}: a symlink to {os.readlink(link)}, which does not exist",
                  NodeflowWarning, stacklevel=3)


IMPLAUSIBLE_MODELS_DIRS = frozenset({"/", "/bin", "/boot", "/dev", "/etc", "/lib", "/lib64",
                                     "/proc", "/run", "/sbin", "/sys", "/usr", "/var"})
"""System folders that are never models folders (scanning them is slow or never ends)."""


def models_dir_problem(folder: Path) -> str | None:
    """Why ``folder`` is not a plausible models folder, or None: it must be a folder, not a
    system folder, holding at least one subfolder of a model kind the loaded packs declared
    (checkpoints/, loras/..., a plugin's own)."""
    from nodeflow.settings import model_kinds

    real = os.path.realpath(folder)
    subfolders = list(dict.fromkeys(f for kind in model_kinds() for f in kind.folders))
    kinds = (", ".join(f"{name}/" for name in subfolders[:5]) + ("..." if len(subfolders) > 5 else "")) \
        or "checkpoints/, loras/..."
    if real in IMPLAUSIBLE_MODELS_DIRS or real.startswith(("/proc/", "/sys/", "/dev/")):
        return f"{folder} is a system folder, not a models folder (with {kinds})"
    if not os.path.isdir(real):
        return f"the models folder {folder} does not exist" if not os.path.exists(real) \
            else f"{folder} is not a folder"
    try:
        # With no packs loaded no kind is known, and no folder can be judged by its subfolders.
        if subfolders and not any(os.path.isdir(os.path.join(real, name)) for name in subfolders):
            return (f"{folder} does not look like a models folder: it has none of the "
                    f"subfolders {kinds}")
    except OSError as exc:
        return f"the models folder {folder} cannot be read: {exc.strerror or exc}"
    return None


def check_models_dirs(folders: Iterable[Path]) -> None:
    """Raise UsageError for the first implausible models folder (see `models_dir_problem`)."""
    from nodeflow.errors import UsageError

    for folder in folders:
        problem = models_dir_problem(folder)
        if problem:
            raise UsageError(problem, hint="Name a folder with those subfolders in --models or "
                                           "NODEFLOW_MODELS.")


def _is_module(obj: Any) -> bool:
    return callable(getattr(obj, "parameters", None)) and callable(getattr(obj, "to", None))


def module_size(module: Any) -> int:
    """Bytes of parameters and buffers of a torch module."""
    total = sum(p.numel() * p.element_size() for p in module.parameters())
    buffers = getattr(module, "buffers", None)
    if callable(buffers):
        total += sum(b.numel() * b.element_size() for b in buffers())
    return int(total)


def find_modules(obj: Any, depth: int = 3) -> list[tuple[str, Any]]:
    """The torch modules inside a loader's result (dataclasses, dicts, sequences, attributes)."""
    found: list[tuple[str, Any]] = []
    seen: set[int] = set()

    def walk(value: Any, name: str, level: int) -> None:
        if value is None or id(value) in seen or isinstance(value, str | bytes | int | float):
            return
        seen.add(id(value))
        if _is_module(value):
            found.append((name, value))
            return
        if level <= 0:
            return
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            items: Iterable[tuple[str, Any]] = ((f.name, getattr(value, f.name))
                                               for f in dataclasses.fields(value))
        elif isinstance(value, dict):
            items = ((str(k), v) for k, v in value.items())
        elif isinstance(value, list | tuple):
            items = ((str(i), v) for i, v in enumerate(value))
        elif hasattr(value, "__dict__") and not isinstance(value, type):
            items = ((k, v) for k, v in vars(value).items() if not k.startswith("_"))
        else:
            return
        for key, child in items:
            walk(child, f"{name}.{key}" if name else key, level - 1)

    walk(obj, "", depth)
    return found


def model_size(model: Any) -> int:
    """Bytes of every torch module inside ``model``."""
    return sum(module_size(m) for _n, m in find_modules(model))


LOAD_LOCK = threading.RLock()
"""The process's one model-loading lock, held by every `ModelManager` (see `ModelManager.loading`)."""


class ModelManager:
    """Loads each model file once per process and places models on devices within budgets."""

    def __init__(self, devices: list[str] | None = None, *, vram_budget: int | None = None,
                 ram_budget: int | None = None, dtype: str | None = None) -> None:
        self._device_names = devices
        self._vram_budget = vram_budget
        self._devices: list[Device] | None = None
        self.ram_budget = ram_budget
        self.dtype_override = dtype
        self._files: dict[tuple[Any, ...], LoadedModel] = {}
        self._components: dict[int, Component] = {}
        self._lock = threading.RLock()
        self._load_lock = LOAD_LOCK
        # One loader at a time, for every pack and every manager in the process: diffusers and
        # accelerate build models on the meta device by patching torch process-wide, so two
        # loaders at once corrupt each other, even under two managers (a server's devices).
        self._tick = 0
        self.loads = 0
        """How many times a model file was actually read from disk."""
        self.onloads = 0
        self.offloads = 0
        self.drops = 0
        self.peak: dict[str, int] = {}
        """Highest bytes accounted as resident, per device."""
        self.node_memory: dict[str, NodeMemory] = {}
        self.on_drop: list[Callable[[LoadedModel], None]] = []
        """Called when a model is dropped, so holders of its outputs can let it go."""

    # --- devices -------------------------------------------------------------------
    @property
    def devices(self) -> list[Device]:
        if self._devices is None:
            self._devices = make_devices(self._device_names, self._vram_budget)
        return self._devices

    def device_named(self, name: str) -> Device:
        for d in self.devices:
            if d.name == name:
                return d
        if name == "cpu":
            return Device("cpu", max(0, available_ram()))
        return Device(HOST, self.ram_budget or max(0, available_ram()))

    @property
    def device(self) -> str:
        """The torch device the current node computes on."""
        return self._current().torch_device

    def _current(self) -> Device:
        name = current_device.get()
        if name is None:
            return self.devices[0]
        return self.device_named(name)

    def dtype(self, kind: str = "") -> Any:
        """The compute dtype for a model kind on the current device (for a node that does not
        compute on an accelerator, such as a loader: on the device its models will compute on)."""
        import torch

        names = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
        return names[self.dtype_name(kind)]

    def dtype_name(self, kind: str = "", device: str | None = None) -> str:
        """The name of the compute dtype for a model kind on ``device``: fp32, fp16 or bf16.

        ``device`` defaults to the current node's; a node that runs on the CPU beside the
        compute devices (a loader) gets the dtype of the first compute device, where the models
        it loads will compute. torch is not imported.
        """
        if self.dtype_override:
            if kind == "vae" and self.dtype_override == "fp16":
                return "fp32"  # SD VAEs overflow in fp16
            return self.dtype_override
        if device is not None:
            name = device
        else:
            current = self._current()
            name = current.name if current in self.devices else self.devices[0].name
        if name.startswith("cuda") and kind != "vae":
            return "fp16"
        return "fp32"

    # --- loading -------------------------------------------------------------------
    @contextmanager
    def loading(self) -> Iterator[None]:
        """Hold the load lock: the one lock every model loader runs under (``load`` takes it
        around its loader), for model-building work outside ``load`` such as peft building a
        LoRA's adapter layers. Re-entrant: a loader may call it."""
        with self._load_lock:
            yield

    def load(self, path: Path, loader: Callable[[Path], T], *, kind: str, variant: str = "") -> T:
        """The model at ``path``, read once by ``loader`` and shared by every later request."""
        identity = file_identity(path)
        key = (kind, variant, *identity)
        with self._lock:
            entry = self._files.get(key)
            if entry is not None:
                self._touch(entry.components)
                self._note(entry)
                return entry.model  # type: ignore[no-any-return]
        with self._lock:
            # The file changed since it was loaded: its old contents are never used again.
            for stale in [e for k, e in self._files.items()
                          if k[:3] == key[:3] and k != key and not any(c.in_use for c in e.components)]:
                self._drop(stale)
            # Make room in RAM before reading: the file's size is what it will take.
            self._enforce_ram_budget(incoming=identity[1])
        with self.loading():
            with self._lock:
                entry = self._files.get(key)
                if entry is not None:  # another thread loaded it meanwhile
                    return entry.model  # type: ignore[no-any-return]
            model = loader(path)
        with self._lock:
            entry = self._files.get(key)
            if entry is not None:  # another thread loaded it meanwhile
                return entry.model  # type: ignore[no-any-return]
            self.loads += 1
            entry = self._track(key, kind, path, model)
            self._note(entry)
            self._enforce_ram_budget(keep=entry)
        return model

    def _track(self, key: tuple[Any, ...], kind: str, path: Path | None, model: Any) -> LoadedModel:
        entry = LoadedModel(key, kind, path, model, 0, node=current_node.get())
        base = path.name if path is not None else kind
        for name, module in find_modules(model):
            component = self._components.get(id(module))
            if component is None:
                component = Component(f"{base}:{name}" if name else base, module_size(module),
                                      file_key=key, ref=module)
                self._components[id(module)] = component
            entry.components.append(component)
        entry.size = sum(c.size for c in entry.components)
        self._files[key] = entry
        return entry

    # --- placement -----------------------------------------------------------------
    @contextmanager
    def use(self, *models: Any) -> Iterator[str]:
        """Place the models on the current node's device for the block; yields the torch device."""
        device = self._current()
        with self._lock:
            components = self._components_of(models)
            self._make_room(device, components)
            for c in components:
                self._place(c, device)
                c.in_use += 1
            self._touch(components)
            self._record(device)
        try:
            yield device.torch_device
        finally:
            with self._lock:
                for c in components:
                    c.in_use -= 1
                self._touch(components)

    def components_in(self, values: Iterable[Any]) -> list[Component]:
        """The tracked components inside node input values (for scheduling decisions)."""
        with self._lock:
            found = []
            for value in values:
                for _name, module in find_modules(value):
                    c = self._components.get(id(module))
                    if c is not None and c not in found:
                        found.append(c)
            return found

    def bytes_to_load(self, components: Iterable[Component], device: str) -> int:
        return sum(c.size for c in components if c.device != device)

    def check_fits(self, components: list[Component], device: Device) -> str | None:
        """Why these components can never be resident together on ``device``, or None."""
        total = sum(c.size for c in components)
        if total > device.budget:
            names = ", ".join(f"{c.name} ({format_size(c.size)})" for c in components)
            return (f"needs {format_size(total)} of models on {device.name} ({names}) but its "
                    f"budget is {format_size(device.budget)}")
        return None

    def note_estimates(self, estimates: Mapping[str, MemoryEstimate]) -> None:
        """Keep the plan-time estimates of a run's nodes, for the memory report."""
        with self._lock:
            for node, estimate in estimates.items():
                self.node_memory.setdefault(node, NodeMemory()).estimate = estimate

    def free(self, device: str | None = None) -> int:
        """Offload every idle model from ``device`` (all devices if None); returns bytes freed."""
        with self._lock:
            freed = 0
            for c in list(self._components.values()):
                if c.in_use == 0 and c.device != HOST and (device is None or c.device == device):
                    freed += c.size
                    self._place(c, None)
            return freed

    def _components_of(self, models: tuple[Any, ...]) -> list[Component]:
        components: list[Component] = []
        for model in models:
            for name, module in find_modules(model):
                c = self._components.get(id(module))
                if c is None:
                    # A module made at run time (e.g. a patched copy): track it weakly.
                    c = Component(type(module).__name__ + (f":{name}" if name else ""),
                                  module_size(module), ref=weakref.ref(module, self._forget(id(module))))
                    self._components[id(module)] = c
                if c not in components:
                    components.append(c)
        return components

    def _forget(self, ident: int) -> Callable[[Any], None]:
        def forget(_ref: Any) -> None:
            with self._lock:
                self._components.pop(ident, None)
        return forget

    def _make_room(self, device: Device, wanted: list[Component]) -> None:
        why = self.check_fits(wanted, device)
        if why:
            raise ModelError(why, hint="Raise --vram-budget, use --dtype fp16 or bf16, or use a "
                             "smaller model.")
        need = self.bytes_to_load(wanted, device.name)
        while self.accounted(device.name) + need > device.budget:
            idle = [c for c in self._components.values()
                    if c.device == device.name and c.in_use == 0 and c not in wanted]
            if not idle:
                raise ModelError(f"{device.name} has no room: the models in use fill its budget "
                                 f"of {format_size(device.budget)}",
                                 hint="Run fewer branches at once (--workers 1) or raise --vram-budget.")
            victim = min(idle, key=lambda c: c.last_used)
            self._place(victim, None)

    def _place(self, c: Component, device: Device | None) -> None:
        target = device.name if device is not None else HOST
        if c.device == target:
            return
        torch_target = device.torch_device if device is not None else "cpu"
        current = "cpu" if c.device == HOST else self.device_named(c.device).torch_device
        module = c.module()
        if module is not None and torch_target != current:
            module.to(torch_target)
        if device is None:
            self.offloads += 1
        else:
            self.onloads += 1
        c.device = target
        if device is None:
            self._enforce_ram_budget()

    def _enforce_ram_budget(self, keep: LoadedModel | None = None, incoming: int = 0) -> None:
        if self.ram_budget is None:
            return
        while self.host_bytes() + incoming > self.ram_budget:
            droppable = [e for e in self._files.values() if e is not keep and e.path is not None
                         and all(c.in_use == 0 and self._in_host(c) for c in e.components)]
            if not droppable:
                return
            victim = min(droppable, key=lambda e: max((c.last_used for c in e.components), default=0))
            self._drop(victim)

    def _drop(self, entry: LoadedModel) -> None:
        del self._files[entry.key]
        for c in entry.components:
            if self._components.get(id(c.module())) is c:
                del self._components[id(c.module())]
        self.drops += 1
        for callback in list(self.on_drop):
            callback(entry)

    def _in_host(self, c: Component) -> bool:
        return c.device in (HOST, "cpu") or self.device_named(c.device).shares_host_memory

    def host_bytes(self) -> int:
        """Bytes of models held in CPU memory (offloaded, or resident on a CPU-backed device)."""
        with self._lock:
            return sum(c.size for c in self._components.values() if self._in_host(c))

    def accounted(self, device: str) -> int:
        """Bytes of models resident on ``device``."""
        with self._lock:
            return sum(c.size for c in self._components.values() if c.device == device)

    def resident(self, device: str | None = None) -> list[Component]:
        with self._lock:
            return [c for c in self._components.values()
                    if c.device != HOST and (device is None or c.device == device)]

    def loaded(self) -> list[LoadedModel]:
        with self._lock:
            return list(self._files.values())

    def clear(self) -> None:
        with self._lock:
            self._files.clear()
            self._components.clear()

    def _touch(self, components: Iterable[Component]) -> None:
        self._tick += 1
        for c in components:
            c.last_used = self._tick

    def _record(self, device: Device) -> None:
        now = self.accounted(device.name)
        self.peak[device.name] = max(self.peak.get(device.name, 0), now)
        node = current_node.get()
        if node is not None:
            memory = self.node_memory.setdefault(node, NodeMemory(device.name))
            memory.device = device.name
            memory.peak = max(memory.peak, now)
            memory.models = [c.name for c in self.resident(device.name)]

    def _note(self, entry: LoadedModel) -> None:
        node = current_node.get()
        if node is not None:
            memory = self.node_memory.setdefault(node, NodeMemory())
            memory.peak = max(memory.peak, entry.size)
            name = entry.path.name if entry.path is not None else entry.kind
            if name not in memory.models:
                memory.models.append(name)


def memory_report(models: ModelManager, nodes: Iterable[str],
                  notes: Mapping[str, Mapping[str, str]] | None = None) -> str:
    """What ``--memory-report`` prints for the nodes that ran: per node the device, the peak of
    model weights resident while it ran (measured) beside its plan-time estimate of models and
    activations, and the models resident, then what the estimate assumed and what the node
    resolved (``notes``: a sampler's scheduler settings); then the peaks per device and the model
    traffic."""
    lines = ["memory report (peak: model weights the model manager accounted while the node ran; "
             "est.: estimated before the run)",
             f"  {'node':<20} {'device':<8} {'peak':>10} {'est. models':>12} {'est. activ.':>12}  models"]
    for node in nodes:
        memory = models.node_memory.get(node)
        if memory is None:
            continue
        estimate = memory.estimate
        est_models = format_size(estimate.model_bytes) if estimate is not None else "-"
        est_act = format_size(estimate.activations) if estimate and estimate.activations else "-"
        lines.append(f"  {node:<20} {memory.device:<8} {format_size(memory.peak):>10} {est_models:>12} "
                     f"{est_act:>12}  {', '.join(memory.models) or '-'}")
        if estimate is not None and estimate.note:
            lines.append(f"  {'':<20} estimated for: {estimate.note}")
        facts = (notes or {}).get(node)
        if facts:
            lines.append(f"  {'':<20} ran with: " + ", ".join(f"{k} {v}" for k, v in facts.items()))
    for device, peak in sorted(models.peak.items()):
        lines.append(f"  peak on {device}: {format_size(peak)}")
    lines.append(f"  loads from disk: {models.loads}, moved to devices: {models.onloads}, "
                 f"offloaded: {models.offloads}, dropped: {models.drops}")
    return "\n".join(lines) + "\n"
