"""What a request may touch: files only inside the server's folders, bounded sizes.

An image server is a file server and a code runner, so every name a request
gives is checked here before anything opens it: graphs name input pictures
(looked up only in the server's input folder) and model files (only in the
models folders); uploads and output downloads name files inside one folder.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from nodeflow.errors import Location, Problem
from nodeflow.graph import Graph
from nodeflow.registry import NodeRegistry
from nodeflow.settings import Settings

_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 ._()+-]{0,199}$")


class ApiError(Exception):
    """A refused request: an HTTP status and a JSON error body (never a traceback)."""

    def __init__(self, status: int, message: str, *, type_: str = "bad_request",
                 problems: list[dict[str, Any]] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.body: dict[str, Any] = {"type": type_, "message": message, "problems": problems or []}


@dataclass(frozen=True)
class Limits:
    """Sizes a request may not exceed (each refused with 413 or 400 and a message)."""

    max_request_bytes: int = 8 * 1024 * 1024
    """A request body with a graph or a prompt."""
    max_upload_bytes: int = 32 * 1024 * 1024
    """An uploaded picture."""
    max_input_bytes: int = 10 * 1024**3
    """All the pictures in the input folder together: an upload that would pass it is refused
    (507) until some are deleted, so clients cannot fill the server's disk."""
    max_nodes: int = 2000
    max_pixels: int = 64 * 1024 * 1024
    """Width × height × batch of any picture a node is asked to make, and of an upload."""


def unsafe_relative(name: str) -> str | None:
    """Why ``name`` cannot be a relative path inside a folder, or None when it can."""
    if not name:
        return "is empty"
    if "\x00" in name or "\\" in name:
        return "contains a backslash or a NUL character"
    if name.startswith(("/", "~")) or re.match(r"^[A-Za-z]:", name):
        return "is an absolute path"
    parts = PurePosixPath(name).parts
    if any(p in ("..", ".") for p in name.split("/")) or not parts:
        return "contains '..' or '.'"
    return None


def inside(folder: Path, name: str) -> Path | None:
    """``folder/name`` if ``name`` is a safe relative path that stays inside ``folder``."""
    if unsafe_relative(name) is not None:
        return None
    root = folder.resolve()
    candidate = (root / name).resolve()
    return candidate if candidate.is_relative_to(root) else None


def safe_file_name(name: str) -> bool:
    """A plain file name (no folders) a client may give an upload."""
    return bool(_SAFE_NAME.match(name)) and ".." not in name


class ServerSettings(Settings):
    """Settings of a job on the server: pictures come only from the input folder, models only
    from the models folders; absolute paths and '..' never resolve."""

    def __init__(self, *, models_dirs: list[Path], out_dir: Path, input_dir: Path,
                 folders: dict[str, list[Path]] | None = None) -> None:
        super().__init__(models_dirs=list(models_dirs), out_dir=out_dir, base_dir=input_dir,
                         allowed_dirs=[input_dir], folders=dict(folders or {}))
        self.input_dir = input_dir

    def search_dirs(self, kind: str) -> list[Path]:
        if kind in ("image", "file"):
            return [self.input_dir]
        return super().search_dirs(kind)

    def resolve_path(self, kind: str, name: str) -> Path | None:
        if unsafe_relative(name) is not None:
            return None
        return super().resolve_path(kind, name)

    def describe_search(self, kind: str, name: str) -> str:
        why = unsafe_relative(name)
        if why is not None:
            return f"the path {name!r} {why}"
        if kind in ("image", "file"):
            return (f"'{name}' is not in the server's input folder; upload it first "
                    "(POST /api/uploads or /upload/image)")
        return super().describe_search(kind, name)


def check_request_graph(graph: Graph, registry: NodeRegistry, limits: Limits) -> list[Problem]:
    """Problems that make a graph unacceptable to the server before it is even validated:
    too many nodes, paths that leave the server's folders, pictures larger than allowed."""
    file = graph.file_name
    problems: list[Problem] = []
    if len(graph.nodes) > limits.max_nodes:
        problems.append(Problem("too_large", f"the graph has {len(graph.nodes)} nodes; this server "
                                f"accepts at most {limits.max_nodes}", Location(file)))
        return problems
    for node in graph:
        cls = registry.get(node.type)
        if cls is None:
            continue  # the validator reports unknown types
        for spec in cls.inputs:
            value = node.inputs.get(spec.name)
            if spec.path_kind and isinstance(value, str) and value:
                why = unsafe_relative(value)
                if why is not None:
                    problems.append(Problem("path", f"the path {value!r} {why}; the server reads "
                                            "only its input and models folders",
                                            Location(file, node.id, node.type, spec.name)))
        pixels = 1
        sized = False
        for key in ("width", "height", "batch", "batch_size"):
            value = node.inputs.get(key)
            if isinstance(value, int) and not isinstance(value, bool) and value > 0:
                pixels *= value
                sized = sized or key in ("width", "height")
        if sized and pixels > limits.max_pixels:
            problems.append(Problem("too_large", f"width × height × batch is {pixels:,} pixels; this "
                                    f"server makes at most {limits.max_pixels:,} per node",
                                    Location(file, node.id, node.type, "width")))
    return problems
