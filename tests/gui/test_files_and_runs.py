"""Files (save, reopen, PNG, autosave, screenshot) and runs (output images, cancel, cache)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from PySide6.QtCore import QMimeData, QPoint, QPointF, Qt, QUrl
from PySide6.QtGui import QDragEnterEvent, QDropEvent
from PySide6.QtWidgets import QApplication

from nodeflow.executor import Executor
from nodeflow.graph import Graph
from nodeflow.settings import Settings

from .conftest import DEMO


def _run(qtbot, w, selected: bool = False, timeout: int = 20000):
    with qtbot.waitSignal(w.runner.runFinished, timeout=timeout) as blocker:
        assert (w.run_selected() if selected else w.run())
    return blocker.args[0]


def test_save_reopen_matches_the_file(qtbot, demo_window, make_window, tmp_path, editor_home):
    w = demo_window
    w.scene.select_nodes(["blend"])
    w.properties.editors["factor"].spin.setValue(0.25)
    assert w.doc.dirty and w.windowTitle().startswith("●")
    path = tmp_path / "graphs" / "edited.json"
    assert w.save_to(path)
    assert not w.doc.dirty
    text = path.read_text(encoding="utf-8")
    assert text == w.doc.graph.dumps()
    data = json.loads(text)
    assert data["nodes"]["blend"]["inputs"]["factor"] == 0.25
    assert set(data["editor"]) >= set(data["nodes"])  # every node has its position
    other = make_window(path)
    assert other.doc.graph.dumps() == text
    assert other.doc.problems == []
    assert str(path.resolve()) in [str(p) for p in other.recent_files()]


def test_save_as_elsewhere_keeps_picture_paths_working(qtbot, demo_window, tmp_path):
    w = demo_window
    elsewhere = tmp_path / "other" / "deep" / "copy.json"
    assert w.save_to(elsewhere)
    assert w.doc.validate_now() == []
    reloaded = Graph.load(elsewhere)
    assert (elsewhere.parent / reloaded.nodes["load"].inputs["path"]).resolve() == \
        (tmp_path / "graphs" / "assets" / "pattern.png").resolve()


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # QDragEnterEvent takes a QPoint
def test_run_shows_output_image_same_as_headless_run_then_reopen_from_png(qtbot, demo_window, make_window,
                                                                       tmp_path):
    w = demo_window
    result = _run(qtbot, w)
    assert result is not None and result.ok, result
    png = Path(result.files[0])
    assert png.exists()
    shown = w.viewer.current_image
    assert shown is not None and (shown.width(), shown.height()) == (256, 256)
    assert w.scene.node_items["save"].pixmap is not None
    assert w.scene.node_items["crop"].pixmap is not None  # intermediate pictures show in their nodes
    assert all(w.scene.node_items[n].status == "done" for n in w.doc.graph.nodes)
    # `nodeflow run` on the saved file writes the same pixels.
    w.save_to(w.doc.path)
    graph = Graph.load(w.doc.path)
    settings = Settings(out_dir=tmp_path / "headless", base_dir=w.doc.path.parent)
    headless = Executor(w.registry, settings).run(graph)
    assert headless.ok
    a = np.asarray(Image.open(png))
    b = np.asarray(Image.open(headless.files[0]))
    assert np.array_equal(a, b)
    # Run again: everything comes from the cache, and is marked so.
    again = _run(qtbot, w)
    assert again.ran == ["save"] or set(again.cached) >= {"load", "crop", "invert", "blend", "enlarge"}
    assert w.scene.node_items["load"].status == "cached"
    # Dropping the PNG on the canvas opens the graph inside it.
    other = make_window()
    mime = QMimeData()
    mime.setUrls([QUrl.fromLocalFile(str(png))])
    buttons, keys = Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier
    enter = QDragEnterEvent(QPoint(300, 300), Qt.DropAction.CopyAction, mime, buttons, keys)
    QApplication.sendEvent(other.view.viewport(), enter)
    assert enter.isAccepted()
    drop = QDropEvent(QPointF(300, 300), Qt.DropAction.CopyAction, mime, buttons, keys)
    QApplication.sendEvent(other.view.viewport(), drop)
    assert set(other.doc.graph.nodes) == set(w.doc.graph.nodes)
    assert {ln.to_json()["to"] for ln in other.doc.graph.links} == {ln.to_json()["to"] for ln in w.doc.graph.links}
    assert other.doc.path is None  # saving must not overwrite the picture
    assert other.doc.problems == []


def test_cancel_long_run_returns_at_once(qtbot, window):
    w = window
    node = w.scene.add_node("guitest.Steps", w.view.mapToScene(200, 200))
    w.scene.select_nodes([node])
    w.run_selected()
    qtbot.waitUntil(lambda: w.scene.node_items[node].status == "running"
                    and bool(w.scene.node_items[node].progress), timeout=5000)
    t = time.perf_counter()
    w.cancel_run()
    assert time.perf_counter() - t < 0.05
    assert not w.runner.running and w.run_action.isEnabled()
    assert w.scene.node_items[node].status_text == "cancelled"
    assert w.runner.wait(5)
    # The editor can run again straight away; a short run finishes normally.
    w.doc.set_input(node, "steps", 3)
    result = _run(qtbot, w, selected=True)
    assert result.ok and result.outputs[node]["count"] == 3.0


def test_failing_node_shows_its_error(qtbot, window, tmp_path):
    w = window
    load = w.scene.add_node("image.Load", w.view.mapToScene(200, 200))
    bogus = tmp_path / "not-a-picture.png"
    bogus.write_text("hello")
    w.doc.set_input(load, "path", str(bogus))
    w.scene.select_nodes([load])
    result = _run(qtbot, w, selected=True)
    assert result.failed
    assert w.scene.node_items[load].status == "failed"
    assert "not a picture" in w.properties.errors[load]
    assert "path" in w.properties.errors[load]


def test_run_refuses_invalid_graph_with_problems(qtbot, window):
    w = window
    w.scene.add_node("image.Save", w.view.mapToScene(200, 200))
    assert not w.run()
    assert "problem" in w.status_label.text()


def test_autosave_and_recovery_after_a_crash(qtbot, demo_window, make_window, editor_home):
    w = demo_window
    w.scene.select_nodes(["crop"])
    w.properties.editors["x"].spin.setValue(7)
    w.write_autosave()  # what the timer does after each edit
    saved = list((editor_home / "autosave").glob("*.json"))
    assert len(saved) == 1
    w.autosave.lock.unlock()  # the process dies: its lock goes away, the file stays
    other = make_window()
    other.offer_recovery()
    assert other.doc.graph.nodes["crop"].inputs["x"] == 7
    assert other.doc.dirty
    assert other.doc.path == w.doc.path
    assert not saved[0].exists()


def test_screenshot_command(qtbot, tmp_path, editor_home):
    from nodeflow.cli import main

    out = tmp_path / "shot.png"
    assert main(["edit", str(DEMO), "--screenshot", str(out)]) == 0
    picture = Image.open(out)
    assert picture.size[0] >= 1000
    # The canvas is not blank: nodes are painted in their category colours.
    pixels = np.asarray(picture.convert("RGB"))
    assert (np.abs(pixels.astype(int) - [63, 111, 168]).sum(axis=2) < 10).sum() > 500


def test_previews_update_during_a_run_and_seeds_advance(qtbot, window):
    w = window
    node = w.scene.add_node("guitest.Sampler", w.view.mapToScene(200, 200))
    w.scene.select_nodes([node])
    w.properties.editors["seed"].mode.setCurrentText("increment")
    w.doc.set_input(node, "seed", 41)
    seen = []
    w.runner.nodePreview.connect(lambda n, img: seen.append(img.pixel(0, 0)))
    assert w.run_selected()
    qtbot.waitUntil(lambda: len(seen) >= 2, timeout=5000)
    assert w.runner.running  # previews arrive while the node is still sampling
    assert w.scene.node_items[node].pixmap is not None
    qtbot.waitUntil(lambda: not w.runner.running, timeout=5000)
    assert len(set(seen)) >= 2  # the picture changes from step to step
    assert w.doc.graph.nodes[node].inputs["seed"] == 42  # ready for the next run
    assert w.viewer.current_image is not None


def test_editing_after_a_run_clears_the_results_it_invalidates(qtbot, demo_window):
    w = demo_window
    assert _run(qtbot, w).ok
    w.doc.set_input("blend", "factor", 0.75)
    statuses = {n: it.status for n, it in w.scene.node_items.items()}
    assert statuses["crop"] == "done" and statuses["invert"] == "done"  # upstream: still valid
    assert statuses["blend"] == statuses["enlarge"] == statuses["save"] == ""
    again = _run(qtbot, w)
    assert set(again.cached) >= {"load", "crop", "invert"} and "blend" in again.ran


def test_editor_with_no_file_opens_the_demo_graph_untitled(qtbot, tmp_path, editor_home, monkeypatch):
    from nodeflow.cli import main
    from nodeflow.gui import window as window_mod

    opened = []
    real_set_document = window_mod.MainWindow.set_document

    def spy(self, doc):
        real_set_document(self, doc)
        opened.append((doc.path, dict(doc.graph.nodes)))

    monkeypatch.setattr(window_mod.MainWindow, "set_document", spy)
    assert main(["edit", "--screenshot", str(tmp_path / "shot.png")]) == 0
    path, nodes = opened[-1]
    # untitled: Save asks for a new place instead of writing over the shipped graph
    assert path is None
    assert nodes["checkpoint"].type == "diffusion.LoadCheckpoint"
    assert nodes["checkpoint"].inputs["path"] == "nodeflow-shapes"
