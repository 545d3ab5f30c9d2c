"""ComfyUI import: time to convert each published workflow, and a full run of default.json.

For each workflow in the folder (``NODEFLOW_COMFY_WORKFLOWS``, default the shared
``comfy-workflows`` beside the checkout): the median time of reading + converting it
(``load_graph_any``) and of validating the result, over REPEAT runs. Then the end-to-end
time of ``nodeflow run default.json`` as it is (512x512, 20 steps, euler/normal) on the demo
checkpoint linked under the name the workflow uses, beside the same run at 64x64 for scale.

Usage: python bench/comfy_import.py [--repeat N] [--no-run]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from nodeflow.comfy import load_graph_any  # noqa: E402
from nodeflow.comfy.demo_models import demo_models_folder  # noqa: E402
from nodeflow.comfy.model_paths import add_comfy_models  # noqa: E402
from nodeflow.registry import load_registry  # noqa: E402
from nodeflow.settings import Settings  # noqa: E402
from nodeflow.validate import GraphValidator  # noqa: E402

WORKFLOWS = Path(os.environ.get("NODEFLOW_COMFY_WORKFLOWS",
                                Path(__file__).resolve().parents[2] / "shared" / "comfy-workflows"))


def median_ms(fn, repeat: int) -> float:  # type: ignore[no-untyped-def]
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times) * 1000


def run_default(registry, root: Path, out: Path, size: int | None) -> float:  # type: ignore[no-untyped-def]
    from nodeflow.executor import Executor

    path = WORKFLOWS / "default.json"
    graph = load_graph_any(path, registry)
    if size is not None:
        for node in graph:
            if node.type == "diffusion.EmptyLatent":
                node.inputs.update(width=size, height=size)
    settings = add_comfy_models(Settings(out_dir=out, base_dir=path.parent), [str(root)])
    t = time.perf_counter()
    result = Executor(registry, settings).run(graph)
    elapsed = time.perf_counter() - t
    if not result.ok:
        raise SystemExit(f"default.json failed: {result}")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--no-run", action="store_true", help="only the import times")
    args = parser.parse_args()
    names = sorted(p.name for p in WORKFLOWS.glob("*.json"))
    if not names:
        raise SystemExit(f"no workflows in {WORKFLOWS} (set NODEFLOW_COMFY_WORKFLOWS)")
    registry = load_registry(use_env=False)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "ComfyUI"
        demo_models_folder([WORKFLOWS / n for n in names], root / "models")
        print(f"{'workflow':<34} {'nodes':>5} {'import ms':>10} {'validate ms':>12}")
        for name in names:
            path = WORKFLOWS / name
            graph = load_graph_any(path, registry)
            settings = add_comfy_models(Settings(base_dir=path.parent), [str(root)])
            validator = GraphValidator(registry, settings)
            imp = median_ms(lambda p=path: load_graph_any(p, registry), args.repeat)
            val = median_ms(lambda g=graph, v=validator: v.validate(g), args.repeat)
            print(f"{name:<34} {len(graph.nodes):>5} {imp:>10.2f} {val:>12.2f}", flush=True)
        if args.no_run:
            return
        small = run_default(registry, root, Path(tmp) / "out-small", 64)
        print(f"default.json end to end on the demo checkpoint at 64x64, 20 steps: {small:.1f} s "
              f"(includes loading the checkpoint; {os.cpu_count()} CPUs)", flush=True)
        full = run_default(registry, root, Path(tmp) / "out-full", None)
        print(f"default.json end to end on the demo checkpoint as saved (512x512, 20 steps): {full:.1f} s",
              flush=True)


if __name__ == "__main__":
    main()
