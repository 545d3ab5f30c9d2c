"""The published ComfyUI workflows (outside this project): each imports, validates and runs.

The folder (``NODEFLOW_COMFY_WORKFLOWS``, default ``../shared/comfy-workflows`` beside the
checkout) is not shipped with nodeflow; these tests run where it exists.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from nodeflow.comfy import load_graph_any
from nodeflow.comfy.model_paths import add_comfy_models
from nodeflow.graph import Graph
from nodeflow.settings import Settings
from nodeflow.validate import GraphValidator

from .conftest import REAL_WORKFLOWS, start_picture

NAMES = ["default.json", "image2image.json", "lora.json", "inpaint_example.json", "esrgan_example.json",
         "controlnet_example.json", "sdxl_simple_example.json", "hiresfix_latent_workflow.json"]
PICTURES = ("example.png", "input.png", "scribble_input.png")

needs_workflows = pytest.mark.skipif(not (REAL_WORKFLOWS / "default.json").is_file(),
                                     reason=f"the published workflows are not in {REAL_WORKFLOWS}")


@pytest.fixture(scope="module")
def real_comfy_root(tmp_path_factory: Any) -> Path:
    """A ComfyUI folder with the demo models under the names the eight workflows use."""
    from nodeflow.comfy.demo_models import demo_models_folder

    root = tmp_path_factory.mktemp("ComfyUI")
    demo_models_folder([REAL_WORKFLOWS / n for n in NAMES], root / "models")
    for name in PICTURES:
        start_picture(root / "input" / name)
    return root


@needs_workflows
@pytest.mark.parametrize("name", NAMES)
def test_imports_and_validates_with_only_missing_models(name: str, registry: Any, tmp_path: Path) -> None:
    path = REAL_WORKFLOWS / name
    graph = load_graph_any(path, registry)
    settings = Settings(models_dirs=[tmp_path], base_dir=path.parent)
    problems = GraphValidator(registry, settings).validate(graph)
    assert problems, "the named models are absent, so they must be reported"
    assert {p.code for p in problems} == {"missing_file"}, [str(p) for p in problems]


@needs_workflows
@pytest.mark.parametrize("name", NAMES)
def test_validates_on_the_demo_models_under_its_names(name: str, registry: Any, real_comfy_root: Path) -> None:
    path = REAL_WORKFLOWS / name
    graph = load_graph_any(path, registry)
    settings = add_comfy_models(Settings(base_dir=path.parent), [str(real_comfy_root)])
    assert GraphValidator(registry, settings).validate(graph) == []


def shrink(graph: Graph) -> Graph:
    """The same workflow at toy size (64-pixel latents, a few steps), so a CPU runs it in seconds."""
    for node in graph:
        inputs = node.inputs
        if node.type == "diffusion.EmptyLatent":
            inputs.update(width=64, height=64)
        elif node.type in ("diffusion.KSampler", "diffusion.Sample"):
            inputs["steps"] = 2
        elif node.type == "diffusion.KSamplerAdvanced":
            # Keep a base -> refiner hand-over in the middle of a 4-step schedule.
            inputs["steps"] = 4
            if inputs.get("end_at_step", 10000) < 10000:
                inputs["end_at_step"] = 2
            if inputs.get("start_at_step", 0) > 0:
                inputs["start_at_step"] = 2
        elif node.type == "diffusion.LatentUpscale":
            inputs.update(width=96, height=96)
    return graph


@pytest.mark.slow
@needs_workflows
@pytest.mark.parametrize("name", NAMES)
def test_runs_to_a_picture_on_the_demo_models(name: str, registry: Any, real_comfy_root: Path,
                                              tmp_path: Path) -> None:
    from PIL import Image

    from nodeflow.executor import Executor

    path = REAL_WORKFLOWS / name
    graph = shrink(load_graph_any(path, registry))
    settings = add_comfy_models(Settings(out_dir=tmp_path / "out", base_dir=path.parent), [str(real_comfy_root)])
    result = Executor(registry, settings).run(graph)
    assert result.ok, result
    pictures = [Path(f) for f in result.files if str(f).endswith(".png")]
    assert pictures
    for picture in pictures:
        with Image.open(picture) as im:
            assert min(im.size) >= 64
