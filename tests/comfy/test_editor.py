"""A ComfyUI workflow in the editor: the layout the user knows, kept through save and reopen."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from .conftest import FIXTURES

pytest.importorskip("PySide6")
pytest.importorskip("pytestqt")


@pytest.fixture
def make_window(qtbot: Any, registry: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    from nodeflow.gui.window import MainWindow

    home = tmp_path / "editor-home"
    monkeypatch.setenv("NODEFLOW_EDITOR_HOME", str(home))
    made: list[Any] = []

    def make() -> Any:
        window = MainWindow(registry, home=home, out_dir=tmp_path / "out", interactive=False)
        qtbot.addWidget(window)
        window.resize(1200, 800)
        window.show()
        qtbot.waitExposed(window)
        made.append(window)
        return window

    yield make
    for window in made:
        if window.runner is not None:
            window.runner.cancel()
            window.runner.wait()
    from PySide6.QtWidgets import QApplication

    QApplication.clipboard().clear()  # Qt's offscreen platform dislikes a full clipboard at exit


def _scene_layout(window: Any) -> tuple[dict[str, tuple[float, float]], list[tuple[str, list[float]]]]:
    nodes = {nid: (round(item.pos().x(), 1), round(item.pos().y(), 1))
             for nid, item in window.scene.node_items.items()}
    frames = [(f.title, f.rect_data()) for f in window.scene.frame_items]
    return nodes, frames


def test_workflow_opens_with_its_layout_and_survives_save_and_reopen(make_window: Any, tmp_path: Path) -> None:
    source = tmp_path / "txt2img_ui.json"
    shutil.copy(FIXTURES / "txt2img_ui.json", source)
    original = source.read_bytes()
    window = make_window()
    assert window.open_file(source)
    assert window.doc.path is None  # untitled: Save must not write nodeflow's format over the workflow
    nodes, frames = _scene_layout(window)
    comfy_pos = {str(n["id"]): n["pos"] for n in json.loads(original)["nodes"]}
    assert nodes["KSampler_3"] == tuple(comfy_pos["3"])
    assert nodes["CLIPTextEncode_6"] == tuple(comfy_pos["6"])
    assert ("Prompts", [80.0, 60.0, 560.0, 300.0]) in frames  # the group
    assert any(title == "About" for title, _ in frames)  # the note
    saved = tmp_path / "graph.json"
    assert window.save_to(saved)
    assert source.read_bytes() == original

    again = make_window()
    assert again.open_file(saved)
    assert again.doc.path == saved.resolve()
    assert _scene_layout(again) == (nodes, frames)


def test_dropping_a_comfyui_png_opens_its_workflow(make_window: Any, tmp_path: Path) -> None:
    from .test_convert import png_with_text

    png = png_with_text(tmp_path / "ComfyUI_00001_.png", {
        "prompt": (FIXTURES / "more_api.json").read_text(), "workflow": (FIXTURES / "more_ui.json").read_text()})
    window = make_window()
    window.open_dropped([str(png)])
    assert window.doc is not None and "KSampler_8" in window.doc.graph.nodes
    assert window.doc.path is None


def test_editor_finds_models_in_the_comfyui_folder(make_window: Any, comfy_root: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    # `nodeflow edit --comfy-models DIR` hands the folder to the editor through the environment.
    monkeypatch.setenv("NODEFLOW_COMFY_MODELS", str(comfy_root))
    window = make_window()
    assert window.open_file(FIXTURES / "more_ui.json")
    assert [str(p) for p in window.doc.validate_now(full=True)] == []
