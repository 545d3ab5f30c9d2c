"""``nodeflow import FILE -o graph.json [--partial]``: convert a ComfyUI workflow for good."""

from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path
from typing import Any, TextIO

from nodeflow.comfy import import_workflow
from nodeflow.comfy.convert import UNSUPPORTED_ADVICE
from nodeflow.errors import GraphInvalid, Location, UsageError

KIND_NAMES = {"ui": "ComfyUI workflow", "api": "ComfyUI API prompt"}


def default_output(path: Path) -> Path:
    """Where the converted graph goes when -o is not given: beside the current folder, ``NAME.nodeflow.json``."""
    return Path(f"{path.stem}.nodeflow.json")


def run_import(file: str, output: str | None, partial: bool, registry: Any, err: TextIO | None = None) -> int:
    """Convert ``file`` and write the nodeflow graph; exit status 0, or raise a located error."""
    err = err or sys.stderr
    path = Path(file)
    result = import_workflow(path, registry)
    if result is None:
        from nodeflow.comfy import load_graph_any

        load_graph_any(path, registry)  # says what is wrong if it is not a valid graph either
        raise UsageError("this is already a nodeflow graph; there is nothing to import",
                         location=Location(file=file), hint="Run or edit it as it is.")
    if result.problems and not partial:
        raise GraphInvalid(result.problems, file)
    for problem in result.problems:
        if problem.code == "comfy_unsupported":  # its advice is to do what is being done
            problem = replace(problem, message=problem.message.removesuffix(UNSUPPORTED_ADVICE)
                              + "; they are left out of the converted graph")
        print(f"warning: {problem}", file=err)
    for assumption in result.assumptions:
        print(f"note: {file}: assumed {assumption}", file=err)
    out = Path(output) if output else default_output(path)
    if out.resolve() == path.resolve():
        raise UsageError("the output would overwrite the ComfyUI file", location=Location(file=file),
                         hint="Give another name with -o.")
    result.graph.save(out)
    graph = result.graph
    fmt = KIND_NAMES.get(str(graph.meta.get("comfyui", {}).get("format")), "workflow")
    print(f"{file}: {fmt} -> {out} ({len(graph.nodes)} nodes, {len(graph.links)} links)", file=err)
    if result.unsupported:
        print(f"{len(result.unsupported)} node(s) not converted; they are marked 'Not converted' "
              "in the editor", file=err)
    return 0
