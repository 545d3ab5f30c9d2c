"""Cache keys follow the files a graph reads: a changed file, or the same name found in
another folder, is never served an old result; a node's own fingerprint hook feeds its key."""

from __future__ import annotations

import os
import re
import threading
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from nodeflow.executor import Executor
from nodeflow.graph import Graph
from nodeflow.settings import Settings

from .helpers import make_registry

REG = make_registry()
REPO = Path(__file__).resolve().parent.parent


def picture(path: Path, colour: tuple[int, int, int]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (4, 4), colour).save(path)
    return path


def loader(path: str) -> Graph:
    g = Graph()
    g.add_node("image.Load", "load", {"path": path})
    g.add_node("image.Invert", "invert")
    g.connect("load.image", "invert.image")
    return g


def test_a_picture_rewritten_between_runs_is_read_again(tmp_path):
    path = picture(tmp_path / "in.png", (255, 0, 0))
    ex = Executor(REG, Settings(base_dir=tmp_path))
    g = loader("in.png")
    first = ex.run(g, ["invert"])
    assert first.outputs["invert"]["image"][0, 0, 0].tolist() == [0.0, 1.0, 1.0]
    assert ex.run(g, ["invert"]).ran == []  # unchanged file: served from the cache
    picture(path, (0, 0, 255))
    os.utime(path, ns=(1, 1))  # even with an older timestamp: the size or time differ
    again = ex.run(g, ["invert"])
    assert again.ran == ["load", "invert"]
    assert again.outputs["invert"]["image"][0, 0, 0].tolist() == [1.0, 1.0, 0.0]


def test_the_same_name_in_two_graph_folders_gives_two_results(tmp_path):
    picture(tmp_path / "a" / "in.png", (255, 0, 0))
    picture(tmp_path / "b" / "in.png", (0, 0, 255))
    ex = Executor(REG, Settings(base_dir=tmp_path / "a"))
    red = ex.run(loader("in.png"), ["load"]).outputs["load"]["image"]
    ex.settings = Settings(base_dir=tmp_path / "b")
    blue = ex.run(loader("in.png"), ["load"]).outputs["load"]["image"]
    assert red[0, 0, 0].tolist() == [1.0, 0.0, 0.0] and blue[0, 0, 0].tolist() == [0.0, 0.0, 1.0]


def test_a_file_rewritten_with_the_same_size_and_time_is_seen_by_a_content_hash(tmp_path):
    from nodeflow.cache import file_fingerprint

    path = tmp_path / "same.bin"
    path.write_bytes(b"aaaa")
    os.utime(path, ns=(5, 5))
    before = (file_fingerprint(path), file_fingerprint(path, content=True))
    path.write_bytes(b"bbbb")
    os.utime(path, ns=(5, 5))
    assert file_fingerprint(path) == before[0]  # size and time alone cannot tell
    assert file_fingerprint(path, content=True) != before[1]


def test_a_replaced_model_file_is_loaded_again(tmp_path, torch_threads):
    from nodeflow.models import ModelManager
    from tests.nodes.upscale.conftest import save_compact

    model = save_compact(tmp_path / "upscale" / "up.safetensors", scale=2, seed=1, feat=4, convs=1)
    picture(tmp_path / "in.png", (200, 100, 50))
    g = loader("in.png")
    g.add_node("upscale.LoadModel", "model", {"path": "up.safetensors"})
    g.add_node("upscale.Upscale", "up")
    g.connect("model.upscale_model", "up.upscale_model")
    g.connect("load.image", "up.image")
    models = ModelManager(devices=["cpu"])
    ex = Executor(REG, Settings(models_dirs=[tmp_path], base_dir=tmp_path), models=models)
    first = ex.run(g, ["up"]).outputs["up"]["image"]
    assert models.loads == 1
    assert ex.run(g, ["up"]).ran == []
    save_compact(model, scale=2, seed=2, feat=4, convs=1)
    result = ex.run(g, ["up"])
    assert "model" in result.ran and models.loads == 2
    assert not np.array_equal(result.outputs["up"]["image"], first)
    # The old contents are let go, not kept beside the new.
    assert [e.path.name for e in models.loaded() if e.path is not None] == ["up.safetensors"]


def guide_example() -> str:
    """The fingerprint example of the plugin guide, as written there."""
    text = (REPO / "docs" / "plugins.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    return next(b for b in blocks if "def fingerprint" in b)


@pytest.fixture
def web(tmp_path):
    """A real HTTP server on a loopback port, serving a folder."""
    folder = tmp_path / "site"
    folder.mkdir()
    handler = partial(SimpleHTTPRequestHandler, directory=str(folder))
    handler.log_message = lambda *a: None  # type: ignore[attr-defined]
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield folder, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_the_plugin_guides_fingerprint_example_runs_again_when_the_document_changes(web):
    from nodeflow.registry import load_registry

    folder, base = web
    namespace: dict = {"__name__": "sparkle_guide"}
    exec(compile(guide_example(), "docs/plugins.md", "exec"), namespace)  # noqa: S102
    registry = load_registry(use_env=False)
    registry.register_module("sparkle", [namespace["FetchText"]], "docs/plugins.md")
    (folder / "note.txt").write_text("first version")
    g = Graph()
    g.add_node("sparkle.FetchText", "fetch", {"url": f"{base}/note.txt"})
    ex = Executor(registry)
    assert ex.run(g, ["fetch"]).outputs["fetch"]["text"] == "first version"
    assert ex.run(g, ["fetch"]).ran == []  # the server has the same version: cached
    (folder / "note.txt").write_text("the second, longer version")
    result = ex.run(g, ["fetch"])
    assert result.ran == ["fetch"] and result.outputs["fetch"]["text"] == "the second, longer version"


def test_a_folder_with_a_dangling_link_or_a_fifo_still_tells_its_files_apart(tmp_path):
    """A model folder holding a broken link (which the loaders skip with a warning) or a FIFO
    still changes its fingerprint when one of its real files changes, and never blocks."""
    from nodeflow.cache import file_fingerprint

    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "weights.bin").write_bytes(b"aaaa")
    (folder / "gone.bin").symlink_to(tmp_path / "nowhere.bin")
    os.mkfifo(folder / "pipe")
    before = (file_fingerprint(folder), file_fingerprint(folder, content=True))
    assert "unreadable" not in before[0]
    (folder / "weights.bin").write_bytes(b"bbbbbb")
    after = (file_fingerprint(folder), file_fingerprint(folder, content=True))
    assert after[0] != before[0] and after[1] != before[1]
    assert file_fingerprint(folder) == after[0]  # and stable while nothing changes
