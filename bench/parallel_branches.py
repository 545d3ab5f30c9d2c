"""Two independent CPU-heavy branches: concurrent against serial execution, in one run.

Each branch loads its own picture, enlarges it 2x with Lanczos, shrinks it back and
inverts it (Pillow and numpy release the GIL). Prints the median wall time of each
mode over alternated repetitions and their ratio (target on 2 cores: <= 0.65).
Usage: python bench/parallel_branches.py [SIZE] [REPEATS]
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from nodeflow.executor import Executor
from nodeflow.graph import Graph
from nodeflow.registry import load_registry


def build(folder: Path, size: int) -> Graph:
    graph = Graph()
    rng = np.random.default_rng(0)
    for side in ("left", "right"):
        path = folder / f"{side}.png"
        Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(path)
        graph.add_node("image.Load", f"{side}_load", {"path": str(path)})
        graph.add_node("image.ResizeBy", f"{side}_up", {"factor": 2.0, "method": "lanczos"})
        graph.add_node("image.ResizeBy", f"{side}_down", {"factor": 0.5, "method": "lanczos"})
        graph.add_node("image.Invert", f"{side}_invert")
        graph.connect(f"{side}_load.image", f"{side}_up.image")
        graph.connect(f"{side}_up.image", f"{side}_down.image")
        graph.connect(f"{side}_down.image", f"{side}_invert.image")
    return graph


def main() -> None:
    size = int(sys.argv[1]) if len(sys.argv) > 1 else 768
    repeats = int(sys.argv[2]) if len(sys.argv) > 2 else 5
    registry = load_registry(use_env=False)
    with tempfile.TemporaryDirectory() as tmp:
        graph = build(Path(tmp), size)
        outputs = ["left_invert", "right_invert"]
        times: dict[int, list[float]] = {1: [], 2: []}
        results = {}
        for _ in range(repeats):
            for workers in (1, 2):
                executor = Executor(registry, workers=workers)  # fresh cache each time
                start = time.perf_counter()
                result = executor.run(graph, outputs)
                times[workers].append(time.perf_counter() - start)
                results[workers] = result.outputs
        same = all(np.array_equal(results[1][n]["image"], results[2][n]["image"]) for n in outputs)
    serial, parallel = statistics.median(times[1]), statistics.median(times[2])
    print(f"two branches, {size}x{size} pictures, median of {repeats}")
    print(f"  serial (1 worker):      {serial:7.3f} s")
    print(f"  concurrent (2 workers): {parallel:7.3f} s")
    print(f"  ratio concurrent/serial: {parallel / serial:.2f}   outputs identical: {same}")


if __name__ == "__main__":
    main()
