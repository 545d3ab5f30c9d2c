"""Every edit is a QUndoCommand that calls a `Graph` method; undo calls the inverse methods."""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field
from typing import Any

from PySide6.QtGui import QUndoCommand

from nodeflow.graph import Graph, Link

FRAMES_KEY = "@frames"
"""Key of the frames (groups) in the graph's ``editor`` data; node ids cannot contain '@'."""

_MISSING = object()


@dataclass
class NodeRecord:
    """Everything needed to put a node back: id, type, literals, version and layout."""

    id: str
    type: str
    inputs: dict[str, Any]
    version: str | None = None
    layout: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def of(cls, graph: Graph, node_id: str) -> NodeRecord:
        node = graph.node(node_id)
        return cls(node.id, node.type, copy.deepcopy(node.inputs), node.version,
                   copy.deepcopy(graph.editor.get(node_id, {})))


def _restore(graph: Graph, records: list[NodeRecord], links: list[Link]) -> None:
    for r in records:
        graph.add_node(r.type, r.id, copy.deepcopy(r.inputs), r.version)
        if r.layout:
            graph.set_layout(r.id, **copy.deepcopy(r.layout))
    for ln in links:
        if ln.src in graph.nodes and ln.dst in graph.nodes:
            graph.connect(ln.source, ln.target)


class InsertNodes(QUndoCommand):
    """Add nodes (from the palette, a paste or a duplicate) with the links among them."""

    def __init__(self, graph: Graph, records: list[NodeRecord], links: list[Link], text: str) -> None:
        super().__init__(text)
        self.graph, self.records, self.links = graph, records, links

    def redo(self) -> None:
        _restore(self.graph, self.records, self.links)

    def undo(self) -> None:
        for r in reversed(self.records):
            if r.id in self.graph.nodes:
                self.graph.remove_node(r.id)


class RemoveNodes(QUndoCommand):
    """Delete nodes and every link touching them."""

    def __init__(self, graph: Graph, node_ids: list[str]) -> None:
        n = len(node_ids)
        super().__init__(f"Delete {n} node{'s' if n != 1 else ''}" if n != 1 else f"Delete {node_ids[0]}")
        self.graph = graph
        self.records = [NodeRecord.of(graph, n) for n in node_ids]
        gone = set(node_ids)
        self.links = [ln for ln in graph.links if ln.src in gone or ln.dst in gone]

    def redo(self) -> None:
        for r in self.records:
            self.graph.remove_node(r.id)

    def undo(self) -> None:
        _restore(self.graph, self.records, self.links)


class ConnectSockets(QUndoCommand):
    """Link an output to an input, replacing the input's previous link or literal value."""

    def __init__(self, graph: Graph, source: str, target: str) -> None:
        super().__init__(f"Connect {source} → {target}")
        self.graph, self.source, self.target = graph, source, target
        dst, socket = target.split(".", 1)
        self.previous = next((ln for ln in graph.links if ln.target == target), None)
        self.literal = graph.node(dst).inputs.get(socket, _MISSING)

    def redo(self) -> None:
        dst, socket = self.target.split(".", 1)
        if self.literal is not _MISSING:
            self.graph.clear_input(dst, socket)
        self.graph.connect(self.source, self.target)

    def undo(self) -> None:
        dst, socket = self.target.split(".", 1)
        self.graph.disconnect(self.target)
        if self.previous is not None:
            self.graph.connect(self.previous.source, self.previous.target)
        if self.literal is not _MISSING:
            self.graph.set_input(dst, socket, copy.deepcopy(self.literal))


class DisconnectSocket(QUndoCommand):
    """Remove the link into an input."""

    def __init__(self, graph: Graph, target: str) -> None:
        super().__init__(f"Disconnect {target}")
        self.graph, self.target = graph, target
        self.previous = next((ln for ln in graph.links if ln.target == target), None)

    def redo(self) -> None:
        self.graph.disconnect(self.target)

    def undo(self) -> None:
        if self.previous is not None:
            self.graph.connect(self.previous.source, self.previous.target)


