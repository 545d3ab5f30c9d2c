"""The node API: a node type is a declared, typed function.

Example::

    class Resize(Node):
        \"\"\"Resize images to an exact size.\"\"\"

        id = "image.Resize"
        version = "1.0.0"
        category = "image"
        inputs = (
            Input("image", IMAGE, "The images to resize."),
            Input("width", INT, "Width in pixels.", default=512, min=1, max=16384),
        )
        outputs = (Output("image", IMAGE, "The resized images."),)

        def run(self, ctx: RunContext, image, width):
            return {"image": ...}
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, TypeVar

from pydantic import BaseModel, ConfigDict, Field, field_validator

from nodeflow.types import (
    BOOL,
    FLOAT,
    INT,
    STRING,
    SocketType,
    TypeParam,
    TypeSpec,
    UnionType,
    type_name,
)

if TYPE_CHECKING:
    from nodeflow.settings import Settings

_NODE_ID = re.compile(r"^[A-Za-z][A-Za-z0-9_]*(\.[A-Za-z][A-Za-z0-9_]*)+$")
_SOCKET_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_SEMVER = re.compile(r"^\d+\.\d+\.\d+$")
_T = TypeVar("_T")


class _Required:
    def __repr__(self) -> str:
        return "REQUIRED"


REQUIRED: Any = _Required()
"""Default of an input that must be given a value or a link."""

WIDGET_HINTS = ("area.x", "area.y", "area.width", "area.height", "range.start", "range.end")
"""Values of `Input.widget`: inputs the editor edits together (a box, a range)."""


class Input(BaseModel):
    """One input socket: its type, default and the hints an editor needs."""

    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

    name: str = Field(description="Socket name, an identifier.")
    type: Any = Field(description="SocketType, UnionType or TypeParam")
    description: str = Field("", description="Shown to users in the editor and `nodeflow nodes`.")
    default: Any = Field(REQUIRED, description="Value when the graph gives none; REQUIRED if it must.")
    optional: bool = Field(False, description="May be left unset and unlinked; the node gets None.")
    min: int | float | None = Field(None, description="Smallest allowed value.")
    max: int | float | None = Field(None, description="Largest allowed value.")
    step: int | float | None = Field(None, description="Increment for the editor's spin box.")
    choices: tuple[Any, ...] | None = Field(None, description="The allowed values (a combo box).")
    multiline: bool = Field(False, description="Text edited in a multi-line box (prompts).")
    path_kind: str | None = Field(
        None, description="A file input: 'image' for an input picture, or a models subfolder "
        "such as 'checkpoints', 'loras', 'controlnet', 'vae', 'upscale'.")
    hash_content: bool = Field(
        False, description="A file input whose cache key includes a hash of the file's bytes, "
        "not only its size and modification time (for files rewritten within the same "
        "timestamp, e.g. a picture another program keeps saving).")
    seed: bool = Field(False, description="The editor shows randomize/fixed/increment controls.")
    link_only: bool = Field(False, description="Only a link may feed it, never a literal.")
    widget: str | None = Field(
        None, description="An editor widget shared with other inputs of the node: 'area.x', 'area.y', "
        "'area.width', 'area.height' (a box on a picture preview) or 'range.start', 'range.end' (a "
        "two-handle range slider; each start pairs with the next end declared after it).")

    @field_validator("widget")
    @classmethod
    def _known_widget(cls, value: str | None) -> str | None:
        if value is not None and value not in WIDGET_HINTS:
            raise ValueError(f"unknown widget hint {value!r}; use one of {', '.join(WIDGET_HINTS)}")
        return value

    def __init__(self, name: str, type: TypeSpec, description: str = "", **kwargs: Any) -> None:
        super().__init__(name=name, type=type, description=description, **kwargs)

    @property
    def required(self) -> bool:
        return self.default is REQUIRED and not self.optional

    @property
    def has_default(self) -> bool:
        return self.default is not REQUIRED

    @property
    def accepts_literal(self) -> bool:
        t = self.type
        return not self.link_only and isinstance(t, SocketType) and t.literal is not None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "type": self.type.to_json(),
                               "description": self.description,
                               "required": self.required}
        if self.has_default:
            out["default"] = self.default
        for key in ("min", "max", "step"):
            value = getattr(self, key)
            if value is not None:
                out[key] = value
        if self.choices is not None:
            out["choices"] = list(self.choices)
        for key in ("optional", "multiline", "seed", "link_only"):
            if getattr(self, key):
                out[key] = True
        if self.path_kind:
            out["path_kind"] = self.path_kind
        if self.hash_content:
            out["hash_content"] = True
        if self.widget:
            out["widget"] = self.widget
        out["literal"] = self.accepts_literal
        return out


class Output(BaseModel):
    """One output socket."""

    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

    name: str
    type: Any
    description: str = ""

    def __init__(self, name: str, type: TypeSpec, description: str = "", **kwargs: Any) -> None:
        super().__init__(name=name, type=type, description=description, **kwargs)

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "type": self.type.to_json(), "description": self.description}


class ModelService(Protocol):
    """What a running node may ask of the model manager (`RunContext.models`).

    The manager loads each file once per process, places models on the node's device within
    the memory budgets, and serialises loading: diffusers, transformers and peft build models
    by patching torch process-wide, so two loads at once corrupt each other. Every loader of
    every pack goes through this one lock.
    """

    def load(self, path: Path, loader: Callable[[Path], _T], *, kind: str, variant: str = "") -> _T:
        """The model at ``path``, read once by ``loader`` under the load lock, then shared.

        Later requests with the same ``kind`` and ``variant`` get the same object while the file
        is unchanged; ``variant`` tells apart models built differently from one file."""
        ...

    def use(self, *models: Any) -> AbstractContextManager[str]:
        """Place the models on the node's device for the block; yields the torch device.

        ``models`` are torch modules or values holding them (found up to three levels deep);
        the device name (``"cuda:0"``, ``"cpu"``) is what to compute on."""
        ...

    def dtype(self, kind: str = "") -> Any:
        """The torch dtype a model of ``kind`` ("unet", "vae"...) computes in on the node's device."""
        ...

    def loading(self) -> AbstractContextManager[None]:
        """Hold the load lock for model building outside `load` (e.g. peft's adapter layers).

        ``load`` holds it around every loader; it is re-entrant, so a loader may use it too."""
        ...


