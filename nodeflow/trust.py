"""Which files a graph may read, by where the graph came from.

A graph file the user wrote or chose is trusted to name any file. A graph taken from a
picture (a PNG someone sent, a downloaded render) is not: its file inputs may name only files
beside that picture and in the models folders, plus folders the user allows explicitly
(``--allow-dir DIR``, or Run ▸ Allow a Folder… in the editor). A picture whose graph this user
ran here before (nodeflow remembers a hash of every graph it embeds in a PNG, see
`nodeflow.provenance.remember_graph`) is the user's own render, and is trusted like a graph file: reopening
yesterday's output is not opening a stranger's picture. Only the hash is kept, so the
pictures' bytes stay the same on every machine. A server applies the same rule to graphs in requests by setting
`Settings.allowed_dirs` to its upload and models folders.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from nodeflow.files import read_head
from nodeflow.provenance import PNG_SIGNATURE, is_known_graph
from nodeflow.settings import Settings


def is_picture_graph(path: Path) -> bool:
    """Whether ``path`` is a PNG (a graph embedded in a picture) rather than a graph file."""
    head = read_head(path, 8)  # never blocks on a FIFO
    return head == PNG_SIGNATURE if head else path.suffix.lower() == ".png"


def is_foreign_picture_graph(path: Path) -> bool:
    """Whether ``path`` is a PNG whose embedded graph is not one this user ran here."""
    if not is_picture_graph(path):
        return False
    from nodeflow.errors import GraphFileError
    from nodeflow.provenance import graph_from_png

    try:
        return not is_known_graph(graph_from_png(path))
    except GraphFileError:
        return True


def restrict_for_source(settings: Settings, graph_path: Path,
                        allow_dirs: Iterable[str | Path] = ()) -> Settings:
    """Limit ``settings`` (in place, and returned) to what a graph read from ``graph_path`` may
    read: for a PNG someone else made, files beside it, in the models folders and in
    ``allow_dirs``.

    ``allow_dirs`` also widens an existing restriction; for a trusted graph file it changes
    nothing.
    """
    extra = [Path(d).expanduser().resolve() for d in allow_dirs]
    if is_foreign_picture_graph(graph_path):
        settings.allowed_dirs = [graph_path.resolve().parent, *extra]
    elif settings.allowed_dirs is not None:
        settings.allowed_dirs = [*settings.allowed_dirs, *extra]
    return settings
