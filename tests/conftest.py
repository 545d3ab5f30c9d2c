"""Test set-up: never reach for a model hub, render Qt offscreen, pin torch's threads."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
os.environ.pop("NODEFLOW_PLUGINS", None)
os.environ.pop("NODEFLOW_MODELS", None)
# nodeflow's per-user state (the record of graphs the user ran) goes to a folder of the run's own.
import atexit  # noqa: E402
import shutil  # noqa: E402
import tempfile  # noqa: E402

os.environ["NODEFLOW_DATA_DIR"] = tempfile.mkdtemp(prefix="nodeflow-data-")
atexit.register(shutil.rmtree, os.environ["NODEFLOW_DATA_DIR"], True)

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def registry():
    """The registry of installed node packs, as `nodeflow` loads it."""
    from nodeflow.registry import load_registry

    return load_registry(use_env=False)


@pytest.fixture
def torch_threads():
    """Pin torch to one thread so numbers compare exactly between runs."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