class RunContext(Protocol):
    """What a running node may use: progress, cancellation, previews, settings, models."""

    node_id: str
    settings: Settings

    def progress(self, done: float, total: float | None = None, message: str | None = None) -> None:
        """Report progress; also a cancellation point."""

    def check_cancelled(self) -> None:
        """Raise `Cancelled` if the user has cancelled the run."""

    def preview(self, image: Any) -> None:
        """Publish a preview image (an IMAGE array) of work in progress."""

    def record_file(self, path: Path) -> None:
        """Tell the run about a file this node wrote."""

    def note(self, facts: Mapping[str, str]) -> None:
        """Record what this node resolved (e.g. the scheduler settings a sampler used): saved
        pictures carry the notes of the nodes that made them, and reports show them."""

    @property
    def notes(self) -> dict[str, dict[str, str]]:
        """The notes of this node's ancestors in the run (or from the cache), by node id."""

    @property
    def graph_json(self) -> str:
        """The running graph as a graph file, for provenance in outputs."""

    @property
    def models(self) -> ModelService:
        """The model service: nodes get models from it, never load ad hoc."""


@dataclass(frozen=True)
class ValueEstimate:
    """What planning knows of a value before it exists (see `Node.estimate_memory`)."""

    models: Mapping[str, int] = field(default_factory=dict)
    """The models inside the value, by name, with the bytes each takes resident in the dtype it
    runs in. A node that computes with the value needs them on its device."""
    info: Mapping[str, Any] = field(default_factory=dict)
    """Facts later estimates use, e.g. ``width``, ``height`` and ``batch`` of a latent or an
    image, or ``channels`` and ``itemsize`` (bytes per number) of a model."""

    def dims(self) -> tuple[int, int, int] | None:
        """Width, height and batch from ``info``, when all three are known."""
        width, height, batch = (self.info.get(k) for k in ("width", "height", "batch"))
        if isinstance(width, int) and isinstance(height, int) and isinstance(batch, int) \
                and min(width, height, batch) > 0:
            return width, height, batch
        return None


