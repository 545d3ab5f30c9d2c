"""An installed (non-editable) nodeflow carries what a first run needs: the demo
graphs the editor and `make demo` start from, their picture assets, and the
shipped demo models."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def wheel_names(tmp_path_factory) -> set[str]:
    # build from a copy: setuptools writes build/ and *.egg-info into the tree it builds
    src = tmp_path_factory.mktemp("src") / "nodeflow"
    skip = shutil.ignore_patterns(".git", ".venv", "out", "build", "dist", "*.egg-info", "__pycache__", ".*_cache")
    shutil.copytree(ROOT, src, ignore=skip)
    out = tmp_path_factory.mktemp("wheel")
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(out), str(src)],
        capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    (whl,) = out.glob("nodeflow-*.whl")
    with zipfile.ZipFile(whl) as z:
        return set(z.namelist())


def test_wheel_ships_every_graph_and_asset(wheel_names):
    for path in sorted((ROOT / "graphs").glob("*.json")):
        assert f"nodeflow/graphs/{path.name}" in wheel_names, path.name
    for path in sorted((ROOT / "graphs" / "assets").glob("*.png")):
        assert f"nodeflow/graphs/assets/{path.name}" in wheel_names, path.name


def test_editor_finds_the_demo_graph_in_an_installed_package(wheel_names):
    # gui/window.demo_graph_path looks at <package>/gui/../graphs/demo.json
    assert "nodeflow/gui/window.py" in wheel_names
    assert "nodeflow/graphs/demo.json" in wheel_names


def test_wheel_ships_the_demo_models(wheel_names):
    models = ROOT / "nodeflow" / "demo" / "models"
    files = [p for p in models.rglob("*") if p.is_file() and "__pycache__" not in p.parts]
    assert files
    for path in files:
        assert "nodeflow/demo/models/" + path.relative_to(models).as_posix() in wheel_names, path


def test_wheel_carries_no_training_code(wheel_names):
    # the demo models are trained from a checkout (training/); only their weights and cards ship
    assert not [n for n in wheel_names if n.split("/")[0] == "training" or (n.startswith("nodeflow/demo/") and n.endswith(".py"))]
    assert "nodeflow/demo/models/checkpoints/nodeflow-shapes/README.md" in wheel_names
