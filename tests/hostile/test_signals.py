"""SIGTERM and SIGHUP are handled like Ctrl-C: the run is cancelled, nothing half-written is
left, and the exit code says which signal (143, 129, 130)."""

from __future__ import annotations

import os
import signal
import subprocess
import time

import pytest

from tests.child_signals import default_signals

from .util import PYTHON, write_graph

SLOW_PACK = """
import time
import numpy as np
from nodeflow.node import Node, Output
from nodeflow.types import IMAGE

class SlowPicture(Node):
    id = "slowpack.SlowPicture"
    outputs = (Output("image", IMAGE),)

    def run(self, ctx):
        for i in range(3000):
            time.sleep(0.01)
            ctx.progress(i, 3000)
        return np.zeros((1, 64, 64, 3), dtype=np.float32)


class ManyPictures(Node):
    id = "slowpack.ManyPictures"
    outputs = (Output("image", IMAGE),)

    def run(self, ctx):
        rng = np.random.default_rng(0)  # noise compresses badly: each picture takes a while to write
        return rng.random((48, 384, 384, 3), dtype=np.float32)


class Stubborn(Node):
    # Does not look at cancellation for a long while.

    id = "slowpack.Stubborn"
    outputs = (Output("image", IMAGE),)

    def run(self, ctx):
        time.sleep(20)
        return np.zeros((1, 64, 64, 3), dtype=np.float32)
"""


@pytest.fixture
def slow_run(tmp_path):
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    (plugins / "slowpack.py").write_text(SLOW_PACK)
    graph = write_graph(tmp_path / "g.json", {
        "slow": {"type": "slowpack.SlowPicture", "inputs": {}},
        "save": {"type": "image.Save", "inputs": {"prefix": "pic"}},
    }, (("slow.image", "save.image"),))
    out = tmp_path / "out"
    out.mkdir()

    def start(node: str = "slowpack.SlowPicture", prefix: tuple[str, ...] = (),
              wait_for: str = "running") -> subprocess.Popen[str]:
        text = graph.read_text().replace("slowpack.SlowPicture", node)
        graph.write_text(text)
        proc = subprocess.Popen([*prefix, PYTHON, "-m", "nodeflow", "run", str(graph), "--plugins",
                                 str(plugins), "--out", str(out)], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"},
                                preexec_fn=default_signals)
        deadline = time.monotonic() + 60
        line = ""
        assert proc.stderr is not None
        while wait_for not in line and time.monotonic() < deadline:
            line = proc.stderr.readline()
        time.sleep(0.3)
        return proc

    return start, out


@pytest.mark.parametrize("sig,code", [(signal.SIGTERM, 143), (signal.SIGHUP, 129), (signal.SIGINT, 130)])
def test_signal_cancels_the_run_cleanly(slow_run, sig, code):
    start, out = slow_run
    proc = start()
    proc.send_signal(sig)
    started = time.monotonic()
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == code, err
    assert time.monotonic() - started < 10
    assert "cancelled" in err and "Traceback" not in err
    assert list(out.iterdir()) == []  # no picture, no hidden temporary file


def test_an_ignored_sighup_stays_ignored(slow_run):
    """`nohup nodeflow run ...` keeps running when the terminal hangs up."""
    start, out = slow_run
    proc = start(prefix=("nohup",))
    proc.send_signal(signal.SIGHUP)
    time.sleep(1.0)
    assert proc.poll() is None
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 143, err


def test_a_second_sigterm_stops_at_once(slow_run):
    start, out = slow_run
    proc = start("slowpack.Stubborn")
    proc.send_signal(signal.SIGTERM)
    time.sleep(1.0)
    assert proc.poll() is None  # the node does not look at the cancel request
    proc.send_signal(signal.SIGTERM)
    started = time.monotonic()
    _, err = proc.communicate(timeout=30)
    assert time.monotonic() - started < 5
    assert proc.returncode == 143, err
    assert "Traceback" not in err
    assert list(out.iterdir()) == []


def test_sigterm_outside_a_run_still_exits_with_its_code(tmp_path):
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    # A pack that takes long to import: the signal arrives before any run starts.
    (plugins / "slowimport.py").write_text("import time\ntime.sleep(30)\n")
    graph = write_graph(tmp_path / "g.json", {"v": {"type": "value.Int", "inputs": {"value": 1}}})
    proc = subprocess.Popen([PYTHON, "-m", "nodeflow", "validate", str(graph), "--plugins", str(plugins)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(3)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 143
    assert "interrupted" in err and "Traceback" not in err


def test_editor_exits_with_143_on_sigterm(tmp_path):
    graph = write_graph(tmp_path / "g.json", {"v": {"type": "value.Int", "inputs": {"value": 1}}})
    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen", "NODEFLOW_EDITOR_HOME": str(tmp_path / "home")}
    proc = subprocess.Popen([PYTHON, "-m", "nodeflow", "edit", str(graph)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        time.sleep(6)  # let the window come up
        assert proc.poll() is None
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 143, err
    assert "Traceback" not in err


def test_sigterm_while_saving_leaves_only_whole_pictures(slow_run):
    from PIL import Image

    start, out = slow_run
    proc = start("slowpack.ManyPictures", wait_for="save (image.Save) running")
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, err
    names = sorted(p.name for p in out.iterdir())
    assert not any(name.startswith(".") or name.endswith(".tmp") for name in names), names
    assert len(names) < 48  # it stopped early
    for name in names:
        with Image.open(out / name) as picture:
            picture.load()  # whole files only