@dataclass(frozen=True)
class MemoryEstimate:
    """A node's memory need on its compute device, estimated before anything runs."""

    models: Mapping[str, int] = field(default_factory=dict)
    """Models that must be resident at once while the node runs: name → bytes."""
    activations: int = 0
    """Working memory on top of the weights (tensors made while it runs), in bytes; 0: unknown."""
    min_activations: int | None = None
    """The least working memory it can run with when it adapts to the memory it has (e.g. by
    shrinking its tiles); None: it does not adapt, ``activations`` is what it needs."""
    outputs: Mapping[str, ValueEstimate] = field(default_factory=dict)
    """What each output will carry; outputs left out carry what they would without the hook."""
    note: str = ""
    """What the activations were estimated for, for messages (e.g. '512×512, batch 2')."""

    @property
    def model_bytes(self) -> int:
        """Bytes of the models it needs resident."""
        return sum(self.models.values())

    @property
    def total(self) -> int:
        """Models plus activations: the estimated need on the device."""
        return self.model_bytes + self.activations

    @property
    def least(self) -> int:
        """Models plus the least activations it can run with: more than the budget cannot run."""
        least = self.activations if self.min_activations is None else self.min_activations
        return self.model_bytes + min(least, self.activations)


DTYPE_BYTES = {"fp32": 4, "fp16": 2, "bf16": 2}
"""Bytes per number of the compute dtypes."""


@dataclass(frozen=True)
class EstimateContext:
    """What a memory estimate may consult before anything runs."""

    settings: Settings
    device: str = "cpu"
    """The device the node will compute on ('cpu' for nodes that do not use the accelerator)."""
    dtypes: Callable[[str, str], str] | None = None
    """The model manager's rule: (model kind, device) → 'fp32', 'fp16' or 'bf16'."""

    def dtype(self, kind: str = "") -> str:
        """'fp32', 'fp16' or 'bf16': what `RunContext.models.dtype(kind)` gives this node."""
        return self.dtypes(kind, self.device) if self.dtypes is not None else "fp32"

    def itemsize(self, kind: str = "") -> int:
        """Bytes per number of that dtype."""
        return DTYPE_BYTES[self.dtype(kind)]


@dataclass(frozen=True)
class FingerprintContext:
    """What a node's `Node.fingerprint` hook may consult while a run is planned."""

    node_id: str
    settings: Settings

    def file(self, path_kind: str, name: str, *, content: bool = False) -> str | None:
        """Fingerprint of the file ``name`` as an input of ``path_kind`` finds it (its absolute
        path, size and modification time; with ``content``, a hash of its bytes too); None when
        it does not exist."""
        from nodeflow.cache import file_fingerprint

        found = self.settings.resolve_path(path_kind, name)
        return None if found is None else file_fingerprint(found, content=content)


