"""Driving the editor as a user does: mouse on the canvas, keys, the palette."""

from __future__ import annotations

from typing import Any

from PySide6.QtCore import QPoint, QPointF, Qt
from PySide6.QtTest import QTest


def socket_point(window: Any, node: str, kind: str, socket: str) -> QPoint:
    """Viewport position of a socket."""
    item = window.scene.node_items[node]
    return window.view.mapFromScene(item.socket_pos(kind, socket))


def node_point(window: Any, node: str) -> QPoint:
    """Viewport position in a node's title bar."""
    item = window.scene.node_items[node]
    return window.view.mapFromScene(item.mapToScene(QPointF(item.width / 2, 10)))


def drag(window: Any, start: QPoint, end: QPoint, steps: int = 5, during: Any = None) -> None:
    """Press at ``start``, move to ``end`` in steps, release (``during`` runs just before release)."""
    vp = window.view.viewport()
    QTest.mousePress(vp, Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier, start)
    for i in range(1, steps + 1):
        p = start + (end - start) * (i / steps)
        QTest.mouseMove(vp, p)
    if during is not None:
        during()
    QTest.mouseRelease(vp, Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier, end)


def empty_point(window: Any) -> QPoint:
    """A point of the canvas with no item under it."""
    vp = window.view.viewport()
    for x in range(20, vp.width(), 40):
        for y in range(20, vp.height(), 40):
            p = QPoint(x, y)
            if window.view.itemAt(p) is None and not window.view.minimap.geometry().contains(p):
                return p
    raise AssertionError("no empty spot on the canvas")


def add_from_palette(qtbot: Any, window: Any, text: str, at: QPoint | None = None) -> str:
    """Double-click the canvas, type in the palette, press Enter; return the new node's id."""
    before = set(window.doc.graph.nodes)
    vp = window.view.viewport()
    at = at or empty_point(window)
    QTest.mouseDClick(vp, Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier, at)
    qtbot.waitUntil(window.node_palette.isVisible, timeout=2000)
    QTest.keyClicks(window.node_palette.search, text)
    QTest.keyClick(window.node_palette.search, Qt.Key.Key_Return)
    added = set(window.doc.graph.nodes) - before
    assert len(added) == 1, added
    return added.pop()
