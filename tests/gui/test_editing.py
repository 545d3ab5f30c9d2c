"""Editing a graph as a user does: palette, links, values, undo/redo, clipboard, frames, moves."""

from __future__ import annotations

from PySide6.QtCore import QPoint, Qt
from PySide6.QtTest import QTest

from nodeflow.graph import Graph
from nodeflow.gui import commands as cmd
from nodeflow.validate import GraphValidator

from .util import add_from_palette, drag, node_point, socket_point


def test_palette_adds_nodes_and_undo_redo(qtbot, window):
    node = add_from_palette(qtbot, window, "image blend")
    graph = window.doc.graph
    assert graph.nodes[node].type == "image.Blend"
    # Literal inputs get their declared defaults, so the file says what will run.
    assert graph.nodes[node].inputs == {"factor": 0.5, "mode": "normal"}
    assert node in window.scene.node_items
    window.doc.undo.undo()
    assert node not in graph.nodes and node not in window.scene.node_items
    window.doc.undo.redo()
    assert graph.nodes[node].type == "image.Blend"


def test_palette_searches_category_and_description_and_plugin_nodes(qtbot, window):
    window.open_palette(None)
    qtbot.waitUntil(window.node_palette.isVisible, timeout=2000)
    QTest.keyClicks(window.node_palette.search, "transparency")  # only in image.Load's description
    assert window.node_palette.visible_ids()[0] == "image.Load"
    window.node_palette.search.clear()
    QTest.keyClicks(window.node_palette.search, "test")  # a category; the node comes from a test pack
    assert "guitest.Steps" in window.node_palette.visible_ids()
    QTest.keyClick(window.node_palette.search, Qt.Key.Key_Escape)
    assert not window.node_palette.isVisible()


def test_tab_opens_palette(qtbot, window):
    window.view.setFocus()
    QTest.keyClick(window.view, Qt.Key.Key_Tab)
    qtbot.waitUntil(window.node_palette.isVisible, timeout=2000)
    window.node_palette.hide()


def _two_nodes(qtbot, window):
    a = add_from_palette(qtbot, window, "image load", QPoint(150, 150))
    b = add_from_palette(qtbot, window, "image invert", QPoint(600, 150))
    i = add_from_palette(qtbot, window, "value int", QPoint(150, 450))
    types = [window.doc.graph.nodes[n].type for n in (a, b, i)]
    assert types == ["image.Load", "image.Invert", "value.Int"]
    return a, b, i


def test_drag_connects_compatible_sockets_and_refuses_others(qtbot, window):
    load, invert, integer = _two_nodes(qtbot, window)
    graph = window.doc.graph
    marks = {}

    def look():
        marks.update(window.scene.node_items[invert].drag_marks)
        marks["int"] = window.scene.node_items[integer].drag_marks.get(("in", "value"))

    # From an INT output, IMAGE inputs stay dark and the drop is refused with the reason.
    drag(window, socket_point(window, integer, "out", "value"), socket_point(window, invert, "in", "image"),
         during=look)
    assert marks[("in", "image")] is False
    assert marks["int"] is False  # its own input would be a cycle
    assert not graph.links
    assert "INT" in window.status_label.text() and "IMAGE" in window.status_label.text()
    assert "refused" in window.status_label.text()

    marks.clear()
    drag(window, socket_point(window, load, "out", "image"), socket_point(window, invert, "in", "image"),
         during=look)
    assert marks[("in", "image")] is True
    assert [ln.to_json() for ln in graph.links] == [{"from": f"{load}.image", "to": f"{invert}.image"}]
    window.doc.undo.undo()
    assert not graph.links and not window.scene.link_items
    window.doc.undo.redo()
    assert len(window.scene.link_items) == 1