class Node:
    """Base class of node types. Subclasses declare the class attributes and `run`.

    Class attributes: ``id`` (stable, ``pack.Name``), ``version`` (semantic; bump the
    major version when saved graphs need `migrate`), ``category``, ``title`` (default:
    from the id), ``description`` (default: the docstring), ``inputs`` (`Input`
    declarations), ``outputs`` (`Output` declarations), ``deterministic`` (False: never
    cached), ``output_node`` (True: writes files; run by default), ``uses_accelerator``
    (True: computes on the GPU; run one at a time per device), ``constant`` (True: a pure,
    instant function of its inputs, computed at validation when they are constants),
    ``deprecated`` / ``experimental`` (True or a note: flagged in the palette, warned at
    validation). The registry checks the declaration (`declaration_problems`) when it
    registers the type.
    """

    id: ClassVar[str]
    version: ClassVar[str] = "1.0.0"
    category: ClassVar[str] = "misc"
    title: ClassVar[str] = ""
    description: ClassVar[str] = ""
    inputs: ClassVar[Sequence[Input]] = ()
    outputs: ClassVar[Sequence[Output]] = ()
    deterministic: ClassVar[bool] = True
    """False: never cached; runs every time (e.g. reads the clock or a camera)."""
    output_node: ClassVar[bool] = False
    """True: writes files or otherwise has effects; run by default."""
    uses_accelerator: ClassVar[bool] = False
    """True: computes on the GPU (or the CPU standing in for it); such nodes run one at a
    time per device, while other nodes run beside them."""
    constant: ClassVar[bool] = False
    """True: an instant, pure function of its inputs that never uses its context (value
    nodes, reroutes, arithmetic). Validation computes it when its inputs are constants, so
    what flows from it is checked like a literal (ranges, choices, files, memory)."""
    deprecated: ClassVar[bool | str] = False
    """True, or what to use instead (``"use diffusion.Sample instead"``): the type is kept so
    saved graphs still run, but validation warns where a graph uses it and the editor's palette
    hides it unless searched for."""
    experimental: ClassVar[bool | str] = False
    """True, or what may change: its inputs or results may change without a major version;
    validation warns where a graph uses it and the palette marks it."""

    # Filled in by __init_subclass__.
    input_map: ClassVar[Mapping[str, Input]]
    output_map: ClassVar[Mapping[str, Output]]
    pack: ClassVar[str | None] = None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "id" not in cls.__dict__:
            return  # an abstract intermediate class
        # A broken declaration is reported when the type is registered (`declaration_problems`),
        # with its pack, whose other types still load; until then the maps keep what is sound.
        cls.input_map = _socket_map(cls.inputs, Input)
        cls.output_map = _socket_map(cls.outputs, Output)
        if not cls.description:
            cls.description = (cls.__doc__ or "").strip()
        if not cls.title and isinstance(cls.id, str):
            cls.title = re.sub(r"(?<=[a-z0-9])(?=[A-Z])", " ", cls.id.rsplit(".", 1)[-1])

    if TYPE_CHECKING:
        # Subclasses declare their inputs as named parameters of `run`.
        run: Callable[..., Mapping[str, Any] | Any]
    else:
        def run(self, ctx: RunContext, **inputs: Any) -> Mapping[str, Any] | Any:
            """Compute the outputs: a mapping by output name (or the value when there is one
            output). Inputs arrive as keyword arguments named like the input sockets."""
            raise NotImplementedError

    @classmethod
    def check(cls, values: Mapping[str, Any], settings: Settings) -> Iterable[tuple[str | None, str]]:
        """Extra validation of literal input values before anything runs.

        ``values`` holds the literal inputs (linked inputs are absent). Yield
        ``(socket, message)`` for each problem; socket None means the node itself.
        """
        return ()

    @classmethod
    def estimate_memory(cls, values: Mapping[str, Any], upstream: Mapping[str, ValueEstimate],
                        ctx: EstimateContext) -> MemoryEstimate | None:
        """Estimate, before anything runs, the memory this node needs on its compute device.

        ``values`` holds the literal inputs (as for `check`: linked inputs are absent),
        ``upstream`` what each linked input will carry (`ValueEstimate`, for inputs that carry
        something known). Return the models it needs resident at once (usually those its inputs
        carry), its activation bytes (a rough, somewhat generous figure is fine) and what its
        outputs carry; None when it cannot tell. A run fails before any node runs when a node
        that uses the accelerator needs more than the budget of every device.

        Without this hook: a node that uses the accelerator needs the models of all its inputs;
        an output carries the models of the inputs of its own type (with their ``info``), and,
        for a node that does not use the accelerator, also those of inputs whose type no output
        has (they were packed into the outputs, as a ControlNet into a conditioning).
        """
        return None

    @classmethod
    def fingerprint(cls, ctx: FingerprintContext, **inputs: Any) -> str | None:
        """The state of what the node reads from outside the graph, for its cache key.

        Called while every run is planned, with the node's literal inputs (as for `check`:
        linked inputs are absent). Return a short string that changes whenever what the
        node would compute changes (a URL's ETag, a camera's frame counter, a clock's
        minute), or None when the node reads nothing from outside. The node runs again
        whenever the string differs from the last run's; its descendants follow.

        Files named by inputs declared with ``path_kind`` need no hook: their absolute path,
        size and modification time (and, with ``hash_content=True``, a hash of their bytes)
        are part of the key already. A node that must run every time declares
        ``deterministic = False`` instead.
        """
        return None

    @classmethod
    def migrate(cls, from_version: str, inputs: dict[str, Any]) -> dict[str, Any] | None:
        """Bring literal inputs saved with an older major version up to this one.

        Return None when there is no migration from ``from_version``.
        """
        return None

    @classmethod
    def model_family(cls, path: Path) -> str | None:
        """For a loader: the model family of the file or folder at ``path`` as this node reads
        it (e.g. ``"sd3"``, ``"flux"``; ``"sd"`` for a model of a family it does not load), or
        None when it cannot tell. Importers of foreign workflows ask it to pick the node type a
        loader becomes; it reads headers or configs only, and never raises."""
        return None

    @classmethod
    def to_json(cls) -> dict[str, Any]:
        """The node type's full schema, as `nodeflow nodes --json` prints it."""
        return {
            "id": cls.id,
            "version": cls.version,
            "title": cls.title,
            "category": cls.category,
            "description": cls.description,
            "pack": cls.pack,
            "deterministic": cls.deterministic,
            "output_node": cls.output_node,
            "uses_accelerator": cls.uses_accelerator,
            "constant": cls.constant,
            "deprecated": bool(cls.deprecated),
            "experimental": bool(cls.experimental),
            **({"flag_note": flag[1]} if (flag := node_flag(cls)) and flag[1] else {}),
            "inputs": [i.to_json() for i in cls.inputs],
            "outputs": [o.to_json() for o in cls.outputs],
            "literal_schema": literal_json_schema(cls),
        }


