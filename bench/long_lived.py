"""One executor, many runs: is the 50th run of the demo graph as fast as the first?

Runs ``graphs/demo.json`` RUNS times in one process through one `Executor` (the seed
changes every run, so the sampler and what follows it run every time), and prints
wall and CPU seconds per run as first / median / last, then the same for a few fresh
``nodeflow run`` processes (CPU time of the child, its start-up and model loading
included), and the ratios the issue asks for: last / median wall time, and median CPU
time per run in one process / a fresh run's.

``--busy`` starts a CPU-bound process beside the runs (a second program wanting a
core), as on a machine doing other work. ``--threads N`` is passed on as the
engine's ``--threads``.

Usage: python bench/long_lived.py [--runs 50] [--fresh 3] [--busy] [--threads N]
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DEMO = REPO / "graphs" / "demo.json"


def burner() -> subprocess.Popen[bytes]:
    """A second program that keeps one core busy."""
    return subprocess.Popen([sys.executable, "-c", "while True: pass"])


def in_one_process(runs: int, out: Path, threads: int | None) -> list[tuple[float, float]]:
    from nodeflow.cli import load_graph_file
    from nodeflow.executor import Executor
    from nodeflow.models import ModelManager
    from nodeflow.registry import load_registry
    from nodeflow.settings import Settings

    registry = load_registry(use_env=False)
    graph = load_graph_file(str(DEMO), registry)
    settings = Settings.from_env(out_dir=str(out), base_dir=DEMO.parent)
    figures = []
    with Executor(registry, settings, models=ModelManager(), threads=threads) as executor:
        for i in range(runs):
            graph.set_input("sampler", "seed", 1000 + i)
            wall, cpu = time.perf_counter(), time.process_time()
            result = executor.run(graph)
            figures.append((time.perf_counter() - wall, time.process_time() - cpu))
            assert result.ok and "sampler" in result.ran, result.failed
    return figures


def fresh_runs(count: int, out: Path, threads: int | None) -> list[tuple[float, float]]:
    figures = []
    for i in range(count):
        command = [sys.executable, "-m", "nodeflow", "run", str(DEMO), "--out", str(out), "-q",
                   "--set", f"sampler.seed={5000 + i}"]
        if threads is not None:
            command += ["--threads", str(threads)]
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        wall = time.perf_counter()
        subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
        figures.append((time.perf_counter() - wall, cpu))
    return figures


def summary(label: str, figures: list[tuple[float, float]]) -> None:
    walls = [w for w, _c in figures]
    cpus = [c for _w, c in figures]
    print(f"{label:<22} wall first {walls[0]:6.2f}s  median {statistics.median(walls):6.2f}s  "
          f"last {walls[-1]:6.2f}s | CPU first {cpus[0]:6.2f}s  median "
          f"{statistics.median(cpus):6.2f}s  last {cpus[-1]:6.2f}s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--fresh", type=int, default=3)
    parser.add_argument("--busy", action="store_true", help="a CPU-bound process runs beside")
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    print(f"{os.cpu_count()} CPUs; OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', '(unset)')}; "
          f"{'busy' if args.busy else 'idle'} machine; threads {args.threads or 'default'}")
    other = burner() if args.busy else None
    try:
        with tempfile.TemporaryDirectory() as tmp:
            many = in_one_process(args.runs, Path(tmp) / "one", args.threads)
            fresh = fresh_runs(args.fresh, Path(tmp) / "fresh", args.threads) if args.fresh else []
    finally:
        if other is not None:
            other.kill()
            other.wait()
    summary(f"{args.runs} runs, one process", many)
    if fresh:
        summary(f"{len(fresh)} fresh `nodeflow run`", fresh)
    walls = [w for w, _c in many]
    print(f"last / median wall: {walls[-1] / statistics.median(walls):.2f} (target <= 1.1)")
    if fresh:
        ratio = statistics.median(c for _w, c in many) / statistics.median(c for _w, c in fresh)
        print(f"median CPU per run, one process / fresh run: {ratio:.2f} (target <= 1.1)")


if __name__ == "__main__":
    main()
