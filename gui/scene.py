"""The canvas model: one item per node, link and frame, kept in step with the `Graph`."""

from __future__ import annotations

import gc
from dataclasses import dataclass
from typing import Any

from PySide6.QtCore import QPointF, QRectF, Qt, Signal
from PySide6.QtGui import QPen, QPixmapCache, QTransform
from PySide6.QtWidgets import QGraphicsPathItem, QGraphicsScene, QInputDialog

from nodeflow.api import REQUIRED
from nodeflow.graph import Link

from . import commands as cmd
from . import theme
from .connect import TypeResolver, accepts, downstream_of, refusal, upstream_of
from .document import Document
from .inline_edit import InlineEditor
from .items import FrameItem, LinkItem, NodeItem, OverviewItem, curve, socket_color
from .labels import node_title
from .layout import auto_positions, node_pos, stretch


@dataclass
class LinkDrag:
    """A link being dragged out of a socket."""

    kind: str  # the socket it started from: "out" or "in"
    node: str
    socket: str
    type: Any
    detached: str | None = None
    """The input whose existing link was picked up (dropping it on empty canvas removes it)."""


@dataclass
class PaletteFilter:
    """Only node types that can be linked to a dragged socket; the new node gets linked to it."""

    kind: str  # "out": the new node needs an input accepting `type`; "in": an output of `type`
    node: str
    socket: str
    type: Any