def _structure_problems(cls: type[Node]) -> list[str]:
    """Problems with the id, the version and the sockets' names and types: the declaration
    the rest of the checks (and the input and output maps) rely on."""
    out: list[str] = []
    if not isinstance(cls.id, str) or not _NODE_ID.match(cls.id):
        out.append(f"id {cls.id!r} must look like 'pack.Name'")
    if not isinstance(cls.version, str) or not _SEMVER.match(cls.version):
        out.append(f"version {cls.version!r} must be semantic, like '1.0.0'")
    params_in: set[str] = set()
    for kind, specs, model in (("input", cls.inputs, Input), ("output", cls.outputs, Output)):
        if isinstance(specs, BaseModel | str) or not isinstance(specs, Iterable):
            out.append(f"{kind}s must be a tuple of {model.__name__}(...) declarations (a single "
                       f"one needs a comma: ({model.__name__}(...),))")
            continue
        seen: set[str] = set()
        for spec in specs:
            if not isinstance(spec, model):
                out.append(f"{kind}s must be {model.__name__}(...) declarations, not {spec!r}")
                continue
            out += _socket_problems(spec.name, spec.type, seen)
            if isinstance(spec.type, TypeParam):
                if kind == "input":
                    params_in.add(spec.type.name)
                elif spec.type.name not in params_in:
                    out.append(f"output {spec.name!r} uses type parameter {spec.type.name!r} "
                               "that no input declares")
    return out


def _socket_problems(name: str, spec: Any, seen: set[str]) -> list[str]:
    if not _SOCKET_NAME.match(name):
        return [f"socket name {name!r} must be an identifier"]
    if name in seen:
        return [f"socket {name!r} is declared twice"]
    seen.add(name)
    if not isinstance(spec, SocketType | UnionType | TypeParam):
        return [f"socket {name!r} has type {spec!r}; use a SocketType"]
    return []


def _socket_map(specs: Any, model: type[Input] | type[Output]) -> dict[str, Any]:
    if isinstance(specs, BaseModel | str) or not isinstance(specs, Iterable):
        return {}
    return {spec.name: spec for spec in specs if isinstance(spec, model)}


def node_flag(cls: type[Node]) -> tuple[str, str] | None:
    """``("deprecated" | "experimental", note)`` when the node type is flagged (the note is ""
    when the flag is just True), else None."""
    for name in ("deprecated", "experimental"):
        value = getattr(cls, name, False)
        if value:
            return name, value.strip() if isinstance(value, str) else ""
    return None


_HOOKS = ("check", "estimate_memory", "fingerprint", "migrate", "model_family")
"""Node hooks nodeflow calls on the class, so they must be classmethods."""


