"""`python -m training.assets`: the demo graphs' input pictures, and its command line."""

from __future__ import annotations

import pytest
from PIL import Image

from training import assets


def test_writes_the_three_pictures_into_the_folder_named(tmp_path, capsys):
    assets.main([str(tmp_path / "assets")])
    names = sorted(p.name for p in (tmp_path / "assets").iterdir())
    assert names == ["edges_star.png", "shape_red_circle.png", "shape_red_circle_hole.png"]
    assert Image.open(tmp_path / "assets" / "shape_red_circle_hole.png").mode == "RGBA"
    assert str(tmp_path / "assets" / "edges_star.png") in capsys.readouterr().out


def test_help_prints_usage_and_writes_nothing(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit_:
        assets.main(["--help"])
    assert exit_.value.code == 0
    assert "usage:" in capsys.readouterr().out
    assert list(tmp_path.iterdir()) == []  # no folder named "--help"
