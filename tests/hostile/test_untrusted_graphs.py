"""A graph taken from a picture reads files only beside that picture, in the models folders,
and in folders the user allows with --allow-dir."""

from __future__ import annotations

import json

import pytest
from PIL import Image
from PIL.PngImagePlugin import PngInfo

from nodeflow.settings import Settings
from nodeflow.trust import restrict_for_source

from .util import assert_clean_error, cli


def graph_png(path, load_path):
    """A PNG such as image.Save writes, whose embedded graph loads ``load_path``."""
    doc = {"format": "nodeflow.graph", "version": 1, "nodes": {
        "load": {"type": "image.Load", "inputs": {"path": str(load_path)}},
        "save": {"type": "image.Save", "inputs": {"prefix": "copy"}},
    }, "links": [{"from": "load.image", "to": "save.image"}]}
    info = PngInfo()
    info.add_itxt("nodeflow", json.dumps(doc))
    Image.new("RGB", (4, 4)).save(path, pnginfo=info)
    return path


@pytest.fixture
def layout(tmp_path):
    (tmp_path / "secret").mkdir()
    Image.new("RGB", (6, 6), (255, 0, 0)).save(tmp_path / "secret" / "private.png")
    (tmp_path / "downloads").mkdir()
    Image.new("RGB", (6, 6), (0, 0, 255)).save(tmp_path / "downloads" / "beside.png")
    return tmp_path


@pytest.mark.parametrize("target", ["../secret/private.png", "ABS"])
def test_png_graph_cannot_read_outside_its_folder(layout, capsys, monkeypatch, target):
    monkeypatch.chdir(layout / "downloads")
    if target == "ABS":
        target = str(layout / "secret" / "private.png")
    evil = graph_png(layout / "downloads" / "evil.png", target)
    out = layout / "out"
    for command in ("validate", "run"):
        args = [command, str(evil)] + (["--out", str(out)] if command == "run" else [])
        code, _out, err = cli(capsys, *args)
        assert code == 2
        assert "node 'load' (image.Load), socket 'path'" in err
        assert "outside the folders this graph may read" in err and "--allow-dir" in err
        assert_clean_error(err)
    assert not out.exists()


def test_png_graph_cannot_escape_through_a_symlink_beside_it(layout, capsys):
    (layout / "downloads" / "innocent.png").symlink_to(layout / "secret" / "private.png")
    evil = graph_png(layout / "downloads" / "evil.png", "innocent.png")
    code, _out, err = cli(capsys, "validate", str(evil))
    assert code == 2 and "outside the folders" in err


def test_png_graph_reads_files_beside_it(layout, capsys):
    png = graph_png(layout / "downloads" / "made.png", "beside.png")
    code, _out, err = cli(capsys, "run", str(png), "--out", str(layout / "out"), "-q")
    assert code == 0, err
    assert (layout / "out" / "copy_00001.png").is_file()


def test_allow_dir_lets_a_png_graph_read_more(layout, capsys):
    evil = graph_png(layout / "downloads" / "evil.png", str(layout / "secret" / "private.png"))
    code, _out, err = cli(capsys, "run", str(evil), "--out", str(layout / "out"), "-q",
                          "--allow-dir", str(layout / "secret"))
    assert code == 0, err
    with Image.open(layout / "out" / "copy_00001.png") as copied:
        assert copied.getpixel((0, 0)) == (255, 0, 0)


def test_a_graph_file_the_user_chose_is_not_restricted(layout, capsys):
    doc = layout / "downloads" / "g.json"
    doc.write_text(json.dumps({"format": "nodeflow.graph", "version": 1, "nodes": {
        "load": {"type": "image.Load", "inputs": {"path": str(layout / "secret" / "private.png")}},
        "save": {"type": "image.Save", "inputs": {"prefix": "copy"}}},
        "links": [{"from": "load.image", "to": "save.image"}]}))
    code, _out, err = cli(capsys, "run", str(doc), "--out", str(layout / "out"), "-q")
    assert code == 0, err


