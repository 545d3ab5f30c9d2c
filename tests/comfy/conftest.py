"""Fixtures for the ComfyUI import tests: the registry, hand-made workflows, a ComfyUI folder."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from nodeflow.registry import NodeRegistry, load_registry

FIXTURES = Path(__file__).resolve().parent / "fixtures"
REAL_WORKFLOWS = Path(os.environ.get("NODEFLOW_COMFY_WORKFLOWS",
                                     Path(__file__).resolve().parents[3] / "shared" / "comfy-workflows"))
"""Published ComfyUI workflows (not part of this project: their licence differs); tests that
read them run where the folder exists."""


@pytest.fixture(scope="session")
def registry() -> NodeRegistry:
    return load_registry(use_env=False)


def start_picture(path: Path, size: int = 64) -> Path:
    """A picture with a transparent corner (ComfyUI's LoadImage makes transparency the mask)."""
    import numpy as np
    from PIL import Image

    rgba = np.zeros((size, size, 4), dtype=np.uint8)
    rgba[..., 2] = 200
    rgba[size // 4: 3 * size // 4, size // 4: 3 * size // 4, 0] = 230
    rgba[..., 3] = 255
    rgba[: size // 2, : size // 2, 3] = 0
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rgba, "RGBA").save(path)
    return path


@pytest.fixture(scope="session")
def comfy_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A ComfyUI folder: models/ holding the demo models under the fixtures' names, input/ a picture."""
    from nodeflow.comfy.demo_models import demo_models_folder

    root = tmp_path_factory.mktemp("comfy") / "ComfyUI"
    demo_models_folder(sorted(FIXTURES.glob("*.json")), root / "models")
    start_picture(root / "input" / "start.png")
    return root
