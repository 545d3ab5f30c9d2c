"""graphs/upscale.json runs end to end with a tiny upscaler under the demo model's name."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from nodeflow.executor import Executor
from nodeflow.graph import Graph
from nodeflow.settings import Settings
from nodeflow.validate import GraphValidator

from .conftest import save_compact

GRAPHS = Path(__file__).resolve().parents[3] / "graphs"


def test_upscale_graph_saves_the_learned_and_the_bicubic_enlargement(torch_threads, registry,
                                                                     tmp_path):
    models = tmp_path / "models"
    save_compact(models / "upscale" / "nodeflow-shapes-4x.safetensors")
    settings = Settings(models_dirs=[models], out_dir=tmp_path / "out", base_dir=GRAPHS)
    graph = Graph.load(GRAPHS / "upscale.json")
    assert GraphValidator(registry, settings).validate(graph) == []
    result = Executor(registry, settings).run(graph)
    assert result.ok, result.failed
    names = sorted(p.name for p in result.files)
    assert names == ["bicubic_00001.png", "upscaled_00001.png"]
    with Image.open(GRAPHS / "assets" / "pattern.png") as im:
        width, height = im.size
    for path in result.files:
        with Image.open(path) as im:
            assert im.size == (width * 4, height * 4)
    up = np.asarray(Image.open(tmp_path / "out" / "upscaled_00001.png"))
    assert up.std() > 0


def test_txt2img_upscale_graph_wires_the_families_together(registry, tmp_path):
    """Validated only up to the model files (the diffusion checkpoint is the demo one)."""
    models = tmp_path / "models"
    save_compact(models / "upscale" / "nodeflow-shapes-4x.safetensors")
    settings = Settings(models_dirs=[models], out_dir=tmp_path / "out", base_dir=GRAPHS)
    graph = Graph.load(GRAPHS / "txt2img_upscale.json")
    problems = [p for p in GraphValidator(registry, settings).validate(graph)
                if p.location.node != "checkpoint"]
    assert problems == []
