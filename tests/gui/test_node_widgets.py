"""Values edited on the nodes themselves: number fields dragged sideways and stepped by arrows,
sliders, a seed's dice and mode, prompt boxes that grow, Tab / Enter / Esc between fields, an area
drawn as a box on the picture and a range slider; each change one undo step."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from PySide6.QtCore import QEvent, QPoint, QPointF, Qt
from PySide6.QtGui import QMouseEvent
from PySide6.QtTest import QTest
from PySide6.QtWidgets import QApplication

from nodeflow.gui import node_widgets as nw
from nodeflow.gui.properties import PromptEditor

from .conftest import DEMO, REPO

LEFT = Qt.MouseButton.LeftButton
NO_MOD = Qt.KeyboardModifier.NoModifier


def field(w: Any, node: str, name: str, kind: str | None = None) -> nw.Field:
    item = w.scene.node_items[node]
    f = next(f for f in item.fields if f.name == name and (kind is None or f.kind == kind))
    item.fresh(f)  # its parts laid out, as painting does
    return f


def at(w: Any, node: str, local: QPointF) -> QPoint:
    """The viewport point of a point in a node's own coordinates."""
    return w.view.mapFromScene(w.scene.node_items[node].mapToScene(local))


def click(w: Any, node: str, local: QPointF) -> None:
    QTest.mouseClick(w.view.viewport(), LEFT, NO_MOD, at(w, node, local))


def drag(w: Any, node: str, a: QPointF, b: QPointF, steps: int = 6) -> None:
    """Press at ``a``, move to ``b`` in steps with the button held, release (node coordinates)."""
    vp = w.view.viewport()
    start, end = at(w, node, a), at(w, node, b)
    QTest.mousePress(vp, LEFT, NO_MOD, start)
    for i in range(1, steps + 1):
        p = QPointF(start + (end - start) * (i / steps))
        event = QMouseEvent(QEvent.Type.MouseMove, p, QPointF(vp.mapToGlobal(p)), Qt.MouseButton.NoButton,
                            LEFT, NO_MOD)
        QApplication.sendEvent(vp, event)
    QTest.mouseRelease(vp, LEFT, NO_MOD, end)


def value(w: Any, node: str, name: str) -> Any:
    return w.scene.node_items[node].input_value(name)


def test_each_literal_input_has_a_field_on_its_node_and_a_linked_one_has_none(make_window):
    w = make_window(DEMO)
    kinds = {f.name: f.kind for f in w.scene.node_items["crop"].fields}
    assert kinds == {"x": "number", "y": "number", "width": "number", "height": "number"}
    kinds = {f.name: f.kind for f in w.scene.node_items["blend"].fields}
    assert kinds == {"factor": "slider", "mode": "choice"}
    assert {f.kind for f in w.scene.node_items["load"].fields} == {"path"}
    # A link supplies the value: the field goes, the socket row stays; undo brings it back.
    number = w.scene.add_node("value.Float", QPointF(-400, 0))
    w.scene.connect_sockets(f"{number}.value", "blend.factor")
    assert [f.name for f in w.scene.node_items["blend"].fields] == ["mode"]
    assert ("in", "factor") in w.scene.node_items["blend"]._row_index
    w.doc.undo.undo()
    assert [f.name for f in w.scene.node_items["blend"].fields] == ["factor", "mode"]


def test_dragging_a_number_sideways_changes_it_by_its_step_within_its_bounds(make_window):
    w = make_window(DEMO)
    w.view.set_zoom(1.0)
    w.view.centerOn(w.scene.node_items["crop"])
    f = field(w, "crop", "x")
    assert value(w, "crop", "x") == 32
    steps = w.doc.undo.count()
    mid = f.rect.center()
    drag(w, "crop", mid, mid + QPointF(10 * nw.DRAG_PX_PER_STEP, 0))
    assert value(w, "crop", "x") == 42  # ten steps of 1
    assert w.doc.undo.count() == steps + 1  # the whole drag is one step
    drag(w, "crop", mid, mid + QPointF(-100 * nw.DRAG_PX_PER_STEP, 0))
    assert value(w, "crop", "x") == 0  # not below the declared minimum
    assert w.doc.undo.count() == steps + 2
    w.doc.undo.undo()
    assert value(w, "crop", "x") == 42
    w.doc.undo.undo()
    assert value(w, "crop", "x") == 32
    w.doc.undo.redo()
    assert w.doc.graph.nodes["crop"].inputs["x"] == 42


