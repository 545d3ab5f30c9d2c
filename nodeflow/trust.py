"""Which files a graph may read, by where the graph came from.

A graph file the user wrote or chose is trusted to name any file. A graph taken from a
picture (a PNG someone sent, a downloaded render) is not: its file inputs may name only files
beside that picture and in the models folders, plus folders the user allows explicitly
(``--allow-dir DIR``). A server applies the same rule to graphs in requests by setting
`Settings.allowed_dirs` to its upload and models folders.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from nodeflow.provenance import PNG_SIGNATURE
from nodeflow.settings import Settings


def is_picture_graph(path: Path) -> bool:
    """Whether ``path`` is a PNG (a graph embedded in a picture) rather than a graph file."""
    try:
        with open(path, "rb") as fh:
            return fh.read(8) == PNG_SIGNATURE
    except OSError:
        return path.suffix.lower() == ".png"


def restrict_for_source(settings: Settings, graph_path: Path,
                        allow_dirs: Iterable[str | Path] = ()) -> Settings:
    """Limit ``settings`` (in place, and returned) to what a graph read from ``graph_path`` may
    read: for a PNG, files beside it, in the models folders and in ``allow_dirs``.

    ``allow_dirs`` also widens an existing restriction; for a trusted graph file it changes
    nothing.
    """
    extra = [Path(d).expanduser().resolve() for d in allow_dirs]
    if is_picture_graph(graph_path):
        settings.allowed_dirs = [graph_path.resolve().parent, *extra]
    elif settings.allowed_dirs is not None:
        settings.allowed_dirs = [*settings.allowed_dirs, *extra]
    return settings