def declaration_problems(cls: type[Node]) -> list[str]:
    """What is wrong with a node type's declaration, each as a sentence saying what to change:
    ``run`` parameters that do not match the declared inputs, input options that do not fit the
    input's type, contradictory flags. Empty when it is sound. The registry calls this when it
    registers the type."""
    problems = _structure_problems(cls)
    if problems:
        return problems  # the other checks read the sockets
    for spec in cls.inputs:
        problems += [f"input {spec.name!r}: {p}" for p in _input_problems(spec)]
    problems += _run_problems(cls)
    problems += _widget_problems(cls)
    for hook in _HOOKS:
        if not isinstance(_declared(cls, hook), classmethod):
            problems.append(f"{hook}() must be a @classmethod (nodeflow calls it on the class)")
    for flag in ("deprecated", "experimental"):
        value = getattr(cls, flag)
        if not isinstance(value, bool | str) or (isinstance(value, str) and not value.strip()):
            example = "use pack.Other instead" if flag == "deprecated" else "its inputs may change"
            problems.append(f"{flag} must be True, False or a note such as {example!r}, "
                            f"not {value!r}")
    if cls.deprecated and cls.experimental:
        problems.append("it is declared both deprecated and experimental; keep one")
    if cls.constant and not cls.deterministic:
        problems.append("constant = True needs a deterministic node (validation computes it once "
                        "and trusts the result); drop one of the two")
    if cls.constant and (cls.output_node or cls.uses_accelerator):
        problems.append("constant = True is for instant, pure functions; a node that writes files "
                        "or uses the accelerator is not one")
    return problems


def _widget_problems(cls: type[Node]) -> list[str]:
    """Inputs the editor edits together (`Input.widget`): numbers, a whole area, ranges in pairs."""
    out: list[str] = []
    hinted = [spec for spec in cls.inputs if spec.widget]
    for spec in hinted:
        if not _literals(spec.type) <= {int, float}:
            out.append(f"input {spec.name!r}: widget={spec.widget!r} applies to INT or FLOAT inputs; "
                       "remove it")
    roles = sorted(spec.widget for spec in hinted if spec.widget and spec.widget.startswith("area."))
    if roles and roles != sorted(("area.x", "area.y", "area.width", "area.height")):
        out.append("an area needs one input each declared widget='area.x', 'area.y', 'area.width' "
                   f"and 'area.height', not {', '.join(roles)}")
    start: str | None = None
    for spec in hinted:
        if spec.widget == "range.start":
            if start is not None:
                out.append(f"input {start!r}: its range.start has no range.end after it")
            start = spec.name
        elif spec.widget == "range.end":
            if start is None:
                out.append(f"input {spec.name!r}: its range.end has no range.start before it")
            start = None
    if start is not None:
        out.append(f"input {start!r}: its range.start has no range.end after it")
    return out


def _literals(t: Any) -> set[type | None]:
    """The Python types of values a socket type carries as literals (None: a type without)."""
    if isinstance(t, TypeParam):
        return _literals(t.bound) if t.bound is not None else {None}
    if isinstance(t, UnionType):
        return {m.literal for m in t.types}
    return {t.literal} if isinstance(t, SocketType) else {None}


def _input_problems(spec: Input) -> list[str]:
    t = spec.type
    literal = t.literal if isinstance(t, SocketType) else None
    literals = _literals(t)
    numeric = literals <= {int, float}  # INT, FLOAT, their unions and bounded generics
    whole = literals == {int}
    text = literals == {str}
    name = type_name(t) if isinstance(t, SocketType | UnionType | TypeParam) else repr(t)
    out: list[str] = []
    if spec.multiline and not text:
        out.append(f"multiline applies to STRING inputs, not {name}; remove it")
    if spec.seed and not whole:
        out.append(f"seed applies to INT inputs, not {name}; remove it")
    if spec.path_kind and not text:
        out.append(f"path_kind applies to STRING inputs (a file name), not {name}; remove it")
    if spec.hash_content and not spec.path_kind:
        out.append("hash_content applies to file inputs; add path_kind or remove hash_content")
    widget = getattr(spec, "widget", None)
    if widget and not numeric:
        out.append(f"widget {widget!r} applies to INT or FLOAT inputs, not {name}; remove it")
    bounds = [(key, getattr(spec, key)) for key in ("min", "max", "step")]
    for key, value in bounds:
        if value is None:
            continue
        if not numeric:
            out.append(f"{key} applies to INT or FLOAT inputs, not {name}; remove it")
            continue
        if isinstance(value, bool) or value != value or value in (float("inf"), float("-inf")):
            out.append(f"{key} must be a finite number, not {value!r}")
        elif whole and not float(value).is_integer():
            out.append(f"{key} {value!r} is not a whole number, but the input is an INT")
    if numeric and not out:
        if spec.min is not None and spec.max is not None and spec.min > spec.max:
            out.append(f"min {_num(spec.min)} is above max {_num(spec.max)}")
        if spec.step is not None and spec.step <= 0:
            out.append(f"step must be above 0, not {_num(spec.step)}")
    if spec.choices is not None:
        if None in literals:
            out.append(f"choices need a type that takes values (INT, FLOAT, BOOL, STRING), not "
                       f"{name}; remove them")
        elif not spec.choices:
            out.append("choices is empty; list at least one value or remove it")
        else:
            if literal is not None:  # a union's or a generic's choices are not typed here
                plain = spec.model_copy(update={"choices": None, "optional": False,
                                                "link_only": False})
                for choice in spec.choices:
                    why = check_literal(plain, choice)
                    if why:
                        out.append(f"choice {choice!r}: {why}")
            if len(set(map(repr, spec.choices))) != len(spec.choices):
                out.append("choices lists a value twice")
            if spec.multiline:
                out.append("multiline and choices do not go together (choices are a combo box)")
    if spec.has_default and literal is not None and not out:
        # A link-only input's default still reaches run() when nothing is linked.
        plain = spec.model_copy(update={"link_only": False}) if spec.link_only else spec
        why = check_literal(plain, spec.default)
        if why:
            out.append(f"default: {why}")
    return out