def test_arrows_step_a_number_and_stop_at_its_maximum(make_window):
    w = make_window(DEMO)
    w.view.set_zoom(1.0)
    w.view.centerOn(w.scene.node_items["crop"])
    f = field(w, "crop", "width")
    right = QPointF(f.rect.right() - nw.ARROW_W / 2, f.rect.center().y())
    left = QPointF(f.rect.left() + nw.ARROW_W / 2, f.rect.center().y())
    steps = w.doc.undo.count()
    click(w, "crop", right)
    QTest.qWait(QApplication.doubleClickInterval() + 50)  # two separate clicks, not a double-click
    click(w, "crop", right)
    assert value(w, "crop", "width") == 130
    assert w.doc.undo.count() == steps + 2  # each click is its own step
    w.doc.set_input("crop", "width", 16384)
    QTest.qWait(QApplication.doubleClickInterval() + 50)
    click(w, "crop", right)
    assert value(w, "crop", "width") == 16384
    QTest.qWait(QApplication.doubleClickInterval() + 50)
    click(w, "crop", left)
    assert value(w, "crop", "width") == 16383
    assert not w.scene.inline.is_open  # arrows step; they do not open the typing box


def test_a_bounded_float_is_a_slider_dragged_to_a_position(make_window):
    w = make_window(DEMO)
    w.view.set_zoom(1.0)
    w.view.centerOn(w.scene.node_items["blend"])
    f = field(w, "blend", "factor")
    steps = w.doc.undo.count()
    drag(w, "blend", f.rect.center(), QPointF(f.rect.left() + f.rect.width() * 0.8, f.rect.center().y()))
    assert value(w, "blend", "factor") == 0.8
    drag(w, "blend", f.rect.center(), QPointF(f.rect.right() + 300, f.rect.center().y()))
    assert value(w, "blend", "factor") == 1.0  # the maximum, however far the drag goes
    assert w.doc.undo.count() == steps + 2


def test_dice_picks_a_new_seed_as_one_undo_step_and_the_mode_is_chosen_on_the_node(make_window):
    w = make_window()
    node = w.scene.add_node("guitest.Sampler", QPointF(0, 0))
    w.view.set_zoom(1.0)
    w.view.centerOn(w.scene.node_items[node])
    seed = field(w, node, "seed", "seed")
    before = value(w, node, "seed")
    steps = w.doc.undo.count()
    click(w, node, seed.extra["dice"].center())
    after = value(w, node, "seed")
    assert after != before and isinstance(after, int)
    assert w.doc.undo.count() == steps + 1
    w.doc.undo.undo()
    assert value(w, node, "seed") == before
    # Seeds are whole numbers up to 2**64 - 1, stepped exactly (no rounding through floats).
    w.doc.set_input(node, "seed", 2**64 - 2)
    seed = field(w, node, "seed", "seed")  # the node widened for the long number
    inc = QPointF(seed.extra["value_rect"].right() - nw.ARROW_W / 2, seed.rect.center().y())
    QTest.qWait(QApplication.doubleClickInterval() + 50)
    click(w, node, inc)
    assert value(w, node, "seed") == 2**64 - 1
    QTest.qWait(QApplication.doubleClickInterval() + 50)
    click(w, node, inc)
    assert value(w, node, "seed") == 2**64 - 1  # the declared maximum
    # "after run" is a dropdown on the node; the choice is kept with the graph, one undo step.
    mode = field(w, node, "seed", "seed_mode")
    QTest.qWait(QApplication.doubleClickInterval() + 50)
    click(w, node, mode.rect.center())
    menu = w.scene.node_items[node].seed_menu
    assert [a.text() for a in menu.actions()] == list(nw.SEED_MODES)
    next(a for a in menu.actions() if a.text() == "increment").trigger()
    menu.close()
    assert w.doc.graph.editor[node]["seed_modes"] == {"seed": "increment"}
    assert w.scene.node_items[node].field_value(mode) == "increment"
    w.doc.undo.undo()
    assert w.scene.node_items[node].field_value(mode) == "fixed"


