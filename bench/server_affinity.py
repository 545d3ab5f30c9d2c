"""The job server's model affinity against taking the oldest job, side by side in one run.

Two simulated devices (two local workers), each allowed to keep about one checkpoint in RAM;
JOBS jobs of ``graphs/txt2img.json`` (2 steps, 32×32) alternating between two checkpoints
(copies of the demo checkpoint under two names), queued while both workers are busy, so
each free worker chooses. Prints, for each policy, the model files read from disk per
worker and the time from the first job's start to the last job's end, over ROUNDS rounds
that alternate which policy goes first.

Usage: python bench/server_affinity.py [--jobs 16] [--rounds 4]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from nodeflow.graph import Graph  # noqa: E402
from nodeflow.registry import load_registry  # noqa: E402
from nodeflow.server.app import Server, ServerConfig  # noqa: E402
from nodeflow.server.store import FINAL_STATES  # noqa: E402
from nodeflow.settings import packaged_models_dir  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
NAMES = ("shapes-a", "shapes-b")


def make_models(root: Path) -> Path:
    models = root / "models"
    (models / "checkpoints").mkdir(parents=True)
    source = packaged_models_dir() / "checkpoints"
    for name in NAMES:
        shutil.copy(source / "nodeflow-shapes.safetensors", models / "checkpoints" / f"{name}.safetensors")
        shutil.copytree(source / "nodeflow-shapes.config", models / "checkpoints" / f"{name}.config")
    return models


def run(policy: str, jobs: int, models: Path, data: Path, budget: int
        ) -> tuple[Counter[str], Counter[str], float]:
    registry = load_registry()
    config = ServerConfig(data_dir=data, registry=registry, models_dirs=[models],
                          devices=["sim:0", "sim:1"], vram_budget=4 * budget, ram_budget=budget,
                          policy=policy)
    server = Server(config)
    base = Graph.load(REPO / "graphs" / "txt2img.json")
    for node, key, value in (("sampler", "steps", 2), ("latent", "width", 32), ("latent", "height", 32)):
        base.set_input(node, key, value)
    ids = []
    for i in range(jobs):
        graph = base.copy()
        graph.set_input("checkpoint", "path", f"{NAMES[i % 2]}.safetensors")
        graph.set_input("sampler", "seed", i + 1)
        ids.append(server.submit(graph, kind="graph", outputs=None)[0].id)
    server.dispatcher.start()  # every job is queued: each free worker chooses among them
    try:
        while server.store.count(FINAL_STATES) < jobs:
            time.sleep(0.1)
    finally:
        server.dispatcher.stop(60.0)
    done = [server.store.get(i) for i in ids]
    server.store.close()
    loads: Counter[str] = Counter()
    ran: Counter[str] = Counter()
    for job in done:
        assert job is not None and job.state == "done", job
        loads[job.result["worker"]] += job.result["loads"]
        ran[job.result["worker"]] += 1
    span = max(j.finished or 0 for j in done if j) - min(j.started or 0 for j in done if j)
    return loads, ran, span


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=4)
    args = parser.parse_args()
    print(f"python {sys.version.split()[0]}; {os.cpu_count()} cores", flush=True)
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        models = make_models(root)
        size = (models / "checkpoints" / f"{NAMES[0]}.safetensors").stat().st_size
        budget = int(size * 1.5)
        print(f"{args.jobs} jobs of graphs/txt2img.json (2 steps, 32x32) alternating between 2 "
              f"checkpoints on 2 workers (sim:0, sim:1), RAM budget {budget:,} B each "
              f"(about one checkpoint)", flush=True)
        run("oldest", 2, models, root / "warm-up", budget)  # imports and first-run costs
        spans: dict[str, list[float]] = {"oldest": [], "affinity": []}
        reads: dict[str, list[int]] = {"oldest": [], "affinity": []}
        for round_ in range(args.rounds):  # alternated, so neither order is favoured
            for policy in (("oldest", "affinity") if round_ % 2 == 0 else ("affinity", "oldest")):
                loads, ran, span = run(policy, args.jobs, models, root / f"{policy}-{round_}", budget)
                spans[policy].append(span)
                reads[policy].append(sum(loads.values()))
                per_worker = ", ".join(f"{w} {loads[w]} loads/{ran[w]} jobs" for w in sorted(ran))
                print(f"  {policy:<8}: {sum(loads.values()):2d} model loads ({per_worker}); "
                      f"all jobs in {span:.1f} s", flush=True)
        a, o = statistics.median(spans["affinity"]), statistics.median(spans["oldest"])
        print(f"  median: affinity {statistics.median(reads['affinity']):g} checkpoint reads in "
              f"{a:.1f} s, oldest first {statistics.median(reads['oldest']):g} in {o:.1f} s "
              f"(affinity takes {a / o:.2f}x the time)", flush=True)


if __name__ == "__main__":
    main()
