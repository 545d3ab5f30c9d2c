"""The editor's drop handler: whatever is dropped, no picture decoder outside the allow-list
runs, and a failure is a message in the window."""

from __future__ import annotations

import os

import pytest

from .test_pictures import EPS
from .util import huge_png

pytest.importorskip("PySide6")


@pytest.fixture
def window(qtbot, tmp_path, monkeypatch):
    from nodeflow.gui.window import MainWindow
    from nodeflow.registry import load_registry

    monkeypatch.setenv("NODEFLOW_EDITOR_HOME", str(tmp_path / "home"))
    w = MainWindow(load_registry(use_env=False), home=tmp_path / "home", out_dir=tmp_path / "out",
                   interactive=False)
    qtbot.addWidget(w)
    w.show()
    return w


def test_dropping_an_eps_named_png_never_runs_ghostscript(window, tmp_path, monkeypatch):
    from PIL import EpsImagePlugin

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    marker = tmp_path / "ghostscript_ran"
    (bin_dir / "gs").write_text(f"#!/bin/sh\ntouch {marker}\nexit 1\n")
    (bin_dir / "gs").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}")
    monkeypatch.setattr(EpsImagePlugin, "gs_binary", None)  # look gs up again on this PATH
    evil = tmp_path / "evil.png"
    evil.write_text(EPS.replace("OUTFILE", str(tmp_path / "postscript_wrote_this")))
    window.open_dropped([str(evil)])
    assert not marker.exists() and not (tmp_path / "postscript_wrote_this").exists()
    assert "Cannot open evil.png" in window.status_label.text()


def test_dropping_a_huge_png_is_a_message_not_a_crash(window, tmp_path):
    bomb = tmp_path / "big.png"
    bomb.write_bytes(huge_png(20000, 20000))
    window.open_dropped([str(bomb)])
    assert "Cannot open big.png" in window.status_label.text()
    assert window.doc is None or window.doc.graph.source != bomb

