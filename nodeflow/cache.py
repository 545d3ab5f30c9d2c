"""Output cache: node outputs keyed by a content hash of everything that determines them.

A node's key is a hash of its type, version, literal inputs, the state of what it
reads from outside the graph (the files its inputs name, see `file_fingerprint`, and
its own `Node.fingerprint`) and the keys of the outputs it is linked to
(Merkle-style), so computing it costs the same for every node whatever the size of
the graph, and changing one input or one file changes the keys of exactly the nodes
that depend on it.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any


def node_key(type_id: str, version: str, literals: Mapping[str, Any],
             upstream: list[tuple[str, str, str]], extra: str = "") -> str:
    """Hash of a node's identity; ``upstream`` is (input, parent key, parent output) per link."""
    # Computed for every node of every run: one string, built in as few steps as can be
    # (the same text as joining the parts with \x1f, sorted links last).
    text = f"{type_id}\x1f{version}\x1f{_encode_literals(literals) if literals else ''}\x1f{extra}"
    if len(upstream) == 1:
        name, key, socket = upstream[0]
        text += f"\x1f{name}<{key}.{socket}"
    elif upstream:
        text += "".join(f"\x1f{name}<{key}.{socket}" for name, key, socket in sorted(upstream))
    return _blake2b(text.encode(), digest_size=16).hexdigest()


_blake2b = hashlib.blake2b


def file_fingerprint(path: Path, *, content: bool = False) -> str:
    """The absolute path, size and modification time (ns) of a file, or of every file in a
    folder (a diffusers model folder); with ``content``, a hash of the bytes too.

    A file rewritten in place, or the same relative name found in another folder, gives a
    different fingerprint, so what was computed from the old file is not served for it.
    """
    resolved = Path(os.path.realpath(path))
    try:
        if resolved.is_dir():
            parts = [str(resolved)]
            for root, dirs, files in os.walk(resolved):
                dirs.sort()
                for name in sorted(files):
                    full = os.path.join(root, name)
                    rel = os.path.relpath(full, resolved)
                    try:
                        st = os.stat(full)
                    except OSError as exc:
                        # A dangling link (skipped by the loaders, with a warning) is one entry,
                        # not the whole folder's fingerprint: the other files still count.
                        parts.append(f"{rel}:unreadable:{exc.errno}")
                        continue
                    parts.append(f"{rel}:{st.st_size}:{st.st_mtime_ns}")
                    if content and stat.S_ISREG(st.st_mode):  # never read a FIFO or a device
                        parts.append(_file_digest(full))
            return hashlib.blake2b("\n".join(parts).encode(), digest_size=16).hexdigest()
        st = resolved.stat()
    except OSError as exc:
        return f"{resolved}:unreadable:{exc.errno}"
    text = f"{resolved}:{st.st_size}:{st.st_mtime_ns}"
    if content and stat.S_ISREG(st.st_mode):  # never read a FIFO or a device
        text += ":" + _file_digest(str(resolved))
    return text


def _file_digest(path: str) -> str:
    digest = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


_SCALARS = frozenset((str, int, float, bool, type(None)))


def _encode_literals(literals: Mapping[str, Any]) -> str:
    # repr of sorted scalar items is stable and tells 1, 1.0 and True apart; it is
    # several times cheaper than JSON, which remains the fallback for nested values.
    items = sorted(literals.items())
    for _k, v in items:
        if type(v) not in _SCALARS:
            return json.dumps(literals, sort_keys=True, separators=(",", ":"), default=repr)
    return repr(items)


class OutputCache:
    """In-memory cache of node outputs.

    Keeps at most ``per_node`` results for each node id (the newest), so a
    graph edited over a session holds a bounded number of images and latents,
    while switching an input back and forth stays cheap.
    """

    def __init__(self, per_node: int = 2) -> None:
        self.per_node = per_node
        self._data: dict[str, dict[str, Any]] = {}
        self._by_node: dict[str, dict[str, None]] = {}
        """Per node id, its keys, oldest first (a plain dict keeps insertion order)."""
        self._refs: dict[str, int] = {}
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._data)

    def __contains__(self, key: object) -> bool:
        return key in self._data

    def get(self, key: str) -> dict[str, Any] | None:
        return self._data.get(key)

    def put(self, key: str, node_id: str, outputs: dict[str, Any]) -> None:
        with self._lock:
            self._data[key] = outputs
            keys = self._by_node.get(node_id)
            if keys is None and self.per_node > 0:  # a node's first result (all of a cold run)
                self._by_node[node_id] = {key: None}
                self._refs[key] = self._refs.get(key, 0) + 1
                return
            if keys is None:
                keys = self._by_node[node_id] = {}
            if key in keys:
                del keys[key]  # now the newest
                keys[key] = None
                return
            keys[key] = None
            self._refs[key] = self._refs.get(key, 0) + 1
            while len(keys) > self.per_node:
                old = next(iter(keys))
                del keys[old]
                self._refs[old] -= 1
                if self._refs[old] == 0:
                    del self._refs[old]
                    self._data.pop(old, None)

    def evict_node(self, node_id: str) -> None:
        """Forget every result of one node (its outputs hold something that was let go)."""
        with self._lock:
            for key in self._by_node.pop(node_id, {}):
                self._refs[key] -= 1
                if self._refs[key] == 0:
                    del self._refs[key]
                    self._data.pop(key, None)

    def clear(self) -> None:
        with self._lock:
            self._data.clear()
            self._by_node.clear()
            self._refs.clear()
