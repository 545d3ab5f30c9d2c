"""What the canvas draws: nodes and frames painted with QPainter, links as curves."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import shiboken6
from PySide6.QtCore import QPointF, QRectF, Qt, QTimer
from PySide6.QtGui import (
    QBrush,
    QColor,
    QFontMetricsF,
    QImage,
    QPainter,
    QPainterPath,
    QPainterPathStroker,
    QPen,
    QPixmap,
)
from PySide6.QtWidgets import QGraphicsItem, QGraphicsPathItem, QStyleOptionGraphicsItem, QWidget

from nodeflow.api import IMAGE, MASK, Node, SocketType, TypeParam, UnionType

from . import node_widgets as nw
from . import theme
from .labels import node_title
from .node_widgets import seed_mode_of

if TYPE_CHECKING:
    from .scene import GraphScene

LOW_DETAIL = 0.4
FIELD_DETAIL = 0.55
"""Below this zoom fields are drawn as plain boxes (their text would be unreadable)."""
_MOVED = QGraphicsItem.GraphicsItemChange.ItemScenePositionHasChanged
_AA = QPainter.RenderHint.Antialiasing
_NO_BRUSH = Qt.BrushStyle.NoBrush
"""Below this zoom a node is drawn as a plain coloured box (fast when the whole graph is in view)."""
BATCH_SHOWN = 16
"""At most this many pictures of a batch are drawn in a node (the Images panel has them all)."""


def shows_pictures(cls: type[Node] | None) -> bool:
    """Whether a node of this type shows pictures after a run (so it keeps room for them):
    it makes pictures or masks, saves or previews them, or samples (live previews, seeded)."""
    if cls is None:
        return False
    if any(o.type in (IMAGE, MASK) for o in cls.outputs):
        return True
    if cls.output_node and any(i.type in (IMAGE, MASK) for i in cls.inputs):
        return True
    return any(i.seed for i in cls.inputs)


_COLORS: dict[str, QColor] = {}


def socket_color(t: Any) -> QColor:
    if isinstance(t, SocketType):
        color = _COLORS.get(t.color)
        if color is None:
            color = _COLORS[t.color] = QColor(t.color)
        return QColor(color)
    if isinstance(t, UnionType) and t.types:
        return QColor(t.types[0].color)
    if isinstance(t, TypeParam) and t.bound is not None:
        return socket_color(t.bound)
    return QColor("#bdbdbd")


@dataclass
class Row:
    name: str
    kind: str  # "in" | "out"
    type: Any
    color: QColor
    y: float
    field: nw.Field | None = None
    """The field editing the input's value on the node (None: a socket row)."""


class _Fonts:
    title = theme.ui_font(9.5, bold=True)
    label = theme.ui_font(8.5)
    badge = theme.ui_font(7.5, bold=True)
    _metrics: dict[str, QFontMetricsF] = {}

    _widths: dict[tuple[str, str], float] = {}

    @classmethod
    def width(cls, which: str, text: str) -> float:
        key = (which, text)
        w = cls._widths.get(key)
        if w is None:
            if len(cls._widths) > 20000:
                cls._widths.clear()
            w = cls._widths[key] = cls.metrics(which).horizontalAdvance(text)
        return w

    @classmethod
    def metrics(cls, which: str) -> QFontMetricsF:
        if which not in cls._metrics:
            cls._metrics[which] = QFontMetricsF(getattr(cls, which))
        return cls._metrics[which]


def format_value(value: Any) -> str:
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, float):
        text = f"{value:.4g}" if abs(value) < 1e5 else f"{value:.3e}"
        return text
    if isinstance(value, str):
        line = value.replace("\n", " ⏎ ")
        return f"“{line[:16]}…”" if len(line) > 17 else f"“{line}”" if value else "“”"
    if value is None:
        return "—"
    return str(value)


@dataclass
class FieldPress:
    """A press on a field: a click if it ends where it started, else a drag that changes values."""

    field: nw.Field
    at: QPointF
    part: str
    start: Any
    dragging: bool = False
    cancelled: bool = False
    """Esc was pressed during the drag: its release changes nothing."""
    handle: int = 0
    """Which end of a range is dragged (0: start); for an area 0 moves the box, 1 (its corner)
    resizes it, 2 (outside it) draws a new one."""


