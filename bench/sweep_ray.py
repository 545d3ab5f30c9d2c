"""Sweeps locally and on Ray, side by side in one run (a local Ray with this machine's cores).

1. A sweep of ``graphs/demo.json`` over JOBS seeds: one local executor, then Ray with 1
   worker, then with 2 workers. Prints each wall time (the Ray ones split into starting the
   workers and running the jobs) and Ray's overhead per job: the 1-worker job phase minus
   the local run, divided by the jobs.
2. Model loads with affinity against round-robin: 4 checkpoints (copies of the demo
   checkpoint under four names) × 8 seeds = 32 jobs of ``graphs/txt2img.json`` (2 steps,
   32×32) on 2 workers, each allowed to keep about one checkpoint in RAM. Jobs are listed
   seed-major (the checkpoints interleaved), as a prompt-by-model grid often is.

Usage: python bench/sweep_ray.py [--jobs 16] [--steps 20] [--skip-demo] [--skip-loads]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from nodeflow.cluster.driver import ClusterOptions, RaySweep  # noqa: E402
from nodeflow.executor import Executor  # noqa: E402
from nodeflow.graph import Graph  # noqa: E402
from nodeflow.registry import load_registry  # noqa: E402
from nodeflow.settings import Settings, packaged_models_dir  # noqa: E402
from nodeflow.sweeps.runner import SweepEvent, SweepResult, run_local  # noqa: E402
from nodeflow.sweeps.spec import parse_sweeps  # noqa: E402

REPO = Path(__file__).resolve().parent.parent


class Clock:
    """Records when the last worker became ready (the end of the start-up phase), and per job
    the driver's wall time from dispatch to its files written beside the worker's own time."""

    def __init__(self) -> None:
        self.start = time.perf_counter()
        self.ready = self.start
        self.sent: dict[str, float] = {}
        self.overheads: list[float] = []

    def __call__(self, event: SweepEvent) -> None:
        now = time.perf_counter()
        if event.kind == "worker_ready":
            self.ready = now
        elif event.kind == "job_started" and event.job:
            self.sent[event.job] = now
        elif event.kind == "job_finished" and event.job in self.sent:
            self.overheads.append(now - self.sent[event.job] - event.data["seconds"])

    @property
    def overhead(self) -> float:
        """Mean seconds per job spent outside the worker's executor (transfer, queueing)."""
        return sum(self.overheads) / max(1, len(self.overheads))


def ray_sweep(registry: object, graph: Graph, jobs: list, out: Path, workers: int,
              policy: str = "affinity", models: list[str] | None = None,
              ram_budget: str | None = None) -> tuple[SweepResult, float, float, float]:
    """Run on Ray; return the result, the start-up seconds, the job-phase seconds and the
    mean overhead per job."""
    options = ClusterOptions(workers=workers, policy=policy, models=models or [],
                             ram_budget=ram_budget)
    sweep = RaySweep(options, registry, Settings(out_dir=out, base_dir=REPO / "graphs"))
    clock = Clock()
    try:
        result = sweep.run(graph, jobs, on_event=clock)
    finally:
        sweep.stop()
    end = time.perf_counter()
    assert result.ok, result.failed
    return result, clock.ready - clock.start, end - clock.ready, clock.overhead


def bench_demo(registry: object, tmp: Path, count: int, steps: int) -> None:
    graph = Graph.load(REPO / "graphs" / "demo.json")
    graph.set_input("sampler", "steps", steps)
    jobs = parse_sweeps(graph, registry, [f"sampler.seed=1..{count}"])
    print(f"1. graphs/demo.json, {count} jobs (seeds 1..{count}, {steps} steps, 4 pictures "
          f"of 64x64 upscaled 4x each)", flush=True)
    started = time.perf_counter()
    executor = Executor(registry, Settings(out_dir=tmp / "local", base_dir=REPO / "graphs"))
    result = run_local(executor, graph, jobs, tmp / "local")
    local = time.perf_counter() - started
    assert result.ok, result.failed
    print(f"   local, one executor:  {local:7.1f} s  ({local / count:.2f} s/job)", flush=True)
    phases = {}
    for workers in (1, 2):
        _, startup, run, overhead = ray_sweep(registry, graph, jobs, tmp / f"ray{workers}",
                                              workers)
        phases[workers] = run
        print(f"   Ray, {workers} worker{'s' if workers > 1 else ' '}:        {startup + run:7.1f} s  "
              f"(start {startup:.1f} s + jobs {run:.1f} s, {run / count:.2f} s/job; per job "
              f"{overhead * 1000:.0f} ms outside the worker's executor)", flush=True)
    same = all((tmp / "local" / p.name).read_bytes() == p.read_bytes()
               for p in (tmp / "ray2").glob("*.png"))
    print(f"   Ray overhead per job (1 worker's jobs phase - local) / jobs: "
          f"{(phases[1] - local) / count:+.2f} s; 2 workers vs 1: x{phases[1] / phases[2]:.2f} "
          f"on the jobs phase; outputs identical to local: {same}", flush=True)


def bench_loads(registry: object, tmp: Path) -> None:
    models = tmp / "models"
    (models / "checkpoints").mkdir(parents=True)
    source = packaged_models_dir() / "checkpoints"
    names = [f"shapes-{c}" for c in "abcd"]
    for name in names:
        shutil.copy(source / "nodeflow-shapes.safetensors", models / "checkpoints" / f"{name}.safetensors")
        shutil.copytree(source / "nodeflow-shapes.config", models / "checkpoints" / f"{name}.config")
    graph = Graph.load(REPO / "graphs" / "txt2img.json")
    for node, key, value in (("sampler", "steps", 2), ("latent", "width", 32), ("latent", "height", 32)):
        graph.set_input(node, key, value)
    paths = "[" + ", ".join(f'"{n}.safetensors"' for n in names) + "]"
    jobs = parse_sweeps(graph, registry, ["sampler.seed=1..8", f"checkpoint.path={paths}"])
    size = (models / "checkpoints" / f"{names[0]}.safetensors").stat().st_size
    budget = f"{int(size * 1.5)}B"
    print(f"\n2. model loads: 4 checkpoints x 8 seeds = {len(jobs)} jobs of graphs/txt2img.json "
          f"(2 steps, 32x32) on 2 workers, RAM budget {budget} each (about one checkpoint)",
          flush=True)
    for policy in ("affinity", "round-robin"):
        result, startup, run, _ = ray_sweep(registry, graph, jobs, tmp / policy, 2, policy,
                                            [str(models)], budget)
        per_worker = ", ".join(f"{w.name} {w.loads} loads/{w.jobs} jobs"
                               for w in result.workers.values())
        total = sum(w.loads for w in result.workers.values())
        print(f"   {policy:<11}: {total:2d} model loads ({per_worker}); jobs phase {run:.1f} s",
              flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=16)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--skip-demo", action="store_true")
    parser.add_argument("--skip-loads", action="store_true")
    args = parser.parse_args()
    import ray

    cpus = os.cpu_count() or 2
    ray.init(num_cpus=cpus, include_dashboard=False, log_to_driver=False)
    print(f"local Ray with {cpus} CPUs; python {sys.version.split()[0]}, ray {ray.__version__}")
    registry = load_registry()
    try:
        with tempfile.TemporaryDirectory() as folder:
            if not args.skip_demo:
                bench_demo(registry, Path(folder), args.jobs, args.steps)
            if not args.skip_loads:
                bench_loads(registry, Path(folder))
    finally:
        ray.shutdown()


if __name__ == "__main__":
    main()
