"""Model placement under budgets: swaps with model-aware ordering against a naive order,
and peak RSS of a multi-model graph under a RAM budget.

Part 1: two chains that each use their own model, written interleaved in the file
(a1, b1, a2, b2, ...), run under a budget that holds one model. Prints loads to the
device, offloads and wall time, model-aware against plain file order, and a node's
plan-time memory estimate beside its measured peak.
Part 2 (in a subprocess per setting): three models loaded and used one after the
other, with and without a RAM budget of about one and a half models; prints the
peak RSS above the interpreter's baseline.
Usage: python bench/model_scheduling.py [MB_PER_MODEL]
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from safetensors.torch import save_file

from nodeflow.executor import Executor
from nodeflow.graph import Graph
from nodeflow.models import ModelManager, estimate_file_bytes
from nodeflow.node import Input, MemoryEstimate, Node, Output, ValueEstimate
from nodeflow.registry import load_registry
from nodeflow.types import FLOAT, STRING, SocketType

WEIGHTS = SocketType("BENCH_WEIGHTS", description="A matrix stack (benchmark).")


def make(width: int, layers: int, seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torch.nn.Sequential(*[torch.nn.Linear(width, width, bias=False) for _ in range(layers)])


class LoadWeights(Node):
    """Load a benchmark model."""

    id = "bench.LoadWeights"
    inputs = (Input("path", STRING, "File."),)
    outputs = (Output("model", WEIGHTS, "Model."),)

    @classmethod
    def estimate_memory(cls, values, upstream, ctx):
        size = estimate_file_bytes(Path(values["path"]), ctx.dtype("bench"))
        model = ValueEstimate({Path(values["path"]).name: size})
        return MemoryEstimate(dict(model.models), outputs={"model": model})

    def run(self, ctx, path):
        from safetensors.torch import load_file

        def loader(p):
            state = load_file(str(p))
            width = state["0.weight"].shape[0]
            with torch.device("meta"):  # no throw-away random weights
                model = make(width, len(state), 0)
            model.load_state_dict(state, assign=True)
            return model

        return ctx.models.load(Path(path), loader, kind="bench")


class Apply(Node):
    """Push a vector through the model (on the accelerator)."""

    id = "bench.Apply"
    uses_accelerator = True
    inputs = (Input("model", WEIGHTS, "Model."), Input("x", FLOAT, "Input.", default=1.0))
    outputs = (Output("y", FLOAT, "Output."),)

    def run(self, ctx, model, x):
        with ctx.models.use(model) as device, torch.no_grad():
            width = model[0].weight.shape[0]
            v = torch.full((8, width), float(x), device=device)
            return float(model(v).tanh().mean())


def registry():
    reg = load_registry(use_env=False)
    reg.register_module("bench", [LoadWeights, Apply], "bench/model_scheduling.py")
    return reg


def write_models(folder: Path, mb: int, count: int) -> list[str]:
    width = 1024
    layers = max(1, mb * 1024 * 1024 // (width * width * 4))
    paths = []
    for i in range(count):
        path = folder / f"model{i}.safetensors"
        save_file({k: v.contiguous() for k, v in make(width, layers, i + 1).state_dict().items()}, str(path))
        paths.append(str(path))
    return paths


def interleaved(paths: list[str], steps: int) -> tuple[Graph, list[str]]:
    g = Graph()
    for i, path in enumerate(paths):
        g.add_node("bench.LoadWeights", f"load{i}", {"path": path})
    for step in range(steps):
        for i in range(len(paths)):
            node = f"m{i}_{step}"
            g.add_node("bench.Apply", node)
            g.connect(f"load{i}.model", f"{node}.model")
            if step:
                g.connect(f"m{i}_{step - 1}.y", f"{node}.x")
    return g, [f"m{i}_{steps - 1}" for i in range(len(paths))]


def swaps(mb: int) -> None:
    reg = registry()
    with tempfile.TemporaryDirectory() as tmp:
        paths = write_models(Path(tmp), mb, 2)
        graph, outputs = interleaved(paths, 6)
        size = Path(paths[0]).stat().st_size
        print(f"two models of {size / 1e6:.0f} MB, 6 steps each, budget for one model:")
        results = {}
        for aware in (False, True, False, True):
            models = ModelManager(["cpu"], vram_budget=int(size * 1.5))
            start = time.perf_counter()
            result = Executor(reg, models=models, workers=1, model_aware=aware).run(graph, outputs)
            wall = time.perf_counter() - start
            results[aware] = result.outputs
            label = "model-aware order" if aware else "file order       "
            print(f"  {label}: {models.onloads:2d} loads to device, {models.offloads:2d} offloads, "
                  f"{models.loads} reads from disk, {wall:6.3f} s")
        print(f"  outputs identical: {results[True] == results[False]}")
        memory = models.node_memory["m0_0"]
        print(f"  m0_0: plan-time estimate {memory.estimate.total / 1e6:.1f} MB, measured peak "
              f"{memory.peak / 1e6:.1f} MB")


RSS_CHILD = """
import json, sys, threading, time
import psutil
sys.path.insert(0, {bench!r})
from model_scheduling import registry, interleaved
from nodeflow.executor import Executor
from nodeflow.models import ModelManager
import torch
paths = {paths!r}
graph, outputs = interleaved(paths, 2)
proc = psutil.Process()
base = proc.memory_info().rss
peak = [base]
done = threading.Event()
def sample():
    while not done.is_set():
        peak[0] = max(peak[0], proc.memory_info().rss)
        time.sleep(0.002)
thread = threading.Thread(target=sample)
thread.start()
models = ModelManager(["cpu"], vram_budget={vram}, ram_budget={ram})
result = Executor(registry(), models=models, workers=1).run(graph, outputs)
done.set()
thread.join()
assert result.ok, result.failed
print(json.dumps({{"rss_kb": (peak[0] - base) / 1024, "loads": models.loads, "drops": models.drops}}))
"""


def rss(mb: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        paths = write_models(Path(tmp), mb, 3)
        size = Path(paths[0]).stat().st_size
        print(f"three models of {size / 1e6:.0f} MB used in turn; peak RSS above start-up:")
        for label, ram in (("no RAM budget      ", None), ("RAM budget 1.5 models", int(size * 1.5))):
            code = RSS_CHILD.format(bench=str(Path(__file__).parent), paths=paths,
                                    vram=int(size * 1.5), ram=ram)
            out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
            data = json.loads(out.stdout.strip().splitlines()[-1])
            limit = f" (budget + one model = {(ram + size) / 1e6:.0f} MB)" if ram else ""
            print(f"  {label}: {data['rss_kb'] / 1e3:7.0f} MB, {data['loads']} reads, "
                  f"{data['drops']} dropped{limit}")


if __name__ == "__main__":
    mb = int(sys.argv[1]) if len(sys.argv) > 1 else 64
    swaps(mb)
    rss(mb)