class NodeItem(QGraphicsItem):
    """A node: title bar in its category colour, sockets coloured by type, values, status, image."""

    def __init__(self, scene: GraphScene, node_id: str) -> None:
        super().__init__()
        self.ctl = scene
        self.node_id = node_id
        self.setFlags(QGraphicsItem.GraphicsItemFlag.ItemIsMovable
                      | QGraphicsItem.GraphicsItemFlag.ItemIsSelectable
                      | QGraphicsItem.GraphicsItemFlag.ItemSendsScenePositionChanges)
        self.setCacheMode(QGraphicsItem.CacheMode.DeviceCoordinateCache)
        self.setZValue(1)
        self.setAcceptHoverEvents(True)
        self.status = ""  # queued | running | done | cached | failed | skipped | cancelled
        self.status_text = ""
        self.progress: float | None = None
        self.problems: list[str] = []
        self.error: str | None = None
        """Why the node failed in the last run."""
        self.problem_sockets: set[str] = set()
        self.drag_marks: dict[tuple[str, str], bool] = {}
        self.hover_socket: tuple[str, str] | None = None
        self.pixmap: QPixmap | None = None
        """The first picture shown (of ``pixmaps``, the whole batch)."""
        self.pixmaps: list[QPixmap] = []
        self.batch_size = 0
        """How many pictures the node's last result held (more than ``pixmaps`` for a large batch)."""
        self.width = theme.MIN_WIDTH
        self.height = theme.TITLE_H
        self._bounds: QRectF = None  # type: ignore[assignment]
        self.rows: list[Row] = []
        self._cls: type[Node] | None = None
        self.fields: list[nw.Field] = []
        self.has_area = False
        self.pending: dict[str, Any] = {}
        """Values being dragged on a field, shown before they are written to the graph."""
        self.hover_field: nw.Field | None = None
        self._press: FieldPress | None = None
        self.refresh()

    # --- model --------------------------------------------------------------------------
    @property
    def cls(self) -> type[Node] | None:
        node = self.ctl.graph.nodes.get(self.node_id)
        return self.ctl.registry.get(node.type) if node is not None else None

    def _spec(self, name: str) -> Any:
        """The declaration of an input (from the type found at the last refresh)."""
        cls = self._cls
        return cls.input_map.get(name) if cls is not None else None

    def refresh(self) -> None:
        """Recompute rows, fields and size from the node's type, links and values."""
        graph = self.ctl.graph
        node = graph.nodes[self.node_id]
        cls = self._cls = self.cls
        self.title = node_title(cls) if cls else node.type
        if self.title.lower().replace(" ", "") != self.node_id.lower():
            self.subtitle = self.node_id
        else:
            self.subtitle = ""
        self.color = theme.category_color(cls.category) if cls else theme.PROBLEM.darker(160)
        if cls is not None:
            outs = [(o.name, o.type) for o in cls.outputs]
            ins = [(i.name, i.type) for i in cls.inputs]
        else:  # unknown type: sockets from the links, so they still attach
            outs = sorted({(ln.src_socket, None) for ln in graph.links if ln.src == self.node_id})
            ins = sorted({(ln.dst_socket, None) for ln in graph.links if ln.dst == self.node_id})
        # Which inputs are edited on the node (a literal value, not linked, not shown as a socket).
        kinds = {name: kind for name, kind in nw.input_kinds(cls).items()
                 if not self._row_is_socket(name)} if cls is not None else {}
        width = max(theme.MIN_WIDTH, _Fonts.width("title", self.title) + 70)
        for name, _t in outs:
            width = max(width, _Fonts.width("label", name) + 40)
        for name, _t in ins:
            kind = kinds.get(name)
            if kind is None:
                width = max(width, _Fonts.width("label", name) + 40)
            else:
                width = max(width, nw.desired_width(kind, cls.input_map[name], self.input_value(name)))  # type: ignore[union-attr]
        self.preview_area = shows_pictures(cls)
        if self.preview_area or self.pixmap is not None:
            width = max(width, theme.PREVIEW_W)
        width = math.ceil(width)
        rows: list[Row] = []
        fields: list[nw.Field] = []
        y = theme.TITLE_H + 2
        for name, t in outs:
            rows.append(Row(name, "out", t, socket_color(t), y + theme.ROW_H / 2))
            y += theme.ROW_H
        ends: dict[str, list[tuple[str, tuple[Any, ...]]]] = {}
        if cls is not None:
            order = [i.name for i in cls.inputs]
            for group in nw.area_groups(cls):
                if all(g.name in kinds for g in group):
                    ends.setdefault(max((g.name for g in group), key=order.index), []).append(("area", group))
            for pair in nw.range_groups(cls):
                if all(g.name in kinds for g in pair):
                    ends.setdefault(pair[1].name, []).append(("range", pair))
        field_w = width - 2 * nw.FIELD_X
        for name, t in ins:
            kind = kinds.get(name)
            if kind is None:
                rows.append(Row(name, "in", t, socket_color(t), y + theme.ROW_H / 2))
                y += theme.ROW_H
            else:
                spec = cls.input_map[name]  # type: ignore[union-attr]
                value = self.input_value(name)
                h = nw.prompt_height(str(value or ""), field_w) if kind == "prompt" else nw.FIELD_H
                f = nw.Field(kind, name, QRectF(nw.FIELD_X, y + 2, field_w, h), spec, (name,), (spec,))
                fields.append(f)
                rows.append(Row(name, "in", t, socket_color(t), y + 2 + nw.FIELD_H / 2, f))
                y += h + 4
                if kind == "seed":
                    fields.append(nw.Field("seed_mode", name, QRectF(nw.FIELD_X, y + 2, field_w, nw.FIELD_H),
                                           spec, (name,), (spec,)))
                    y += nw.FIELD_PITCH
            for what, group in ends.get(name, []):
                names = tuple(g.name for g in group)
                if what == "area":
                    ref = self._area_reference(group)
                    h = nw.area_height(width, ref)
                    f = nw.Field("area", names[0], QRectF(nw.FIELD_X, y + 2, field_w, h), None, names, group, ref)
                    y += h + 6
                else:
                    f = nw.Field("range", names[0], QRectF(nw.FIELD_X, y + 1, field_w, nw.RANGE_H), None,
                                 names, group)
                    y += nw.RANGE_H + 2
                fields.append(f)
        self.rows = rows
        self.fields = fields
        self.has_area = any(f.kind == "area" for f in fields)
        self._row_index = {(r.kind, r.name): r for r in rows}
        # Each field's texts are made when it is first painted (a node far out of view costs nothing).
        self.rows_bottom = y + 2
        height = self.rows_bottom + 4
        if self.preview_area:
            height += theme.PREVIEW_H + 8
        elif self.pixmap is not None:  # a picture from a node that rarely makes one: grow to fit it
            height += self._pixmap_size(width)[1] + 8
        grew = self._bounds is not None and height > self.height
        if width != self.width or height != self.height or self._bounds is None:
            self.prepareGeometryChange()
            self.width, self.height = width, height
            top = 18.0 if self.subtitle else 4.0
            self._bounds = QRectF(-8, -top, self.width + 16, self.height + top + 4)
            self.ctl.overview.invalidate()
            if grew:
                self.ctl.node_grew(self)
        self.update()

    # --- fields ------------------------------------------------------------------------------
    def input_value(self, name: str) -> Any:
        """The value an input holds: the one being dragged, the node's, or the declared default."""
        if name in self.pending:
            return self.pending[name]
        node = self.ctl.graph.nodes[self.node_id]
        if name in node.inputs:
            return node.inputs[name]
        spec = self._spec(name)
        return spec.default if spec is not None and spec.has_default else None

    def field_value(self, f: nw.Field) -> Any:
        if f.kind == "seed_mode":
            return seed_mode_of(self.ctl.graph, self.node_id, f.name)
        if f.kind in ("area", "range"):
            return tuple(self._number(n) for n in f.names)
        return self.input_value(f.name)

    def _number(self, name: str) -> float:
        value = self.input_value(name)
        return float(value) if isinstance(value, int | float) else 0.0

    def _area_reference(self, group: tuple[Any, ...]) -> tuple[float, float]:
        if all(not nw.is_int(g) and g.max is not None and g.max <= 1.0 for g in group):
            ref = nw.reference_size(self.ctl.graph, self.ctl.registry, self.node_id) or (1.0, 1.0)
            return 1.0, ref[1] / ref[0]  # fractions of the picture, drawn in its shape
        return nw.reference_size(self.ctl.graph, self.ctl.registry, self.node_id) or (512.0, 512.0)

    def _layout_field(self, f: nw.Field) -> None:
        """Make the texts a field shows for its current value (again only when the value changed)."""
        value = self.field_value(f)
        f.value_key = (value, type(value))
        spec = f.spec
        if f.kind == "prompt":
            nw.layout_prompt(f, str(value or ""))
        elif f.kind == "area":
            rw, rh = f.reference
            unit = "" if rw == 1.0 else f"{int(rw)}×{int(rh)}"
            f.value = nw.static_text(unit) if unit else None
        elif f.kind == "range":
            start, end = f.specs
            hi = float(end.max if end.max is not None else 1.0)
            lo = float(start.min if start.min is not None else 0.0)
            steps = self.input_value("steps")
            if nw.is_int(start) and isinstance(steps, int) and not isinstance(steps, bool) and lo < steps < hi:
                hi = float(steps)  # a step range is shown over the sampler's own steps
            f.extra["lo"], f.extra["hi"] = lo, hi
        elif f.kind == "seed_mode":
            nw.layout_line_field(f, "after run", str(value))
        elif spec is not None:
            if f.kind in ("number", "slider", "seed"):
                text = nw.number_text(spec, value)
            elif f.kind == "toggle":
                text = "on" if value else "off"
            elif f.kind == "path":
                text = str(value or "") or "choose…"
            else:
                text = "" if value is None else str(value).replace("\n", " ⏎ ")
            nw.layout_line_field(f, f.name, text)

    def fresh(self, f: nw.Field) -> Any:
        """A field's value, its texts and parts laid out for it (again only when it changed)."""
        value = self.field_value(f)
        if f.value_key != (value, type(value)):
            self._layout_field(f)
        return value

    def field_at(self, pos: QPointF) -> nw.Field | None:
        for f in self.fields:
            if f.rect.contains(pos):
                self.fresh(f)
                return f
        return None

    def value_text(self, name: str) -> str:
        graph = self.ctl.graph
        if self._row_is_socket(name):
            return ""
        node = graph.nodes[self.node_id]
        cls = self.cls
        if name in node.inputs:
            return format_value(node.inputs[name])
        spec = cls.input_map.get(name) if cls else None
        if spec is not None and spec.accepts_literal and spec.has_default:
            return format_value(spec.default)
        return ""

    def socket_pos(self, kind: str, name: str) -> QPointF:
        """Scene position of a socket."""
        row = self._row_index.get((kind, name))
        y = row.y if row else theme.TITLE_H / 2
        x = self.width if kind == "out" else 0.0
        return self.mapToScene(QPointF(x, y))

    def socket_at(self, pos: QPointF, radius: float = 10.0) -> tuple[str, str] | None:
        """The socket (kind, name) at a point in item coordinates, or None."""
        for r in self.rows:
            if abs(pos.y() - r.y) > theme.ROW_H / 2:
                continue
            x = self.width if r.kind == "out" else 0.0
            if abs(pos.x() - x) <= radius or (r.kind == "out" and pos.x() > self.width - 50) or \
                    (r.kind == "in" and pos.x() < 50 and self._row_is_socket(r.name)):
                return (r.kind, r.name)
        return None

    def _row_is_socket(self, name: str) -> bool:
        spec = self._spec(name)
        if spec is None or not spec.accepts_literal or (self.node_id, name) in self.ctl.linked_inputs:
            return True
        entry = self.ctl.graph.editor.get(self.node_id)
        shown = entry.get("sockets") if isinstance(entry, dict) else None
        return isinstance(shown, list) and name in shown

    def set_image(self, image: QImage | None) -> None:
        self.set_images([image] if image is not None else [])

    def set_images(self, images: list[QImage], total: int | None = None) -> None:
        """Show a batch of pictures (a grid in the node's picture area); ``total`` is the batch size
        when only the first pictures are given."""
        self.pixmaps = [QPixmap.fromImage(i) for i in images[:BATCH_SHOWN] if not i.isNull()]
        self.pixmap = self.pixmaps[0] if self.pixmaps else None
        self.batch_size = max(len(images), total or 0) if self.pixmaps else 0
        self.refresh()

    def _pixmap_size(self, width: float) -> tuple[float, float]:
        assert self.pixmap is not None
        w = width - 12
        h = w * self.pixmap.height() / max(1, self.pixmap.width())
        if h > theme.PREVIEW_MAX_H:
            w, h = w * theme.PREVIEW_MAX_H / h, theme.PREVIEW_MAX_H
        return w, h

    def picture_area(self) -> QRectF:
        """Where the node's pictures are drawn (item coordinates); empty when it shows none."""
        if self.preview_area:
            return QRectF(6, self.rows_bottom + 4, self.width - 12, theme.PREVIEW_H)
        if self.pixmap is not None:
            w, h = self._pixmap_size(self.width)
            return QRectF((self.width - w) / 2, self.rows_bottom + 4, w, h)
        return QRectF()

    def picture_cells(self) -> list[QRectF]:
        """One rectangle per shown picture of the batch: a grid filling the picture area."""
        area = self.picture_area()
        n = len(self.pixmaps)
        if not n or area.isEmpty():
            return []
        cols = math.ceil(math.sqrt(n))
        rows = math.ceil(n / cols)
        cw, ch = area.width() / cols, area.height() / rows
        cells = []
        for i, pm in enumerate(self.pixmaps):
            r, c = divmod(i, cols)
            scale = min((cw - 2) / max(1, pm.width()), (ch - 2) / max(1, pm.height()))
            w, h = pm.width() * scale, pm.height() * scale
            cells.append(QRectF(area.x() + c * cw + (cw - w) / 2, area.y() + r * ch + (ch - h) / 2, w, h))
        return cells

    # --- QGraphicsItem ------------------------------------------------------------------------
    def boundingRect(self) -> QRectF:
        return self._bounds

    def body_rect(self) -> QRectF:
        """The node's body in scene coordinates (what must not overlap another node)."""
        return QRectF(self.pos().x(), self.pos().y(), self.width, self.height)

    def shape(self) -> QPainterPath:
        path = QPainterPath()
        path.addRect(QRectF(-8, 0, self.width + 16, self.height))
        return path

    def paint(self, painter: QPainter, option: QStyleOptionGraphicsItem, widget: QWidget | None = None) -> None:
        lod = option.levelOfDetailFromTransform(painter.worldTransform())  # type: ignore[attr-defined]
        body = QRectF(0, 0, self.width, self.height)
        selected = self.isSelected()
        if lod < LOW_DETAIL:
            painter.setPen(QPen(theme.NODE_SELECTED if selected else
                                (theme.PROBLEM if self.problems else self._status_color() or theme.NODE_BORDER),
                                0 if not (selected or self.problems) else 3 / max(lod, 0.05)))
            painter.setBrush(self.color)
            painter.drawRect(body)
            return
        painter.setRenderHint(QPainter.RenderHint.Antialiasing, True)
        # Body and title bar.
        painter.setPen(Qt.PenStyle.NoPen)
        painter.setBrush(theme.NODE_BODY)
        painter.drawRoundedRect(body, 6, 6)
        title = QPainterPath()
        title.setFillRule(Qt.FillRule.WindingFill)
        title.addRoundedRect(QRectF(0, 0, self.width, theme.TITLE_H), 6, 6)
        title.addRect(QRectF(0, theme.TITLE_H - 6, self.width, 6))
        painter.setBrush(self.color)
        painter.drawPath(title)
        # Progress along the bottom of the title bar.
        if self.status == "running" and self.progress is not None:
            painter.setBrush(theme.RUNNING)
            painter.drawRect(QRectF(0, theme.TITLE_H - 3, self.width * max(0.0, min(1.0, self.progress)), 3))
        # Outline: selection, problems, status.
        outline = theme.NODE_BORDER
        width = 1.0
        if self.problems or self.status == "failed":
            outline, width = theme.PROBLEM, 2.0
        elif self.status == "running":
            outline, width = theme.RUNNING, 2.0
        if selected:
            outline, width = theme.NODE_SELECTED, 2.0
        painter.setBrush(Qt.BrushStyle.NoBrush)
        painter.setPen(QPen(outline, width))
        painter.drawRoundedRect(body, 6, 6)
        # Title text.
        painter.setFont(_Fonts.title)
        painter.setPen(theme.NODE_TEXT)
        badge_w = self._paint_badge(painter)
        text_rect = QRectF(8, 0, self.width - 16 - badge_w, theme.TITLE_H)
        title_text = self.title if not self.subtitle else f"{self.title}"
        painter.drawText(text_rect, Qt.AlignmentFlag.AlignVCenter | Qt.AlignmentFlag.AlignLeft, title_text)
        # Rows.
        painter.setFont(_Fonts.label)
        fm = _Fonts.metrics("label")
        for r in self.rows:
            self._paint_row(painter, r, fm)
        detailed = lod >= FIELD_DETAIL
        painter.setFont(_Fonts.label)
        for f in self.fields:
            value = self.fresh(f)
            nw.paint_field(painter, f, value, f is self.hover_field, detailed)
            if f.name in self.problem_sockets and f.edits_input:
                painter.setPen(QPen(theme.PROBLEM, 1.5))
                painter.setBrush(_NO_BRUSH)
                painter.drawRoundedRect(f.rect, 4, 4)
        if self.subtitle and lod > 0.6:
            painter.setPen(theme.NODE_DIM_TEXT)
            painter.setFont(_Fonts.badge)
            painter.drawText(QRectF(0, -16, self.width, 14),
                             Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignBottom, self.subtitle)
        if self.preview_area and self.pixmap is None:
            # A plain darker well (a dashed outline costs several times more to paint).
            painter.setPen(Qt.PenStyle.NoPen)
            painter.setBrush(theme.CANVAS)
            painter.drawRect(self.picture_area())
        if self.pixmaps:
            painter.setRenderHint(QPainter.RenderHint.SmoothPixmapTransform, True)
            for target, pm in zip(self.picture_cells(), self.pixmaps, strict=True):
                painter.drawPixmap(target, pm, QRectF(pm.rect()))
            if self.batch_size > 1:
                self._paint_batch_count(painter)

    def batch_label(self) -> str:
        """The count shown over a batch's pictures ("4 images", "16 of 64 images")."""
        if self.batch_size <= 1:
            return ""
        shown = len(self.pixmaps)
        return f"{self.batch_size} images" if shown == self.batch_size else f"{shown} of {self.batch_size} images"

    def _paint_batch_count(self, painter: QPainter) -> None:
        text = self.batch_label()
        painter.setFont(_Fonts.badge)
        w = _Fonts.width("badge", text) + 10
        area = self.picture_area()
        rect = QRectF(area.right() - w - 2, area.bottom() - 16, w, 14)
        painter.setPen(Qt.PenStyle.NoPen)
        painter.setBrush(QColor(0, 0, 0, 170))
        painter.drawRoundedRect(rect, 3, 3)
        painter.setPen(QColor("#ffffff"))
        painter.drawText(rect, Qt.AlignmentFlag.AlignCenter, text)

    def _status_color(self) -> QColor | None:
        return {"running": theme.RUNNING, "done": theme.DONE, "cached": theme.CACHED,
                "failed": theme.PROBLEM, "skipped": theme.SKIPPED}.get(self.status)

    def _paint_badge(self, painter: QPainter) -> float:
        text, color = "", None
        if self.problems:
            text, color = f"⚠ {len(self.problems)}", theme.PROBLEM
        elif self.status:
            color = self._status_color() or theme.SKIPPED
            text = self.status_text or self.status
        if not text or color is None:
            return 0.0
        painter.save()
        painter.setFont(_Fonts.badge)
        w = _Fonts.width("badge", text) + 10
        rect = QRectF(self.width - w - 5, 5, w, theme.TITLE_H - 10)
        painter.setPen(Qt.PenStyle.NoPen)
        painter.setBrush(color)
        painter.drawRoundedRect(rect, 4, 4)
        painter.setPen(QColor("#ffffff"))
        painter.drawText(rect, Qt.AlignmentFlag.AlignCenter, text)
        painter.restore()
        return w + 5

    def _paint_row(self, painter: QPainter, r: Row, fm: QFontMetricsF) -> None:
        key = (r.kind, r.name)
        mark = self.drag_marks.get(key)
        is_socket = r.kind == "out" or self._row_is_socket(r.name)
        x = self.width if r.kind == "out" else 0.0
        center = QPointF(x, r.y)
        radius = theme.SOCKET_R
        if mark is True or self.hover_socket == key:
            painter.setPen(Qt.PenStyle.NoPen)
            glow = QColor(r.color)
            glow.setAlpha(110)
            painter.setBrush(glow)
            painter.drawEllipse(center, radius + 5, radius + 5)
        color = QColor(r.color)
        if mark is False:
            color.setAlpha(50)
        if is_socket:
            painter.setPen(QPen(QColor("#111111"), 1))
            painter.setBrush(color)
            painter.drawEllipse(center, radius, radius)
        else:  # a literal input: a small hollow socket that still accepts a link
            painter.setPen(QPen(color, 1.5))
            painter.setBrush(theme.NODE_BODY)
            painter.drawEllipse(center, radius - 1.5, radius - 1.5)
        bad = r.name in self.problem_sockets and r.kind == "in"
        dim = mark is False
        painter.setPen(theme.PROBLEM if bad else (theme.NODE_DIM_TEXT if dim else theme.NODE_TEXT))
        if r.field is not None:  # the field shows the name and the value
            return
        label_rect = QRectF(12, r.y - theme.ROW_H / 2, self.width - 24, theme.ROW_H)
        if r.kind == "out":
            painter.drawText(label_rect, Qt.AlignmentFlag.AlignVCenter | Qt.AlignmentFlag.AlignRight, r.name)
            return
        painter.drawText(label_rect, Qt.AlignmentFlag.AlignVCenter | Qt.AlignmentFlag.AlignLeft, r.name)

    # --- interaction ------------------------------------------------------------------------
    def itemChange(self, change: QGraphicsItem.GraphicsItemChange, value: Any) -> Any:
        if change == _MOVED:
            self.ctl.node_moved(self)
        return value

    def mousePressEvent(self, event: Any) -> None:
        socket = self.socket_at(event.pos())
        if socket is not None and event.button() == Qt.MouseButton.LeftButton:
            self.ctl.begin_link_drag(self, socket[0], socket[1], event.scenePos())
            event.accept()
            return
        f = self.field_at(event.pos()) if event.button() == Qt.MouseButton.LeftButton else None
        if f is not None:
            self._press = FieldPress(f, event.pos(), nw.part_at(f, event.pos()), self.field_value(f))
            if f.kind == "range":
                track, x0, x1 = nw.range_geometry(f, self._press.start)
                x = event.pos().x()
                self._press.handle = 0 if abs(x - x0) < abs(x - x1) or (x0 == x1 and x < x0) else 1
            elif f.kind == "area":
                _picture, box = nw.area_geometry(f, self._press.start)
                near = QRectF(box.right() - 8, box.bottom() - 8, 16, 16)
                self._press.handle = 1 if near.contains(event.pos()) else 0 if box.contains(event.pos()) else 2
            event.accept()
            return
        super().mousePressEvent(event)

    def mouseMoveEvent(self, event: Any) -> None:
        if self.ctl.drag is not None:
            self.ctl.drag_move(event.scenePos())
            return
        press = self._press
        if press is not None:
            if press.cancelled:
                return
            dx = event.pos().x() - press.at.x()
            if not press.dragging and (abs(dx) >= nw.DRAG_START or abs(event.pos().y() - press.at.y()) >= nw.DRAG_START):
                press.dragging = press.field.kind in ("number", "seed", "slider", "area", "range")
            if press.dragging:
                self._drag_field(press, event.pos())
            return
        super().mouseMoveEvent(event)

    def mouseReleaseEvent(self, event: Any) -> None:
        if self.ctl.drag is not None:
            self.ctl.end_link_drag(event.scenePos())
            return
        press, self._press = self._press, None
        if press is not None:
            if press.cancelled:
                return
            if press.dragging:
                self.commit_pending(press.field)
            else:
                self.click_field(press.field, press.part, event.pos())
            return
        super().mouseReleaseEvent(event)

    def cancel_field_drag(self) -> bool:
        """Esc during a drag on a field: the values go back, nothing is written."""
        press = self._press
        if press is None or press.cancelled:
            return False
        press.cancelled = True
        press.dragging = False
        self.pending = {}
        self.update()
        return True

    def _drag_field(self, press: FieldPress, pos: QPointF) -> None:
        """Show the value a drag on a field would set (written to the graph on release)."""
        f = press.field
        if f.kind in ("number", "seed") and f.spec is not None:
            steps = round((pos.x() - press.at.x()) / nw.DRAG_PX_PER_STEP)
            start = press.start if isinstance(press.start, int | float) else 0
            if nw.is_int(f.spec):
                moved: int | float = int(start) + steps * int(nw.step_of(f.spec))
            else:
                moved = float(start) + steps * nw.step_of(f.spec)
            self.pending = {f.name: nw.snap(f.spec, moved)}
        elif f.kind == "slider" and f.spec is not None:
            lo, hi = float(f.spec.min), float(f.spec.max)  # type: ignore[arg-type]
            t = (pos.x() - f.rect.left()) / max(1.0, f.rect.width())
            self.pending = {f.name: nw.snap(f.spec, lo + max(0.0, min(1.0, t)) * (hi - lo))}
        elif f.kind == "range":
            self.pending = self._range_values(f, press.start, press.handle, pos.x())
        elif f.kind == "area":
            self.pending = self._area_values(f, press, pos)
        self.update()

    def _range_values(self, f: nw.Field, start: tuple[float, float], handle: int, x: float) -> dict[str, Any]:
        track, _x0, _x1 = nw.range_geometry(f, start)
        lo, hi = f.extra["lo"], f.extra["hi"]
        t = max(0.0, min(1.0, (x - track.left()) / max(1.0, track.width())))
        value = lo + t * (hi - lo)
        if handle == 0:
            value = min(value, start[1])
        else:
            value = max(value, start[0])
        spec = f.specs[handle]
        return {f.names[handle]: nw.snap(spec, value)}

    def _area_values(self, f: nw.Field, press: FieldPress, pos: QPointF) -> dict[str, Any]:
        picture, _box = nw.area_geometry(f, press.start)
        scale = picture.width() / f.reference[0]
        dx, dy = (pos.x() - press.at.x()) / scale, (pos.y() - press.at.y()) / scale
        x, y, w, h = press.start
        rw, rh = f.reference
        sx, sy, sw, sh = f.specs
        if press.handle == 2:  # outside the box: draw a new one from the press to the pointer
            ax = (press.at.x() - picture.x()) / scale
            ay = (press.at.y() - picture.y()) / scale
            bx, by = ax + dx, ay + dy
            x, y = max(0.0, min(ax, bx)), max(0.0, min(ay, by))
            w = min(max(abs(bx - ax), float(sw.min or 0)), rw - x)
            h = min(max(abs(by - ay), float(sh.min or 0)), rh - y)
        elif press.handle == 1:  # the corner: resize, the box stays inside the picture
            w = min(max(w + dx, float(sw.min or 0)), rw - x)
            h = min(max(h + dy, float(sh.min or 0)), rh - y)
        else:
            x = min(max(0.0, x + dx), max(0.0, rw - w))
            y = min(max(0.0, y + dy), max(0.0, rh - h))
        x, y, w, h = nw.snap(sx, x), nw.snap(sy, y), nw.snap(sw, w), nw.snap(sh, h)
        # Rounding to the steps must not push the box out of the picture.
        while x + w > rw + 1e-9 and w - nw.step_of(sw) >= float(sw.min or 0):
            w = nw.snap(sw, w - nw.step_of(sw))
        while y + h > rh + 1e-9 and h - nw.step_of(sh) >= float(sh.min or 0):
            h = nw.snap(sh, h - nw.step_of(sh))
        values = dict(zip(f.names, (x, y, w, h), strict=True))
        return {n: v for n, v in values.items() if v != self.input_value(n) or n in self.pending}

    def commit_pending(self, f: nw.Field) -> None:
        """Write the dragged values: one undo step, however many inputs changed."""
        pending, self.pending = self.pending, {}
        node = self.ctl.graph.nodes.get(self.node_id)
        if node is None:
            return
        changed = {n: v for n, v in pending.items() if self.input_value(n) != v or n not in node.inputs}
        self.set_values(changed, f"Change {self.node_id}.{f.name}")
        self.update()

    def set_values(self, values: dict[str, Any], text: str) -> None:
        """Set inputs of this node as one undo step (never merged with the previous one)."""
        doc = self.ctl.doc
        if len(values) == 1:
            (name, value), = values.items()
            doc.set_input(self.node_id, name, value, merge=False)
        elif values:
            doc.undo.beginMacro(text)
            for name, value in values.items():
                doc.set_input(self.node_id, name, value, merge=False)
            doc.undo.endMacro()

    def click_field(self, f: nw.Field, part: str, pos: QPointF) -> None:
        """A click (press and release without a drag) on a field."""
        spec = f.spec
        value = self.field_value(f)
        if f.kind in ("number", "seed") and part in ("dec", "inc") and spec is not None:
            sign = 1 if part == "inc" else -1
            if nw.is_int(spec):
                stepped: int | float = (int(value) if isinstance(value, int | float) else 0) + \
                    sign * int(nw.step_of(spec))
            else:
                stepped = (float(value) if isinstance(value, int | float) else 0.0) + sign * nw.step_of(spec)
            self.set_values({f.name: nw.snap(spec, stepped)}, f"Step {f.name}")
        elif f.kind == "seed" and part == "dice" and spec is not None:
            from .properties import random_seed

            self.set_values({f.name: random_seed(spec)}, f"New seed {self.node_id}")
        elif f.kind == "toggle":
            self.set_values({f.name: not bool(value)}, f"Toggle {f.name}")
        elif f.kind == "seed_mode":
            self._seed_mode_menu(f)
        elif f.kind == "range":
            _track, x0, x1 = nw.range_geometry(f, value)
            handle = 0 if abs(pos.x() - x0) < abs(pos.x() - x1) else 1
            self.set_values(self._range_values(f, value, handle, pos.x()), f"Change {f.name}")
        elif f.kind == "path" and part == "button":  # "…": choose a file in a dialog
            if self.ctl.inline.open(self.node_id, f.name):
                browse = getattr(self.ctl.inline.widget, "browse", None)
                if callable(browse):
                    QTimer.singleShot(0, browse)
        elif f.edits_input:
            self.ctl.inline.open(self.node_id, f.name, popup=f.kind in ("choice", "path"))

    def _seed_mode_menu(self, f: nw.Field) -> None:
        from PySide6.QtWidgets import QMenu

        views = self.ctl.views()
        menu = QMenu(views[0] if views else None)
        current = self.field_value(f)
        for mode in nw.SEED_MODES:
            action = menu.addAction(mode)
            action.setCheckable(True)
            action.setChecked(mode == current)
            action.triggered.connect(lambda _on=False, m=mode: self.set_seed_mode(f.name, m))
        self.seed_menu = menu
        if views:
            view = views[0]
            at = view.viewport().mapToGlobal(view.mapFromScene(self.mapToScene(f.rect.bottomLeft())))
            menu.popup(at)

    def set_seed_mode(self, name: str, mode: str) -> None:
        """What happens to a seed after each run (an editor setting of the node, one undo step)."""
        from . import commands as cmd

        graph = self.ctl.graph
        entry = graph.editor.get(self.node_id)
        modes = dict(entry.get("seed_modes") or {}) if isinstance(entry, dict) else {}
        if modes.get(name, "fixed") == mode:
            return
        modes[name] = mode
        self.ctl.doc.push(cmd.SetLayout(graph, self.node_id, "seed_modes", modes, f"Seed {mode}"))

    def hoverMoveEvent(self, event: Any) -> None:
        socket = self.socket_at(event.pos())
        f = self.field_at(event.pos()) if socket is None else None
        if socket != self.hover_socket or f is not self.hover_field:
            self.hover_socket = socket
            self.hover_field = f
            cursor = Qt.CursorShape.CrossCursor if socket else Qt.CursorShape.ArrowCursor
            if f is not None:
                part = nw.part_at(f, event.pos())
                cursor = Qt.CursorShape.SizeHorCursor if f.kind in ("number", "slider", "range") and \
                    part == "body" else Qt.CursorShape.SizeAllCursor if f.kind == "area" else \
                    Qt.CursorShape.IBeamCursor if f.kind in ("text", "prompt") else Qt.CursorShape.PointingHandCursor
            self.setCursor(cursor)
            self.update()
            self.setToolTip(self._tooltip(socket if socket else ("in", f.name) if f is not None and f.spec else None))

    def hoverLeaveEvent(self, event: Any) -> None:
        if self.hover_socket is not None or self.hover_field is not None:
            self.hover_socket = None
            self.hover_field = None
            self.update()

    def _tooltip(self, socket: tuple[str, str] | None) -> str:
        cls = self.cls
        lines = []
        if socket is not None and cls is not None:
            kind, name = socket
            spec = cls.output_map.get(name) if kind == "out" else cls.input_map.get(name)
            if spec is not None:
                from .connect import type_label
                lines.append(f"<b>{name}</b> ({type_label(spec.type)})<br>{spec.description}")
        elif cls is not None:
            lines.append(f"<b>{node_title(cls)}</b> — {cls.id} {cls.version}<br>{cls.description}")
        lines += [f"<span style='color:#ef5350'>⚠ {p}</span>" for p in self.problems]
        if self.error:
            lines.append(f"<span style='color:#ef5350'>✗ {self.error}</span>")
        return "<br>".join(lines)

    def mouseDoubleClickEvent(self, event: Any) -> None:
        row = self.value_row_at(event.pos())
        if row is not None and self.ctl.inline.open(self.node_id, row):
            event.accept()
            return
        self.ctl.node_activated(self)
        super().mouseDoubleClickEvent(event)

    def value_row_at(self, pos: QPointF) -> str | None:
        """The input whose field is at ``pos`` (item coordinates), when it edits one value."""
        f = self.field_at(pos)
        return f.name if f is not None and f.edits_input else None


