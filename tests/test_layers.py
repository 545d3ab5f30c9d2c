"""The layers hold: packs use only nodeflow.api, nothing but a pack imports a pack, the editor
uses the engine's public surface, and the engine's modules import only downwards, front ends on
top and errors at the bottom (the import-linter contracts in pyproject.toml)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
FOLDERS = {"nodeflow": "nodeflow", "nodeflow/nodes": "nodes", "nodeflow/gui": "gui"}
"""Where each part of the installed package tree lives in the repository (see setup.py)."""


def installed_tree(root: Path) -> Path:
    """The package tree as installed (nodes/ and gui/ inside nodeflow/), made of links to the
    repository's files: import-linter reads a package from one folder."""
    for target, folder in FOLDERS.items():
        (root / target).mkdir(parents=True, exist_ok=True)
        for entry in (REPO / folder).iterdir():
            if entry.name != "__pycache__" and not (root / target / entry.name).exists():
                (root / target / entry.name).symlink_to(entry)
    return root


def lint_imports(root: Path) -> tuple[int, str]:
    """Run the contracts of pyproject.toml on the tree at ``root``; (exit code, report)."""
    program = shutil.which("lint-imports", path=str(Path(sys.executable).parent)) or "lint-imports"
    env = {**os.environ, "PYTHONPATH": str(root)}
    done = subprocess.run([program, str(REPO / "pyproject.toml"), "--no-cache"], cwd=root, env=env,
                          capture_output=True, text=True, timeout=300)
    return done.returncode, done.stdout + done.stderr


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return installed_tree(tmp_path_factory.mktemp("installed"))


def test_the_layer_contracts_are_kept(tree: Path) -> None:
    code, report = lint_imports(tree)
    assert code == 0, report
    assert "Contracts: 4 kept, 0 broken." in report, report


def test_every_engine_module_has_a_layer() -> None:
    """A new engine module is placed in the layers, so the order covers all of the engine."""
    contracts = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["importlinter"]["contracts"]
    (engine,) = [c for c in contracts if c["id"] == "engine"]
    placed = [name.strip() for layer in engine["layers"] for name in re.split(r"[:|]", layer)]
    modules = {f"nodeflow.{f.stem}" for f in (REPO / "nodeflow").glob("*.py") if f.stem != "__init__"}
    packages = {f"nodeflow.{d.name}" for d in (REPO / "nodeflow").iterdir() if (d / "__init__.py").is_file()}
    assert len(placed) == len(set(placed)), placed
    assert sorted(modules | packages | {"nodeflow.gui"}) == sorted(placed)


CYCLES = """
import grimp

graph = grimp.build_graph("nodeflow", cache_dir=None, exclude_type_checking_imports=True)
engine = sorted(m for m in graph.modules if not m.startswith("nodeflow.nodes"))
for module in engine:
    for imported in sorted(graph.find_modules_directly_imported_by(module)):
        back = graph.find_shortest_chain(importer=imported, imported=module)
        if back and not imported.startswith("nodeflow.nodes"):
            print(" -> ".join((module, *back)))
"""


def test_no_engine_module_is_in_an_import_cycle(tree: Path) -> None:
    """No chain of imports leads from an engine or editor module back to itself, imports inside
    functions included (imports for type checks only are left out: they do not run)."""
    env = {**os.environ, "PYTHONPATH": str(tree)}
    done = subprocess.run([sys.executable, "-c", CYCLES], cwd=tree, env=env, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "", f"import cycles:\n{done.stdout}"


def test_each_contract_catches_its_violation(tree: Path, tmp_path: Path) -> None:
    planted = installed_tree(tmp_path / "planted")
    # A pack reaching past the API, the engine importing a pack, the editor reaching the model
    # manager: each breaks exactly its contract.
    (planted / "nodeflow/nodes/zz_pack.py").write_text("from nodeflow.models import ModelManager\n")
    (planted / "nodeflow/zz_engine.py").write_text("import nodeflow.nodes.image\n")
    (planted / "nodeflow/gui/zz_editor.py").write_text("from nodeflow.scheduler import Job\n")
    # The bottom layer reaching up to the executor (the link is replaced, the repository's file kept).
    settings = planted / "nodeflow/settings.py"
    text = settings.read_text()
    settings.unlink()
    settings.write_text(text + "\nfrom nodeflow.executor import Executor\n")
    code, report = lint_imports(planted)
    assert code != 0
    assert "Contracts: 0 kept, 4 broken." in report, report
    assert "nodeflow.settings is not allowed to import nodeflow.executor" in report, report
    assert "nodeflow.nodes.zz_pack -> nodeflow.models" in report, report
    assert "nodeflow.zz_engine -> nodeflow.nodes.image" in report, report
    assert "nodeflow.gui.zz_editor -> nodeflow.scheduler" in report, report


def test_a_planted_cycle_is_found(tmp_path: Path) -> None:
    # files, below settings, importing settings inside a function: a lazy cycle
    planted = installed_tree(tmp_path / "planted")
    files = planted / "nodeflow/files.py"
    text = files.read_text()
    files.unlink()
    files.write_text(text + "\n\ndef later() -> None:\n    import nodeflow.settings\n")
    done = subprocess.run([sys.executable, "-c", CYCLES], cwd=planted, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(planted)}, timeout=300)
    assert "nodeflow.files -> nodeflow.settings -> nodeflow.files" in done.stdout, done.stdout + done.stderr