def _declared(cls: type, name: str) -> Any:
    """The attribute as the nearest class in the MRO declares it (a classmethod object stays
    one), or None."""
    for klass in cls.__mro__:
        if name in klass.__dict__:
            return klass.__dict__[name]
    return None


def _run_problems(cls: type[Node]) -> list[str]:
    """Does ``run`` take what the executor gives it: the context, then every input by name?"""
    run = _declared(cls, "run")
    if run is None or run is Node.__dict__["run"]:
        return ["it has no run() method; define run(self, ctx, <one parameter per input>)"]
    if isinstance(run, staticmethod | classmethod) or not callable(run):
        return ["run must be a plain method: def run(self, ctx, <one parameter per input>)"]
    try:
        params = list(inspect.signature(run).parameters.values())[1:]  # after self
    except (TypeError, ValueError):
        return []  # a callable nodeflow cannot inspect: trust it
    P = inspect.Parameter
    positional = (P.POSITIONAL_ONLY, P.POSITIONAL_OR_KEYWORD, P.VAR_POSITIONAL)
    if not params or params[0].kind not in positional:
        return ["run() must take the run context as its first parameter after self: "
                "def run(self, ctx, ...)"]
    ctx, rest = params[0], params[1:]
    by_name = {p.name: p for p in rest if p.kind not in (P.VAR_POSITIONAL, P.VAR_KEYWORD)}
    takes_any = any(p.kind is P.VAR_KEYWORD for p in rest)
    out: list[str] = []
    declared = [spec.name for spec in cls.inputs]
    for name in declared:
        param = by_name.get(name)
        if ctx.kind is not P.VAR_POSITIONAL and name == ctx.name:
            out.append(f"input {name!r} clashes with run()'s context parameter {ctx.name!r}; "
                       f"rename one of them")
        elif param is None and not takes_any:
            out.append(f"input {name!r} has no parameter in run(); add a parameter {name} "
                       f"(or **inputs)")
        elif param is not None and param.kind is P.POSITIONAL_ONLY:
            out.append(f"run() parameter {name!r} is positional-only, but inputs are passed "
                       f"by name; remove the '/'")
    for param in by_name.values():
        if param.name not in declared and param.default is P.empty:
            out.append(f"run() parameter {param.name!r} is not a declared input, so it never "
                       f"gets a value; declare Input({param.name!r}, ...) or give it a default")
    return out


