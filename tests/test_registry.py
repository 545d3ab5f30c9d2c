"""Node-pack discovery: entry points, plugin folders, broken and conflicting packs."""

import json
import subprocess
import sys
import textwrap

from nodeflow.registry import NodeRegistry, load_registry

GOOD = textwrap.dedent("""
    from nodeflow.node import Input, Node, Output
    from nodeflow.types import FLOAT

    class Double(Node):
        '''Twice the input.'''
        id = "{pack}.Double"
        inputs = (Input("x", FLOAT, "A number.", default=1.0),)
        outputs = (Output("y", FLOAT, "2x."),)

        def run(self, ctx, x):
            return 2 * x
""")


def test_builtin_packs_come_through_the_entry_point():
    registry = load_registry(use_env=False)
    builtin = {p.name: p for p in registry.packs}
    for name in ("value", "math", "image", "util"):
        assert builtin[name].status == "loaded"
        assert builtin[name].source.startswith(f"entry point {name} = nodeflow.nodes.{name}")
    assert registry.pack_of("image.Load") == "image"


def test_folder_plugins_load_and_a_broken_one_is_reported(tmp_path, monkeypatch):
    (tmp_path / "goodpack.py").write_text(GOOD.format(pack="goodpack"))
    (tmp_path / "brokenpack.py").write_text("import nothing_of_the_sort\n")
    pkg = tmp_path / "pkgpack"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("from .impl import Double\n")
    (pkg / "impl.py").write_text(GOOD.format(pack="pkgpack"))
    registry = load_registry([tmp_path], use_env=False)
    assert registry.get("goodpack.Double") is not None
    assert registry.get("pkgpack.Double") is not None
    broken = next(p for p in registry.packs if p.name == "brokenpack")
    assert broken.status == "failed"
    assert "ModuleNotFoundError" in broken.error and "brokenpack.py" in broken.error
    assert registry.get("image.Load") is not None  # everything else still loaded


def test_env_variable_names_plugin_folders(tmp_path, monkeypatch):
    (tmp_path / "envpack.py").write_text(GOOD.format(pack="envpack"))
    monkeypatch.setenv("NODEFLOW_PLUGINS", str(tmp_path))
    assert load_registry().get("envpack.Double") is not None
    assert load_registry(use_env=False).get("envpack.Double") is None


def test_same_id_in_two_packs_is_an_error_naming_both(tmp_path):
    (tmp_path / "a_first.py").write_text(GOOD.format(pack="shared"))
    (tmp_path / "b_second.py").write_text(GOOD.format(pack="shared"))
    registry = load_registry([tmp_path], use_env=False)
    second = next(p for p in registry.packs if p.name == "b_second")
    assert second.status == "failed"
    assert "'shared.Double'" in second.error and "a_first" in second.error and "b_second" in second.error
    assert registry.pack_of("shared.Double") == "a_first"


def test_incompatible_api_version_is_skipped_with_a_message(tmp_path):
    (tmp_path / "futurepack.py").write_text('NODEFLOW_API = ">=2,<3"\n' + GOOD.format(pack="futurepack"))
    registry = load_registry([tmp_path], use_env=False)
    info = next(p for p in registry.packs if p.name == "futurepack")
    assert info.status == "incompatible" and ">=2,<3" in info.error
    assert registry.get("futurepack.Double") is None


def test_installed_distribution_entry_point(tmp_path):
    """A pip-installed plugin: a distribution with an entry point in the nodeflow.nodes group."""
    site = tmp_path / "site"
    site.mkdir()
    (site / "epplugin.py").write_text(GOOD.format(pack="epplugin"))
    (site / "eprotten.py").write_text("raise RuntimeError('plugin exploded at import')\n")
    info = site / "nodeflow_epplugin-1.2.3.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: nodeflow-epplugin\nVersion: 1.2.3\n")
    (info / "entry_points.txt").write_text(
        "[nodeflow.nodes]\nepplugin = epplugin\neprotten = eprotten\n")
    code = ("import json, sys; from nodeflow.registry import load_registry; r = load_registry(); "
            "print(json.dumps([p.to_json() for p in r.packs]))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={"PYTHONPATH": str(site), "PATH": "/usr/bin:/bin"}).stdout
    packs = {p["name"]: p for p in json.loads(out)}
    assert packs["epplugin"]["status"] == "loaded" and packs["epplugin"]["version"] == "1.2.3"
    assert packs["epplugin"]["nodes"] == ["epplugin.Double"]
    assert packs["eprotten"]["status"] == "failed" and "plugin exploded" in packs["eprotten"]["error"]
    assert packs["image"]["status"] == "loaded"


def test_registering_a_non_node_is_refused():
    import pytest

    from nodeflow.errors import PluginError

    with pytest.raises(PluginError, match="not a node class"):
        NodeRegistry().register(dict)  # type: ignore[arg-type]
