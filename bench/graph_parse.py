"""Reading a graph file, step by step: where the time of `Graph.loads` goes on large graphs.

For a chain of N math.Add nodes (default 100,000) and for N nodes with eight literal inputs
each, it prints CPU µs per node of:

- decode: ``json.loads`` as the reader calls it (with the duplicate-key check);
- check: the file format's declaration (`nodeflow.graph_format`) validating the document;
- build: the graph made from the checked document;
- whole: `parse_graph_text`, all of the above;

and, for comparison in the same run, plain ``json.loads`` and the published JSON Schema
checking the same document with ``jsonschema`` (what a tool outside nodeflow would do).
The garbage collector is paused as `nodeflow run` pauses it while loading.
Usage: python bench/graph_parse.py [N]
"""

from __future__ import annotations

import gc
import json
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

from nodeflow import graph as graph_mod
from nodeflow.graph import Graph, parse_graph_text
from nodeflow.graph_format import check_document


def chain(n: int) -> str:
    graph = Graph()
    graph.add_node("math.Add", "n0", {"a": 0.0, "b": 1.0})
    for i in range(1, n):
        graph.add_node("math.Add", f"n{i}", {"b": 1.0})
        graph.connect(f"n{i - 1}.sum", f"n{i}.a")
    return graph.dumps()


def wide(n: int) -> str:
    graph = Graph()
    for i in range(n):
        graph.add_node("image.Resize", f"r{i}", {"width": 512, "height": 512, "method": "lanczos",
                                                 "crop": False, "scale": 1.5, "seed": i,
                                                 "label": f"node {i}", "extra": None})
        graph.set_layout(f"r{i}", pos=[float(i), 0.0])
    return graph.dumps()


def cpu(action: Callable[[], Any], repeats: int = 5) -> float:
    """Median CPU seconds of ``action()`` with the collector paused."""
    times = []
    for _ in range(repeats):
        gc.collect()
        gc.disable()
        try:
            t = time.process_time()
            action()
            times.append(time.process_time() - t)
        finally:
            gc.enable()
    return statistics.median(times)


def measure(name: str, text: str, n: int) -> None:
    import jsonschema

    from nodeflow.schema import graph_json_schema

    data = json.loads(text)
    doc, errors = check_document(data)
    assert doc is not None and not errors
    validator = jsonschema.Draft202012Validator(graph_json_schema())
    steps = {
        "decode": lambda: json.loads(text, object_pairs_hook=graph_mod._object_without_duplicates([], None)),
        "check": lambda: check_document(data),
        "build": lambda: graph_mod._graph_from_valid(doc, None),
        "whole": lambda: parse_graph_text(text),
    }
    figures = {k: cpu(v) / n * 1e6 for k, v in steps.items()}
    plain = cpu(lambda: json.loads(text)) / n * 1e6
    schema = cpu(lambda: validator.validate(data), repeats=1) / n * 1e6
    print(f"{name}: {n} nodes, {len(text) / n:.0f} bytes/node; CPU µs per node")
    print("  " + ", ".join(f"{k} {v:5.2f}" for k, v in figures.items()))
    print(f"  for comparison: plain json.loads {plain:5.2f}; jsonschema with the published schema "
          f"{schema:6.2f} ({schema / figures['check']:.0f}x the declaration's check)")


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 100_000
    measure("chain of math.Add", chain(n), n)
    measure("eight literal inputs and a position each", wide(n), n)


if __name__ == "__main__":
    main()
