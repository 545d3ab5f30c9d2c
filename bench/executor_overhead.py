"""Engine overhead per node on chains of math.Add nodes: the whole `nodeflow run` process,
where its time goes, and what the garbage collector and incremental work change.

For each size N (default 5,000 and 100,000) it prints:

- the whole CLI process, ``nodeflow run chain.json --output LAST -q`` and the same
  without ``-q`` (console progress to a pipe): wall and CPU seconds, and µs per node
  after subtracting the same command on a 1-node chain (interpreter, imports, packs);
- the breakdown inside one process as the CLI does it: parse (load the file), check
  (validation of what the output needs), plan (keys, cache lookup, memory plan), run
  (the nodes), report (the console reporter), in CPU µs per node, with the garbage
  collector as nodeflow leaves it and with it disabled throughout, for comparison;
- re-runs in one process (10,000 nodes, or N if smaller): fully cached, cached after
  loading the same file again (a new graph object), and after changing one input in
  the middle of the chain.

CPU time is reported beside wall time because on a shared machine wall time mostly
measures the other programs; each figure is the median of three runs (seven for the whole
process below 50,000 nodes), and the load average is printed beside them.
Usage: python bench/executor_overhead.py [N ...]
"""

from __future__ import annotations

import gc
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any

from nodeflow.graph import Graph


def chain(n: int) -> Graph:
    graph = Graph()
    graph.add_node("math.Add", "n0", {"a": 0.0, "b": 1.0})
    for i in range(1, n):
        graph.add_node("math.Add", f"n{i}", {"b": 1.0})
        graph.connect(f"n{i - 1}.sum", f"n{i}.a")
    return graph


def cli(path: Path, last: str, out: Path, quiet: bool) -> tuple[float, float]:
    """Wall and CPU seconds of one `nodeflow run` process."""
    command = [sys.executable, "-m", "nodeflow", "run", str(path), "--output", last, "--out", str(out)]
    if quiet:
        command.append("-q")
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    wall = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    wall = time.perf_counter() - wall
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def whole_process(n: int, folder: Path, repeats: int) -> None:
    base = folder / "one.json"
    chain(1).save(base)
    path = folder / f"chain{n}.json"
    chain(n).save(path)
    for quiet in (True, False):
        small = [cli(base, "n0", folder / "out", quiet) for _ in range(repeats)]
        big = [cli(path, f"n{n - 1}", folder / "out", quiet) for _ in range(repeats)]
        w1, c1 = statistics.median(w for w, _c in small), statistics.median(c for _w, c in small)
        wn, cn = statistics.median(w for w, _c in big), statistics.median(c for _w, c in big)
        label = "-q" if quiet else "console progress"
        # CPU time is the figure to compare: wall time mostly measures a shared machine.
        print(f"  CLI ({label:16s}) {wn:7.2f} s wall, {cn:7.2f} s CPU; per node beyond a 1-node "
              f"graph: {(wn - w1) / (n - 1) * 1e6:6.1f} µs wall, {(cn - c1) / (n - 1) * 1e6:6.1f} µs CPU")


class TimedReporter:
    """The CLI's console reporter (to /dev/null), with the CPU time it takes counted."""

    def __init__(self) -> None:
        from nodeflow.progress import ConsoleReporter

        self.inner = ConsoleReporter(open(os.devnull, "w"))  # noqa: SIM115 - closed with the process
        self.cpu = 0.0

    def __call__(self, event: Any) -> None:
        t = time.process_time()
        self.inner(event)
        self.cpu += time.process_time() - t

    def message(self, text: str) -> None:
        self.inner.message(text)