class SetInput(QUndoCommand):
    """Change (or clear, with ``value=None`` and ``clear=True``) a literal input.

    Consecutive edits of the same input merge into one undo step (typing, slider drags).
    """

    ID = 1001
    MERGE_SECONDS = 2.0

    def __init__(self, graph: Graph, node_id: str, socket: str, value: Any, *, clear: bool = False,
                 merge: bool = True) -> None:
        super().__init__(f"Set {node_id}.{socket}")
        self.merge = merge
        """False: a step of its own (a drag, a click on a field), not merged into the typing before it."""
        self.when = time.monotonic()
        self.graph, self.node_id, self.socket = graph, node_id, socket
        self.old = copy.deepcopy(graph.node(node_id).inputs.get(socket, _MISSING))
        self.new = _MISSING if clear else copy.deepcopy(value)

    def id(self) -> int:
        return self.ID

    def mergeWith(self, other: QUndoCommand) -> bool:
        if not isinstance(other, SetInput) or not (self.merge and other.merge) or \
                (other.node_id, other.socket) != (self.node_id, self.socket):
            return False
        if other.when - self.when > self.MERGE_SECONDS:
            return False
        self.new = other.new
        self.when = other.when
        return True

    def _apply(self, value: Any) -> None:
        if value is _MISSING:
            self.graph.clear_input(self.node_id, self.socket)
        else:
            self.graph.set_input(self.node_id, self.socket, copy.deepcopy(value))

    def redo(self) -> None:
        self._apply(self.new)

    def undo(self) -> None:
        self._apply(self.old)


class MoveNodes(QUndoCommand):
    """Move nodes (a drag of the selection is one step; key nudges of the same nodes merge)."""

    ID = 1002

    def __init__(self, graph: Graph, moves: dict[str, tuple[tuple[float, float], tuple[float, float]]],
                 *, nudge: bool = False) -> None:
        n = len(moves)
        super().__init__(f"Move {n} node{'s' if n != 1 else ''}")
        self.graph, self.moves, self.nudge = graph, moves, nudge

    def id(self) -> int:
        return self.ID if self.nudge else -1

    def mergeWith(self, other: QUndoCommand) -> bool:
        if not isinstance(other, MoveNodes) or not other.nudge or set(other.moves) != set(self.moves):
            return False
        self.moves = {k: (self.moves[k][0], other.moves[k][1]) for k in self.moves}
        return True

    def redo(self) -> None:
        for node_id, (_old, new) in self.moves.items():
            if node_id in self.graph.nodes:
                self.graph.set_layout(node_id, pos=[round(new[0], 1), round(new[1], 1)])

    def undo(self) -> None:
        for node_id, (old, _new) in self.moves.items():
            if node_id in self.graph.nodes:
                self.graph.set_layout(node_id, pos=[round(old[0], 1), round(old[1], 1)])


class SetLayout(QUndoCommand):
    """Change one editor-only setting of a node (or the frames), such as an input shown as a socket."""

    def __init__(self, graph: Graph, key: str, name: str, value: Any, text: str) -> None:
        super().__init__(text)
        self.graph, self.key, self.name = graph, key, name
        self.old = copy.deepcopy(graph.editor.get(key, {}).get(name))
        self.new = copy.deepcopy(value)

    def redo(self) -> None:
        self.graph.set_layout(self.key, **{self.name: copy.deepcopy(self.new)})

    def undo(self) -> None:
        self.graph.set_layout(self.key, **{self.name: copy.deepcopy(self.old)})


def frames_of(graph: Graph) -> list[dict[str, Any]]:
    """The frames (groups) drawn behind nodes: ``{"title", "rect": [x, y, w, h], "color"}``."""
    entry = graph.editor.get(FRAMES_KEY)
    items = entry.get("frames") if isinstance(entry, dict) else None
    return [f for f in items if isinstance(f, dict)] if isinstance(items, list) else []


def set_frames(graph: Graph, frames: list[dict[str, Any]], text: str) -> SetLayout:
    return SetLayout(graph, FRAMES_KEY, "frames", frames, text)
