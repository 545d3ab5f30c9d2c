"""The command line itself: devices that are not there, `python -m nodeflow` beside a stray
module, every refusal an exit code without a traceback."""

from __future__ import annotations

import pytest
from PIL import Image

from .util import assert_clean_error, cli, cli_process, copy_graph, write_graph


@pytest.fixture
def graph(tmp_path):
    Image.new("RGB", (8, 8)).save(tmp_path / "in.png")
    return copy_graph(tmp_path / "g.json", "in.png")


@pytest.mark.parametrize("devices,fragment", [
    ("cuda:7", "device cuda:7 is not available"),
    ("cuda", "device cuda:0 is not available"),
    ("cpu,cuda:1", "device cuda:1 is not available"),
    ("gpu0", "unknown device 'gpu0'"),
    ("cuda:99999999999999999999", "unknown device"),
])
def test_devices_that_are_not_there_are_usage_errors(graph, tmp_path, capsys, devices, fragment):
    code, _out, err = cli(capsys, "run", str(graph), "--devices", devices, "--out", str(tmp_path / "out"))
    assert code == 2
    assert fragment in err and ("--devices cpu" in err or "use cpu" in err)
    assert_clean_error(err)
    assert not (tmp_path / "out").exists()


def test_python_m_nodeflow_ignores_a_networkx_py_in_the_current_folder(tmp_path):
    (tmp_path / "networkx.py").write_text("raise SystemExit('the stray networkx.py was imported')\n")
    cyclic = write_graph(tmp_path / "cycle.json", {
        "a": {"type": "image.Invert", "inputs": {}},
        "b": {"type": "image.Invert", "inputs": {}},
    }, (("a.image", "b.image"), ("b.image", "a.image")))
    proc = cli_process("validate", str(cyclic), cwd=tmp_path)
    assert "stray networkx.py" not in proc.stderr
    assert proc.returncode == 2
    assert "the graph has a cycle: a -> b -> a" in proc.stderr
