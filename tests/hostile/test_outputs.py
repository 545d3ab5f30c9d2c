"""Output files: the umask's mode, prefixes validated up front, no writing through symlinks
out of the output folder."""

from __future__ import annotations

import os
import stat

import pytest
from PIL import Image

from .util import assert_clean_error, cli, copy_graph


@pytest.fixture
def picture(tmp_path):
    Image.new("RGB", (8, 8), (50, 60, 70)).save(tmp_path / "in.png")
    return tmp_path


@pytest.mark.parametrize("umask,mode", [(0o022, 0o644), (0o002, 0o664), (0o077, 0o600)])
def test_output_pictures_follow_the_umask(picture, capsys, umask, mode):
    graph = copy_graph(picture / "g.json", "in.png")
    old = os.umask(umask)
    try:
        code, _out, err = cli(capsys, "run", str(graph), "--out", str(picture / "out"), "-q")
    finally:
        os.umask(old)
    assert code == 0, err
    assert stat.S_IMODE((picture / "out" / "out_00001.png").stat().st_mode) == mode


@pytest.mark.parametrize("prefix,fragment", [
    ("a\x00b", "control characters"),
    ("line\nbreak", "control characters"),
    ("esc\x1b[2J", "control characters"),
    ("x" * 300, "too long"),
    ("/".join(["d" * 150] * 8), "too long"),
    ("../escape", "plain name"),
])
def test_bad_prefixes_are_refused_at_validation(picture, capsys, prefix, fragment):
    graph = copy_graph(picture / "g.json", "in.png", prefix=prefix)
    for command in ("validate", "run"):
        args = [command, str(graph)] + (["--out", str(picture / "out")] if command == "run" else [])
        code, _out, err = cli(capsys, *args)
        assert code == 2
        assert "node 'save' (image.Save), socket 'prefix'" in err and fragment in err
        assert "\x1b" not in err
        assert_clean_error(err)
    assert not (picture / "out").exists()


def test_bad_prefix_given_with_set_is_refused(picture, capsys):
    graph = copy_graph(picture / "g.json", "in.png")
    code, _out, err = cli(capsys, "run", str(graph), "--set", "save.prefix=a\nb",
                          "--out", str(picture / "out"))
    assert code == 2 and "control characters" in err


def test_symlinked_subfolder_out_of_the_output_folder_is_not_followed(picture, capsys):
    out = picture / "out"
    out.mkdir()
    elsewhere = picture / "elsewhere"
    elsewhere.mkdir()
    (out / "renders").symlink_to(elsewhere)
    graph = copy_graph(picture / "g.json", "in.png", prefix="renders/cat")
    code, _out, err = cli(capsys, "run", str(graph), "--out", str(out))
    assert code == 1
    assert "node 'save'" in err and "outside the output folder" in err
    assert_clean_error(err)
    assert list(elsewhere.iterdir()) == []


def test_symlink_to_a_new_subfolder_path_creates_nothing_outside(picture, capsys):
    out = picture / "out"
    out.mkdir()
    elsewhere = picture / "elsewhere"
    elsewhere.mkdir()
    (out / "renders").symlink_to(elsewhere)
    graph = copy_graph(picture / "g.json", "in.png", prefix="renders/new/cat")
    code, _out, _err = cli(capsys, "run", str(graph), "--out", str(out))
    assert code == 1
    assert list(elsewhere.iterdir()) == []


def test_symlink_inside_the_output_folder_is_fine(picture, capsys):
    out = picture / "out"
    (out / "real").mkdir(parents=True)
    (out / "alias").symlink_to(out / "real")
    graph = copy_graph(picture / "g.json", "in.png", prefix="alias/cat")
    code, _out, err = cli(capsys, "run", str(graph), "--out", str(out), "-q")
    assert code == 0, err
    assert (out / "real" / "cat_00001.png").is_file()
