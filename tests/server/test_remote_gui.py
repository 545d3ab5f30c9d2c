"""The editor's "Run on Server…": a remote run shows progress, previews and pictures as a local one."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest

from .conftest import PLUGINS, REPO_GRAPHS, RunningServer, graph

pytest.importorskip("PySide6")


@pytest.fixture
def window(qtbot: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    from nodeflow.gui.window import MainWindow
    from nodeflow.registry import load_registry

    monkeypatch.setenv("NODEFLOW_EDITOR_HOME", str(tmp_path / "home"))
    folder = tmp_path / "graphs"
    shutil.copytree(REPO_GRAPHS, folder)
    registry = load_registry(use_env=False)
    registry.load_folder(PLUGINS)  # the node types the test server has
    w = MainWindow(registry, home=tmp_path / "home", out_dir=tmp_path / "out", interactive=False)
    qtbot.addWidget(w)
    w.show()
    assert w.open_file(folder / "image_effects.json")
    yield w
    if w.runner is not None:
        w.runner.cancel()
        w.runner.wait()


def run(qtbot: Any, w: Any) -> Any:
    with qtbot.waitSignal(w.runner.runFinished, timeout=60_000) as finished:
        assert w.run()
    return finished.args[0]


def test_run_on_server_shows_what_a_local_run_shows(qtbot: Any, window: Any, server: RunningServer,
                                                    tmp_path: Path) -> None:
    from PySide6.QtGui import QImage

    from nodeflow.gui.remote import RemoteRunController, use_local, use_server

    local = run(qtbot, window)
    assert local is not None and local.ok
    local_file = Path(local.files[0])
    statuses_local = {n: i.status for n, i in window.scene.node_items.items()}

    runner = use_server(window, server.url)
    assert isinstance(window.runner, RemoteRunController)
    progress: list[str] = []
    runner.nodeProgress.connect(lambda node, *_: progress.append(node))
    remote = run(qtbot, window)
    assert remote is not None and remote.ok, window.status_label.text()
    assert sorted(remote.ran) == sorted(local.ran)
    assert "save" in progress
    # The picture was downloaded into the editor's output folder, pixel for pixel the same.
    [remote_file] = remote.files
    assert remote_file.parent == local_file.parent and remote_file != local_file
    assert QImage(str(remote_file)) == QImage(str(local_file))
    assert {n: i.status for n, i in window.scene.node_items.items()} == statuses_local
    assert "Done" in window.status_label.text()

    use_local(window)
    assert not isinstance(window.runner, RemoteRunController)


def test_a_bad_graph_on_the_server_is_shown_located(qtbot: Any, window: Any, server: RunningServer) -> None:
    from nodeflow.gui.remote import use_server

    runner = use_server(window, server.url)
    window.doc.graph.set_input("load", "path", "nowhere.png")
    invalid: list[Any] = []
    runner.runInvalid.connect(invalid.append)
    with qtbot.waitSignal(runner.runFinished, timeout=30_000):
        runner.start(window.doc.graph.copy(), ["save"])
    problem = invalid[0].problems[0]
    assert (problem.code, problem.location.node, problem.location.socket) == ("missing_file", "load", "path")


def test_an_unreachable_server_is_an_error_not_a_hang(qtbot: Any, window: Any) -> None:
    from nodeflow.gui.remote import use_server

    runner = use_server(window, "http://127.0.0.1:9")
    failed: list[str] = []
    runner.nodeFailed.connect(lambda node, message: failed.append(message))
    assert run(qtbot, window) is None
    assert failed and "cannot reach the server" in failed[0]


def test_previews_come_back_from_the_server(qtbot: Any, window: Any, server: RunningServer,
                                            tmp_path: Path) -> None:
    import json

    from nodeflow.gui.remote import use_server

    path = tmp_path / "swatch.json"
    path.write_text(json.dumps(graph({"swatch": ("servertest.Swatch", {"level": 1.0, "width": 40, "height": 30}),
                                      "save": ("image.Save", {"prefix": "white"})},
                                     [("swatch.image", "save.image")])))
    assert window.open_file(path)
    runner = use_server(window, server.url)
    previews: list[Any] = []
    runner.nodePreview.connect(lambda node, image: previews.append((node, image)))
    result = run(qtbot, window)
    assert result is not None and result.ok
    assert previews and previews[0][0] == "swatch" and previews[0][1].width() == 40
    assert window.run_view.node_images["swatch"].pixelColor(5, 5).lightness() > 240
    assert [p.name for p in result.files] == ["white_00001.png"]