def test_prompt_box_grows_with_its_text_and_is_typed_in_on_the_node(qtbot, make_window):
    w = make_window()
    node = w.scene.add_node("value.String", QPointF(0, 0))
    item = w.scene.node_items[node]
    w.view.set_zoom(1.0)
    w.view.centerOn(item)
    line = nw.metrics().lineSpacing()
    small, height = field(w, node, "value").rect.height(), item.height
    assert small == nw.PROMPT_MIN_LINES * line + 2 * nw.PROMPT_PAD
    w.doc.set_input(node, "value", "a watercolour of a lighthouse on a cliff at dawn, " * 4)
    grown = field(w, node, "value").rect.height()
    assert grown > small and item.height - height == grown - small  # the node grows with its box
    w.doc.set_input(node, "value", "many words " * 400)
    assert field(w, node, "value").rect.height() == nw.PROMPT_MAX_LINES * line + 2 * nw.PROMPT_PAD
    w.doc.set_input(node, "value", "")
    # Click the box: a text box opens over it, Ctrl+Enter writes the text as one undo step.
    steps = w.doc.undo.count()
    QTest.qWait(QApplication.doubleClickInterval() + 50)
    click(w, node, field(w, node, "value").rect.center())
    inline = w.scene.inline
    assert inline.is_open and isinstance(inline.widget, PromptEditor)
    box = inline.widget.text
    QTest.keyClicks(box, "a red fox")
    QTest.keyClick(box, Qt.Key.Key_Return)  # Enter is a new line in a prompt
    QTest.keyClicks(box, "in the snow")
    assert inline.is_open
    # While typed in, the box grows with its text (the node follows when it is written).
    first = inline.proxy.size().height()
    for _ in range(6):
        QTest.keyClick(box, Qt.Key.Key_Return)
    QApplication.processEvents()
    assert inline.proxy.size().height() > first
    for _ in range(6):
        QTest.keyClick(box, Qt.Key.Key_Backspace)
    QTest.keyClick(box, Qt.Key.Key_Return, Qt.KeyboardModifier.ControlModifier)
    assert not inline.is_open
    assert value(w, node, "value") == "a red fox\nin the snow"
    assert w.doc.undo.count() == steps + 1
    w.doc.undo.undo()
    assert value(w, node, "value") == ""
    w.doc.undo.redo()
    assert value(w, node, "value") == "a red fox\nin the snow"


def test_tab_moves_between_fields_enter_commits_and_escape_cancels(make_window):
    w = make_window(DEMO)
    w.view.set_zoom(1.0)
    w.view.centerOn(w.scene.node_items["crop"])
    steps = w.doc.undo.count()
    click(w, "crop", field(w, "crop", "x").rect.center())
    inline = w.scene.inline
    assert inline.is_open and inline.name == "x"
    QTest.keyClick(inline.widget.spin, Qt.Key.Key_Tab)
    assert inline.name == "y"
    QTest.keyClick(inline.widget.spin, Qt.Key.Key_Tab)
    assert inline.name == "width"
    spin = inline.widget.spin
    spin.selectAll()
    QTest.keyClicks(spin, "99")
    QTest.keyClick(spin, Qt.Key.Key_Backtab)  # Shift+Tab: commits and goes back
    assert inline.name == "y" and value(w, "crop", "width") == 99
    spin = inline.widget.spin
    spin.selectAll()
    QTest.keyClicks(spin, "77")
    QTest.keyClick(spin, Qt.Key.Key_Escape)
    assert not inline.is_open and value(w, "crop", "y") == 0  # Esc leaves the value as it was
    assert w.doc.undo.count() == steps + 1
    QTest.qWait(QApplication.doubleClickInterval() + 50)
    click(w, "crop", field(w, "crop", "height").rect.center())
    spin = inline.widget.spin
    spin.selectAll()
    QTest.keyClicks(spin, "64")
    QTest.keyClick(spin, Qt.Key.Key_Return)
    assert not inline.is_open and value(w, "crop", "height") == 64
    assert w.doc.undo.count() == steps + 2


def _regions(make_window: Any, tmp_path: Path) -> Any:
    folder = tmp_path / "graphs"
    shutil.copytree(REPO / "graphs", folder)
    w = make_window(folder / "regions.json")
    w.view.set_zoom(1.5)
    w.view.centerOn(w.scene.node_items["left_area"])
    return w