def test_link_dropped_on_canvas_opens_filtered_palette(qtbot, window):
    load = add_from_palette(qtbot, window, "image load", QPoint(150, 150))
    drag(window, socket_point(window, load, "out", "image"), QPoint(700, 500))
    qtbot.waitUntil(window.node_palette.isVisible, timeout=2000)
    shown = window.node_palette.visible_ids()
    assert "image.Invert" in shown and "image.Save" in shown
    assert "value.Int" not in shown and "math.Add" not in shown
    QTest.keyClicks(window.node_palette.search, "image invert")
    QTest.keyClick(window.node_palette.search, Qt.Key.Key_Return)
    new = next(n for n in window.doc.graph.nodes if n != load)
    assert [ln.to_json() for ln in window.doc.graph.links] == [{"from": f"{load}.image", "to": f"{new}.image"}]
    window.doc.undo.undo()  # adding and linking is one step
    assert list(window.doc.graph.nodes) == [load]


def test_picking_up_a_link_from_its_input_and_dropping_it_on_canvas_removes_it(qtbot, demo_window):
    w = demo_window
    assert any(ln.target == "save.image" for ln in w.doc.graph.links)
    drag(w, socket_point(w, "save", "in", "image"), socket_point(w, "save", "in", "image") + QPoint(0, 200))
    assert not any(ln.target == "save.image" for ln in w.doc.graph.links)
    w.doc.undo.undo()
    assert any(ln.target == "save.image" for ln in w.doc.graph.links)


def test_property_widgets_edit_values_with_undo_and_live_validation(qtbot, demo_window):
    w = demo_window
    w.scene.select_nodes(["crop"])
    editor = w.properties.editors["width"]
    assert editor.spin.maximum() == 16384 and editor.slider is not None  # range from the declaration
    editor.spin.setValue(100)
    assert w.doc.graph.nodes["crop"].inputs["width"] == 100
    assert w.scene.node_items["crop"].value_text("width") == "100"
    w.doc.undo.undo()
    assert w.doc.graph.nodes["crop"].inputs["width"] == 128
    assert editor.spin.value() == 128
    w.doc.undo.redo()
    assert editor.spin.value() == 100
    # Choices become a combo box.
    w.scene.select_nodes(["blend"])
    combo = w.properties.editors["mode"].combo
    assert [combo.itemText(i) for i in range(combo.count())][:2] == ["normal", "multiply"]
    combo.setCurrentText("screen")
    assert w.doc.graph.nodes["blend"].inputs["mode"] == "screen"


