"""Foreign plugin code at import: exiting, interrupting or hanging fails only that pack."""

from __future__ import annotations

import time

import pytest
from PIL import Image

from nodeflow.registry import load_registry

from .util import assert_clean_error, cli, cli_process, copy_graph, write_graph

PLUGINS = {
    "exits": "import sys\nsys.exit(0)\n",
    "exits_code": "raise SystemExit(3)\n",
    "interrupts": "raise KeyboardInterrupt\n",
}


@pytest.fixture
def plugin_dir(tmp_path):
    folder = tmp_path / "plugins"
    folder.mkdir()
    return folder


@pytest.mark.parametrize("name", sorted(PLUGINS))
def test_a_pack_that_exits_or_interrupts_at_import_fails_alone(plugin_dir, name):
    (plugin_dir / f"{name}.py").write_text(PLUGINS[name])
    registry = load_registry([plugin_dir], use_env=False)
    pack = next(p for p in registry.packs if p.name == name)
    assert pack.status == "failed"
    assert f"{name}.py:" in pack.error
    assert "image.Load" in registry  # the other packs loaded


def test_validate_of_an_invalid_graph_still_reports_beside_an_exiting_plugin(tmp_path, plugin_dir, capsys):
    (plugin_dir / "exits.py").write_text(PLUGINS["exits"])
    graph = write_graph(tmp_path / "g.json", {"a": {"type": "no.SuchNode", "inputs": {}}})
    code, _out, err = cli(capsys, "validate", str(graph), "--plugins", str(plugin_dir))
    assert code == 2
    assert "unknown node type 'no.SuchNode'" in err
    assert "node pack 'exits'" in err and "sys.exit(0)" in err


def test_run_still_writes_beside_an_exiting_plugin(tmp_path, plugin_dir):
    (plugin_dir / "exits.py").write_text(PLUGINS["exits"])
    Image.new("RGB", (8, 8)).save(tmp_path / "in.png")
    graph = copy_graph(tmp_path / "g.json", "in.png")
    proc = cli_process("run", str(graph), "--plugins", str(plugin_dir), "--out", str(tmp_path / "out"),
                       cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "out" / "out_00001.png").is_file()


def test_a_pack_hanging_at_import_is_named_and_skipped(tmp_path, plugin_dir):
    (plugin_dir / "hangs.py").write_text("import time\nwhile True:\n    time.sleep(0.05)\n")
    Image.new("RGB", (8, 8)).save(tmp_path / "in.png")
    graph = copy_graph(tmp_path / "g.json", "in.png")
    started = time.monotonic()
    proc = cli_process("run", str(graph), "--plugins", str(plugin_dir), "--out", str(tmp_path / "out"),
                       cwd=tmp_path, env={"NODEFLOW_PLUGIN_TIMEOUT": "2"}, timeout=60)
    assert time.monotonic() - started < 40
    assert proc.returncode == 0, proc.stderr
    assert "node pack 'hangs'" in proc.stderr and "still importing after 2 s" in proc.stderr
    assert (tmp_path / "out" / "out_00001.png").is_file()
    assert_clean_error(proc.stderr)
