"""ComfyUI workflows as nodeflow graphs: the UI format, the API format and ComfyUI's PNGs.

A ComfyUI file is converted when it is read (there is no second execution path):
`load_graph_any` is what ``nodeflow run``, ``validate`` and ``edit`` call for any file,
and `import_workflow` is ``nodeflow import``. The converted graph states ComfyUI's
semantics in its node inputs, so it runs the same wherever it is run.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from nodeflow.comfy.convert import ImportResult, convert_workflow
from nodeflow.comfy.formats import detect, parse_workflow, read_document, read_document_once
from nodeflow.errors import GraphInvalid

if TYPE_CHECKING:
    from nodeflow.graph import Graph
    from nodeflow.registry import NodeRegistry
    from nodeflow.settings import Settings

__all__ = ["ImportResult", "detect", "import_workflow", "is_comfy_file", "load_graph_any"]


def import_workflow(path: str | Path, registry: NodeRegistry,
                    settings: Settings | None = None) -> ImportResult | None:
    """Convert a ComfyUI workflow, API prompt or ComfyUI PNG; None if the file is a nodeflow graph.

    Raises `GraphFileError` when the file cannot be read as any of them. The result lists every
    problem found (unsupported node types first); the graph holds everything that converted.
    ``settings`` says where model files are (default: the folders the environment names).
    """
    path = Path(path)
    kind, data, _text = read_document(path)
    if kind == "nodeflow":
        return None
    wf, problems = parse_workflow(kind, data, str(path))
    result = convert_workflow(wf, registry, settings)
    result.problems[:0] = problems
    return result


def load_graph_any(path: str | Path, registry: NodeRegistry, settings: Settings | None = None) -> Graph:
    """Read any graph file nodeflow accepts: a nodeflow graph (JSON or PNG), a ComfyUI workflow
    (UI or API format) or a PNG saved by ComfyUI. Raises `GraphInvalid` or `GraphFileError`."""
    from nodeflow.graph import parse_decoded_graph, parse_graph_text
    from nodeflow.validate import migrate_nodes

    path = Path(path)
    kind, data, text, duplicates = read_document_once(path)
    if kind == "nodeflow":
        if duplicates is None:  # not decoded yet (not JSON, or a PNG's text)
            graph, problems = parse_graph_text(text, str(path))
        else:
            graph, problems = parse_decoded_graph(text, data, duplicates, str(path))
        if graph is not None:
            problems += migrate_nodes(graph, registry)
        if problems or graph is None:
            raise GraphInvalid(problems, str(path))
        return graph
    wf, problems = parse_workflow(kind, data, str(path))
    result = convert_workflow(wf, registry, settings)
    problems += result.problems
    if problems:
        raise GraphInvalid(problems, str(path))
    return result.graph


def is_comfy_file(path: str | Path) -> bool:
    """Whether ``path`` holds a ComfyUI workflow (so saving must not write over it)."""
    from nodeflow.errors import GraphFileError

    try:
        return read_document(Path(path))[0] != "nodeflow"
    except GraphFileError:
        return False
