"""The node palette: type to find a node type by name, category or description."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from PySide6.QtCore import QPoint, Qt, Signal
from PySide6.QtGui import QColor, QKeyEvent
from PySide6.QtWidgets import QFrame, QLabel, QLineEdit, QListWidget, QListWidgetItem, QVBoxLayout, QWidget

from nodeflow.api import Node, TypeParam
from nodeflow.files import atomic_write
from nodeflow.registry import NodeRegistry

from . import theme
from .connect import accepts, type_label
from .labels import node_title
from .scene import PaletteFilter


def _concrete(t: Any) -> Any:
    return t.bound if isinstance(t, TypeParam) else t


def fits(cls: type[Node], f: PaletteFilter | None) -> bool:
    """Can a node of this type be linked to the socket being dragged?"""
    if f is None:
        return True
    if f.kind == "out":
        return any(accepts(f.type, _concrete(spec.type)) for spec in cls.inputs)
    return any(accepts(_concrete(out.type), f.type) for out in cls.outputs)


def score(cls: type[Node], words: list[str]) -> int | None:
    """Rank of a node type for the search words (higher first), None when it does not match."""
    title = node_title(cls)
    name = f"{cls.id} {cls.title} {title}".lower()
    category = cls.category.lower()
    description = cls.description.lower()
    total = 0
    for w in words:
        if title.lower().startswith(w) or cls.title.lower().startswith(w) or cls.id.lower().split(".", 1)[-1].startswith(w):
            total += 100
        elif w in name:
            total += 60
        elif category.startswith(w):
            total += 40
        elif w in description:
            total += 10
        else:
            return None
    return total


def node_flag(cls: type[Node]) -> tuple[str, str] | None:
    """("deprecated" | "experimental", its note or "") for a flagged node type, else None."""
    for kind in ("deprecated", "experimental"):
        value = getattr(cls, kind, False)
        if value:
            return kind, value.strip() if isinstance(value, str) else ""
    return None


def flag_tooltip(kind: str, note: str) -> str:
    """The palette's tooltip line for a deprecated or experimental node type."""
    if kind == "deprecated":
        return "Deprecated: " + (note or "it may be removed; prefer another node")
    return "Experimental: " + (note or "its inputs and results may change")


RECENT_FIRST = 5
"""The last node types added lead the list, then the most used ones."""


