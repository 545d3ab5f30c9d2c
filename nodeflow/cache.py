"""Output cache: node outputs keyed by a content hash of everything that determines them.

A node's key is a hash of its type, version, literal inputs and the keys of the
outputs it is linked to (Merkle-style), so computing it costs the same for
every node whatever the size of the graph, and changing one input changes the
keys of exactly the nodes that depend on it.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any


def node_key(type_id: str, version: str, literals: Mapping[str, Any],
             upstream: list[tuple[str, str, str]], extra: str = "") -> str:
    """Hash of a node's identity; ``upstream`` is (input, parent key, parent output) per link."""
    literal_text = _encode_literals(literals) if literals else ""
    parts = [type_id, version, literal_text, extra]
    for name, key, socket in sorted(upstream):
        parts.append(f"{name}<{key}.{socket}")
    return hashlib.blake2b("\x1f".join(parts).encode(), digest_size=16).hexdigest()


_SCALARS = (str, int, float, bool, type(None))


def _encode_literals(literals: Mapping[str, Any]) -> str:
    # repr of sorted scalar items is stable and tells 1, 1.0 and True apart; it is
    # several times cheaper than JSON, which remains the fallback for nested values.
    items = sorted(literals.items())
    if all(type(v) in _SCALARS for _k, v in items):
        return repr(items)
    return json.dumps(literals, sort_keys=True, separators=(",", ":"), default=repr)


class OutputCache:
    """In-memory cache of node outputs.

    Keeps at most ``per_node`` results for each node id (the newest), so a
    graph edited over a session holds a bounded number of images and latents,
    while switching an input back and forth stays cheap.
    """

    def __init__(self, per_node: int = 2) -> None:
        self.per_node = per_node
        self._data: dict[str, dict[str, Any]] = {}
        self._by_node: dict[str, OrderedDict[str, None]] = {}
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
            keys = self._by_node.setdefault(node_id, OrderedDict())
            if key in keys:
                keys.move_to_end(key)
                return
            keys[key] = None
            self._refs[key] = self._refs.get(key, 0) + 1
            while len(keys) > self.per_node:
                old, _ = keys.popitem(last=False)
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
