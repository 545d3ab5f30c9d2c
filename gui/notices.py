"""Messages where they happen: a bubble on the canvas at the socket or node concerned, gone when
the problem is resolved, and every message kept in the Messages list."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import shiboken6
from PySide6.QtCore import QObject, QPointF, QRectF, Qt, QTimer, Signal
from PySide6.QtGui import QColor, QFontMetricsF, QPainter, QPen
from PySide6.QtWidgets import QGraphicsItem, QListWidget, QListWidgetItem, QStyleOptionGraphicsItem, QWidget

from . import theme

if TYPE_CHECKING:
    from .window import MainWindow

BUBBLE_WIDTH = 280.0
HINT_SECONDS = 8.0
"""A hint (a refused link) leaves the canvas after this long; errors stay until resolved."""


@dataclass
class Notice:
    key: str
    text: str
    level: str  # "error" | "hint"
    node: str | None
    when: float
    resolved: bool = False


class NoticeBubble(QGraphicsItem):
    """A speech bubble on the canvas pointing at a scene position."""

    def __init__(self, notice: Notice, at: QPointF) -> None:
        super().__init__()
        self.notice = notice
        self.setZValue(50)
        self.setAcceptedMouseButtons(Qt.MouseButton.NoButton)
        self._font = theme.ui_font(8.5)
        metrics = QFontMetricsF(self._font)
        flags = int(Qt.TextFlag.TextWordWrap)
        self._text_rect = metrics.boundingRect(QRectF(0, 0, BUBBLE_WIDTH - 16, 400), flags, notice.text)
        w = self._text_rect.width() + 16
        h = self._text_rect.height() + 10
        self._box = QRectF(-14, -h - 8, w, h)
        self.setPos(at)

    def boundingRect(self) -> QRectF:
        return self._box.adjusted(-2, -2, 2, 10)

    def paint(self, painter: QPainter, option: QStyleOptionGraphicsItem, widget: QWidget | None = None) -> None:
        color = theme.PROBLEM if self.notice.level == "error" else QColor("#c9a227")
        painter.setRenderHint(QPainter.RenderHint.Antialiasing, True)
        painter.setPen(QPen(color, 1.5))
        painter.setBrush(QColor("#2b2d31"))
        painter.drawRoundedRect(self._box, 5, 5)
        painter.drawLine(QPointF(0, self._box.bottom()), QPointF(0, 0))
        painter.setFont(self._font)
        painter.setPen(QColor("#f0f0f0"))
        text = self._box.adjusted(8, 5, -8, -5)
        painter.drawText(text, int(Qt.TextFlag.TextWordWrap), self.notice.text)


class Notices(QObject):
    """The window's messages: posted with a key, resolved by key (or key prefix)."""

    changed = Signal()

    def __init__(self, window: MainWindow) -> None:
        super().__init__(window)
        self.w = window
        self.history: list[Notice] = []
        self.bubbles: dict[str, NoticeBubble] = {}
        self.list = QListWidget(window)
        self.list.setWordWrap(True)
        self.list.itemActivated.connect(self._activated)
        self.list.itemClicked.connect(self._activated)

    def post(self, key: str, text: str, *, level: str = "error", node: str | None = None,
             at: QPointF | None = None) -> Notice:
        """Show a message at ``at`` (or at ``node``), replacing an earlier one with the same key."""
        self.resolve(key, quiet=True)
        notice = Notice(key, text, level, node, time.time())
        self.history.append(notice)
        scene = self.w.scene
        if scene is not None and at is None and node is not None and node in scene.node_items:
            item = scene.node_items[node]
            at = item.mapToScene(QPointF(item.width / 2, 0))
        if scene is not None and at is not None:
            bubble = NoticeBubble(notice, at)
            scene.addItem(bubble)
            self.bubbles[key] = bubble
            if level == "hint":
                QTimer.singleShot(int(HINT_SECONDS * 1000), lambda b=bubble: self._drop_bubble(key, b))
        self._refill()
        return notice

    def resolve(self, key: str, *, prefix: bool = False, quiet: bool = False) -> None:
        """The problem behind these messages is gone: remove their bubbles, mark them resolved."""
        hit = False
        for notice in self.history:
            if not notice.resolved and (notice.key.startswith(key) if prefix else notice.key == key):
                notice.resolved = True
                hit = True
                if self.w.status_label.text() == notice.text:
                    self.w.status("")
        for k in [k for k in self.bubbles if (k.startswith(key) if prefix else k == key)]:
            self._drop_bubble(k, self.bubbles[k])
        if hit and not quiet:
            self._refill()

    def resolve_all(self) -> None:
        self.resolve("", prefix=True)

    def active(self) -> list[Notice]:
        return [n for n in self.history if not n.resolved]

    def graph_changed(self, kind: str, info: dict[str, Any]) -> None:
        """Edits resolve what they fix: a new link the refused-link hint, an edit of a failed node
        its failure."""
        if kind == "linked":
            self.resolve("link")
            self.resolve(f"failed:{info['link'].dst}")
        elif kind == "unlinked":
            self.resolve(f"failed:{str(info['target']).split('.', 1)[0]}")
        elif kind in ("input_set", "input_cleared", "node_removed"):
            self.resolve(f"failed:{info.get('node')}")

    def _drop_bubble(self, key: str, bubble: NoticeBubble) -> None:
        if self.bubbles.get(key) is bubble:
            del self.bubbles[key]
        if shiboken6.isValid(bubble) and bubble.scene() is not None:
            bubble.scene().removeItem(bubble)

    def _refill(self) -> None:
        self.list.clear()
        for notice in reversed(self.history[-200:]):
            stamp = time.strftime("%H:%M:%S", time.localtime(notice.when))
            mark = "✓ " if notice.resolved else ("⚠ " if notice.level == "error" else "• ")
            item = QListWidgetItem(f"{mark}{stamp}  {notice.text}")
            item.setData(Qt.ItemDataRole.UserRole, notice.node)
            if notice.resolved:
                item.setForeground(QColor("#80868b"))
            elif notice.level == "error":
                item.setForeground(theme.PROBLEM)
            self.list.addItem(item)
        count = len(self.active())
        self.changed.emit()
        dock = getattr(self.w, "_messages_dock", None)
        if dock is not None:
            dock.setWindowTitle(f"Messages ({count})" if count else "Messages")

    def _activated(self, item: QListWidgetItem) -> None:
        node = item.data(Qt.ItemDataRole.UserRole)
        scene, view = self.w.scene, self.w.view
        if node and scene is not None and view is not None and node in scene.node_items:
            scene.select_nodes([node])
            view.centerOn(scene.node_items[node])