class LinkItem(QGraphicsPathItem):
    """A link drawn as a horizontal-tangent cubic curve from an output to an input."""

    def __init__(self, src: NodeItem, src_socket: str, dst: NodeItem, dst_socket: str, color: QColor) -> None:
        super().__init__()
        self.src, self.src_socket, self.dst, self.dst_socket = src, src_socket, dst, dst_socket
        self.setZValue(0)
        self.setFlag(QGraphicsItem.GraphicsItemFlag.ItemIsSelectable)
        self.setCacheMode(QGraphicsItem.CacheMode.DeviceCoordinateCache)
        self.base_color = color
        self.invalid = False
        self._apply_pen()
        self.update_path()

    @property
    def target(self) -> str:
        return f"{self.dst.node_id}.{self.dst_socket}"

    def _apply_pen(self) -> None:
        color = theme.LINK_INVALID if self.invalid else self.base_color
        pen = QPen(color, 2.2)
        self._selected_pen = QPen(theme.NODE_SELECTED, 3.2)
        self._pen = pen
        self._thin = QPen(pen.color(), 0)
        self.setPen(pen)
        self.update()

    def update_path(self) -> None:
        self._path = curve(self.src.socket_pos("out", self.src_socket), self.dst.socket_pos("in", self.dst_socket))
        self.setPath(self._path)

    def paint(self, painter: QPainter, option: QStyleOptionGraphicsItem, widget: QWidget | None = None) -> None:
        lod = option.levelOfDetailFromTransform(painter.worldTransform())  # type: ignore[attr-defined]
        if lod < LOW_DETAIL:  # far out: a thin aliased curve is indistinguishable and much cheaper
            painter.setRenderHint(_AA, False)
            painter.setPen(self._thin)
        else:
            painter.setRenderHint(_AA, True)
            painter.setPen(self._selected_pen if self.isSelected() else self._pen)
        painter.setBrush(_NO_BRUSH)
        painter.drawPath(self._path)

    def shape(self) -> QPainterPath:
        stroker = QPainterPathStroker()
        stroker.setWidth(10)
        return stroker.createStroke(self.path())



