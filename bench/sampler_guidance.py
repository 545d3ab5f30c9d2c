"""Guidance interval and rescale on the demo model: accuracy against diversity.

For N prompts of the demo world (held-out seed), each picture is generated through a nodeflow
graph (text encode → sampler → decode) with:

- ``cfg 1``: no guidance;
- ``cfg 7.5``: guidance at every step;
- ``cfg 7.5, t < 500``: guidance only at timesteps below 500 (``guidance_max_t`` 500);
- ``cfg 7.5, rescale 0.7``: guidance everywhere, rescaled.

Accuracy: the fraction of pictures whose shape colour, background colour and shape kind match
the prompt (``training.evaluate.analyse``). Diversity: the spread of where the shape is
and how big (standard deviations of its centre x, centre y and extent, root-sum-squared) as a
fraction of the same spread in the training world's scenes (1.0: as varied as the world).

Usage: python bench/sampler_guidance.py [--n 32] [--steps 25] [--node sample,ksampler]
       [--threads 2]
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from training import evaluate, world  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
SEED = 777  # held out: training uses seeds 0..10 and 1000+
SETTINGS = {
    "cfg 1": {"cfg": 1.0},
    "cfg 7.5": {"cfg": 7.5},
    "cfg 7.5, t < 500": {"cfg": 7.5, "guidance_max_t": 500.0},
    "cfg 7.5, rescale 0.7": {"cfg": 7.5, "guidance_rescale": 0.7},
}


def world_spread(n: int = 4000) -> float:
    """Root-sum-squared std of shape centre x, y and extent (pixels) over the world's scenes."""
    rng = np.random.default_rng(SEED)
    scenes = [world.sample_scene(rng) for _ in range(n)]
    stats = np.array([(s.cx * 64, s.cy * 64, s.radius * 128) for s in scenes])
    return float(np.sqrt((stats.std(axis=0) ** 2).sum()))


def spread(images: list[np.ndarray]) -> float:
    stats = []
    for image in images:
        bbox = evaluate.analyse((image * 255).round().astype(np.uint8)).bbox
        if bbox is not None:
            x0, y0, x1, y1 = bbox
            stats.append(((x0 + x1) / 2, (y0 + y1) / 2, max(x1 - x0, y1 - y0)))
    if len(stats) < 2:
        return 0.0
    return float(np.sqrt((np.array(stats).std(axis=0) ** 2).sum()))


def graph_for(node: str, text: str, seed: int, steps: int, values: dict):
    from nodeflow.graph import Graph

    graph = Graph.load(REPO / "graphs" / "txt2img.json")
    graph.set_input("positive", "text", text)
    if node == "sample":
        for key, value in {"seed": seed, "steps": steps, "sampler": "ddim", **values}.items():
            graph.set_input("sampler", key, value)
        return graph
    graph.remove_node("sampler")
    graph.add_node("diffusion.KSampler", "sampler", {"seed": seed, "steps": steps, "sampler_name": "euler",
                                                     "scheduler": "normal", **values})
    for src, dst in (("checkpoint.model", "model"), ("positive.conditioning", "positive"),
                     ("negative.conditioning", "negative"), ("latent.latent", "latent_image")):
        graph.connect(src, f"sampler.{dst}")
    graph.connect("sampler.latent", "decode.latent")
    return graph


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=32)
    parser.add_argument("--steps", type=int, default=25)
    parser.add_argument("--node", default="sample,ksampler")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()

    import torch

    from nodeflow.executor import Executor
    from nodeflow.registry import load_registry
    from nodeflow.settings import Settings

    torch.set_num_threads(args.threads)
    executor = Executor(load_registry(use_env=False), Settings(base_dir=REPO / "graphs"))
    scenes = evaluate.prompts(args.n, SEED)
    reference = world_spread()
    print(f"{args.n} prompts, {args.steps} steps; world spread {reference:.1f} px")
    print(f"{'node':9} {'setting':22} {'colour':>7} {'backgr':>7} {'shape':>7} {'all':>7} "
          f"{'diversity':>9} {'s/pic':>6}")
    for node in args.node.split(","):
        for name, values in SETTINGS.items():
            start = time.perf_counter()
            images = []
            for i, scene in enumerate(scenes):
                graph = graph_for(node, world.caption(scene), SEED + i, args.steps, values)
                result = executor.run(graph, ["decode"])
                if not result.ok:
                    raise SystemExit(f"{node} {name}: {result.failed}")
                images.append(result.outputs["decode"]["image"][0])
            took = (time.perf_counter() - start) / len(scenes)
            pictures = [(im * 255).round().astype(np.uint8) for im in images]
            acc = evaluate.score(scenes, pictures)["accuracy"]
            print(f"{node:9} {name:22} {acc['colour']:7.2f} {acc['background']:7.2f} "
                  f"{acc['shape']:7.2f} {acc['all']:7.2f} {spread(images) / reference:9.2f} "
                  f"{took:6.2f}", flush=True)


if __name__ == "__main__":
    main()