class PaletteUsage:
    """Which node types were added, how often and when (kept in the editor's home folder)."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self.counts: dict[str, int] = {}
        self.last: dict[str, float] = {}
        if path is not None:
            try:
                data = json.loads(path.read_text(encoding="utf-8"))
                self.counts = {k: int(v) for k, v in data.get("counts", {}).items()}
                self.last = {k: float(v) for k, v in data.get("last", {}).items()}
            except (OSError, ValueError, TypeError, AttributeError):
                pass  # a missing or damaged file only loses the order

    def record(self, type_id: str) -> None:
        self.counts[type_id] = self.counts.get(type_id, 0) + 1
        self.last[type_id] = max([time.time(), *[t + 1e-6 for t in self.last.values()]])
        if self.path is not None:
            try:
                atomic_write(self.path, json.dumps({"counts": self.counts, "last": self.last}).encode("utf-8"))
            except OSError:
                pass  # the order is a convenience; never fail adding a node over it

    def rank(self, type_id: str) -> tuple[int, float, int]:
        """Sort key: the recent ones (newest first), then by use count, then the rest."""
        recent = sorted(self.last, key=self.last.__getitem__, reverse=True)[:RECENT_FIRST]
        if type_id in recent:
            return (0, -self.last[type_id], 0)
        return (1, 0.0, -self.counts.get(type_id, 0))


class NodePalette(QFrame):
    """A pop-up list of node types built from the registry (plugin nodes included); with no search
    words the recently added and most used types come first. Experimental types carry an
    ``[experimental]`` badge; deprecated ones are hidden until searched for, then listed last,
    greyed, with a ``[deprecated]`` badge (the tooltip says what to use instead)."""

    chosen = Signal(str)

    def __init__(self, registry: NodeRegistry, parent: QWidget | None = None, *,
                 usage_file: Path | None = None) -> None:
        super().__init__(parent, Qt.WindowType.Popup)
        self.registry = registry
        self.usage = PaletteUsage(usage_file)
        self.filter: PaletteFilter | None = None
        self.setFrameShape(QFrame.Shape.StyledPanel)
        self.setObjectName("palette")
        self.setStyleSheet("#palette { background: #26282c; border: 1px solid #444; }"
                           "QLineEdit { padding: 5px; background: #1e1f22; color: #eee; border: none; }"
                           "QListWidget { background: #26282c; color: #ddd; border: none; }"
                           "QListWidget::item:selected { background: #3f6fa8; }"
                           "QLabel { color: #9aa0a6; padding: 2px 6px; }")
        layout = QVBoxLayout(self)
        layout.setContentsMargins(4, 4, 4, 4)
        self.search = QLineEdit(self)
        self.search.setPlaceholderText("Search nodes…")
        self.hint = QLabel(self)
        self.list = QListWidget(self)
        self.list.setUniformItemSizes(True)
        layout.addWidget(self.search)
        layout.addWidget(self.hint)
        layout.addWidget(self.list)
        self.resize(360, 380)
        self.search.textChanged.connect(self.refilter)
        self.search.installEventFilter(self)
        self.list.itemActivated.connect(self._pick)
        self.list.itemClicked.connect(self._pick)

    def open_at(self, global_pos: QPoint, f: PaletteFilter | None = None) -> None:
        self.filter = f
        if f is None:
            self.hint.hide()
        else:
            what = "taking" if f.kind == "out" else "giving"
            self.hint.setText(f"Nodes {what} {type_label(f.type)}")
            self.hint.show()
        self.search.clear()
        self.refilter()
        self.move(global_pos)
        self.show()
        self.search.setFocus()

    def refilter(self) -> None:
        words = self.search.text().lower().split()
        ranked = []
        for cls in self.registry.types():
            if not fits(cls, self.filter):
                continue
            if cls.deprecated and not words:
                continue  # deprecated types show only when searched for
            s = score(cls, words) if words else 0
            if s is not None:
                ranked.append((bool(cls.deprecated), -s, self.usage.rank(cls.id), cls.category,
                               node_title(cls), cls))
        ranked.sort(key=lambda r: r[:5])
        self.list.clear()
        for *_key, cls in ranked:
            summary = cls.description.splitlines()[0] if cls.description else ""
            flag = node_flag(cls)
            badge = f"  [{flag[0]}]" if flag else ""  # by the title: long lines are cut
            item = QListWidgetItem(f"{node_title(cls)}{badge}    ·  {cls.category}")
            item.setData(Qt.ItemDataRole.UserRole, cls.id)
            tip = f"{cls.id} {cls.version}\n{summary}"
            if flag:
                tip += f"\n{flag_tooltip(*flag)}"
            item.setToolTip(tip)
            item.setForeground(QColor("#8a8f96" if cls.deprecated else "#e6e6e6"))
            swatch = theme.category_color(cls.category)
            item.setBackground(QColor(swatch.red(), swatch.green(), swatch.blue(), 40))
            self.list.addItem(item)
        if self.list.count():
            self.list.setCurrentRow(0)

    def visible_ids(self) -> list[str]:
        return [self.list.item(i).data(Qt.ItemDataRole.UserRole) for i in range(self.list.count())]

    def _pick(self, item: QListWidgetItem | None = None) -> None:
        item = item or self.list.currentItem()
        if item is None:
            return
        type_id = item.data(Qt.ItemDataRole.UserRole)
        self.usage.record(type_id)
        self.hide()
        self.chosen.emit(type_id)

    def eventFilter(self, obj: Any, event: Any) -> bool:
        if obj is self.search and isinstance(event, QKeyEvent) and event.type() == QKeyEvent.Type.KeyPress:
            key = event.key()
            if key in (Qt.Key.Key_Down, Qt.Key.Key_Up, Qt.Key.Key_PageDown, Qt.Key.Key_PageUp):
                row = self.list.currentRow() + (1 if key in (Qt.Key.Key_Down, Qt.Key.Key_PageDown) else -1)
                self.list.setCurrentRow(max(0, min(self.list.count() - 1, row)))
                return True
            if key in (Qt.Key.Key_Return, Qt.Key.Key_Enter):
                self._pick()
                return True
            if key == Qt.Key.Key_Escape:
                self.hide()
                return True
        return super().eventFilter(obj, event)
