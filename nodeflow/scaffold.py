"""`nodeflow plugin new NAME`: a working plugin package that passes its own test at once."""

from __future__ import annotations

import re
from pathlib import Path

from nodeflow import __version__
from nodeflow.errors import UsageError
from nodeflow.registry import API_VERSION

_NAME = re.compile(r"^[a-z][a-z0-9_]*$")

PYPROJECT = '''[build-system]
requires = ["setuptools>=68"]
build-backend = "setuptools.build_meta"

[project]
name = "nodeflow-{name}"
version = "0.1.0"
description = "{title} nodes for nodeflow"
requires-python = ">=3.11"
dependencies = ["nodeflow>={nodeflow_min}"]

[project.optional-dependencies]
test = ["pytest"]

# nodeflow finds node packs through this entry-point group.
[project.entry-points."nodeflow.nodes"]
{name} = "nodeflow_{name}"

[tool.setuptools]
packages = ["nodeflow_{name}"]
'''

MODULE = '''"""{title} nodes for nodeflow."""

from __future__ import annotations

from typing import Any

from nodeflow.api import FLOAT, IMAGE, Input, Node, Output, RunContext

__version__ = "0.1.0"
NODEFLOW_API = ">={api_major}.0,<{next_major}"
"""The nodeflow plugin API versions this pack works with."""


class Brightness(Node):
    """Make images brighter or darker by adding an amount to every channel."""

    id = "{name}.Brightness"
    version = "1.0.0"
    category = "{name}"
    inputs = (
        Input("image", IMAGE, "The images to change."),
        Input("amount", FLOAT, "How much to add (-1 to 1).", default=0.1, min=-1.0, max=1.0,
              step=0.05),
    )
    outputs = (Output("image", IMAGE, "The changed images."),)

    def run(self, ctx: RunContext, image: Any, amount: float) -> Any:
        return (image + amount).clip(0.0, 1.0)
'''

TEST = '''import numpy as np

from nodeflow.testing import registry_with, run_node
from nodeflow_{name} import Brightness


def test_brightness_adds_and_clips():
    image = np.full((1, 4, 4, 3), 0.5, dtype=np.float32)
    out = run_node(Brightness, image=image, amount=0.25)["image"]
    assert np.allclose(out, 0.75)
    out = run_node(Brightness, image=image, amount=1.0)["image"]
    assert np.allclose(out, 1.0)


def test_the_pack_is_installed_and_loads():
    registry = registry_with()  # every installed pack, as nodeflow loads them
    assert registry.get("{name}.Brightness") is Brightness
    pack = next(p for p in registry.packs if p.name == "{name}")
    assert pack.status == "loaded", pack.error
'''

README = '''# nodeflow-{name}

{title} nodes for [nodeflow](https://nodeflow.dev).

```sh
pip install -e ".[test]"     # into the same environment as nodeflow
nodeflow nodes {name}         # the new node types are listed
pytest                         # the pack's tests
```
'''


def scaffold_plugin(name: str, parent: Path) -> Path:
    """Write the plugin package ``nodeflow-NAME`` into ``parent/NAME``; return its folder."""
    if not _NAME.fullmatch(name):  # fullmatch: "$" would accept a trailing newline
        raise UsageError(f"plugin name {name!r} must be lower-case letters, digits and '_', "
                         "starting with a letter (it becomes the node id prefix)")
    folder = parent / name
    if folder.exists():
        raise UsageError(f"{folder} already exists; choose another name or folder")
    major = int(API_VERSION.split(".")[0])
    # The package requires the nodeflow release that wrote it, not its plugin API version
    # (NODEFLOW_API says that): a requirement no installed nodeflow meets sends pip to
    # the package index for another distribution of that name.
    release = ".".join(__version__.split(".")[:2])
    values = {"name": name, "title": name.replace("_", " ").title(), "api_major": major,
              "next_major": major + 1, "nodeflow_min": release}
    files = {
        "pyproject.toml": PYPROJECT,
        f"nodeflow_{name}/__init__.py": MODULE,
        "tests/test_nodes.py": TEST,
        "README.md": README,
    }
    for rel, template in files.items():
        path = folder / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(template.format(**values))
    return folder