def test_problems_show_on_nodes_with_the_validator_messages(qtbot, demo_window, capsys):
    w = demo_window
    w.scene.select_nodes(["save"])
    w.properties.editors["prefix"].line.setText("../escape")
    w.properties.editors["prefix"].edited.emit("../escape")
    qtbot.waitUntil(lambda: bool(w.scene.node_items["save"].problems), timeout=2000)
    w.doc.push(cmd.DisconnectSocket(w.doc.graph, "invert.image"))
    qtbot.waitUntil(lambda: bool(w.scene.node_items["invert"].problems), timeout=2000)
    w.save_to(w.doc.path)
    from nodeflow.cli import main

    assert main(["validate", str(w.doc.path)]) == 2
    printed = [line.removeprefix("error: ") for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    shown = w.scene.node_items["save"].problems + w.scene.node_items["invert"].problems
    assert sorted(shown) == sorted(printed)
    assert w.problems_list.count() == len(printed)


def test_toggle_input_between_value_and_socket(qtbot, demo_window):
    w = demo_window
    w.scene.select_nodes(["blend"])
    spec = w.registry.get("image.Blend").input_map["factor"]
    w.properties.toggle_socket(spec, True)
    assert "factor" not in w.doc.graph.nodes["blend"].inputs
    assert w.scene.node_items["blend"]._row_is_socket("factor")
    qtbot.waitUntil(lambda: "factor" not in w.properties.editors, timeout=2000)
    w.doc.undo.undo()
    assert w.doc.graph.nodes["blend"].inputs["factor"] == 0.5
    qtbot.waitUntil(lambda: "factor" in w.properties.editors, timeout=2000)


def test_move_is_one_undo_step_and_nudges_merge(qtbot, demo_window):
    w = demo_window
    before = list(w.doc.graph.editor["crop"]["pos"])
    start = node_point(w, "crop")
    depth = w.doc.undo.count()
    drag(w, start, start + QPoint(60, 90), steps=8)
    after = w.doc.graph.editor["crop"]["pos"]
    assert after != before
    assert w.doc.undo.count() == depth + 1
    w.scene.select_nodes(["crop"])
    w.view.setFocus()
    for _ in range(3):
        QTest.keyClick(w.view, Qt.Key.Key_Right)
    assert w.doc.undo.count() == depth + 2
    assert w.doc.graph.editor["crop"]["pos"][0] == after[0] + 30
    w.doc.undo.undo()
    w.doc.undo.undo()
    assert w.doc.graph.editor["crop"]["pos"] == before
    assert w.scene.node_items["crop"].pos().x() == before[0]


def test_box_select_copy_paste_across_windows_delete_and_duplicate(qtbot, demo_window, make_window):
    w = demo_window
    w.scene.select_nodes(["crop", "invert", "blend"])
    w.copy()
    other = make_window()
    other.new_graph()
    pasted = other.paste()
    assert sorted(pasted) == ["blend", "crop", "invert"]
    assert sorted(ln.to_json()["to"] for ln in other.doc.graph.links) == ["blend.a", "blend.b", "invert.image"]
    again = other.paste()  # ids already taken get fresh ones
    assert sorted(again) == ["blend2", "crop2", "invert2"]
    other.doc.undo.undo()
    assert len(other.doc.graph.nodes) == 3

    dup = w.duplicate()
    assert len(dup) == 3 and len(w.doc.graph.nodes) == 9
    w.doc.undo.undo()
    # Box select with the mouse, then delete: links go, undo restores them.
    links_before = sorted(ln.to_json()["to"] for ln in w.doc.graph.links)
    w.scene.clearSelection()
    rect = w.scene.node_items["invert"].sceneBoundingRect()
    a = w.view.mapFromScene(rect.topLeft()) - QPoint(15, 25)
    b = w.view.mapFromScene(rect.bottomRight()) + QPoint(15, 15)
    drag(w, a, b)
    assert w.scene.selected_node_ids() == ["invert"]
    w.delete()
    assert "invert" not in w.doc.graph.nodes
    assert not any("invert" in (ln.src, ln.dst) for ln in w.doc.graph.links)
    w.doc.undo.undo()
    assert sorted(ln.to_json()["to"] for ln in w.doc.graph.links) == links_before


def test_group_frame_is_saved_and_moves_its_nodes(qtbot, demo_window, tmp_path):
    w = demo_window
    w.scene.select_nodes(["crop", "invert"])
    w.group()
    frames = w.doc.graph.editor["@frames"]["frames"]
    assert len(frames) == 1 and len(w.scene.frame_items) == 1
    frame = w.scene.frame_items[0]
    w.scene.clearSelection()
    crop_before = list(w.doc.graph.editor["crop"]["pos"])
    title = w.view.mapFromScene(frame.mapToScene(frame.boundingRect().topLeft()) + QPoint(40, 10).toPointF())
    drag(w, title, title + QPoint(0, 120))
    assert w.doc.graph.editor["crop"]["pos"][1] > crop_before[1] + 50
    w.doc.undo.undo()
    assert w.doc.graph.editor["crop"]["pos"] == crop_before
    # The file with a frame is still a valid graph for the runner.
    path = tmp_path / "framed.json"
    w.save_to(path)
    assert GraphValidator(w.registry, w.doc.settings).validate(Graph.load(path)) == []


def test_quick_revalidation_after_value_edits_matches_full_validation(qtbot, demo_window):
    w = demo_window
    doc = w.doc
    edits = [("crop", "width", 0), ("blend", "mode", "nope"), ("save", "prefix", ""),
             ("crop", "width", 64), ("load", "path", "missing.png"), ("blend", "mode", "add")]
    for node, socket, value in edits:
        doc.set_input(node, socket, value)
        quick = sorted(map(str, doc.validate_now()))
        full = sorted(map(str, GraphValidator(w.registry, doc.settings).validate(doc.graph)))
        assert quick == full
    doc.clear_input("load", "path")
    assert sorted(map(str, doc.validate_now())) == \
        sorted(map(str, GraphValidator(w.registry, doc.settings).validate(doc.graph)))


def test_zoomed_out_the_graph_is_drawn_at_once_and_stays_editable(qtbot, demo_window):
    w = demo_window
    w.view.set_zoom(0.1)
    assert w.scene.overview_mode and w.scene.overview.isVisible()
    picture = w.view.viewport().grab().toImage()
    item = w.scene.node_items["blend"]
    center = w.view.mapFromScene(item.sceneBoundingRect().center())
    assert picture.pixelColor(center).name() == item.color.name()
    QTest.mouseClick(w.view.viewport(), Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier, center)
    assert w.scene.selected_node_ids() == ["blend"]
    w.view.set_zoom(1.0)
    assert not w.scene.overview_mode and all(link.isVisible() for link in w.scene.link_items.values())


def test_generic_reroute_takes_the_type_of_what_feeds_it(qtbot, window):
    w = window
    load = w.scene.add_node("image.Load", w.view.mapToScene(100, 100))
    reroute = w.scene.add_node("util.Reroute", w.view.mapToScene(400, 100))
    number = w.scene.add_node("math.Add", w.view.mapToScene(700, 100))
    # An unbound generic accepts anything.
    assert w.scene.connect_sockets(f"{load}.image", f"{reroute}.value") is None
    # Bound to IMAGE, its output is refused by a number input, with the validator's reason.
    why = w.scene.connect_sockets(f"{reroute}.value", f"{number}.a")
    assert why is not None and "IMAGE" in why and "FLOAT" in why
    assert "refused" in w.status_label.text()
    assert len(w.doc.graph.links) == 1


def test_unknown_node_type_is_shown_with_its_links_and_problem(qtbot, make_window, tmp_path):
    path = tmp_path / "plugin.json"
    path.write_text("""{
  "format": "nodeflow.graph", "version": 1,
  "nodes": {"a": {"type": "image.Load", "inputs": {"path": "x.png"}},
            "b": {"type": "someplugin.Magic", "inputs": {}}},
  "links": [{"from": "a.image", "to": "b.picture"}]
}
""")
    w = make_window(path)
    item = w.scene.node_items["b"]
    assert [(r.kind, r.name) for r in item.rows] == [("in", "picture")]
    assert any("unknown node type 'someplugin.Magic'" in p for p in item.problems)
    assert len(w.scene.link_items) == 1


def test_arrange_lays_nodes_out_without_overlap_in_one_undo_step(qtbot, demo_window):
    w = demo_window
    before = {n: list(w.doc.graph.editor[n]["pos"]) for n in w.doc.graph.nodes}
    for n in before:  # pile everything up
        w.doc.push(cmd.MoveNodes(
            w.doc.graph, {n: (tuple(before[n]), (0.0, 0.0))}))
    w.arrange()
    rects = [it.sceneBoundingRect() for it in w.scene.node_items.values()]
    assert not any(a.intersects(b) for i, a in enumerate(rects) for b in rects[i + 1:])
    x = {n: w.doc.graph.editor[n]["pos"][0] for n in w.doc.graph.nodes}
    assert x["load"] < x["crop"] < x["invert"] < x["blend"] < x["enlarge"] < x["save"]
    w.doc.undo.undo()
    assert all(w.doc.graph.editor[n]["pos"] == [0.0, 0.0] for n in before)
