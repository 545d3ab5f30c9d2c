"""Provenance: the graph that made a picture travels inside the PNG.

Reading it back parses the PNG's chunks directly and decodes no pixels, so a picture too
large to open, or a file that is not really a PNG, can never reach an image decoder here.
A hash of every graph embedded here is recorded, so `nodeflow.trust` can tell the user's own
pictures from a stranger's.
"""

from __future__ import annotations

import hashlib
import os
import struct
import threading
import zlib
from collections.abc import Mapping
from pathlib import Path
from typing import BinaryIO

from nodeflow.errors import GraphFileError, Location

GRAPH_KEY = "nodeflow"
VERSION_KEY = "nodeflow-version"
SETTINGS_KEY = "nodeflow-settings"
"""What the nodes that made the picture resolved at run time (JSON: node id → {setting: value}),
e.g. the scheduler settings a sampler used, which the graph alone does not say."""
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
MAX_GRAPH_TEXT = 64 * 1024 * 1024
"""Bytes of embedded graph text read at most (a compressed chunk cannot inflate past it)."""


def png_text_chunks(graph_json: str, notes: Mapping[str, Mapping[str, str]] | None = None
                    ) -> list[tuple[str, str]]:
    """The text chunks that carry ``graph_json`` in an output PNG, with nodeflow's version and,
    when given, the notes of the nodes that made it (`SETTINGS_KEY`). The graph is remembered as
    this user's own (a hash of it is recorded here), so reopening the picture later is
    trusted like opening the graph file."""
    import json

    from nodeflow import __version__

    remember_graph(graph_json)
    chunks = [(GRAPH_KEY, graph_json), (VERSION_KEY, __version__)]
    if notes:
        chunks.append((SETTINGS_KEY, json.dumps(notes, indent=1, sort_keys=True)))
    return chunks


def graph_from_png(path: Path) -> str:
    """The graph file text embedded in a PNG by ``image.Save``."""
    from nodeflow.files import regular_file_problem

    where = Location(file=str(path))
    try:
        problem = regular_file_problem(path)
        if problem:
            raise GraphFileError(problem, location=where)
        with open(path, "rb") as fh:
            graph = png_text_from_file(fh, GRAPH_KEY)
    except OSError as exc:
        message = getattr(exc, "message", None) or exc.strerror or str(exc)
        raise GraphFileError(f"cannot read the PNG: {message}", location=where) from None
    except ValueError as exc:
        raise GraphFileError(f"cannot read the PNG: {exc}", location=where) from None
    if not graph:
        raise GraphFileError("this PNG carries no nodeflow graph", location=where,
                             hint="Only PNGs written by image.Save embed the graph that made them.")
    return graph


def png_text(data: bytes, key: str) -> str | None:
    """The text stored under ``key`` in a PNG's tEXt, zTXt or iTXt chunks, or None.

    Raises ValueError when the data is not a well-formed PNG up to that chunk.
    """
    if not data.startswith(PNG_SIGNATURE):
        raise ValueError("the file is not a PNG")
    pos = len(PNG_SIGNATURE)
    wanted = key.encode("latin-1")
    while pos + 8 <= len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + length]
        if len(body) != length:
            raise ValueError(f"the PNG is truncated (in a {kind.decode('latin-1', 'replace')} chunk)")
        pos += 12 + length
        if kind == b"IEND":
            return None
        if kind in (b"tEXt", b"zTXt", b"iTXt"):
            found = _chunk_text(kind, body, wanted)
            if found is not None:
                return found
    return None


def _chunk_text(kind: bytes, body: bytes, wanted: bytes) -> str | None:
    """The text of one tEXt, zTXt or iTXt chunk if its keyword is ``wanted``, else None."""
    name, sep, rest = body.partition(b"\0")
    if not sep or name != wanted:
        return None
    if kind == b"tEXt":
        return rest.decode("latin-1")
    if kind == b"zTXt":
        return _inflate(rest[1:]).decode("latin-1")
    compressed = rest[0:1] == b"\1"
    _lang, _, rest = rest[2:].partition(b"\0")
    _translated, _, text = rest.partition(b"\0")
    raw = _inflate(text) if compressed else text
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ValueError(f"the '{wanted.decode('latin-1')}' text is not UTF-8") from None


def png_text_from_file(fh: BinaryIO, key: str) -> str | None:
    """`png_text` reading chunk by chunk from an open file: the image data is skipped, never
    read, so a large picture costs no memory."""
    if fh.read(8) != PNG_SIGNATURE:
        raise ValueError("the file is not a PNG")
    wanted = key.encode("latin-1")
    while True:
        chunk_head = fh.read(8)
        if len(chunk_head) < 8:
            return None
        length, kind = struct.unpack(">I4s", chunk_head)
        if kind == b"IEND":
            return None
        if kind in (b"tEXt", b"zTXt", b"iTXt"):
            if length > MAX_GRAPH_TEXT:
                raise ValueError(f"a text chunk of {length:,} bytes is larger than nodeflow reads")
            body = fh.read(length + 4)  # with the CRC
            if len(body) != length + 4:
                raise ValueError("the PNG is truncated (in a text chunk)")
            found = _chunk_text(kind, body[:length], wanted)
            if found is not None:
                return found
        else:
            fh.seek(length + 4, 1)


def _inflate(data: bytes) -> bytes:
    inflater = zlib.decompressobj()
    try:
        out = inflater.decompress(data, MAX_GRAPH_TEXT)
    except zlib.error as exc:
        raise ValueError(f"a compressed text chunk is damaged ({exc})") from None
    if inflater.unconsumed_tail:
        raise ValueError(f"a compressed text chunk inflates past {MAX_GRAPH_TEXT:,} bytes")
    return out


# --- the record of graphs made here: a picture whose graph is in it is the user's own (nodeflow.trust)

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
