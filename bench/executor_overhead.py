"""Executor overhead on a chain of math.Add nodes, and `nodeflow validate` wall time.

Prints µs per node executed (cold), the time of a fully cached re-run, the time
of a re-run after changing one input in the middle, and the validate wall time
of the same graph as a file. Usage: python bench/executor_overhead.py [N]
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from nodeflow.executor import Executor
from nodeflow.graph import Graph
from nodeflow.registry import load_registry


def chain(n: int) -> Graph:
    graph = Graph()
    graph.add_node("math.Add", "n0", {"a": 0.0, "b": 1.0})
    for i in range(1, n):
        graph.add_node("math.Add", f"n{i}", {"b": 1.0})
        graph.connect(f"n{i - 1}.sum", f"n{i}.a")
    return graph


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 10_000
    registry = load_registry(use_env=False)
    graph = chain(n)
    last = f"n{n - 1}"

    cold, cached, one_change = [], [], []
    for _ in range(3):
        executor = Executor(registry)
        t = time.perf_counter()
        result = executor.run(graph, [last])
        cold.append(time.perf_counter() - t)
        assert result.outputs[last]["sum"] == float(n), result.outputs[last]
        for _ in range(5):
            t = time.perf_counter()
            result = executor.run(graph, [last])
            cached.append(time.perf_counter() - t)
            assert result.ran == []
        mid = f"n{n // 2}"
        graph.set_input(mid, "b", 2.0)
        t = time.perf_counter()
        result = executor.run(graph, [last])
        one_change.append(time.perf_counter() - t)
        assert len(result.ran) == n - n // 2
        graph.set_input(mid, "b", 1.0)

    fresh = Graph.loads(graph.dumps())
    executor = Executor(registry)
    executor.run(fresh, [last])
    again = Graph.loads(graph.dumps())  # a new graph object: keys recomputed from scratch
    t = time.perf_counter()
    executor.run(again, [last])
    reloaded = time.perf_counter() - t

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "chain.json"
        path.write_text(graph.dumps())
        walls = []
        for _ in range(3):
            t = time.perf_counter()
            subprocess.run([sys.executable, "-m", "nodeflow", "validate", str(path)], check=True,
                           capture_output=True)
            walls.append(time.perf_counter() - t)
        t = time.perf_counter()
        subprocess.run([sys.executable, "-m", "nodeflow", "--help"], check=True, capture_output=True)
        startup = time.perf_counter() - t

    med = statistics.median
    print(f"chain of {n} math.Add nodes")
    print(f"  cold run:                      {med(cold) * 1e3:8.1f} ms  = {med(cold) / n * 1e6:6.1f} µs/node")
    print(f"  fully cached re-run:           {med(cached) * 1e3:8.2f} ms")
    print(f"  cached re-run, reloaded graph: {reloaded * 1e3:8.2f} ms")
    print(f"  one input changed mid-chain:   {med(one_change) * 1e3:8.1f} ms  "
          f"({n - n // 2} nodes re-run, {med(one_change) / (n - n // 2) * 1e6:.1f} µs/node)")
    print(f"  nodeflow validate (process):   {med(walls) * 1e3:8.1f} ms  "
          f"(of which interpreter + CLI start-up {startup * 1e3:.0f} ms)")


if __name__ == "__main__":
    main()
