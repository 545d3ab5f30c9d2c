"""No two nodes overlap: in every shipped graph, after opening and after a run fills the pictures,
in the automatic layout, and a large graph without positions fits the window."""

from __future__ import annotations

import shutil
from itertools import combinations
from pathlib import Path
from typing import Any

import pytest
from PySide6.QtCore import Qt
from PySide6.QtGui import QColor, QImage

from nodeflow.graph import Graph

from .conftest import REPO

GRAPHS = sorted((REPO / "graphs").glob("*.json"))


def overlaps(window: Any) -> list[tuple[str, str]]:
    """Pairs of nodes whose rectangles (title, rows and picture area) overlap."""
    items = window.scene.node_items
    rects = {n: it.body_rect() for n, it in items.items()}
    return [(a, b) for a, b in combinations(sorted(rects), 2) if rects[a].intersects(rects[b])]


def picture(w: int, h: int, color: str) -> QImage:
    image = QImage(w, h, QImage.Format.Format_RGB32)
    image.fill(QColor(color))
    return image


@pytest.fixture
def graphs_copy(tmp_path: Path) -> Path:
    folder = tmp_path / "graphs"
    shutil.copytree(REPO / "graphs", folder)
    return folder


@pytest.mark.parametrize("name", [p.name for p in GRAPHS])
def test_shipped_graph_has_no_overlapping_nodes_before_and_after_a_run(make_window, graphs_copy, name):
    w = make_window(graphs_copy / name)
    assert overlaps(w) == [], f"{name} opens with overlapping nodes"
    # What a run shows, through the same path a run takes: a batch of four tall pictures in every
    # node that makes pictures, and a live preview in every other node (a sampler's).
    for node_id, item in w.scene.node_items.items():
        if item.preview_area:
            w.run_view._node_images(node_id, [picture(64, 256, c) for c in ("red", "green", "blue", "white")])
        else:
            w.run_view._node_preview(node_id, picture(96, 300, "gray"))
    assert overlaps(w) == [], f"{name}: pictures grew nodes over their neighbours"


def test_real_run_keeps_nodes_apart(qtbot, demo_window):
    w = demo_window
    heights = {n: it.height for n, it in w.scene.node_items.items()}
    with qtbot.waitSignal(w.runner.runFinished, timeout=20000) as blocker:
        assert w.run()
    assert blocker.args[0] is not None and blocker.args[0].ok
    assert w.scene.node_items["save"].pixmap is not None
    # Picture nodes kept room for their pictures: nothing grew, nothing overlaps.
    assert {n: it.height for n, it in w.scene.node_items.items()} == heights
    assert overlaps(w) == []


def _chains(n: int, per_chain: int = 5) -> Graph:
    """Chains of image nodes without positions (a generated graph)."""
    graph = Graph()
    kinds = ["image.Load", "image.Crop", "image.Invert", "image.Blend", "image.ResizeBy"][:per_chain]
    for i in range(n):
        kind = kinds[i % per_chain]
        graph.add_node(kind, f"n{i}", {"path": "assets/pattern.png"} if kind == "image.Load" else {})
        if i % per_chain:
            if kind == "image.Blend":
                graph.connect(f"n{i - 1}.image", f"n{i}.a")
                graph.connect(f"n{i - 2}.image", f"n{i}.b")
            else:
                graph.connect(f"n{i - 1}.image", f"n{i}.image")
    return graph


def _long_chain(n: int) -> Graph:
    graph = Graph()
    graph.add_node("image.Load", "n0", {"path": "assets/pattern.png"})
    for i in range(1, n):
        graph.add_node("image.Invert", f"n{i}", {})
        graph.connect(f"n{i - 1}.image", f"n{i}.image")
    return graph


def test_automatic_layout_follows_the_links_without_overlaps(make_window, tmp_path):
    graph = _chains(30)
    path = tmp_path / "chains.json"
    graph.save(path)
    w = make_window(path)
    assert overlaps(w) == []
    items = w.scene.node_items
    for ln in w.doc.graph.links:  # every link runs left to right
        assert items[ln.src].pos().x() + items[ln.src].width < items[ln.dst].pos().x(), ln
    # Arrange on a hand-placed, overlapping graph lays it out again without overlaps, in one undo step.
    for node_id in list(items)[:10]:
        w.doc.graph.editor[node_id]["pos"] = [0.0, 0.0]
    w.open_file(path)
    w.arrange()
    assert overlaps(w) == []


@pytest.mark.parametrize("make", [_long_chain, _chains], ids=["one chain", "many chains"])
def test_thousand_nodes_without_positions_fit_the_window_readably(make_window, tmp_path, make):
    path = tmp_path / "big.json"
    make(1000).save(path)
    w = make_window(path)
    assert len(w.scene.node_items) == 1000
    assert overlaps_fast(w) == 0
    w.view.fit_all()
    rect = w.scene.items_rect()
    shown = w.view.mapToScene(w.view.viewport().rect()).boundingRect()
    assert shown.contains(rect), "Fit All does not show the whole graph"
    # The layout wraps into bands: neither a single row nor a single column of tiny boxes.
    assert 0.25 < rect.width() / rect.height() < 8
    assert w.view.zoom > 0.02


def overlaps_fast(window: Any) -> int:
    """Overlapping pairs, found through the scene's index (a thousand nodes)."""
    from nodeflow.gui.items import NodeItem

    count = 0
    for item in window.scene.node_items.values():
        rect = item.body_rect()
        for other in window.scene.items(rect, Qt.ItemSelectionMode.IntersectsItemShape):
            if isinstance(other, NodeItem) and other is not item and other.body_rect().intersects(rect):
                count += 1
    return count // 2


def test_a_layout_drawn_for_smaller_nodes_is_stretched_keeping_its_shape(make_window, tmp_path):
    """Positions drawn for smaller nodes (a ComfyUI workflow's, say): nodes side by side overlap at
    their real sizes. Opening spreads the layout instead of pushing everything into one column:
    no overlaps, rows stay rows, and what was left of a node stays left of it."""
    graph = Graph()
    ids = []
    for row in range(3):
        for col in range(4):
            node_id = f"n{row}{col}"
            graph.add_node("math.Add", node_id, {"a": 1.0, "b": 2.0})
            graph.editor[node_id] = {"pos": [col * 120.0, row * 90.0]}  # nodes here are wider than 120
            ids.append(node_id)
    path = tmp_path / "cramped.json"
    graph.save(path)
    w = make_window(path)
    assert overlaps(w) == []
    pos = {n: w.scene.node_items[n].pos() for n in ids}
    for row in range(3):
        ys = {pos[f"n{row}{col}"].y() for col in range(4)}
        assert len(ys) == 1, f"row {row} was broken up: {ys}"
        xs = [pos[f"n{row}{col}"].x() for col in range(4)]
        assert xs == sorted(xs) and len(set(xs)) == 4
    assert pos["n00"].y() < pos["n10"].y() < pos["n20"].y()
    # What is shown is what a save keeps.
    assert w.doc.graph.editor["n13"]["pos"] == pytest.approx([pos["n13"].x(), pos["n13"].y()], abs=0.1)
