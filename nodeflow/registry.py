"""The node registry and node-pack discovery.

A node pack is a module (or package) whose node classes are registered under
their ids. Packs come from the ``nodeflow.nodes`` entry-point group (the
built-in packs use it too) and from plugin folders the user names
(``--plugins DIR``, ``NODEFLOW_PLUGINS``). A pack that fails is reported with
its error; every other pack still loads. Each node type's declaration is checked
when it is registered (`nodeflow.node.declaration_problems`): a broken one is
left out and reported with its pack, whose other node types still load.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
import threading
import traceback
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from pathlib import Path
from types import ModuleType
from typing import Any

from nodeflow.errors import PluginError
from nodeflow.node import Node, declaration_problems

ENTRY_POINT_GROUP = "nodeflow.nodes"
API_VERSION = "1.2"
"""The plugin API version; packs declare the range they support as ``NODEFLOW_API``.
1.1 added the model service protocol, model kinds and the file helpers (see docs/plugins.md)."""


@dataclass
class PackInfo:
    """What happened when a node pack was loaded."""

    name: str
    source: str
    version: str | None = None
    status: str = "loaded"  # loaded | failed | incompatible | partial
    error: str | None = None
    nodes: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "source": self.source, "version": self.version,
                "status": self.status, "error": self.error, "nodes": self.nodes}


class NodeRegistry:
    """Node types by id, and a report of every pack that was loaded."""

    def __init__(self) -> None:
        self._types: dict[str, type[Node]] = {}
        self._pack_of: dict[str, str] = {}
        self.packs: list[PackInfo] = []

    def __contains__(self, type_id: object) -> bool:
        return type_id in self._types

    def __len__(self) -> int:
        return len(self._types)

    def get(self, type_id: str) -> type[Node] | None:
        return self._types.get(type_id)

    def types(self) -> list[type[Node]]:
        """All node types, sorted by id."""
        return [self._types[k] for k in sorted(self._types)]

    def pack_of(self, type_id: str) -> str | None:
        return self._pack_of.get(type_id)

    def register(self, cls: type[Node], pack: str = "local") -> None:
        """Add a node type; raise `PluginError` if its declaration is broken
        (`declaration_problems`) or another pack already has its id."""
        if not (isinstance(cls, type) and issubclass(cls, Node) and "id" in cls.__dict__):
            raise PluginError(f"{cls!r} is not a node class (a Node subclass with an id)")
        if isinstance(cls.id, str) and self._types.get(cls.id) is cls:
            return  # registered already
        problems = declaration_problems(cls)
        if problems:
            listed = (problems[0] if len(problems) == 1 else f"({len(problems)} problems) "
                      + " ".join(f"{i}) {p}" for i, p in enumerate(problems, 1)))
            raise PluginError(
                f"node type '{cls.id}' ({cls.__module__}.{cls.__qualname__}) is not registered: "
                f"{listed}.",
                hint="Fix its declaration in the pack; the pack's other node types still load.")
        existing = self._types.get(cls.id)
        if existing is not None:
            raise PluginError(
                f"node id '{cls.id}' is defined by both pack '{self._pack_of[cls.id]}' and pack "
                f"'{pack}'; the one from '{self._pack_of[cls.id]}' is kept",
                hint="Rename one of the node types or remove one of the packs.")
        self._types[cls.id] = cls
        self._pack_of[cls.id] = pack
        if cls.pack is None:
            cls.pack = pack

    def register_module(self, name: str, module: ModuleType | Iterable[type[Node]], source: str,
                        version: str | None = None) -> PackInfo:
        """Register every node type a loaded pack module declares."""
        info = PackInfo(name, source, version)
        wanted = getattr(module, "NODEFLOW_API", None) if isinstance(module, ModuleType) else None
        if wanted is not None and not api_compatible(str(wanted)):
            info.status = "incompatible"
            info.error = (f"it needs nodeflow plugin API {wanted}, this nodeflow provides "
                          f"{API_VERSION}; update the plugin or nodeflow")
            self.packs.append(info)
            return info
        try:
            classes = list(node_classes(module))
        except Exception as exc:  # noqa: BLE001 - a broken pack must not stop the others
            info.status = "failed"
            info.error = _describe(exc)
            self.packs.append(info)
            return info
        errors = declare_model_kinds(module)
        for cls in classes:
            try:
                self.register(cls, name)
                info.nodes.append(cls.id)
            except PluginError as exc:
                errors.append(str(exc))
        if errors:
            info.status = "partial" if info.nodes else "failed"
            info.error = "; ".join(errors)
        self.packs.append(info)
        return info

    def load_entry_points(self, group: str = ENTRY_POINT_GROUP) -> None:
        """Load every installed pack in the entry-point group (nodeflow's own first)."""
        eps = sorted(entry_points(group=group),
                     key=lambda ep: (_dist_name(ep) != "nodeflow", ep.name))
        for ep in eps:
            dist = ep.dist
            version = dist.version if dist is not None else None
            source = f"entry point {ep.name} = {ep.value}"
            if dist is not None:
                source += f" ({dist.name})"
            def load(ep: Any = ep) -> Any:
                target = ep.load()
                if callable(target) and not isinstance(target, ModuleType):
                    target = target()
                return target

            target, error = _import_guarded(ep.name, load)
            if error is not None:
                self.packs.append(PackInfo(ep.name, source, version, "failed", error))
                continue
            self.register_module(ep.name, target, source, version)

    def load_folder(self, folder: str | Path) -> None:
        """Load each ``*.py`` file and each package in a plugin folder as a pack."""
        folder = Path(folder).expanduser()
        if not folder.is_dir():
            self.packs.append(PackInfo(folder.name, str(folder), None, "failed",
                                       "plugin folder not found"))
            return
        for entry in sorted(folder.iterdir()):
            if entry.name.startswith((".", "_")):
                continue
            if entry.is_file() and entry.suffix == ".py":
                self._load_file_pack(entry.stem, entry, None)
            elif entry.is_dir() and (entry / "__init__.py").is_file():
                self._load_file_pack(entry.name, entry / "__init__.py", [str(entry)])

    def _load_file_pack(self, name: str, path: Path, search: list[str] | None) -> None:
        module_name = f"nodeflow_plugins.{name}"
        source = str(path.parent if search else path)

        def load() -> ModuleType:
            spec = importlib.util.spec_from_file_location(module_name, path,
                                                          submodule_search_locations=search)
            if spec is None or spec.loader is None:
                raise ImportError(f"cannot import {path}")
            module = importlib.util.module_from_spec(spec)
            sys.modules.setdefault("nodeflow_plugins", ModuleType("nodeflow_plugins"))
            sys.modules[module_name] = module
            spec.loader.exec_module(module)
            return module

        module, error = _import_guarded(name, load)
        if error is not None:
            sys.modules.pop(module_name, None)
            self.packs.append(PackInfo(name, source, None, "failed", error))
            return
        self.register_module(name, module, source, getattr(module, "__version__", None))

    def problems(self) -> list[PackInfo]:
        return [p for p in self.packs if p.status != "loaded"]


def node_classes(module: ModuleType | Iterable[type[Node]]) -> Iterable[type[Node]]:
    """The node classes a pack declares: its ``NODES`` list, or the Node subclasses defined in it."""
    if not isinstance(module, ModuleType):
        return list(module)
    declared = getattr(module, "NODES", None)
    if declared is not None:
        return list(declared)
    prefix = module.__name__
    found = []
    for value in vars(module).values():
        if (isinstance(value, type) and issubclass(value, Node) and "id" in value.__dict__
                and (value.__module__ == prefix or value.__module__.startswith(prefix + "."))):
            found.append(value)
    return found


def declare_model_kinds(module: ModuleType | Iterable[type[Node]]) -> list[str]:
    """Declare the model kinds a pack module lists in ``MODEL_KINDS`` (`nodeflow.api.ModelKind`)
    for the models folders and the editor's file lists; returns what is wrong with them."""
    from nodeflow.settings import ModelKind, declare_model_kind

    declared = getattr(module, "MODEL_KINDS", ()) if isinstance(module, ModuleType) else ()
    if not isinstance(declared, list | tuple):
        return [f"MODEL_KINDS must be a list of ModelKind, not {type(declared).__name__}"]
    problems = []
    for kind in declared:
        if not isinstance(kind, ModelKind):
            problems.append(f"MODEL_KINDS holds {kind!r}, not a ModelKind")
            continue
        try:
            declare_model_kind(kind)
        except ValueError as exc:
            problems.append(str(exc))
    return problems


def api_compatible(spec: str, version: str = API_VERSION) -> bool:
    from packaging.specifiers import InvalidSpecifier, SpecifierSet

    try:
        return SpecifierSet(spec).contains(version, prereleases=True)
    except InvalidSpecifier:
        return False


def plugin_dirs_from_env() -> list[Path]:
    env = os.environ.get("NODEFLOW_PLUGINS", "")
    return [Path(p) for p in env.split(os.pathsep) if p]


def load_registry(plugin_dirs: Iterable[str | Path] = (), *, use_env: bool = True) -> NodeRegistry:
    """A registry with every installed pack and the packs in the named plugin folders."""
    registry = NodeRegistry()
    registry.load_entry_points()
    dirs = [Path(d) for d in plugin_dirs]
    if use_env:
        dirs += plugin_dirs_from_env()
    for folder in dirs:
        registry.load_folder(folder)
    return registry


PLUGIN_IMPORT_TIMEOUT = 60.0
"""Seconds a node pack may take to import (NODEFLOW_PLUGIN_TIMEOUT overrides it)."""


def plugin_import_timeout() -> float:
    try:
        return float(os.environ.get("NODEFLOW_PLUGIN_TIMEOUT", "") or PLUGIN_IMPORT_TIMEOUT)
    except ValueError:
        return PLUGIN_IMPORT_TIMEOUT


def _import_guarded(name: str, load: Callable[[], Any]) -> tuple[Any, str | None]:
    """Run a pack's import; return (result, None) or (None, why it failed).

    A pack is foreign code: anything it raises, ``SystemExit`` and ``KeyboardInterrupt``
    included, makes only that pack fail. The import runs in a daemon thread so that a pack
    that hangs is reported by name after the timeout and the others still load (its thread
    is left behind; it cannot stop the process from exiting).
    """
    outcome: list[Any] = []

    def target() -> None:
        try:
            outcome.append((load(), None))
        except BaseException as exc:  # noqa: BLE001 - SystemExit from a pack is a failure too
            if isinstance(exc, SystemExit):
                outcome.append((None, f"SystemExit: it called sys.exit({exc.code!r}) while "
                                      f"being imported{_where(exc)}"))
            else:
                outcome.append((None, _describe(exc)))

    timeout = plugin_import_timeout()
    thread = threading.Thread(target=target, name=f"nodeflow-import-{name}", daemon=True)
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        return None, (f"still importing after {timeout:g} s (it hangs at import?); skipped. "
                      "Set NODEFLOW_PLUGIN_TIMEOUT to wait longer")
    return outcome[0] if outcome else (None, "the import ended without a result")


def _dist_name(ep: Any) -> str:
    dist = getattr(ep, "dist", None)
    return dist.name if dist is not None else ""


def _describe(exc: BaseException) -> str:
    """One line naming the error and where in the plugin it happened."""
    text = str(exc)
    return f"{type(exc).__name__}{': ' + text if text else ''}{_where(exc)}"


def _where(exc: BaseException) -> str:
    """`` (at FILE:LINE)`` of the innermost frame outside importlib and this module."""
    for frame in reversed(traceback.extract_tb(exc.__traceback__)):
        if "importlib" not in frame.filename and "nodeflow/registry.py" not in frame.filename:
            return f" (at {frame.filename}:{frame.lineno})"
    return ""
