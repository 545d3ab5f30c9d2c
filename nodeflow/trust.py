"""Which files a graph may read, by where the graph came from.

A graph file the user wrote or chose is trusted to name any file. A graph taken from a
picture (a PNG someone sent, a downloaded render) is not: its file inputs may name only files
beside that picture and in the models folders, plus folders the user allows explicitly
(``--allow-dir DIR``, or Run ▸ Allow a Folder… in the editor). A picture whose graph this user
ran here before (nodeflow remembers a hash of every graph it embeds in a PNG, see
`remember_graph`) is the user's own render, and is trusted like a graph file: reopening
yesterday's output is not opening a stranger's picture. Only the hash is kept, so the
pictures' bytes stay the same on every machine. A server applies the same rule to graphs in requests by setting
`Settings.allowed_dirs` to its upload and models folders.
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Iterable
from pathlib import Path

from nodeflow.files import read_head
from nodeflow.provenance import PNG_SIGNATURE
from nodeflow.settings import Settings


def is_picture_graph(path: Path) -> bool:
    """Whether ``path`` is a PNG (a graph embedded in a picture) rather than a graph file."""
    head = read_head(path, 8)  # never blocks on a FIFO
    return head == PNG_SIGNATURE if head else path.suffix.lower() == ".png"


KNOWN_GRAPHS_FILE = "made-graphs.sha256"
MAX_KNOWN_BYTES = 4 * 1024 * 1024
"""The record keeps the newest hashes (about 130,000 graphs) and forgets older ones."""
_DIGEST = 32
_known_lock = threading.Lock()
_remembered: set[bytes] = set()


def data_dir() -> Path:
    """Where nodeflow keeps its own state for this user (NODEFLOW_DATA_DIR overrides it)."""
    env = os.environ.get("NODEFLOW_DATA_DIR")
    if env:
        return Path(env).expanduser()
    try:
        from platformdirs import user_data_dir
    except ImportError:
        base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
        return Path(base) / "nodeflow"
    return Path(user_data_dir("nodeflow", appauthor=False))


def _digest(graph_json: str) -> bytes:
    return hashlib.sha256(graph_json.encode("utf-8", "surrogatepass")).digest()


def remember_graph(graph_json: str) -> None:
    """Record that this user ran ``graph_json`` here (it is being embedded in an output PNG).

    Best effort: a folder that cannot be written only means the picture counts as foreign.
    """
    digest = _digest(graph_json)
    record = data_dir() / KNOWN_GRAPHS_FILE
    key = digest + str(record).encode()
    with _known_lock:
        if key in _remembered:
            return
        try:
            record.parent.mkdir(parents=True, exist_ok=True)
            # One write of whole records with O_APPEND: processes writing at once never interleave.
            if record.is_file() and record.stat().st_size >= MAX_KNOWN_BYTES:
                _trim(record)
            fd = os.open(record, os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o600)
            try:
                os.write(fd, digest)
            finally:
                os.close(fd)
        except OSError:
            return
        _remembered.add(key)


def _trim(record: Path) -> None:
    data = record.read_bytes()
    keep = data[len(data) - MAX_KNOWN_BYTES // 2:]
    keep = keep[len(keep) % _DIGEST:]
    tmp = record.with_name(f"{record.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(keep)
    os.replace(tmp, record)


def is_known_graph(graph_json: str) -> bool:
    """Whether this user ran exactly this graph here before (see `remember_graph`)."""
    from nodeflow.files import read_head

    digest = _digest(graph_json)
    data = read_head(data_dir() / KNOWN_GRAPHS_FILE, 2 * MAX_KNOWN_BYTES)
    at = data.find(digest)
    while at >= 0 and at % _DIGEST:  # a match across two records is no match
        at = data.find(digest, at + 1)
    return at >= 0


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
