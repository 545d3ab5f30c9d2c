"""One local Ray for every test here (started on loopback, shut down after), tiny upscaler
checkpoints in a models folder, and a plugin whose node takes its time (to kill a worker
mid-job)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PICTURE = REPO / "graphs" / "assets" / "pattern.png"

SLOW_PLUGIN = '''
import time

from nodeflow.api import IMAGE, INT, Input, Node, Output


class Pause(Node):
    """Pass images through after a pause, reporting progress step by step."""

    id = "slowtest.Pause"
    inputs = (Input("image", IMAGE, "Images."),
              Input("steps", INT, "Pauses of 50 ms.", default=10, min=0))
    outputs = (Output("image", IMAGE, "The same images."),)

    def run(self, ctx, image, steps):
        for i in range(steps):
            time.sleep(0.05)
            ctx.progress(i + 1, steps)
        return image
'''


@pytest.fixture(scope="module")
def ray_cluster():
    """A local Ray with two CPUs, on loopback, for the module's tests."""
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             _node_ip_address="127.0.0.1")
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A models folder with four tiny, different Real-ESRGAN Compact upscalers (2×)."""
    import torch
    from safetensors.torch import save_file
    from spandrel.architectures.Compact import Compact

    root = tmp_path_factory.mktemp("models")
    (root / "upscale").mkdir()
    for i, name in enumerate("abcd"):
        torch.manual_seed(i)
        model = Compact(num_in_ch=3, num_out_ch=3, num_feat=8, num_conv=2, upscale=2)
        with torch.no_grad():
            for p in model.parameters():
                if p.ndim == 1:
                    p.uniform_(-0.1, 0.3)
        save_file({k: v.contiguous() for k, v in model.state_dict().items()},
                  str(root / "upscale" / f"tiny-{name}.safetensors"))
    return root


@pytest.fixture(scope="module")
def plugins_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("plugins")
    (root / "slowtest.py").write_text(SLOW_PLUGIN)
    return root


def write_graph(path: Path, nodes: dict, links: list[tuple[str, str]]) -> str:
    graph = {"format": "nodeflow.graph", "version": 1, "nodes": nodes,
             "links": [{"from": a, "to": b} for a, b in links]}
    path.write_text(json.dumps(graph, indent=2))
    return str(path)


@pytest.fixture
def upscale_graph(tmp_path: Path) -> str:
    """Load a picture (travels with each job), shrink it, upscale it with a chosen model."""
    return write_graph(tmp_path / "upscale.json", {
        "load": {"type": "image.Load", "inputs": {"path": "pattern.png"}},
        "small": {"type": "image.Resize", "inputs": {"width": 24, "height": 16}},
        "upscaler": {"type": "upscale.LoadModel", "inputs": {"path": "tiny-a.safetensors"}},
        "upscale": {"type": "upscale.Upscale", "inputs": {"tile": 512, "overlap": 8}},
        "save": {"type": "image.Save", "inputs": {"prefix": "up"}},
    }, [("load.image", "small.image"), ("small.image", "upscale.image"),
        ("upscaler.upscale_model", "upscale.upscale_model"), ("upscale.image", "save.image")])


@pytest.fixture
def picture_here(tmp_path: Path) -> Path:
    """The input picture next to the graph, named relatively as users do."""
    target = tmp_path / "pattern.png"
    target.write_bytes(PICTURE.read_bytes())
    return target