def test_an_area_is_a_box_on_the_picture_moved_resized_and_drawn_in_one_undo_step(make_window, tmp_path):
    w = _regions(make_window, tmp_path)
    item = w.scene.node_items["left_area"]
    area = field(w, "left_area", "x", "area")
    assert area.names == ("x", "y", "width", "height")
    assert area.reference == (128.0, 64.0)  # the size of the empty latent the sampler starts from
    names = ("x", "y", "width", "height")

    def box() -> tuple[Any, ...]:
        return tuple(value(w, "left_area", n) for n in names)

    assert box() == (0, 0, 64, 64)
    picture, rect = nw.area_geometry(area, item.field_value(area))
    scale = picture.width() / 128
    steps = w.doc.undo.count()
    # Move: drag the box 32 pixels of the picture to the right.
    drag(w, "left_area", rect.center(), rect.center() + QPointF(32 * scale, 0))
    assert box() == (32, 0, 64, 64)
    assert w.doc.undo.count() == steps + 1
    # Resize by its corner.
    picture, rect = nw.area_geometry(area, item.field_value(area))
    corner = rect.bottomRight() - QPointF(2, 2)
    drag(w, "left_area", corner, corner + QPointF(-24 * scale, -16 * scale))
    assert box() == (32, 0, 40, 48)
    assert w.doc.undo.count() == steps + 2
    # Draw a new box outside the old one: all four inputs change, one undo step.
    start = QPointF(picture.x() + 80 * scale, picture.y() + 8 * scale)
    drag(w, "left_area", start, start + QPointF(40 * scale, 48 * scale))
    assert box() == (80, 8, 40, 48)
    assert w.doc.undo.count() == steps + 3
    w.doc.undo.undo()
    assert box() == (32, 0, 40, 48)
    # The box never leaves the picture.
    picture, rect = nw.area_geometry(area, item.field_value(area))
    drag(w, "left_area", rect.center(), rect.center() + QPointF(500 * scale, 500 * scale))
    x, y, width, height = box()
    assert x + width <= 128 and y + height <= 64
    # A new picture size redraws the area on it.
    w.doc.set_input("latent", "width", 256)
    assert field(w, "left_area", "x", "area").reference == (256.0, 64.0)


def test_a_range_is_a_two_handle_slider_whose_ends_keep_their_order(make_window):
    w = make_window()
    node = w.scene.add_node("diffusion.ConditioningSetTimestepRange", QPointF(0, 0))
    w.view.set_zoom(1.5)
    w.view.centerOn(w.scene.node_items[node])
    rng = field(w, node, "start", "range")
    assert rng.names == ("start", "end")
    track, x0, x1 = nw.range_geometry(rng, (0.0, 1.0))
    y = track.center().y()
    steps = w.doc.undo.count()
    drag(w, node, QPointF(x0, y), QPointF(track.left() + 0.3 * track.width(), y))
    assert abs(value(w, node, "start") - 0.3) < 1e-9 and value(w, node, "end") == 1.0
    drag(w, node, QPointF(x1, y), QPointF(track.left() + 0.6 * track.width(), y))
    assert abs(value(w, node, "end") - 0.6) < 1e-9
    assert w.doc.undo.count() == steps + 2
    # The start cannot pass the end.
    _track, x0, _x1 = nw.range_geometry(rng, (0.3, 0.6))
    drag(w, node, QPointF(x0, y), QPointF(track.right() + 50, y))
    assert value(w, node, "start") == value(w, node, "end") == 0.6
    w.doc.undo.undo()
    assert abs(value(w, node, "start") - 0.3) < 1e-9


def test_a_step_range_is_shown_over_the_samplers_own_steps(make_window):
    w = make_window()
    node = w.scene.add_node("diffusion.KSamplerAdvanced", QPointF(0, 0))
    item = w.scene.node_items[node]
    ranges = [f for f in item.fields if f.kind == "range"]
    assert [f.names for f in ranges] == [("start_at_step", "end_at_step"), ("guidance_min_t", "guidance_max_t")]
    w.view.set_zoom(1.5)
    w.view.centerOn(item)
    steps_range = ranges[0]
    item.field_value(steps_range)
    item._layout_field(steps_range)
    assert steps_range.extra["hi"] == 20.0  # the node's steps, not the declared 10000
    track, _x0, x1 = nw.range_geometry(steps_range, item.field_value(steps_range))
    y = track.center().y()
    drag(w, node, QPointF(x1, y), QPointF(track.left() + 0.5 * track.width(), y))
    assert value(w, node, "end_at_step") == 10


