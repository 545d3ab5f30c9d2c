"""Every key of the editor does one thing: no key bound twice, and redo answers both of its keys."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from PySide6.QtCore import Qt
from PySide6.QtGui import QAction, QKeySequence, QShortcut
from PySide6.QtTest import QTest

from .conftest import DEMO


def _bound_keys(window: Any) -> dict[str, list[str]]:
    """Each key sequence of the window's actions and shortcuts, with what it is bound to."""
    bound: dict[str, list[str]] = defaultdict(list)
    seen: set[int] = set()
    for action in window.findChildren(QAction):
        if id(action) in seen:
            continue
        seen.add(id(action))
        for seq in action.shortcuts():
            if not seq.isEmpty():
                bound[seq.toString(QKeySequence.SequenceFormat.PortableText)].append(action.text())
    for shortcut in window.findChildren(QShortcut):
        for seq in shortcut.keys():
            if not seq.isEmpty():
                bound[seq.toString(QKeySequence.SequenceFormat.PortableText)].append(shortcut.objectName())
    return bound


def test_no_key_sequence_is_bound_twice(window):
    bound = _bound_keys(window)
    assert bound, "the window has no shortcuts at all"
    twice = {key: names for key, names in bound.items() if len(names) > 1}
    assert twice == {}, f"keys bound more than once (Qt ignores an ambiguous key): {twice}"
    assert {"Ctrl+Z", "Ctrl+Shift+Z", "Ctrl+Y", "Ctrl+S", "Ctrl+Return"} <= set(bound)


def test_redo_by_ctrl_y_and_ctrl_shift_z(qtbot, make_window):
    w = make_window(DEMO)
    w.view.setFocus()
    qtbot.waitUntil(w.view.hasFocus)
    start = w.doc.graph.dumps()
    w.scene.select_nodes(["blend"])
    w.properties.editors["factor"].spin.setValue(0.25)
    edited = w.doc.graph.dumps()
    assert edited != start
    w.view.setFocus()
    ctrl = Qt.KeyboardModifier.ControlModifier
    for redo_key, mods in ((Qt.Key.Key_Y, ctrl), (Qt.Key.Key_Z, ctrl | Qt.KeyboardModifier.ShiftModifier)):
        QTest.keyClick(w.view, Qt.Key.Key_Z, ctrl)
        assert w.doc.graph.dumps() == start
        QTest.keyClick(w.view, redo_key, mods)
        assert w.doc.graph.dumps() == edited, f"redo by {QKeySequence(redo_key | mods).toString()} did nothing"
