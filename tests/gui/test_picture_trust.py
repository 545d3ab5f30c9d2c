"""A graph from a picture someone else made reads files only beside it and in the models folders,
in the editor as on the command line; Run ▸ Allow a Folder… widens that for the open graph."""

from __future__ import annotations

import json
import os

from PIL import Image

from tests.hostile.test_untrusted_graphs import graph_png as _foreign_png


def test_foreign_picture_graph_is_restricted_until_a_folder_is_allowed(qtbot, make_window, tmp_path):
    secret = tmp_path / "secret"
    secret.mkdir()
    Image.new("RGB", (6, 6), (255, 0, 0)).save(secret / "private.png")
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    evil = _foreign_png(downloads / "evil.png", secret / "private.png")

    w = make_window(evil)
    assert w.allow_folder_action.isEnabled()
    problems = [p for p in w.doc.problems if p.location and p.location.node == "load"]
    assert problems, w.doc.problems
    text = str(problems[0])
    assert "outside the folders this graph may read" in text
    assert "Run ▸ Allow a Folder…" in text and "--allow-dir" not in text
    assert any("came from the picture evil.png" in n.text for n in w.notices.active())
    assert not w.run()  # nothing runs while the graph has problems
    assert not (tmp_path / "out").exists()

    w.allow_folder(secret)
    assert w.doc.problems == []
    with qtbot.waitSignal(w.runner.runFinished, timeout=20000) as blocker:
        assert w.run()
    result = blocker.args[0]
    assert result.ok, result
    with Image.open(result.files[0], formats=["PNG"]) as copied:
        assert copied.getpixel((0, 0)) == (255, 0, 0)


def test_a_graph_file_opened_after_a_picture_is_not_restricted(qtbot, make_window, tmp_path):
    evil = _foreign_png(tmp_path / "evil.png", tmp_path / "elsewhere.png")
    w = make_window(evil)
    assert w.doc.settings.allowed_dirs is not None
    graph = tmp_path / "mine.json"
    graph.write_text(json.dumps({"format": "nodeflow.graph", "version": 1, "nodes": {}, "links": []}))
    assert w.open_file(graph)
    assert w.doc.settings.allowed_dirs is None and not w.allow_folder_action.isEnabled()


def test_dropping_a_fifo_named_like_a_picture_does_not_hang(qtbot, make_window, tmp_path):
    fifo = tmp_path / "dropped.png"
    os.mkfifo(fifo)
    w = make_window()
    errors = []
    w.show_error = lambda title, text: errors.append((title, text))
    w.open_dropped([str(fifo)])
    assert errors and "FIFO" in errors[0][1]
