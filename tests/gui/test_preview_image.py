"""image.PreviewImage shows its pictures in the editor and writes nothing to the output folder."""

from __future__ import annotations

from pathlib import Path

from nodeflow.graph import Graph

from .conftest import REPO


def test_preview_image_is_shown_in_its_node_and_the_viewer(qtbot, make_window, tmp_path):
    from nodeflow.nodes.image import preview_folder

    graph = Graph()
    graph.add_node("image.Load", "load", {"path": str(REPO / "graphs" / "assets" / "pattern.png")})
    graph.add_node("image.PreviewImage", "preview", {})
    graph.connect("load.image", "preview.image")
    path = tmp_path / "preview.json"
    graph.save(path)
    w = make_window(path)
    with qtbot.waitSignal(w.runner.runFinished, timeout=20000) as blocker:
        assert w.run()
    result = blocker.args[0]
    assert result is not None and result.ok, result
    files = [Path(f) for f in result.files]
    assert len(files) == 1 and files[0].parent == preview_folder() and files[0].is_file()
    qtbot.waitUntil(lambda: w.scene.node_items["preview"].pixmap is not None, timeout=5000)
    assert w.viewer.current_image is not None
    out = tmp_path / "out"
    assert not out.exists() or not any(out.rglob("*.png"))  # nothing saved


def test_preview_image_shows_again_on_a_cached_rerun(registry, tmp_path):
    from nodeflow.executor import Executor
    from nodeflow.settings import Settings

    graph = Graph()
    graph.add_node("image.Load", "load", {"path": str(REPO / "graphs" / "assets" / "pattern.png")})
    graph.add_node("image.PreviewImage", "preview", {})
    graph.connect("load.image", "preview.image")
    executor = Executor(registry, Settings(out_dir=tmp_path / "out"))
    first, second = executor.run(graph), executor.run(graph)
    assert "load" in second.cached and "preview" in second.ran
    assert len(first.files) == len(second.files) == 1 and first.files[0] != second.files[0]
