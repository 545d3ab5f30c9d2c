"""One open graph: the engine's `Graph`, its undo stack, its file and its live validation."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from PySide6.QtCore import QObject, QTimer, Signal
from PySide6.QtGui import QUndoCommand, QUndoStack

from nodeflow.comfy.model_paths import settings_from_env
from nodeflow.errors import Problem
from nodeflow.graph import Graph
from nodeflow.registry import NodeRegistry
from nodeflow.settings import Settings
from nodeflow.validate import GraphValidator

from . import commands as cmd


class _MemoSettings(Settings):
    """Settings whose file look-ups are remembered for the length of one validation."""

    def __init__(self, base: Settings) -> None:
        import dataclasses

        # Every setting, so extra model folders (--comfy-models) and input rules carry over.
        super().__init__(**{f.name: getattr(base, f.name) for f in dataclasses.fields(base)})
        self._found: dict[tuple[str, str], Path | None] = {}

    def resolve_path(self, kind: str, name: str) -> Path | None:
        key = (kind, name)
        if key not in self._found:
            self._found[key] = super().resolve_path(kind, name)
        return self._found[key]


class Document(QObject):
    """The graph being edited. Views subscribe to ``graph``; edits go through ``push``.

    ``path`` is where Save writes (None for an untitled graph, or one opened from a
    PNG). ``base_dir`` is the folder relative input files are looked up in.
    """

    problemsChanged = Signal()
    pathChanged = Signal()
    graphChanged = Signal(str, dict)
    """Re-emits every `Graph` change notification (kind, info) on the Qt side."""

    VALIDATE_DELAY_MS = 0
    """Validation runs once per burst of changes, at the next turn of the event loop."""

    def __init__(self, registry: NodeRegistry, graph: Graph | None = None, *, path: Path | None = None,
                 base_dir: Path | None = None, models: list[Path] | None = None,
                 out_dir: Path | None = None, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.registry = registry
        self.graph = graph if graph is not None else Graph()
        self.path = path
        self.base_dir = base_dir or (path.parent if path else Path.cwd())
        # with a ComfyUI user's folders: `nodeflow edit --comfy-models` passes them in the environment
        self.settings = settings_from_env([str(m) for m in (models or [])],
                                          str(out_dir) if out_dir else None, base_dir=self.base_dir)
        self.undo = QUndoStack(self)
        self.problems: list[Problem] = []
        self.problems_by_node: dict[str | None, list[Problem]] = {}
        self.validations = 0
        self._changed_nodes: set[str] = set()
        self._full_pending = True
        self._timer = QTimer(self)
        self._timer.setSingleShot(True)
        self._timer.setInterval(self.VALIDATE_DELAY_MS)
        self._timer.timeout.connect(self.validate_now)
        # After quick per-node checks, the whole graph is validated again once edits pause,
        # so the problem list is in exactly the order `nodeflow validate` prints it.
        self._settle = QTimer(self)
        self._settle.setSingleShot(True)
        self._settle.setInterval(600)
        self._settle.timeout.connect(lambda: self.validate_now(full=True))
        self._unsubscribe = self.graph.subscribe(self._on_graph_change)
        self.validate_now()

    # --- model notifications ---------------------------------------------------------
    def _on_graph_change(self, kind: str, info: dict[str, Any]) -> None:
        self.graphChanged.emit(kind, info)
        if kind == "layout":
            return
        if kind in ("input_set", "input_cleared") and not self._full_pending:
            self._changed_nodes.add(info["node"])
        else:
            self._full_pending = True
        self._timer.start()

    def close(self) -> None:
        self._timer.stop()
        self._settle.stop()
        self._unsubscribe()

    # --- edits -------------------------------------------------------------------------
    def push(self, command: QUndoCommand) -> None:
        self.undo.push(command)

    def set_input(self, node_id: str, socket: str, value: Any, *, merge: bool = True) -> None:
        """Set a literal input as an undo step (``merge``: quick edits of the same input are one)."""
        if self.graph.node(node_id).inputs.get(socket, object()) == value and \
                type(self.graph.node(node_id).inputs.get(socket)) is type(value):
            return
        self.push(cmd.SetInput(self.graph, node_id, socket, value, merge=merge))

    def clear_input(self, node_id: str, socket: str) -> None:
        if socket in self.graph.node(node_id).inputs:
            self.push(cmd.SetInput(self.graph, node_id, socket, None, clear=True))

    @property
    def dirty(self) -> bool:
        return not self.undo.isClean()

    # --- validation --------------------------------------------------------------------
    def validate_now(self, *, full: bool = False) -> list[Problem]:
        """Validate the graph as `nodeflow validate` does and publish the problems.

        After value edits only, just the edited nodes are checked again (see
        `_revalidate_nodes`); any other change validates the whole graph.
        """
        self._timer.stop()
        if full or self._full_pending or not self._changed_nodes:
            self.problems = GraphValidator(self.registry, _MemoSettings(self.settings)).validate(self.graph)
        else:
            self.problems = self._revalidate_nodes(self._changed_nodes)
            self._settle.start()
        self._full_pending = False
        self._changed_nodes = set()
        self._publish()
        return self.problems

    # Problems that depend only on a node's own literal values and which of its inputs are linked.
    LOCAL_CODES = frozenset({"bad_value", "missing_input", "value_and_link", "unknown_input", "missing_file",
                             "node_check"})

    def _revalidate_nodes(self, nodes: set[str]) -> list[Problem]:
        """Problems after value edits on ``nodes``: the validator run on each node with its feeders.

        A literal value can only change the node's own local problems, so those are
        replaced and every other problem is kept; the messages are the validator's.
        """
        fresh: dict[str, list[Problem]] = {}
        validator = GraphValidator(self.registry, _MemoSettings(self.settings))
        for node_id in nodes:
            if node_id not in self.graph.nodes:
                continue
            part = Graph(source=self.graph.source)
            feeders = [ln for ln in self.graph.links if ln.dst == node_id]
            for n in [node_id, *(ln.src for ln in feeders)]:
                if n in self.graph.nodes and n not in part.nodes:
                    node = self.graph.nodes[n]
                    part.nodes[n] = node
            for ln in feeders:
                if ln.src in part.nodes:
                    part.connect(ln.source, ln.target)
            fresh[node_id] = [p for p in validator.validate(part)
                              if p.location.node == node_id and p.code in self.LOCAL_CODES]
        kept = [p for p in self.problems
                if not (p.location.node in fresh and p.code in self.LOCAL_CODES)]
        for found in fresh.values():
            kept.extend(found)
        return kept

    def _publish(self) -> None:
        by_node: dict[str | None, list[Problem]] = {}
        for p in self.problems:
            by_node.setdefault(p.location.node, []).append(p)
        self.problems_by_node = by_node
        self.validations += 1
        self.problemsChanged.emit()

    @property
    def validation_pending(self) -> bool:
        return self._timer.isActive()

    # --- files -------------------------------------------------------------------------
    @property
    def title(self) -> str:
        if self.path is not None:
            return self.path.name
        source = self.graph.source
        if source is not None:
            return f"{Path(source).name} (unsaved)"
        return "Untitled"

    def save(self, path: Path | None = None) -> Path:
        """Write the graph file (atomically); ``path`` given = save as."""
        target = Path(path or self.path or "")
        if not str(target):
            raise ValueError("no file name")
        target = target.resolve()
        if target.parent != self.base_dir.resolve():
            self._rebase_image_paths(target.parent)
        self.graph.save(target)
        self.path = target
        self.base_dir = target.parent
        self.settings.base_dir = self.base_dir
        self.undo.setClean()
        self.pathChanged.emit()
        self._timer.start()  # messages name the file now
        return target

    def _rebase_image_paths(self, new_dir: Path) -> None:
        """Keep relative picture paths pointing at the same files from the new folder."""
        for node in list(self.graph):
            cls = self.registry.get(node.type)
            if cls is None:
                continue
            for spec in cls.inputs:
                value = node.inputs.get(spec.name)
                if spec.path_kind not in ("image", "file") or not isinstance(value, str) or not value:
                    continue
                if Path(value).is_absolute():
                    continue
                old = self.base_dir / value
                if not old.exists() or (new_dir / value).exists():
                    continue
                try:
                    rebased = os.path.relpath(old.resolve(), new_dir)
                except ValueError:  # another drive
                    rebased = str(old.resolve())
                self.graph.set_input(node.id, spec.name, Path(rebased).as_posix())
