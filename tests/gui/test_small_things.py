"""Smaller things a user notices: palette order, label grammar, the status bar, the recovery
question, and the modes of saved files."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from PySide6.QtWidgets import QLabel

from nodeflow.graph import Graph
from nodeflow.gui.autosave import Recovered
from nodeflow.gui.labels import node_title, split_name, with_article

from .conftest import DEMO
from .util import add_from_palette


def test_palette_lists_recent_and_most_used_first_and_remembers_them(qtbot, window, make_window):
    palette = window.node_palette
    palette.open_at(window.view.mapToGlobal(window.view.rect().center()))
    untouched = palette.visible_ids()
    palette.hide()
    assert untouched[0] != "image.Invert"
    add_from_palette(qtbot, window, "invert")
    for _ in range(2):
        add_from_palette(qtbot, window, "blend")
    add_from_palette(qtbot, window, "crop")
    palette.open_at(window.view.mapToGlobal(window.view.rect().center()))
    assert palette.visible_ids()[:3] == ["image.Crop", "image.Blend", "image.Invert"]
    palette.hide()
    # A new window (the next start) reads the same order from the editor's home folder.
    other = make_window()
    other.node_palette.open_at(other.view.mapToGlobal(other.view.rect().center()))
    assert other.node_palette.visible_ids()[:3] == ["image.Crop", "image.Blend", "image.Invert"]
    other.node_palette.hide()


def test_titles_keep_acronyms_and_articles_follow_the_sound(gui_registry):
    assert split_name("LoadLoRA") == "Load LoRA"
    assert split_name("VAEDecode") == "VAE Decode"
    assert split_name("CLIPTextEncode") == "CLIP Text Encode"
    assert split_name("ApplyControlNet") == "Apply ControlNet"
    titles = {node_title(cls) for cls in gui_registry.types()}
    assert "Load LoRA" in titles and not any("Lo RA" in t for t in titles)
    assert with_article("IMAGE") == "an IMAGE" and with_article("LATENT") == "a LATENT"


def test_properties_say_link_an_image(qtbot, make_window):
    w = make_window(DEMO)
    node = add_from_palette(qtbot, w, "invert")
    w.scene.select_nodes([node])
    texts = [label.text() for label in w.properties.findChildren(QLabel)]
    assert any("link an IMAGE here" in t for t in texts), texts
    assert not any("a IMAGE" in t for t in texts)


def test_progress_bar_keeps_its_width_with_a_long_status(qtbot, window):
    window.progress.show()
    window.status("short")
    qtbot.wait(10)
    width = window.progress.width()
    window.status("a very long message " * 40, error=True)
    qtbot.wait(10)
    assert window.progress.width() == width >= 200
    assert window.status_label.toolTip().startswith("a very long message")


def test_recovery_question_shows_the_path_on_one_line(qtbot, window, tmp_path):
    deep = "/home/someone/" + "/".join(f"folder-number-{i}" for i in range(12)) + "/my graph.json"
    box = window.recovery_question(Recovered(tmp_path / "a.json", deep, 0.0, "{}"), "2026-01-01 10:00")
    text = box.text()
    line = text.split("white-space:pre'>", 1)[1].split("</p>", 1)[0]
    assert "…" in line and line.endswith("my graph.json") and line.startswith("/home/someone/")
    assert box.fontMetrics().horizontalAdvance(line) <= 470
    assert box.detailedText() == deep
    untitled = window.recovery_question(Recovered(tmp_path / "a.json", None, 0.0, "{}"), "today")
    assert "an untitled graph" in untitled.text()


@pytest.fixture
def umask_022():
    old = os.umask(0o022)
    yield
    os.umask(old)


def test_saved_graph_and_pictures_follow_the_umask(qtbot, demo_window, tmp_path, umask_022):
    w = demo_window
    path = tmp_path / "saved" / "graph.json"
    assert w.save_to(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert Graph.load(path).nodes.keys() == w.doc.graph.nodes.keys()
    with qtbot.waitSignal(w.runner.runFinished, timeout=20000) as blocker:
        assert w.run()
    result = blocker.args[0]
    assert result is not None and result.ok and result.files
    for file in result.files:
        assert stat.S_IMODE(Path(file).stat().st_mode) == 0o644, file
    recent = w.home / "recent.json"
    assert stat.S_IMODE(recent.stat().st_mode) == 0o644


def test_status_label_does_not_wrap_or_push(window):
    assert window.status_label.sizePolicy().horizontalPolicy().name == "Ignored"
    assert window.status_label.wordWrap() is False
    assert window.progress.minimumWidth() == window.progress.maximumWidth()