def check_literal(spec: Input, value: Any) -> str | None:
    """Why ``value`` is not acceptable for the input, or None if it is."""
    t = spec.type
    if not isinstance(t, SocketType) or t.literal is None or spec.link_only:
        return f"this input takes a link from another node, not a value (got {value!r})"
    if value is None:
        return None if spec.optional else "a value is required, got null"
    if t is BOOL or t.literal is bool:
        if not isinstance(value, bool):
            return f"expected true or false, got {value!r}"
    elif t.literal is int:
        if isinstance(value, bool) or not isinstance(value, int):
            return f"expected an integer, got {value!r}"
    elif t.literal is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            return f"expected a number, got {value!r}"
        if value != value or value in (float("inf"), float("-inf")):
            return f"expected a finite number, got {value!r}"
    elif t.literal is str:
        if not isinstance(value, str):
            return f"expected text, got {value!r}"
    elif not isinstance(value, t.literal):
        return f"expected {t.literal.__name__}, got {value!r}"
    if spec.choices is not None and value not in spec.choices:
        options = ", ".join(repr(c) for c in spec.choices)
        return f"{value!r} is not one of the choices: {options}"
    if spec.min is not None and value < spec.min:
        return f"{value!r} is below the minimum {_num(spec.min)}"
    if spec.max is not None and value > spec.max:
        return f"{value!r} is above the maximum {_num(spec.max)}"
    return None


def check_value(spec: Input, value: Any) -> str | None:
    """Why an actual value (one that arrived through a link, of the input's type already) is
    outside the input's declared choices or range, or None when it is inside."""
    if value is None:
        return None
    if spec.choices is not None:
        try:
            allowed = value in spec.choices
        except Exception:  # noqa: BLE001 - a value that cannot be compared is not a choice
            allowed = False
        if not allowed:
            options = ", ".join(repr(c) for c in spec.choices)
            return f"{_short_value(value)} is not one of the choices: {options}"
    if spec.min is None and spec.max is None:
        return None
    try:
        number = float(value)
    except (TypeError, ValueError, OverflowError):
        return None  # not a number: ranges do not apply
    if number != number:
        return "is not a number (NaN)"
    if spec.min is not None and number < spec.min:
        return f"{_short_value(value)} is below the minimum {_num(spec.min)}"
    if spec.max is not None and number > spec.max:
        return f"{_short_value(value)} is above the maximum {_num(spec.max)}"
    return None


def _short_value(value: Any) -> str:
    try:
        value = value.item()  # a numpy or torch scalar reads as the number it is
    except Exception:  # noqa: BLE001, S110 - anything else is shown as it is
        pass
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else str(x)


def parse_literal(spec: Input, text: str) -> Any:
    """Parse command-line text as a value of the input's type (raise ValueError when it is not)."""
    t = spec.type
    if not isinstance(t, SocketType) or t.literal is None or spec.link_only:
        raise ValueError("this input takes a link from another node, not a value")
    if t.literal is bool:
        lowered = text.strip().lower()
        if lowered in ("1", "true", "yes", "on"):
            return True
        if lowered in ("0", "false", "no", "off"):
            return False
        raise ValueError(f"expected true or false, got {text!r}")
    if t.literal is int:
        try:
            return int(text.strip(), 0)
        except ValueError:
            raise ValueError(f"expected an integer, got {text!r}") from None
    if t.literal is float:
        try:
            value = float(text)
        except ValueError:
            raise ValueError(f"expected a number, got {text!r}") from None
        return int(value) if t is INT else value
    return text


_PY_TYPES: dict[type, str] = {int: "integer", float: "number", str: "string", bool: "boolean"}


def literal_json_schema(cls: type[Node]) -> dict[str, Any]:
    """JSON Schema (from pydantic) of the literal inputs of a node type."""
    from pydantic import create_model

    fields: dict[str, Any] = {}
    for spec in cls.inputs:
        if not spec.accepts_literal:
            continue
        py: Any = spec.type.literal
        if spec.type is FLOAT:
            py = float
        if spec.choices is not None:
            from typing import Literal
            py = Literal[tuple(spec.choices)]
        if spec.optional:
            py = py | None
        constraints: dict[str, Any] = {"description": spec.description}
        if spec.min is not None:
            constraints["ge"] = spec.min
        if spec.max is not None:
            constraints["le"] = spec.max
        default = spec.default if spec.has_default else (None if spec.optional else ...)
        fields[spec.name] = (py, Field(default, **constraints))
    model = create_model(f"{cls.id.replace('.', '_')}_inputs", **fields)
    return model.model_json_schema()


__all__ = [
    "REQUIRED", "Input", "Output", "Node", "RunContext", "check_literal", "check_value",
    "declaration_problems", "node_flag",
    "parse_literal",
    "EstimateContext", "FingerprintContext", "MemoryEstimate", "ValueEstimate",
    "literal_json_schema", "BOOL", "FLOAT", "INT", "STRING",
]