def curve(a: QPointF, b: QPointF) -> QPainterPath:
    dx = max(40.0, abs(b.x() - a.x()) * 0.5)
    path = QPainterPath(a)
    path.cubicTo(QPointF(a.x() + dx, a.y()), QPointF(b.x() - dx, b.y()), b)
    return path


class FrameItem(QGraphicsItem):
    """A frame (group) behind nodes: moving it moves the nodes inside; the corner resizes it."""

    HANDLE = 14.0
    TITLE = 24.0

    def __init__(self, scene: GraphScene, index: int, data: dict[str, Any]) -> None:
        super().__init__()
        self.ctl = scene
        self.index = index
        self.setZValue(-10)
        self.setFlags(QGraphicsItem.GraphicsItemFlag.ItemIsMovable
                      | QGraphicsItem.GraphicsItemFlag.ItemIsSelectable
                      | QGraphicsItem.GraphicsItemFlag.ItemSendsGeometryChanges)
        self.title = str(data.get("title", "Group"))
        x, y, w, h = [float(v) for v in data.get("rect", [0, 0, 300, 200])][:4]
        self.setPos(x, y)
        self.size = (max(60.0, w), max(40.0, h))
        self.color = QColor(str(data.get("color", ""))) if data.get("color") else theme.FRAME
        if not self.color.isValid():
            self.color = theme.FRAME
        self._resizing = False
        self._carried: dict[Any, QPointF] = {}

    def rect_data(self) -> list[float]:
        return [round(self.pos().x(), 1), round(self.pos().y(), 1), round(self.size[0], 1), round(self.size[1], 1)]

    def boundingRect(self) -> QRectF:
        return QRectF(0, 0, *self.size)

    def paint(self, painter: QPainter, option: QStyleOptionGraphicsItem, widget: QWidget | None = None) -> None:
        rect = self.boundingRect()
        painter.setPen(QPen(theme.NODE_SELECTED if self.isSelected() else self.color.lighter(150), 1.5))
        fill = QColor(self.color)
        fill.setAlpha(min(fill.alpha(), 70))
        painter.setBrush(fill)
        painter.drawRoundedRect(rect, 8, 8)
        bar = QColor(self.color)
        bar.setAlpha(160)
        painter.setPen(Qt.PenStyle.NoPen)
        painter.setBrush(bar)
        painter.drawRoundedRect(QRectF(0, 0, rect.width(), self.TITLE), 8, 8)
        painter.setPen(theme.NODE_TEXT)
        painter.setFont(_Fonts.title)
        painter.drawText(QRectF(10, 0, rect.width() - 20, self.TITLE), Qt.AlignmentFlag.AlignVCenter, self.title)
        painter.setBrush(QBrush(self.color.lighter(170)))
        h = self.HANDLE
        corner = QPainterPath()
        corner.moveTo(rect.right(), rect.bottom() - h)
        corner.lineTo(rect.right(), rect.bottom())
        corner.lineTo(rect.right() - h, rect.bottom())
        corner.closeSubpath()
        painter.drawPath(corner)

    def mousePressEvent(self, event: Any) -> None:
        p = event.pos()
        self._resizing = p.x() > self.size[0] - self.HANDLE and p.y() > self.size[1] - self.HANDLE
        self.ctl.frame_press(self)
        if not self._resizing:
            inside = self.sceneBoundingRect()
            self._carried = {item: item.pos() for item in self.ctl.node_items.values()
                             if inside.contains(item.sceneBoundingRect().center())}
        super().mousePressEvent(event)

    def mouseMoveEvent(self, event: Any) -> None:
        if self._resizing:
            p = event.pos()
            self.prepareGeometryChange()
            self.size = (max(60.0, p.x()), max(40.0, p.y()))
            self.update()
            return
        before = self.pos()
        super().mouseMoveEvent(event)
        delta = self.pos() - before
        if delta.x() or delta.y():
            for item in self._carried:
                if not item.isSelected():
                    item.moveBy(delta.x(), delta.y())

    def mouseReleaseEvent(self, event: Any) -> None:
        super().mouseReleaseEvent(event)
        self._resizing = False
        self.ctl.frame_release(self, list(self._carried))
        self._carried = {}

    def mouseDoubleClickEvent(self, event: Any) -> None:
        if event.pos().y() <= self.TITLE:
            self.ctl.rename_frame(self)