def breakdown(n: int, folder: Path, registry: Any, collector: bool) -> dict[str, float]:
    """CPU seconds of each step, in one process, as `nodeflow run` takes them."""
    from nodeflow.cli import load_graph_file
    from nodeflow.executor import Executor, graph_loading
    from nodeflow.settings import Settings

    path = folder / f"chain{n}.json"
    if not path.exists():
        chain(n).save(path)
    was = gc.isenabled()
    if not collector:
        gc.disable()
    try:
        gc.collect()
        t = time.process_time()
        with graph_loading() if collector else nullcontext():  # as `nodeflow run` loads it
            graph = load_graph_file(str(path), registry)
        parse = time.process_time() - t
        executor = Executor(registry, Settings(out_dir=folder / "out", base_dir=folder))
        reporter = TimedReporter()
        wall = time.perf_counter()
        t = time.process_time()
        result = executor.run(graph, [f"n{n - 1}"], on_event=reporter)
        total = time.process_time() - t
        wall = time.perf_counter() - wall
        reporter.inner.finish(result)
    finally:
        if was:
            gc.enable()
    assert result.outputs[f"n{n - 1}"]["sum"] == float(n)
    # The phases are wall seconds; share the CPU time out in the same proportions.
    share = {k: v / wall * (total - reporter.cpu) for k, v in result.phases.items()}
    return {"parse": parse, **share, "report": reporter.cpu}


def timed(action: Any) -> tuple[float, float, Any]:
    """Wall and CPU seconds of ``action()``, and what it returned."""
    wall, cpu = time.perf_counter(), time.process_time()
    out = action()
    return time.perf_counter() - wall, time.process_time() - cpu, out


def reruns(n: int, registry: Any) -> None:
    from nodeflow.executor import Executor

    graph = chain(n)
    last = f"n{n - 1}"
    executor = Executor(registry)
    cold_wall, cold, _ = timed(lambda: executor.run(graph, [last]))
    same, fresh, edits = [], [], []
    for _ in range(5):
        _w, cpu, result = timed(lambda: executor.run(graph, [last]))
        assert result.ran == []
        same.append(cpu)
    text = graph.dumps()
    for _ in range(3):
        loaded = Graph.loads(text)  # a new graph object, equal to the one that ran
        _w, cpu, result = timed(lambda: executor.run(loaded, [last]))  # noqa: B023
        assert result.ran == []
        fresh.append(cpu)
    for value in (2.0, 3.0, 4.0):
        graph.set_input(f"n{n // 2}", "b", value)
        _w, cpu, result = timed(lambda: executor.run(graph, [last]))
        assert len(result.ran) == n - n // 2
        edits.append(cpu)
    med = statistics.median
    print(f"  re-runs of a {n}-node chain in one process, CPU time (cold run {cold * 1e3:.0f} ms, "
          f"{cold / n * 1e6:.1f} µs/node; wall {cold_wall * 1e3:.0f} ms):")
    print(f"    fully cached, same graph object:     {med(same) * 1e3:8.2f} ms")
    print(f"    fully cached, the file loaded again: {med(fresh) * 1e3:8.2f} ms "
          f"({med(fresh) / n * 1e6:.1f} µs/node)")
    print(f"    one input changed mid-chain:         {med(edits) * 1e3:8.2f} ms "
          f"({n - n // 2} nodes re-run, {med(edits) / (n - n // 2) * 1e6:.1f} µs/node)")


def main() -> None:
    from nodeflow.registry import load_registry

    sizes = [int(a) for a in sys.argv[1:]] or [5_000, 100_000]
    registry = load_registry(use_env=False)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for n in sizes:
            print(f"chain of {n} math.Add nodes (load average {os.getloadavg()[0]:.1f} "
                  f"on {os.cpu_count()} cores)")
            # Medians of three, single runs on a shared machine differ by 10-20%; seven for
            # small graphs, whose per-node figure is a small difference of two process times.
            whole_process(n, folder, repeats=3 if n >= 50_000 else 7)
            for collector in (True, False):
                runs = [breakdown(n, folder, registry, collector) for _ in range(3)]
                steps = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
                parts = ", ".join(f"{k} {v / n * 1e6:5.1f}" for k, v in steps.items())
                label = "as nodeflow runs" if collector else "collector off   "
                print(f"  in one process, {label}: {sum(steps.values()) / n * 1e6:5.1f} µs CPU/node "
                      f"({parts})")
        reruns(min(10_000, max(sizes)), registry)


if __name__ == "__main__":
    main()
