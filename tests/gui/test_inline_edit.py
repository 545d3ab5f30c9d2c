"""Editing values on the node: double-click a value, type, Enter commits as one undo step, Esc
cancels, Tab moves to the next value."""

from __future__ import annotations

from PySide6.QtCore import QPointF, Qt
from PySide6.QtTest import QTest

from .conftest import DEMO


def _double_click_value(window, node, name):
    item = window.scene.node_items[node]
    row = item._row_index[("in", name)]
    p = window.view.mapFromScene(item.mapToScene(QPointF(item.width / 2, row.y)))
    QTest.mouseDClick(window.view.viewport(), Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier, p)


def _focused(window):
    widget = window.scene.inline.widget
    return widget.spin if hasattr(widget, "spin") else widget.combo if hasattr(widget, "combo") else widget


def test_double_click_edits_a_number_on_the_node_enter_commits_one_undo_step(qtbot, make_window):
    w = make_window(DEMO)
    w.view.setFocus()
    before = w.doc.graph.nodes["blend"].inputs.get("factor")
    steps = w.doc.undo.count()
    _double_click_value(w, "blend", "factor")
    inline = w.scene.inline
    assert inline.is_open and inline.name == "factor" and inline.proxy.isVisible()
    # The editor sits on the node, over the factor row.
    assert w.scene.node_items["blend"].sceneBoundingRect().contains(inline.proxy.sceneBoundingRect().center())
    spin = _focused(w)
    spin.selectAll()
    QTest.keyClicks(spin, "0.3")
    QTest.keyClick(spin, Qt.Key.Key_Return)
    assert not inline.is_open
    assert w.doc.graph.nodes["blend"].inputs["factor"] == 0.3
    assert w.doc.undo.count() == steps + 1  # one step, however many keys were typed
    assert "0.3" in w.scene.node_items["blend"].value_text("factor")
    qtbot.waitUntil(lambda: w.scene.focusItem() is None, timeout=2000)  # the canvas has the keys again
    w.activateWindow()
    w.view.setFocus()
    qtbot.waitUntil(w.view.hasFocus)
    QTest.keyClick(w.view, Qt.Key.Key_Z, Qt.KeyboardModifier.ControlModifier)
    assert w.doc.graph.nodes["blend"].inputs.get("factor") == before


def test_escape_cancels_and_backspace_does_not_delete_the_node(qtbot, make_window):
    w = make_window(DEMO)
    w.scene.select_nodes(["blend"])
    steps = w.doc.undo.count()
    _double_click_value(w, "blend", "factor")
    spin = _focused(w)
    QTest.keyClick(spin, Qt.Key.Key_Backspace)
    QTest.keyClicks(spin, "9")
    assert "blend" in w.doc.graph.nodes  # Backspace went to the field, not to Delete
    QTest.keyClick(spin, Qt.Key.Key_Escape)
    assert not w.scene.inline.is_open
    assert w.doc.undo.count() == steps


def test_tab_moves_to_the_next_value_of_the_node(qtbot, make_window):
    w = make_window(DEMO)
    _double_click_value(w, "blend", "factor")
    QTest.keyClick(_focused(w), Qt.Key.Key_Tab)
    assert w.scene.inline.is_open and w.scene.inline.name == "mode"
    combo = w.scene.inline.widget.combo
    assert combo.count() > 1
    combo.setCurrentIndex((combo.currentIndex() + 1) % combo.count())
    chosen = combo.currentText()
    QTest.keyClick(combo, Qt.Key.Key_Return)
    assert w.doc.graph.nodes["blend"].inputs["mode"] == chosen
    assert not w.node_palette.isVisible()  # Tab went to the fields, not to the node palette


def test_double_click_on_the_title_still_raises_the_properties(qtbot, make_window):
    w = make_window(DEMO)
    item = w.scene.node_items["blend"]
    p = w.view.mapFromScene(item.mapToScene(QPointF(item.width / 2, 10)))
    with qtbot.waitSignal(w.scene.nodeActivated, timeout=2000):
        QTest.mouseDClick(w.view.viewport(), Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier, p)
    assert not w.scene.inline.is_open