def test_enter_on_a_selected_node_types_into_its_first_field(qtbot, make_window):
    w = make_window(DEMO)
    w.scene.select_nodes(["crop"])
    w.activateWindow()
    w.view.setFocus()
    qtbot.waitUntil(w.view.hasFocus)
    QTest.keyClick(w.view, Qt.Key.Key_Return)
    inline = w.scene.inline
    assert inline.is_open and (inline.node_id, inline.name) == ("crop", "x")
    QTest.keyClick(inline.widget.spin, Qt.Key.Key_Tab)
    assert inline.name == "y"
    QTest.keyClick(inline.widget.spin, Qt.Key.Key_Escape)
    assert not inline.is_open



def test_declared_ranges_of_the_samplers_are_range_sliders(make_window):
    w = make_window()
    node = w.scene.add_node("diffusion.Sample", QPointF(0, 0))
    ranges = [f.names for f in w.scene.node_items[node].fields if f.kind == "range"]
    assert ranges == [("guidance_min_t", "guidance_max_t"), ("denoising_start", "denoising_end")]
    # A linked end leaves no range to drag (the link supplies the value).
    number = w.scene.add_node("value.Float", QPointF(-300, 0))
    w.scene.connect_sockets(f"{number}.value", f"{node}.denoising_end")
    ranges = [f.names for f in w.scene.node_items[node].fields if f.kind == "range"]
    assert ranges == [("guidance_min_t", "guidance_max_t")]


def test_a_model_file_is_picked_from_the_files_of_its_kind_on_the_node(make_window):
    w = make_window()
    node = w.scene.add_node("diffusion.LoadCheckpoint", QPointF(0, 0))
    w.view.set_zoom(1.0)
    w.view.centerOn(w.scene.node_items[node])
    steps = w.doc.undo.count()
    click(w, node, field(w, node, "path").rect.center())
    inline = w.scene.inline
    combo = inline.widget.combo
    names = [combo.itemText(i) for i in range(combo.count())]
    assert inline.name == "path" and "nodeflow-shapes" in names  # the shipped demo checkpoint
    assert combo.view().isVisible()  # the list opens at once
    combo.setCurrentIndex(names.index("nodeflow-shapes"))
    combo.activated.emit(names.index("nodeflow-shapes"))
    QTest.keyClick(combo, Qt.Key.Key_Return)
    assert value(w, node, "path") == "nodeflow-shapes"
    assert w.doc.undo.count() == steps + 1


def test_escape_during_a_drag_puts_the_value_back(qtbot, make_window):
    w = make_window(DEMO)
    w.view.set_zoom(1.0)
    w.view.centerOn(w.scene.node_items["crop"])
    w.activateWindow()
    w.view.setFocus()
    qtbot.waitUntil(w.view.hasFocus)
    f = field(w, "crop", "x")
    vp = w.view.viewport()
    start = at(w, "crop", f.rect.center())
    QTest.mousePress(vp, LEFT, NO_MOD, start)
    p = QPointF(at(w, "crop", f.rect.center() + QPointF(20 * nw.DRAG_PX_PER_STEP, 0)))
    QApplication.sendEvent(vp, QMouseEvent(QEvent.Type.MouseMove, p, QPointF(vp.mapToGlobal(p)),
                                           Qt.MouseButton.NoButton, LEFT, NO_MOD))
    assert value(w, "crop", "x") == 52  # shown while dragging
    steps = w.doc.undo.count()
    QTest.keyClick(w.view, Qt.Key.Key_Escape)
    QTest.mouseRelease(vp, LEFT, NO_MOD, p.toPoint())
    assert value(w, "crop", "x") == 32 and w.doc.graph.nodes["crop"].inputs["x"] == 32
    assert w.doc.undo.count() == steps


def test_a_click_on_a_dropdown_opens_its_list_and_a_choice_is_one_undo_step(make_window):
    w = make_window(DEMO)
    w.view.set_zoom(1.0)
    w.view.centerOn(w.scene.node_items["blend"])
    steps = w.doc.undo.count()
    click(w, "blend", field(w, "blend", "mode").rect.center())
    combo = w.scene.inline.widget.combo
    assert combo.view().isVisible()
    combo.hidePopup()
    combo.setCurrentIndex(combo.findText("multiply"))
    QTest.keyClick(combo, Qt.Key.Key_Return)
    assert value(w, "blend", "mode") == "multiply"
    assert w.doc.undo.count() == steps + 1
