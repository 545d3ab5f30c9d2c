"""A batch of pictures shows whole: in the node that made it, in the save node, in the Images panel."""

from __future__ import annotations

from itertools import combinations

from nodeflow.graph import Graph

from .test_layout import overlaps


def _batch_graph(tmp_path, count: int):
    graph = Graph()
    graph.add_node("guitest.Batch", "batch", {"count": count})
    graph.add_node("image.Save", "save", {"prefix": "batch"})
    graph.connect("batch.image", "save.image")
    path = tmp_path / "batch.json"
    graph.save(path)
    return path


def _run(qtbot, w):
    with qtbot.waitSignal(w.runner.runFinished, timeout=20000) as blocker:
        assert w.run()
    result = blocker.args[0]
    assert result is not None and result.ok, result
    return result


def test_node_shows_every_picture_of_a_batch_with_its_count(qtbot, make_window, tmp_path):
    w = make_window(_batch_graph(tmp_path, 4))
    result = _run(qtbot, w)
    assert len(result.files) == 4
    for node in ("batch", "save"):
        item = w.scene.node_items[node]
        assert len(item.pixmaps) == 4, node
        assert item.batch_label() == "4 images"
        cells = item.picture_cells()
        assert len(cells) == 4
        area = item.picture_area()
        for a, b in combinations(cells, 2):
            assert not a.intersects(b)  # a grid: every picture visible, none over another
        assert all(area.contains(c) for c in cells)
    # The four pictures differ, and the node shows each one (pixels of each cell's centre).
    shot = w.view.grab().toImage()
    item = w.scene.node_items["batch"]
    colors = set()
    for cell in item.picture_cells():
        p = w.view.mapFromScene(item.mapToScene(cell.center()))
        colors.add(shot.pixelColor(p).rgb())
    assert len(colors) == 4
    assert overlaps(w) == []


def test_large_batch_shows_its_first_pictures_and_says_how_many(qtbot, make_window, tmp_path):
    w = make_window(_batch_graph(tmp_path, 20))
    _run(qtbot, w)
    item = w.scene.node_items["batch"]
    assert len(item.pixmaps) == 16
    assert item.batch_label() == "16 of 20 images"
    assert len(w.scene.node_items["save"].pixmaps) == 16  # the save node wrote all 20 files


def test_images_panel_strip_shows_names_apart(qtbot, make_window, tmp_path):
    w = make_window(_batch_graph(tmp_path, 4))
    _run(qtbot, w)
    strip = w.viewer.strip
    assert strip.count() == 4
    assert strip.height() >= 120 and strip.iconSize().height() >= 90
    rects = [strip.visualItemRect(strip.item(i)) for i in range(strip.count())]
    for a, b in combinations(rects, 2):
        assert not a.intersects(b), "pictures or names in the Images strip overlap"
    names = [strip.item(i).text() for i in range(strip.count())]
    assert len(set(names)) == 4 and all(n.startswith("batch_") and n.endswith(".png") for n in names)