class GraphScene(QGraphicsScene):
    linkRefused = Signal(str)
    paletteRequested = Signal(QPointF, object)
    nodeActivated = Signal(str)

    def __init__(self, doc: Document, parent: Any = None) -> None:
        super().__init__(parent)
        self.doc = doc
        self.graph = doc.graph
        self.registry = doc.registry
        self.node_items: dict[str, NodeItem] = {}
        self.link_items: dict[str, LinkItem] = {}
        self.links_of: dict[str, set[LinkItem]] = {}
        self.frame_items: list[FrameItem] = []
        self.linked_inputs: set[tuple[str, str]] = set()
        self.drag: LinkDrag | None = None
        # One reusable item for the link being dragged (deleting items mid-event is unsafe).
        self._drag_path = QGraphicsPathItem()
        self._drag_path.setZValue(5)
        self._drag_path.setAcceptedMouseButtons(Qt.MouseButton.NoButton)
        self._drag_path.setVisible(False)
        self._press_positions: dict[str, QPointF] = {}
        self._frame_press: tuple[list[float], dict[str, QPointF]] | None = None
        self._syncing = False
        self._building = False
        self.last_refused_target: str | None = None
        self.inline = InlineEditor(self)
        """Editing a value on its node (double-click the value)."""
        """The input socket of the last refused link (where its message is shown)."""
        self.next_node_pos: QPointF | None = None
        self.setBackgroundBrush(theme.CANVAS)
        # Node pictures are cached (see set_item_cache): room for a few hundred of them.
        QPixmapCache.setCacheLimit(max(QPixmapCache.cacheLimit(), 256 * 1024))
        self.setItemIndexMethod(QGraphicsScene.ItemIndexMethod.BspTreeIndex)
        self.addItem(self._drag_path)
        self.overview = OverviewItem(self)
        self.overview_mode = False
        self._item_cache = True
        self.addItem(self.overview)
        self.selectionChanged.connect(self.overview.invalidate)
        self.build()
        doc.graphChanged.connect(self._on_change)
        doc.problemsChanged.connect(self.apply_problems)
        self.apply_problems()

    # --- building -----------------------------------------------------------------------------
    def build(self) -> None:
        # Thousands of small objects are made here: the cycle collector would scan the whole heap
        # again and again while they are, so it waits until the graph is built.
        collecting = gc.isenabled()
        gc.disable()
        self._building = True
        try:
            self._build()
        finally:
            self._building = False
            if collecting:
                gc.enable()

    def _build(self) -> None:
        graph = self.graph
        self.linked_inputs = {(ln.dst, ln.dst_socket) for ln in graph.links}
        for node_id in graph.nodes:
            item = NodeItem(self, node_id)
            self.node_items[node_id] = item
            self.addItem(item)
        placed = auto_positions(graph, {n: (it.width, it.height) for n, it in self.node_items.items()})
        for node_id, (x, y) in placed.items():
            # Layout of a file that had none: recorded so a save keeps what the user saw.
            graph.editor.setdefault(node_id, {})["pos"] = [x, y]
        self._syncing = True
        for node_id, item in self.node_items.items():
            pos = node_pos(graph, node_id)
            if pos is not None:
                item.setPos(*pos)
        self._syncing = False
        self._stretch_to_fit()
        self._separate(sorted(self.node_items.values(), key=lambda it: (it.pos().y(), it.pos().x())))
        resolver = TypeResolver(graph, self.registry)
        for ln in graph.links:
            self._add_link(ln, resolver)
        self._build_frames()

    def _stretch_to_fit(self) -> None:
        """Spread a placed layout whose nodes overlap at their real sizes (see `layout.stretch`);
        the new places are written to the graph's layout, so a save keeps what is shown."""
        rects = {n: (it.pos().x(), it.pos().y(), it.width, it.height) for n, it in self.node_items.items()}
        sx, sy = stretch(rects)
        if sx == 1.0 and sy == 1.0:
            return
        x0 = min(r[0] for r in rects.values())
        y0 = min(r[1] for r in rects.values())
        self._syncing = True
        for node_id, item in self.node_items.items():
            x, y = x0 + (item.pos().x() - x0) * sx, y0 + (item.pos().y() - y0) * sy
            item.setPos(x, y)
            self.graph.editor.setdefault(node_id, {})["pos"] = [round(x, 1), round(y, 1)]
        self._syncing = False

    def _build_frames(self) -> None:
        for f in self.frame_items:
            self.removeItem(f)
        self.frame_items = []
        for i, data in enumerate(cmd.frames_of(self.graph)):
            item = FrameItem(self, i, data)
            self.frame_items.append(item)
            self.addItem(item)

    def _add_link(self, ln: Link, resolver: TypeResolver | None = None) -> None:
        src, dst = self.node_items.get(ln.src), self.node_items.get(ln.dst)
        if src is None or dst is None:
            return
        resolver = resolver or TypeResolver(self.graph, self.registry)
        color = socket_color(resolver.output_type(ln.src, ln.src_socket))
        item = LinkItem(src, ln.src_socket, dst, ln.dst_socket, color)
        old = self.link_items.pop(ln.target, None)
        if old is not None:
            self._drop_link_item(old)
        self.link_items[ln.target] = item
        item.setVisible(not self.overview_mode)
        self.links_of.setdefault(ln.src, set()).add(item)
        self.links_of.setdefault(ln.dst, set()).add(item)
        self.addItem(item)

    def _drop_link_item(self, item: LinkItem) -> None:
        for n in (item.src.node_id, item.dst.node_id):
            self.links_of.get(n, set()).discard(item)
        self.removeItem(item)

    # --- model notifications ---------------------------------------------------------------------
    def _on_change(self, kind: str, info: dict[str, Any]) -> None:
        graph = self.graph
        if kind in ("input_set", "input_cleared", "unlinked"):
            self._outdated(info.get("node") or info["target"].split(".", 1)[0])
        elif kind == "linked":
            self._outdated(info["link"].dst)
        if kind not in ("input_set", "input_cleared"):  # values do not show in the overview
            self.overview.invalidate()
        if kind == "node_added":
            node_id = info["node"]
            item = NodeItem(self, node_id)
            self.node_items[node_id] = item
            pos = node_pos(graph, node_id)
            if pos is None:
                at = self.next_node_pos or QPointF(0, 0)
                pos = (at.x(), at.y())
            self._syncing = True
            item.setPos(*pos)
            self._syncing = False
            item.setFlag(NodeItem.GraphicsItemFlag.ItemHasNoContents, self.overview_mode)
            if not self._item_cache:
                item.setCacheMode(NodeItem.CacheMode.ItemCoordinateCache)
            self.addItem(item)
        elif kind == "node_removed":
            node_id = info["node"]
            if self.inline.node_id == node_id:
                self.inline.cancel()
            gone = self.node_items.pop(node_id, None)
            for link in list(self.links_of.pop(node_id, set())):
                self.link_items.pop(link.target, None)
                self._drop_link_item(link)
                other = link.dst if link.src is gone else link.src
                other.refresh()
            self.linked_inputs = {(ln.dst, ln.dst_socket) for ln in graph.links}
            if gone is not None:
                self.removeItem(gone)
        elif kind in ("input_set", "input_cleared"):
            changed = self.node_items.get(info["node"])
            if changed is not None:
                changed.refresh()
            if changed is not None and info.get("socket") in ("width", "height") and changed._cls is not None \
                    and any(getattr(o.type, "name", "") == "LATENT" for o in changed._cls.outputs):
                for item in self.node_items.values():  # the picture size areas are drawn on changed
                    if item.has_area:
                        item.refresh()
        elif kind == "linked":
            ln: Link = info["link"]
            self.linked_inputs.add((ln.dst, ln.dst_socket))
            self._add_link(ln)
            for n in (ln.src, ln.dst):
                if n in self.node_items:
                    self.node_items[n].refresh()
            self._recolor_from(ln.dst)
        elif kind == "unlinked":
            target = info["target"]
            dst, socket = target.split(".", 1)
            self.linked_inputs.discard((dst, socket))
            old = self.link_items.pop(target, None)
            if old is not None:
                self._drop_link_item(old)
                old.src.refresh()
            if dst in self.node_items:
                self.node_items[dst].refresh()
            self._recolor_from(dst)
        elif kind == "layout":
            node_id = info["node"]
            if node_id == cmd.FRAMES_KEY:
                self._build_frames()
            elif node_id in self.node_items:
                item = self.node_items[node_id]
                pos = node_pos(graph, node_id)
                if pos is not None and (item.pos().x(), item.pos().y()) != pos:
                    self._syncing = True
                    item.setPos(*pos)
                    self._syncing = False
                item.refresh()

    def _outdated(self, node_id: str) -> None:
        """After an edit, run results of the node and what depends on it no longer hold."""
        if not any(item.status for item in self.node_items.values()):
            return
        for n in downstream_of(self.graph, node_id):
            item = self.node_items.get(n)
            if item is not None and item.status:
                item.status, item.status_text, item.progress, item.error = "", "", None, None
                item.update()
        self.overview.invalidate()

    def set_item_cache(self, on: bool) -> None:
        """Nodes are cached as pictures at the screen's resolution (sharp, cheap to pan), which
        must be redrawn at every zoom step; so while the zoom changes (``on`` False) they are
        cached at their own scale instead and only scaled, then sharp again when it settles."""
        if on == self._item_cache:
            return
        self._item_cache = on
        mode = NodeItem.CacheMode.DeviceCoordinateCache if on else NodeItem.CacheMode.ItemCoordinateCache
        for item in self.node_items.values():
            item.setCacheMode(mode)

    def set_overview(self, on: bool) -> None:
        """Draw the whole graph with one item (far zoomed out) or each item itself."""
        if on == self.overview_mode:
            return
        self.overview_mode = on
        for item in self.node_items.values():
            item.setFlag(NodeItem.GraphicsItemFlag.ItemHasNoContents, on)
        for link in self.link_items.values():
            link.setVisible(not on)
        self.overview._dirty = True
        self.overview.setVisible(on)
        if on:
            self.overview._rebuild()
        self.update()

    def _recolor_from(self, node_id: str) -> None:
        """Generic outputs take the type of what feeds them: recolour links downstream."""
        resolver = TypeResolver(self.graph, self.registry)
        for n in downstream_of(self.graph, node_id):
            for item in self.links_of.get(n, ()):
                if item.src.node_id == n:
                    color = socket_color(resolver.output_type(n, item.src_socket))
                    if color != item.base_color:
                        item.base_color = color
                        item._apply_pen()

    def apply_problems(self) -> None:
        by_node = self.doc.problems_by_node
        for node_id, item in self.node_items.items():
            found = by_node.get(node_id, [])
            texts = [str(p) for p in found]
            if texts != item.problems:
                if bool(texts) != bool(item.problems):
                    self.overview.invalidate()
                item.problems = texts
                item.problem_sockets = {p.location.socket for p in found if p.location.socket}
                item.update()
        bad = {f"{p.location.node}.{p.location.socket}" for p in self.doc.problems
               if p.code == "type_mismatch"}
        for target, link in self.link_items.items():
            invalid = target in bad
            if invalid != link.invalid:
                link.invalid = invalid
                link._apply_pen()

    # --- moves ------------------------------------------------------------------------------
    def node_moved(self, item: NodeItem) -> None:
        for link in self.links_of.get(item.node_id, ()):
            link.update_path()
        self.overview.invalidate()

    def node_grew(self, item: NodeItem, gap: float = 30.0) -> None:
        """A node got taller (a picture arrived): move the nodes it now covers down, and the nodes
        those cover, so no two nodes overlap. The new places are written to the graph's layout, so a
        save keeps what is shown; they are not an undo step (the user did not move anything)."""
        if self._building:
            return
        self._separate([item], gap)

    def _separate(self, grown_items: list[NodeItem], gap: float = 30.0) -> None:
        """Move down every node that one of ``grown_items`` covers (and what those then cover).

        Rectangles are looked up in a grid of cells (the scene's index would be rebuilt after
        every move), so checking a thousand nodes on opening takes milliseconds."""
        cell = 400.0
        rects = {it: it.body_rect() for it in self.node_items.values()}
        grid: dict[tuple[int, int], set[NodeItem]] = {}

        def cells(r: QRectF) -> list[tuple[int, int]]:
            x0, x1 = int(r.left() // cell), int(r.right() // cell)
            y0, y1 = int(r.top() // cell), int(r.bottom() // cell)
            return [(cx, cy) for cx in range(x0, x1 + 1) for cy in range(y0, y1 + 1)]

        for it, r in rects.items():
            for c in cells(r):
                grid.setdefault(c, set()).add(it)
        queue = list(grown_items)
        moved = 0
        while queue and moved < 10 * len(self.node_items):
            grown = queue.pop(0)
            rect = rects[grown]
            near = set().union(*(grid.get(c, set()) for c in cells(rect)))
            for other in sorted(near, key=lambda it: (rects[it].top(), rects[it].left())):
                other_rect = rects[other]
                if other is grown or not other_rect.intersects(rect) or other_rect.top() < rect.top():
                    continue
                for c in cells(other_rect):
                    grid[c].discard(other)
                y = rect.bottom() + gap
                self._syncing = True
                other.setPos(other.pos().x(), y)
                self._syncing = False
                self.graph.editor.setdefault(other.node_id, {})["pos"] = [other.pos().x(), y]
                rects[other] = other.body_rect()
                for c in cells(rects[other]):
                    grid.setdefault(c, set()).add(other)
                queue.append(other)
                moved += 1

    def mousePressEvent(self, event: Any) -> None:
        super().mousePressEvent(event)
        self._press_positions = {it.node_id: it.pos() for it in self.selectedItems() if isinstance(it, NodeItem)}

    def mouseReleaseEvent(self, event: Any) -> None:
        super().mouseReleaseEvent(event)
        self.commit_moves(self._press_positions)
        self._press_positions = {}

    def commit_moves(self, before: dict[str, QPointF]) -> None:
        moves = {}
        for node_id, old in before.items():
            item = self.node_items.get(node_id)
            if item is not None and item.pos() != old:
                moves[node_id] = ((old.x(), old.y()), (item.pos().x(), item.pos().y()))
        if moves:
            self.doc.push(cmd.MoveNodes(self.graph, moves))

    def nudge(self, dx: float, dy: float) -> None:
        items = [it for it in self.selectedItems() if isinstance(it, NodeItem)]
        if items:
            moves = {it.node_id: ((it.pos().x(), it.pos().y()), (it.pos().x() + dx, it.pos().y() + dy))
                     for it in items}
            self.doc.push(cmd.MoveNodes(self.graph, moves, nudge=True))

    # --- frames ----------------------------------------------------------------------------
    def frame_press(self, frame: FrameItem) -> None:
        self._frame_press = (frame.rect_data(), {})

    def frame_release(self, frame: FrameItem, carried: list[NodeItem]) -> None:
        if self._frame_press is None:
            return
        old_rect, _ = self._frame_press
        self._frame_press = None
        if frame.rect_data() == old_rect:
            return
        dx, dy = frame.rect_data()[0] - old_rect[0], frame.rect_data()[1] - old_rect[1]
        frames = cmd.frames_of(self.graph)
        if frame.index >= len(frames):
            return
        frames = [dict(f) for f in frames]
        frames[frame.index]["rect"] = frame.rect_data()
        self.doc.undo.beginMacro("Move frame")
        moved = {it.node_id: ((it.pos().x() - dx, it.pos().y() - dy), (it.pos().x(), it.pos().y()))
                 for it in carried if not it.isSelected() and it.node_id in self.node_items}
        if moved and (dx or dy):
            self.doc.push(cmd.MoveNodes(self.graph, moved))
        self.doc.push(cmd.set_frames(self.graph, frames, "Move frame"))
        self.doc.undo.endMacro()

    def rename_frame(self, frame: FrameItem) -> None:
        views = self.views()
        text, ok = QInputDialog.getText(views[0] if views else None, "Frame title", "Title:", text=frame.title)
        if ok:
            frames = [dict(f) for f in cmd.frames_of(self.graph)]
            if frame.index < len(frames):
                frames[frame.index]["title"] = text
                self.doc.push(cmd.set_frames(self.graph, frames, "Rename frame"))

    def frame_selection(self, title: str = "Group") -> None:
        items = [it for it in self.selectedItems() if isinstance(it, NodeItem)]
        if not items:
            return
        rect = QRectF()
        for it in items:
            rect = rect.united(it.sceneBoundingRect())
        rect.adjust(-20, -FrameItem.TITLE - 20, 20, 20)
        frames = [dict(f) for f in cmd.frames_of(self.graph)]
        frames.append({"title": title, "rect": [round(rect.x(), 1), round(rect.y(), 1),
                                                round(rect.width(), 1), round(rect.height(), 1)]})
        self.doc.push(cmd.set_frames(self.graph, frames, "Group nodes"))

    # --- link dragging ------------------------------------------------------------------------
    def begin_link_drag(self, item: NodeItem, kind: str, socket: str, at: QPointF) -> None:
        resolver = TypeResolver(self.graph, self.registry)
        detached = None
        if kind == "in" and (item.node_id, socket) in self.linked_inputs:
            link = self.link_items.get(f"{item.node_id}.{socket}")
            if link is not None:  # pick the link up from its input
                detached = link.target
                link.setVisible(False)
                kind, item, socket = "out", link.src, link.src_socket
        t = resolver.output_type(item.node_id, socket) if kind == "out" else resolver.input_type(item.node_id, socket)
        self.drag = LinkDrag(kind, item.node_id, socket, t, detached)
        pen = QPen(socket_color(t), 2.2)
        pen.setDashPattern([4, 3])
        self._drag_path.setPen(pen)
        self._drag_path.setVisible(True)
        self._mark_candidates(resolver)
        self.drag_move(at)

    def _mark_candidates(self, resolver: TypeResolver) -> None:
        drag = self.drag
        assert drag is not None
        if drag.kind == "out":
            blocked = upstream_of(self.graph, drag.node)
        else:
            blocked = downstream_of(self.graph, drag.node)
        for node_id, item in self.node_items.items():
            marks: dict[tuple[str, str], bool] = {}
            want = "in" if drag.kind == "out" else "out"
            for r in item.rows:
                if r.kind != want:
                    continue
                if node_id in blocked:
                    ok = False
                elif want == "in":
                    ok = accepts(drag.type, resolver.input_type(node_id, r.name))
                else:
                    ok = accepts(resolver.output_type(node_id, r.name), drag.type)
                marks[(r.kind, r.name)] = ok
            item.drag_marks = marks
            item.update()

    def drag_move(self, at: QPointF) -> None:
        if self.drag is None:
            return
        origin = self.node_items[self.drag.node].socket_pos(self.drag.kind, self.drag.socket)
        hit = self._drop_target(at)
        end = at
        if hit is not None:
            end = self.node_items[hit[0]].socket_pos(hit[1], hit[2])
        a, b = (origin, end) if self.drag.kind == "out" else (end, origin)
        self._drag_path.setPath(curve(a, b))

    def _drop_target(self, at: QPointF) -> tuple[str, str, str] | None:
        """(node, kind, socket) under the pointer that the dragged link would attach to."""
        drag = self.drag
        if drag is None:
            return None
        want = "in" if drag.kind == "out" else "out"
        for item in self.items(at, deviceTransform=QTransform()):
            if not isinstance(item, NodeItem) or item.node_id == drag.node:
                continue
            local = item.mapFromScene(at)
            socket = item.socket_at(local, radius=14)
            if socket is not None and socket[0] == want:
                return item.node_id, want, socket[1]
            # Dropped on the body: the first compatible free socket of the right kind.
            for r in item.rows:
                if r.kind == want and item.drag_marks.get((r.kind, r.name)):
                    if want == "in" and (item.node_id, r.name) in self.linked_inputs:
                        continue
                    return item.node_id, want, r.name
            return None
        return None

    def end_link_drag(self, at: QPointF) -> None:
        drag = self.drag
        if drag is None:
            return
        hit = self._drop_target(at)
        self.cancel_link_drag()
        if hit is None:
            if drag.detached is not None:
                self.doc.push(cmd.DisconnectSocket(self.graph, drag.detached))
            else:
                self.paletteRequested.emit(at, PaletteFilter(drag.kind, drag.node, drag.socket, drag.type))
            return
        node_id, kind, socket = hit
        if drag.kind == "out":
            source, target = f"{drag.node}.{drag.socket}", f"{node_id}.{socket}"
        else:
            source, target = f"{node_id}.{socket}", f"{drag.node}.{drag.socket}"
        if drag.detached == target:
            return
        self.connect_sockets(source, target, detached=drag.detached)

    def cancel_link_drag(self) -> None:
        drag = self.drag
        self.drag = None
        self._drag_path.setVisible(False)
        if drag is not None and drag.detached and drag.detached in self.link_items:
            self.link_items[drag.detached].setVisible(True)
        for item in self.node_items.values():
            if item.drag_marks:
                item.drag_marks = {}
                item.update()

    def connect_sockets(self, source: str, target: str, *, detached: str | None = None) -> str | None:
        """Link ``source`` to ``target`` as one undoable edit; return the refusal reason if refused."""
        why = refusal(self.graph, self.registry, source, target)
        if why is not None:
            self.last_refused_target = target
            self.linkRefused.emit(why)
            return why
        if detached is not None and detached != target:
            self.doc.undo.beginMacro(f"Move link to {target}")
            self.doc.push(cmd.DisconnectSocket(self.graph, detached))
            self.doc.push(cmd.ConnectSockets(self.graph, source, target))
            self.doc.undo.endMacro()
        else:
            self.doc.push(cmd.ConnectSockets(self.graph, source, target))
        return None

    # --- adding nodes -----------------------------------------------------------------------------
    def add_node(self, type_id: str, at: QPointF, link_to: PaletteFilter | None = None) -> str:
        """Add a node of ``type_id`` at ``at`` (literal inputs set to their defaults), as one undo step."""
        cls = self.registry.get(type_id)
        if cls is None:
            raise KeyError(type_id)
        node_id = self.graph.new_id(cls.id.rsplit(".", 1)[-1].lower())
        inputs = {spec.name: spec.default for spec in cls.inputs
                  if spec.accepts_literal and spec.default is not REQUIRED and spec.default is not None}
        record = cmd.NodeRecord(node_id, cls.id, inputs, cls.version,
                                {"pos": [round(at.x(), 1), round(at.y(), 1)]})
        self.doc.undo.beginMacro(f"Add {node_title(cls)}")
        self.doc.push(cmd.InsertNodes(self.graph, [record], [], f"Add {node_title(cls)}"))
        if link_to is not None:
            pair = self._link_for_new(node_id, link_to)
            if pair is not None:
                self.doc.push(cmd.ConnectSockets(self.graph, *pair))
        self.doc.undo.endMacro()
        return node_id

    def _link_for_new(self, node_id: str, f: PaletteFilter) -> tuple[str, str] | None:
        resolver = TypeResolver(self.graph, self.registry)
        cls = self.registry.get(self.graph.nodes[node_id].type)
        if cls is None:
            return None
        if f.kind == "out":
            for spec in cls.inputs:
                if accepts(f.type, resolver.input_type(node_id, spec.name)):
                    return f"{f.node}.{f.socket}", f"{node_id}.{spec.name}"
        else:
            for out in cls.outputs:
                if accepts(resolver.output_type(node_id, out.name), f.type):
                    return f"{node_id}.{out.name}", f"{f.node}.{f.socket}"
        return None

    # --- selection ---------------------------------------------------------------------------------
    def selected_node_ids(self) -> list[str]:
        return [it.node_id for it in self.selectedItems() if isinstance(it, NodeItem)]

    def select_nodes(self, node_ids: list[str]) -> None:
        self.clearSelection()
        for n in node_ids:
            if n in self.node_items:
                self.node_items[n].setSelected(True)

    def delete_selection(self) -> None:
        nodes = self.selected_node_ids()
        gone = set(nodes)
        links = [it.target for it in self.selectedItems()
                 if isinstance(it, LinkItem) and it.src.node_id not in gone and it.dst.node_id not in gone]
        frames = [it.index for it in self.selectedItems() if isinstance(it, FrameItem)]
        if not (nodes or links or frames):
            return
        self.doc.undo.beginMacro("Delete")
        for target in links:
            self.doc.push(cmd.DisconnectSocket(self.graph, target))
        if nodes:
            self.doc.push(cmd.RemoveNodes(self.graph, nodes))
        if frames:
            kept = [f for i, f in enumerate(cmd.frames_of(self.graph)) if i not in set(frames)]
            self.doc.push(cmd.set_frames(self.graph, kept, "Delete frame"))
        self.doc.undo.endMacro()

    def node_activated(self, item: NodeItem) -> None:
        self.nodeActivated.emit(item.node_id)

    # --- run status ----------------------------------------------------------------------------------
    def set_status(self, node_id: str, status: str, text: str = "", progress: float | None = None) -> None:
        item = self.node_items.get(node_id)
        if item is None:
            return
        if (item.status, item.status_text, item.progress) != (status, text, progress):
            if item.status != status:
                self.overview.invalidate()
            item.status, item.status_text, item.progress = status, text, progress
            item.update()

    def clear_status(self) -> None:
        for item in self.node_items.values():
            if item.status or item.error:
                item.status, item.status_text, item.progress, item.error = "", "", None, None
                item.update()

    def items_rect(self) -> QRectF:
        rect = QRectF()
        for item in self.node_items.values():
            rect = rect.united(item.sceneBoundingRect())
        for frame in self.frame_items:
            rect = rect.united(frame.sceneBoundingRect())
        return rect

