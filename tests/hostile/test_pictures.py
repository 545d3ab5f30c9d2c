"""Pictures open only in allowed formats, with bounded size, from regular files."""

from __future__ import annotations

import os
import subprocess

import pytest
from PIL import Image

from .util import PYTHON, assert_clean_error, cli, cli_process, copy_graph, huge_png

EPS = """%!PS-Adobe-3.0 EPSF-3.0
%%BoundingBox: 0 0 8 8
(OUTFILE) (w) file dup (written by PostScript) writestring closefile
0 0 moveto 8 8 lineto stroke
showpage
%%EOF
"""


@pytest.fixture
def fake_ghostscript(tmp_path):
    """A `gs` first on PATH that records being run: Pillow's EPS decoder calls it."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    marker = tmp_path / "ghostscript_ran"
    gs = bin_dir / "gs"
    gs.write_text(f"#!/bin/sh\necho \"$@\" > {marker}\nexit 1\n")
    gs.chmod(0o755)
    return {"PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"}, marker


def test_eps_named_png_never_reaches_ghostscript(tmp_path, fake_ghostscript):
    env, marker = fake_ghostscript
    evil = tmp_path / "evil.png"
    evil.write_text(EPS.replace("OUTFILE", str(tmp_path / "postscript_wrote_this")))
    # The file really is one Pillow would hand to Ghostscript:
    probe = subprocess.run([PYTHON, "-c", "import sys; from PIL import Image\n"
                            "try:\n    Image.open(sys.argv[1]).load()\nexcept Exception:\n    pass",
                            str(evil)], env={**os.environ, **env}, capture_output=True, text=True)
    assert probe.returncode == 0 and marker.exists()
    marker.unlink()

    graph = copy_graph(tmp_path / "g.json", "evil.png")
    proc = cli_process("run", str(graph), "--out", str(tmp_path / "out"), cwd=tmp_path, env=env)
    assert proc.returncode == 1
    assert "node 'load' (image.Load), socket 'path'" in proc.stderr
    assert "PostScript/EPS" in proc.stderr and "PNG, JPEG, WebP, TIFF or BMP" in proc.stderr
    assert_clean_error(proc.stderr)
    assert not marker.exists()
    assert not (tmp_path / "postscript_wrote_this").exists()
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


@pytest.mark.parametrize("fmt,suffix", [("PNG", "png"), ("JPEG", "jpg"), ("WEBP", "webp"),
                                        ("TIFF", "tif"), ("BMP", "bmp")])
def test_allowed_formats_load(tmp_path, capsys, fmt, suffix):
    Image.new("RGB", (12, 8), (10, 200, 30)).save(tmp_path / f"in.{suffix}", format=fmt)
    graph = copy_graph(tmp_path / "g.json", f"in.{suffix}")
    code, _out, err = cli(capsys, "run", str(graph), "--out", str(tmp_path / "out"), "-q")
    assert code == 0, err
    with Image.open(tmp_path / "out" / "out_00001.png") as saved:
        assert saved.size == (12, 8)


@pytest.mark.parametrize("fmt", ["GIF", "ICO", "PPM", "TGA"])
def test_other_formats_are_refused_even_named_png(tmp_path, capsys, fmt):
    Image.new("RGB", (16, 16), (10, 200, 30)).save(tmp_path / "in.png", format=fmt)
    graph = copy_graph(tmp_path / "g.json", "in.png")
    code, _out, err = cli(capsys, "run", str(graph), "--out", str(tmp_path / "out"))
    assert code == 1
    assert "socket 'path'" in err and "nodeflow opens only PNG, JPEG, WebP, TIFF or BMP" in err
    assert_clean_error(err)


def test_huge_picture_is_refused_before_decoding(tmp_path, capsys):
    (tmp_path / "big.png").write_bytes(huge_png(20000, 20000))
    graph = copy_graph(tmp_path / "g.json", "big.png")
    code, _out, err = cli(capsys, "run", str(graph), "--out", str(tmp_path / "out"))
    assert code == 1
    assert "400,000,000 pixels" in err and "socket 'path'" in err
    assert_clean_error(err)


@pytest.mark.parametrize("command", ["run", "validate"])
def test_huge_png_given_as_the_graph(tmp_path, capsys, command):
    bomb = tmp_path / "big.png"
    bomb.write_bytes(huge_png(20000, 20000))
    code, _out, err = cli(capsys, command, str(bomb))
    assert code == 2
    assert "carries no" in err
    assert_clean_error(err)


def test_huge_png_with_a_graph_is_read_without_decoding_pixels(tmp_path, capsys):
    Image.new("RGB", (4, 4)).save(tmp_path / "in.png")
    graph_text = copy_graph(tmp_path / "g.json", "in.png").read_text()
    bomb = tmp_path / "big.png"
    bomb.write_bytes(huge_png(20000, 20000, {"nodeflow": graph_text}))
    code, out, err = cli(capsys, "validate", str(bomb))
    assert code == 0, err
    assert "valid (2 nodes, 1 links)" in out


def test_huge_png_opened_in_the_editor(tmp_path):
    bomb = tmp_path / "big.png"
    bomb.write_bytes(huge_png(20000, 20000))
    proc = cli_process("edit", str(bomb), "--screenshot", str(tmp_path / "shot.png"),
                       env={"QT_QPA_PLATFORM": "offscreen", "NODEFLOW_EDITOR_HOME": str(tmp_path / "home")})
    assert proc.returncode == 2
    assert "carries no" in proc.stderr
    assert_clean_error(proc.stderr)


def test_truncated_picture_is_a_located_error(tmp_path, capsys):
    Image.new("RGB", (64, 64), (1, 2, 3)).save(tmp_path / "full.png")
    data = (tmp_path / "full.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])
    graph = copy_graph(tmp_path / "g.json", "cut.png")
    code, _out, err = cli(capsys, "run", str(graph), "--out", str(tmp_path / "out"))
    assert code == 1
    assert "socket 'path'" in err
    assert_clean_error(err)


def test_fifo_as_picture_is_refused_without_hanging(tmp_path):
    os.mkfifo(tmp_path / "pipe.png")
    graph = copy_graph(tmp_path / "g.json", "pipe.png")
    for command in ("validate", "run"):
        proc = cli_process(command, str(graph), "--out", str(tmp_path / "out"), cwd=tmp_path,
                           timeout=60) if command == "run" else cli_process(command, str(graph),
                                                                             cwd=tmp_path, timeout=60)
        assert proc.returncode == 2, proc.stderr
        assert "FIFO" in proc.stderr and "socket 'path'" in proc.stderr
        assert_clean_error(proc.stderr)


def test_embedded_graph_of_a_compressed_chunk_is_read(tmp_path, capsys):
    from PIL.PngImagePlugin import PngInfo

    Image.new("RGB", (4, 4)).save(tmp_path / "in.png")
    info = PngInfo()
    info.add_itxt("nodeflow", copy_graph(tmp_path / "g.json", "in.png").read_text(), zip=True)
    Image.new("RGB", (4, 4)).save(tmp_path / "made.png", pnginfo=info)
    code, out, err = cli(capsys, "validate", str(tmp_path / "made.png"))
    assert code == 0, err


def test_picture_just_over_the_limit_names_its_size(tmp_path, capsys):
    from nodeflow.imaging import MAX_PICTURE_PIXELS

    side = 12000  # 144 million pixels: over nodeflow's limit, under Pillow's own
    assert side * side > MAX_PICTURE_PIXELS
    (tmp_path / "big.png").write_bytes(huge_png(side, side))
    graph = copy_graph(tmp_path / "g.json", "big.png")
    code, _out, err = cli(capsys, "run", str(graph), "--out", str(tmp_path / "out"))
    assert code == 1
    assert "12000×12000" in err
    assert_clean_error(err)


@pytest.mark.parametrize("fmt,suffix", [("JPEG", "jpg"), ("TIFF", "tif")])
def test_exif_orientation_survives_the_safe_opener(tmp_path, capsys, fmt, suffix):
    im = Image.new("RGB", (20, 10), (200, 0, 0))
    exif = im.getexif()
    exif[0x0112] = 6  # rotate 90° on display
    im.save(tmp_path / f"in.{suffix}", format=fmt, exif=exif.tobytes())
    graph = copy_graph(tmp_path / "g.json", f"in.{suffix}")
    code, _out, err = cli(capsys, "run", str(graph), "--out", str(tmp_path / "out"), "-q")
    assert code == 0, err
    with Image.open(tmp_path / "out" / "out_00001.png") as saved:
        assert saved.size == (10, 20)