class OverviewItem(QGraphicsItem):
    """The whole graph at low zoom in one paint: nodes as boxes, links as thin curves.

    Below `LOW_DETAIL` the node and link items stop painting themselves (they stay
    in the scene for selection, moves and hit tests); this item draws them all
    with a handful of calls, from shapes rebuilt only when the graph changes.
    """

    def __init__(self, scene: GraphScene) -> None:
        super().__init__()
        self.ctl = scene
        self.setZValue(-5)
        self.setAcceptedMouseButtons(Qt.MouseButton.NoButton)
        self.setVisible(False)
        self._dirty = True
        self._bounds = QRectF()
        self._links: list[tuple[QPen, QPainterPath]] = []
        self._nodes: list[tuple[QColor, list[QRectF]]] = []
        self._outlined: list[tuple[QPen, list[QRectF]]] = []

    def invalidate(self) -> None:
        # A scene being destroyed announces its last selection change after this item is gone.
        if not self._dirty and shiboken6.isValid(self):
            self._dirty = True
            self.update()

    def _rebuild(self) -> None:
        self._dirty = False  # before prepareGeometryChange, which asks for the bounds
        bounds = self.ctl.items_rect()
        if bounds != self._bounds:
            self.prepareGeometryChange()
            self._bounds = QRectF(bounds)
        links: dict[int, tuple[QColor, QPainterPath]] = {}
        for link in self.ctl.link_items.values():
            color = theme.LINK_INVALID if link.invalid else link.base_color
            entry = links.setdefault(color.rgba(), (color, QPainterPath()))
            entry[1].addPath(link._path)
        self._links = [(QPen(c, 0), p) for c, p in links.values()]
        nodes: dict[int, tuple[QColor, list[QRectF]]] = {}
        outlined: dict[int, tuple[QColor, list[QRectF]]] = {}
        for item in self.ctl.node_items.values():
            rect = item.sceneBoundingRect().adjusted(8, 4, -8, -4)
            nodes.setdefault(item.color.rgba(), (item.color, []))[1].append(rect)
            edge = theme.NODE_SELECTED if item.isSelected() else theme.PROBLEM if item.problems \
                else item._status_color()
            if edge is not None:
                outlined.setdefault(edge.rgba(), (edge, []))[1].append(rect)
        self._nodes = list(nodes.values())
        self._outlined = [(QPen(c, 3), rects) for c, rects in outlined.values()]
        self._dirty = False

    def boundingRect(self) -> QRectF:
        if self._dirty and self.isVisible():
            self._rebuild()
        return self._bounds.adjusted(-10, -10, 10, 10)

    def paint(self, painter: QPainter, option: QStyleOptionGraphicsItem, widget: QWidget | None = None) -> None:
        if self._dirty:
            self._rebuild()
        painter.setRenderHint(_AA, False)
        painter.setBrush(_NO_BRUSH)
        for pen, path in self._links:
            painter.setPen(pen)
            painter.drawPath(path)
        painter.setPen(Qt.PenStyle.NoPen)
        for color, rects in self._nodes:
            painter.setBrush(color)
            painter.drawRects(rects)
        painter.setBrush(_NO_BRUSH)
        for pen, rects in self._outlined:
            pen.setCosmetic(True)
            painter.setPen(pen)
            painter.drawRects(rects)