def test_settings_restriction_is_reusable_for_requests(layout):
    """What a server does with a graph from a request: only its upload and models folders."""
    settings = Settings(allowed_dirs=[layout / "downloads"])
    assert settings.resolve_path("image", str(layout / "downloads" / "beside.png")) is not None
    assert settings.resolve_path("image", str(layout / "secret" / "private.png")) is None
    why = settings.describe_search("image", str(layout / "secret" / "private.png"))
    assert "outside the folders" in why
    # Models folders stay readable.
    models = layout / "models"
    (models / "loras").mkdir(parents=True)
    (models / "loras" / "x.safetensors").write_bytes(b"")
    settings.models_dirs.append(models)
    assert settings.resolve_path("loras", "x.safetensors") is not None


def test_restrict_for_source_leaves_json_graphs_alone(layout):
    doc = layout / "g.json"
    doc.write_text("{}")
    assert restrict_for_source(Settings(), doc).allowed_dirs is None
    png = graph_png(layout / "downloads" / "p.png", "beside.png")
    assert restrict_for_source(Settings(), png, [layout / "secret"]).allowed_dirs == [
        (layout / "downloads").resolve(), (layout / "secret").resolve()]


def test_the_users_own_render_is_trusted_but_a_changed_graph_is_not(layout, capsys):
    """A PNG written by a run here carries a graph this user ran: reopening it is like opening
    the graph file. The same picture with its graph edited by someone else is foreign again."""
    mine = layout / "mine" / "g.json"
    mine.parent.mkdir()
    mine.write_text(json.dumps({"format": "nodeflow.graph", "version": 1, "nodes": {
        "load": {"type": "image.Load", "inputs": {"path": str(layout / "secret" / "private.png")}},
        "save": {"type": "image.Save", "inputs": {"prefix": "render"}}},
        "links": [{"from": "load.image", "to": "save.image"}]}))
    out = layout / "renders"
    code, _out, err = cli(capsys, "run", str(mine), "--out", str(out), "-q")
    assert code == 0, err
    render = out / "render_00001.png"
    # Reopened from the picture (in a folder of its own, away from the secret): still runs.
    code, _out, err = cli(capsys, "run", str(render), "--out", str(layout / "again"), "-q")
    assert code == 0, err
    with Image.open(layout / "again" / "render_00001.png", formats=["PNG"]) as again:
        assert again.getpixel((0, 0)) == (255, 0, 0)
    # The same pixels with a graph that differs by one byte: restricted to its own folder.
    from nodeflow.provenance import graph_from_png

    text = graph_from_png(render).replace('"render"', '"renderX"')
    info = PngInfo()
    info.add_itxt("nodeflow", text)
    with Image.open(render, formats=["PNG"]) as picture:
        picture.save(layout / "renders" / "edited.png", pnginfo=info)
    code, _out, err = cli(capsys, "validate", str(layout / "renders" / "edited.png"))
    assert code == 2 and "outside the folders this graph may read" in err


def test_the_record_of_own_graphs_keeps_whole_records_and_stays_bounded(tmp_path, monkeypatch):
    from nodeflow import provenance

    monkeypatch.setenv("NODEFLOW_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setattr(provenance, "MAX_KNOWN_BYTES", 32 * 64)
    graphs = [json.dumps({"n": i}) for i in range(200)]
    for g in graphs:
        provenance.remember_graph(g)
    record = tmp_path / "data" / provenance.KNOWN_GRAPHS_FILE
    size = record.stat().st_size
    assert size % 32 == 0 and size <= 32 * 64 + 32
    assert (record.stat().st_mode & 0o777) == 0o600
    assert provenance.is_known_graph(graphs[-1]) and provenance.is_known_graph(graphs[-20])
    assert not provenance.is_known_graph(graphs[0])  # forgotten: the oldest went when it was trimmed
    assert not provenance.is_known_graph(json.dumps({"n": 1000}))
