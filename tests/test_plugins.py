"""The plugin story end to end: scaffold, install, discover, run, document."""

import json
import os
import subprocess
import sys

import pytest

from nodeflow.apidoc import api_reference
from nodeflow.cli import main
from nodeflow.errors import UsageError
from nodeflow.scaffold import scaffold_plugin

from .conftest import REPO


def test_scaffold_install_discover_and_its_own_test_passes(tmp_path):
    folder = scaffold_plugin("sparkle", tmp_path)
    site = tmp_path / "site"
    # A real pip install of the scaffolded package (beside nodeflow, not into its venv).
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
                    "--target", str(site), str(folder)], check=True, capture_output=True)
    env = {**os.environ, "PYTHONPATH": str(site)}
    listing = subprocess.run([sys.executable, "-m", "nodeflow", "nodes", "sparkle"], env=env,
                             capture_output=True, text=True, check=True).stdout
    assert "sparkle.Brightness" in listing
    plugins = json.loads(subprocess.run([sys.executable, "-m", "nodeflow", "plugins", "--json"],
                                        env=env, capture_output=True, text=True, check=True).stdout)
    info = next(p for p in plugins if p["name"] == "sparkle")
    assert (info["status"], info["version"], info["nodes"]) == ("loaded", "0.1.0", ["sparkle.Brightness"])
    tests = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                            str(folder / "tests")], env=env, capture_output=True, text=True,
                           cwd=tmp_path)
    assert tests.returncode == 0, tests.stdout + tests.stderr
    assert "2 passed" in tests.stdout


def test_scaffold_requirements_are_met_by_the_installed_nodeflow(tmp_path):
    # What `pip install -e ./sparkle` resolves, without an index: the nodeflow it requires is
    # the one already installed, so pip never looks for another distribution of that name.
    folder = scaffold_plugin("sparkle", tmp_path)
    resolve = subprocess.run([sys.executable, "-m", "pip", "install", "--dry-run", "--no-index",
                              "--no-build-isolation", str(folder)], capture_output=True, text=True)
    assert resolve.returncode == 0, resolve.stdout + resolve.stderr
    assert "Would install nodeflow-sparkle-0.1.0" in resolve.stdout
    assert "Would install nodeflow-0" not in resolve.stdout


def test_scaffold_refuses_bad_names_and_existing_folders(tmp_path):
    with pytest.raises(UsageError, match="lower-case"):
        scaffold_plugin("Bad-Name", tmp_path)
    scaffold_plugin("twice", tmp_path)
    with pytest.raises(UsageError, match="already exists"):
        scaffold_plugin("twice", tmp_path)


def test_plugins_command_lists_status_and_errors(tmp_path, capsys):
    (tmp_path / "fine.py").write_text(
        "from nodeflow.api import Node, Output, INT\n"
        "class One(Node):\n    id = 'fine.One'\n    outputs = (Output('v', INT),)\n"
        "    def run(self, ctx):\n        return 1\n")
    (tmp_path / "raises.py").write_text(
        "from nodeflow.api import Node\nclass Bad(Node):\n    id = 'no-dots-here'\n")
    assert main(["plugins", "--plugins", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    fine = next(line for line in out.splitlines() if line.startswith("fine "))
    assert "loaded" in fine and "1 nodes" in fine
    assert "raises" in out and "failed" in out and "must look like 'pack.Name'" in out


def test_example_plugin_is_installed_and_its_graph_runs(tmp_path, capsys):
    assert main(["nodes", "example"]) == 0
    assert "example.PaletteToImage" in capsys.readouterr().out
    assert main(["run", str(REPO / "graphs" / "plugin_example.json"), "--out", str(tmp_path), "-q"]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["palette_00001.png", "poster_00001.png"]


def test_missing_migration_is_reported_clearly(tmp_path, capsys):
    doc = {"format": "nodeflow.graph", "version": 1, "nodes": {
        "p": {"type": "example.ExtractPalette", "version": "0.3.0", "inputs": {}}}}
    path = tmp_path / "old.json"
    path.write_text(json.dumps(doc))
    assert main(["validate", str(path)]) == 2
    err = capsys.readouterr().err
    assert "saved with example.ExtractPalette 0.3.0" in err and "no migration" in err


def test_api_reference_in_docs_is_current():
    assert (REPO / "docs" / "plugin-api.md").read_text() == api_reference(), \
        "regenerate with: nodeflow plugin docs > docs/plugin-api.md"


def test_plugin_api_module_is_enough_for_a_plugin():
    import nodeflow.api as api

    for name in api.__all__:
        assert hasattr(api, name)
    assert {"Node", "Input", "Output", "SocketType", "NodeInputError", "API_VERSION"} <= set(api.__all__)
