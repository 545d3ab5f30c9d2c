"""Fixtures for the editor tests: a window on a registry with test-only nodes, isolated editor home."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from nodeflow.node import Input, Node, Output, RunContext
from nodeflow.registry import NodeRegistry, load_registry
from nodeflow.types import BOOL, FLOAT, IMAGE, INT

REPO = Path(__file__).resolve().parents[2]
DEMO = REPO / "graphs" / "image_effects.json"


class Steps(Node):
    """Counts slowly: many small steps, each reporting progress (a long run to cancel)."""

    id = "guitest.Steps"
    category = "test"
    inputs = (Input("steps", INT, "How many steps.", default=2000, min=1, max=100000),)
    outputs = (Output("count", FLOAT, "The steps taken."),)

    def run(self, ctx: RunContext, steps: int) -> Any:
        for i in range(steps):
            time.sleep(0.005)
            ctx.progress(i + 1, steps)
        return float(steps)


class Sampler(Node):
    """Pretends to sample: publishes a preview picture each step, then returns the last one."""

    id = "guitest.Sampler"
    category = "test"
    inputs = (Input("steps", INT, "Steps.", default=6, min=1, max=1000),
              Input("seed", INT, "The seed.", default=0, min=0, max=2**64 - 1, seed=True))
    outputs = (Output("image", IMAGE, "The picture."),)

    def run(self, ctx: RunContext, steps: int, seed: int) -> Any:
        import numpy as np

        image = np.zeros((1, 32, 48, 3), dtype=np.float32)
        for i in range(steps):
            image = np.full((1, 32, 48, 3), (i + 1) / steps, dtype=np.float32)
            ctx.preview(image)
            ctx.progress(i + 1, steps)
            time.sleep(0.1)
        return image


class Batch(Node):
    """A batch of plain pictures, one colour each (what a sampler with batch size > 1 gives)."""

    id = "guitest.Batch"
    category = "test"
    inputs = (Input("count", INT, "How many pictures.", default=4, min=1, max=64),)
    outputs = (Output("image", IMAGE, "The pictures."),)

    def run(self, ctx: RunContext, count: int) -> Any:
        import numpy as np

        image = np.zeros((count, 24, 32, 3), dtype=np.float32)
        for i in range(count):
            image[i, :, :, i % 3] = 0.25 + 0.75 * (i + 1) / count
        return image


class Fail(Node):
    """Fails while running when asked to (a run-time error, not a validation problem)."""

    id = "guitest.Fail"
    category = "test"
    inputs = (Input("fail", BOOL, "Fail when run.", default=True),)
    outputs = (Output("value", FLOAT, "One."),)
    output_node = True

    def run(self, ctx: RunContext, fail: bool) -> Any:
        if fail:
            raise ValueError("asked to fail")
        return 1.0


@pytest.fixture(scope="session")
def gui_registry() -> NodeRegistry:
    registry = load_registry(use_env=False)
    registry.register_module("guitest", [Steps, Sampler, Batch, Fail], "tests/gui/conftest.py")
    return registry


@pytest.fixture(autouse=True)
def editor_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "editor-home"
    monkeypatch.setenv("NODEFLOW_EDITOR_HOME", str(home))
    return home


@pytest.fixture
def make_window(qtbot: Any, gui_registry: NodeRegistry, editor_home: Path, tmp_path: Path) -> Any:
    from nodeflow.gui.window import MainWindow

    made = []

    def make(file: Path | None = None) -> MainWindow:
        window = MainWindow(gui_registry, home=editor_home, out_dir=tmp_path / "out", interactive=False)
        qtbot.addWidget(window)
        window.resize(1200, 800)
        window.show()
        qtbot.waitExposed(window)
        if file is not None:
            assert window.open_file(file)
        made.append(window)
        return window

    yield make
    for window in made:
        if window.runner is not None:
            window.runner.cancel()
            window.runner.wait()


@pytest.fixture
def window(make_window: Any) -> Any:
    return make_window()


@pytest.fixture
def demo_window(make_window: Any, tmp_path: Path) -> Any:
    """The demo graph, copied next to its picture so its relative path resolves."""
    import shutil

    folder = tmp_path / "graphs"
    shutil.copytree(REPO / "graphs", folder)
    return make_window(folder / "image_effects.json")


@pytest.fixture(autouse=True)
def empty_clipboard(qapp: Any) -> Any:
    """Leave the clipboard empty: Qt's offscreen platform crashes at exit if it holds data."""
    yield
    qapp.clipboard().clear()
