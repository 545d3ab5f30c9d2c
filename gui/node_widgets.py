"""Values edited on the node itself: fields painted with QPainter inside the node's item.

Nothing here is a QWidget: a node lays its fields out once (when its values, links or size change)
and paints them from that layout, so a thousand nodes cost no more than their drawing. Typing
opens one small editor over a field only while it is in use (see `inline_edit`).

Kinds of field, chosen from the input's declaration:
  number     drag sideways to change by the step (within min/max), arrows step, click to type
  slider     a bounded float: the filled part is the value, drag to set it, click to type
  choice     a dropdown of the declared choices
  toggle     on / off
  seed       a number with a dice button; below it "after run": fixed / randomize / increment
  text       one line of text, click to type
  prompt     multi-line text in a box that grows with the text (up to `PROMPT_MAX_LINES`)
  path       a file of the input's kind: the known files, or browse
  area       inputs declared ``widget="area.*"``: the box drawn on a preview of the picture
  range      inputs declared ``widget="range.start"/"range.end"``: a two-handle range slider
"""

from __future__ import annotations

import functools
import html
import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from PySide6.QtCore import QPointF, QRectF, Qt
from PySide6.QtGui import QColor, QFont, QFontMetricsF, QPainter, QPen, QPolygonF, QStaticText

from nodeflow.api import BOOL, FLOAT, INT, Input, Node

from . import theme

if TYPE_CHECKING:
    from nodeflow.graph import Graph
    from nodeflow.registry import NodeRegistry

FIELD_H = 18.0
FIELD_PITCH = 22.0
"""Height of a field's row (the field and the gap below it)."""
FIELD_X = 10.0
ARROW_W = 14.0
BUTTON_W = 20.0
PROMPT_MIN_LINES = 3
PROMPT_MAX_LINES = 12
PROMPT_PAD = 4.0
AREA_MAX_H = 120.0
RANGE_H = 20.0
DRAG_PX_PER_STEP = 6.0
"""A sideways drag on a number changes it by one step per this many pixels."""
DRAG_START = 3.0
"""A press that moves less than this is a click."""
SLIDER_SPAN = 1000.0
"""Floats bounded within this span are sliders; wider ones are number fields."""
HANDLE_R = 5.0
SEED_MODES = ("fixed", "randomize", "increment")
INPUT_KINDS = ("number", "slider", "choice", "toggle", "seed", "text", "prompt", "path")
"""Kinds of field that edit one input (the others edit several, or a setting of the editor)."""

FIELD_BG = QColor("#222327")
FIELD_HOVER = QColor("#2a2c31")
FIELD_BORDER = QColor("#3a3d44")
FIELD_FILL = QColor("#3b5f86")
FIELD_ARROW = QColor("#8a9099")
AREA_BG = QColor("#17181b")
AREA_BOX = QColor(240, 198, 116, 70)
RANGE_TRACK = QColor("#17181b")


def field_kind(spec: Input) -> str:
    """Which field edits a literal input."""
    t = spec.type
    if spec.choices:
        return "choice"
    if t is BOOL or t.literal is bool:
        return "toggle"
    if spec.seed:
        return "seed"
    if t is INT or t.literal is int:
        return "number"
    if t is FLOAT or t.literal is float:
        bounded = spec.min is not None and spec.max is not None and 0 < spec.max - spec.min <= SLIDER_SPAN
        return "slider" if bounded else "number"
    if spec.path_kind:
        return "path"
    if spec.multiline:
        return "prompt"
    return "text"


def is_int(spec: Input) -> bool:
    return spec.type is INT or spec.type.literal is int


def step_of(spec: Input) -> float:
    if spec.step:
        return float(spec.step)
    return 1.0 if is_int(spec) else 0.01


def decimals_of(spec: Input) -> int:
    if is_int(spec):
        return 0
    text = f"{step_of(spec):g}"
    return len(text.split(".")[1]) if "." in text else 0


def snap(spec: Input, value: float) -> int | float:
    """``value`` on the input's step grid (counted from its minimum), within its bounds."""
    if is_int(spec):  # whole numbers stay exact (seeds go up to 2**64 - 1)
        whole = value if isinstance(value, int) else int(round(value))
        istep = max(1, int(step_of(spec)))
        ibase = int(spec.min) if spec.min is not None else 0
        whole = ibase + (whole - ibase + istep // 2) // istep * istep
        if spec.min is not None:
            whole = max(int(spec.min), whole)
        if spec.max is not None:
            whole = min(int(spec.max), whole)
        return whole
    step = step_of(spec)
    base = float(spec.min) if spec.min is not None else 0.0
    value = base + round((value - base) / step) * step
    if spec.min is not None:
        value = max(float(spec.min), value)
    if spec.max is not None:
        value = min(float(spec.max), value)
    return int(round(value)) if is_int(spec) else round(value, decimals_of(spec) + 2)


def number_text(spec: Input, value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return "—" if value is None else str(value)
    if is_int(spec):
        return str(int(value))
    return f"{float(value):.{max(decimals_of(spec), 1)}f}" if abs(value) < 1e6 else f"{value:.3e}"


@dataclass(eq=False)
class Field:
    """One field of a node, laid out in item coordinates."""

    kind: str
    name: str
    """The input it edits (for an area or a range: its first input)."""
    rect: QRectF
    spec: Input | None = None
    names: tuple[str, ...] = ()
    """Every input it edits: (x, y, width, height) of an area, (start, end) of a range."""
    specs: tuple[Input, ...] = ()
    reference: tuple[float, float] = (512.0, 512.0)
    """An area's picture size (its unit: pixels, or 1.0 for fractions of the picture)."""
    label: QStaticText | None = None
    value: QStaticText | None = None
    value_key: Any = None
    """What ``value`` was made from (so it is made again only when that changes)."""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def edits_input(self) -> bool:
        return self.kind in INPUT_KINDS


@functools.lru_cache(maxsize=1)
def font() -> QFont:
    """The fields' font (made on first use: fonts need the application to exist)."""
    return theme.ui_font(8.5)


@functools.lru_cache(maxsize=1)
def metrics() -> QFontMetricsF:
    return QFontMetricsF(font())


_WIDTHS: dict[str, float] = {}


def text_width(text: str) -> float:
    """The width of ``text`` in the fields' font (remembered)."""
    w = _WIDTHS.get(text)
    if w is None:
        if len(_WIDTHS) > 20000:
            _WIDTHS.clear()
        w = _WIDTHS[text] = metrics().horizontalAdvance(text)
    return w


def static_text(text: str, width: float | None = None) -> QStaticText:
    st = QStaticText(text)
    st.setTextFormat(Qt.TextFormat.PlainText)
    if width is not None:
        st.setTextWidth(width)
    st.prepare(font=font())
    return st


# --- layout ------------------------------------------------------------------------------------
def desired_width(kind: str, spec: Input, value: Any) -> float:
    """How wide a node must be to show this field readably."""
    label = text_width(spec.name)
    if kind == "prompt":
        return 250.0
    if kind == "path":
        return min(320.0, label + text_width(str(value or "")) + 56 + BUTTON_W)
    if kind in ("number", "slider", "seed"):
        text = number_text(spec, value)
        extra = 2 * ARROW_W + (BUTTON_W + 4 if kind == "seed" else 0)
        return label + text_width(text) + extra + 44
    text = "on" if kind == "toggle" else str(value if value is not None else "")
    return min(300.0, label + text_width(text) + 50)


def prompt_height(text: str, width: float) -> float:
    """Height of a prompt box showing ``text`` wrapped to ``width`` (within the line limits)."""
    line = metrics().lineSpacing()
    inner = max(10.0, width - 2 * PROMPT_PAD)
    needed = metrics().boundingRect(QRectF(0, 0, inner, 1e6), int(Qt.TextFlag.TextWordWrap), text or " ").height()
    lines = max(PROMPT_MIN_LINES, min(PROMPT_MAX_LINES, math.ceil(needed / line - 0.01)))
    return lines * line + 2 * PROMPT_PAD


def area_height(width: float, reference: tuple[float, float]) -> float:
    w, h = reference
    return max(50.0, min(AREA_MAX_H, (width - 2 * FIELD_X) * h / max(w, 1e-6)))


_KINDS: dict[type[Node], dict[str, str]] = {}
_AREAS: dict[type[Node], list[tuple[Input, ...]]] = {}
_RANGES: dict[type[Node], list[tuple[Input, Input]]] = {}


def input_kinds(cls: type[Node]) -> dict[str, str]:
    """The field kind of every input of a node type that can hold a literal value."""
    if cls not in _KINDS:
        _KINDS[cls] = {spec.name: field_kind(spec) for spec in cls.inputs if spec.accepts_literal}
    return _KINDS[cls]


def area_groups(cls: type[Node]) -> list[tuple[Input, ...]]:
    """The node's areas: inputs declared area.x / .y / .width / .height (one group per node)."""
    if cls not in _AREAS:
        _AREAS[cls] = _area_groups(cls)
    return _AREAS[cls]


def _area_groups(cls: type[Node]) -> list[tuple[Input, ...]]:
    by_role = {i.widget: i for i in cls.inputs if i.widget and i.widget.startswith("area.")}
    roles = ("area.x", "area.y", "area.width", "area.height")
    return [tuple(by_role[r] for r in roles)] if all(r in by_role for r in roles) else []


def range_groups(cls: type[Node]) -> list[tuple[Input, Input]]:
    """The node's ranges: each input declared range.start with the next range.end after it."""
    if cls in _RANGES:
        return _RANGES[cls]
    pairs = []
    start: Input | None = None
    for spec in cls.inputs:
        if spec.widget == "range.start":
            start = spec
        elif spec.widget == "range.end" and start is not None:
            pairs.append((start, spec))
            start = None
    _RANGES[cls] = pairs
    return pairs


def reference_size(graph: Graph, registry: NodeRegistry, node_id: str) -> tuple[float, float] | None:
    """The picture size an area of ``node_id`` is placed on: the width and height of the empty
    latent that the sampler it feeds starts from (searched along the links), or None."""
    seen = {node_id}
    frontier = [node_id]
    for _depth in range(6):
        consumers = [ln.dst for ln in graph.links if ln.src in frontier and ln.dst not in seen]
        if not consumers:
            return None
        for dst in consumers:
            for ln in graph.links:
                if ln.dst != dst or ln.src in seen:
                    continue
                src = graph.nodes.get(ln.src)
                cls = registry.get(src.type) if src is not None else None
                if cls is None or not any(getattr(o.type, "name", "") == "LATENT" for o in cls.outputs):
                    continue
                w, h = (src.inputs.get(k, cls.input_map[k].default if k in cls.input_map else None)  # type: ignore[union-attr]
                        for k in ("width", "height"))
                if isinstance(w, int | float) and isinstance(h, int | float) and not isinstance(w, bool) \
                        and not isinstance(h, bool) and w > 0 and h > 0:
                    return float(w), float(h)
        seen.update(consumers)
        frontier = consumers
    return None


# --- painting ------------------------------------------------------------------------------------
def paint_field(painter: QPainter, f: Field, value: Any, hover: bool, detailed: bool) -> None:
    """Draw one field; ``detailed`` False (zoomed out) draws its box only."""
    rect = f.rect
    if f.kind == "area":
        _paint_area(painter, f, value, detailed)
        return
    if f.kind == "range":
        _paint_range(painter, f, value, detailed)
        return
    painter.setPen(QPen(FIELD_BORDER, 1))
    painter.setBrush(FIELD_HOVER if hover else FIELD_BG)
    radius = 4.0 if f.kind == "prompt" else rect.height() / 2
    painter.drawRoundedRect(rect, radius, radius)
    if not detailed:
        return
    if f.kind == "slider" and isinstance(value, int | float) and f.spec is not None:
        lo, hi = float(f.spec.min), float(f.spec.max)  # type: ignore[arg-type]
        t = max(0.0, min(1.0, (float(value) - lo) / (hi - lo)))
        if t > 0:
            painter.setPen(Qt.PenStyle.NoPen)
            painter.setBrush(FIELD_FILL)
            fill = QRectF(rect.x() + 1, rect.y() + 1, (rect.width() - 2) * t, rect.height() - 2)
            r = min(radius - 1, fill.width() / 2)
            painter.drawRoundedRect(fill, r, r)
    if f.kind == "prompt":
        painter.setPen(theme.NODE_TEXT if value else theme.NODE_DIM_TEXT)
        text = f.value or static_text(f.name)
        clip = f.extra.get("overflow", False)
        if clip:
            painter.save()
            painter.setClipRect(rect.adjusted(1, 1, -1, -1))
        painter.drawStaticText(QPointF(rect.x() + PROMPT_PAD, rect.y() + PROMPT_PAD), text)
        if clip:
            painter.restore()
        return
    inner = rect.adjusted(8, 0, -8, 0)
    if f.kind in ("number", "seed"):
        _paint_arrows(painter, f.extra["value_rect"])
    if f.kind == "seed":
        _paint_dice(painter, f.extra["dice"])
    elif f.kind in ("choice", "path", "seed_mode"):
        _paint_caret(painter, f.extra["button"], "…" if f.kind == "path" else "")
    elif f.kind == "toggle":
        _paint_switch(painter, f.extra["switch"], bool(value))
    label_x = f.extra.get("label_x", inner.x())
    if f.label is not None:
        painter.setPen(theme.NODE_DIM_TEXT)
        painter.drawStaticText(QPointF(label_x, rect.y() + f.extra["text_dy"]), f.label)
    if f.value is not None:
        painter.setPen(theme.NODE_TEXT)
        right = f.extra["value_right"]
        painter.drawStaticText(QPointF(right - f.value.size().width(), rect.y() + f.extra["text_dy"]), f.value)


def _paint_arrows(painter: QPainter, rect: QRectF) -> None:
    painter.setPen(Qt.PenStyle.NoPen)
    painter.setBrush(FIELD_ARROW)
    cy = rect.center().y()
    lx, rx = rect.left() + ARROW_W / 2 + 1, rect.right() - ARROW_W / 2 - 1
    painter.drawPolygon(QPolygonF([QPointF(lx + 2.5, cy - 4), QPointF(lx - 2.5, cy), QPointF(lx + 2.5, cy + 4)]))
    painter.drawPolygon(QPolygonF([QPointF(rx - 2.5, cy - 4), QPointF(rx + 2.5, cy), QPointF(rx - 2.5, cy + 4)]))


def _paint_caret(painter: QPainter, rect: QRectF, text: str) -> None:
    painter.setPen(Qt.PenStyle.NoPen)
    painter.setBrush(FIELD_ARROW)
    c = rect.center()
    if text:
        for dx in (-4.0, 0.0, 4.0):
            painter.drawEllipse(QPointF(c.x() + dx, c.y() + 1), 1.3, 1.3)
        return
    painter.drawPolygon(QPolygonF([QPointF(c.x() - 4, c.y() - 2), QPointF(c.x() + 4, c.y() - 2),
                                   QPointF(c.x(), c.y() + 3)]))


def _paint_dice(painter: QPainter, rect: QRectF) -> None:
    face = QRectF(rect.center().x() - 7, rect.center().y() - 7, 14, 14)
    painter.setPen(QPen(FIELD_ARROW, 1))
    painter.setBrush(theme.NODE_BODY)
    painter.drawRoundedRect(face, 3, 3)
    painter.setPen(Qt.PenStyle.NoPen)
    painter.setBrush(theme.NODE_TEXT)
    c = face.center()
    for dx, dy in ((-3.5, -3.5), (3.5, 3.5), (0, 0), (3.5, -3.5), (-3.5, 3.5)):
        painter.drawEllipse(QPointF(c.x() + dx, c.y() + dy), 1.3, 1.3)


def _paint_switch(painter: QPainter, rect: QRectF, on: bool) -> None:
    painter.setPen(Qt.PenStyle.NoPen)
    painter.setBrush(FIELD_FILL.lighter(130) if on else QColor("#4a4d55"))
    painter.drawRoundedRect(rect, rect.height() / 2, rect.height() / 2)
    painter.setBrush(theme.NODE_TEXT)
    r = rect.height() / 2 - 2
    x = rect.right() - r - 2 if on else rect.left() + r + 2
    painter.drawEllipse(QPointF(x, rect.center().y()), r, r)


def area_geometry(f: Field, values: tuple[float, float, float, float]) -> tuple[QRectF, QRectF]:
    """(the picture, the box) of an area field, in item coordinates."""
    rw, rh = f.reference
    canvas = f.rect
    scale = min((canvas.width() - 8) / rw, (canvas.height() - 8) / rh)
    pw, ph = rw * scale, rh * scale
    picture = QRectF(canvas.center().x() - pw / 2, canvas.center().y() - ph / 2, pw, ph)
    x, y, w, h = values
    box = QRectF(picture.x() + x * scale, picture.y() + y * scale, w * scale, h * scale)
    return picture, box


def _paint_area(painter: QPainter, f: Field, values: Any, detailed: bool) -> None:
    painter.setPen(Qt.PenStyle.NoPen)
    painter.setBrush(AREA_BG)
    painter.drawRoundedRect(f.rect, 4, 4)
    picture, box = area_geometry(f, values)
    painter.setBrush(theme.NODE_BODY.darker(115))
    painter.setPen(QPen(FIELD_BORDER, 1))
    painter.drawRect(picture)
    painter.setPen(QPen(theme.NODE_SELECTED, 1.5))
    painter.setBrush(AREA_BOX)
    painter.drawRect(box.intersected(picture.adjusted(-1, -1, 1, 1)))
    if not detailed:
        return
    painter.setPen(Qt.PenStyle.NoPen)
    painter.setBrush(theme.NODE_SELECTED)
    corner = box.bottomRight()
    painter.drawRect(QRectF(corner.x() - 4, corner.y() - 4, 8, 8))
    if f.value is not None:
        painter.setPen(theme.NODE_DIM_TEXT)
        painter.drawStaticText(QPointF(picture.x() + 3, picture.bottom() - f.value.size().height() - 1), f.value)


def range_geometry(f: Field, values: tuple[float, float]) -> tuple[QRectF, float, float]:
    """(the track, x of the start handle, x of the end handle) of a range field."""
    lo, hi = f.extra["lo"], f.extra["hi"]
    track = f.rect.adjusted(HANDLE_R + 2, f.rect.height() / 2 - 2, -HANDLE_R - 2, -f.rect.height() / 2 + 2)

    def x_of(v: float) -> float:
        t = (min(max(float(v), lo), hi) - lo) / (hi - lo) if hi > lo else 0.0
        return track.left() + t * track.width()

    return track, x_of(values[0]), x_of(values[1])


def _paint_range(painter: QPainter, f: Field, values: Any, detailed: bool) -> None:
    track, x0, x1 = range_geometry(f, values)
    painter.setPen(Qt.PenStyle.NoPen)
    painter.setBrush(RANGE_TRACK)
    painter.drawRoundedRect(track, 2, 2)
    painter.setBrush(FIELD_FILL.lighter(130))
    painter.drawRect(QRectF(x0, track.y(), max(0.0, x1 - x0), track.height()))
    if not detailed:
        return
    painter.setBrush(theme.NODE_TEXT)
    painter.setPen(QPen(theme.NODE_BORDER, 1))
    for x in (x0, x1):
        painter.drawEllipse(QPointF(x, track.center().y()), HANDLE_R, HANDLE_R)


# --- hit tests -------------------------------------------------------------------------------------
def part_at(f: Field, pos: QPointF) -> str:
    """Which part of a field a point is on: 'dec', 'inc', 'dice', 'button', 'switch' or 'body'."""
    if f.kind in ("number", "seed"):
        vr = f.extra["value_rect"]
        if vr.left() <= pos.x() <= vr.left() + ARROW_W:
            return "dec"
        if vr.right() - ARROW_W <= pos.x() <= vr.right():
            return "inc"
    if f.kind == "seed" and f.extra["dice"].contains(pos):
        return "dice"
    if f.kind in ("choice", "path", "seed_mode") and f.extra["button"].adjusted(-2, -2, 2, 2).contains(pos):
        return "button"
    return "body"


def layout_line_field(f: Field, label: str, value_text: str) -> None:
    """Place the label and value text of a one-line field and make their static texts."""
    rect = f.rect
    fm = metrics()
    left, right = rect.left() + 8, rect.right() - 8
    value_rect = QRectF(rect)
    if f.kind == "seed":
        f.extra["dice"] = QRectF(rect.right() - BUTTON_W, rect.top(), BUTTON_W, rect.height())
        value_rect = QRectF(rect.left(), rect.top(), rect.width() - BUTTON_W - 2, rect.height())
        right = value_rect.right() - 8
    if f.kind in ("number", "seed"):
        f.extra["value_rect"] = value_rect
        left += ARROW_W - 4
        right -= ARROW_W - 4
    if f.kind in ("choice", "path", "seed_mode"):
        f.extra["button"] = QRectF(rect.right() - BUTTON_W, rect.top(), BUTTON_W, rect.height())
        right = rect.right() - BUTTON_W
    if f.kind == "toggle":
        f.extra["switch"] = QRectF(rect.right() - 30, rect.top() + 3, 24, rect.height() - 6)
        right = rect.right() - 36
    f.extra["label_x"] = left
    f.extra["value_right"] = right
    f.extra["text_dy"] = (rect.height() - fm.height()) / 2
    room = right - left
    label_w = min(fm.horizontalAdvance(label), room * 0.65)
    f.label = static_text(fm.elidedText(label, Qt.TextElideMode.ElideRight, label_w)) if label else None
    value_room = room - label_w - 8
    f.value = static_text(fm.elidedText(value_text, Qt.TextElideMode.ElideMiddle if f.kind == "path"
                                        else Qt.TextElideMode.ElideRight, value_room)) if value_text else None


def layout_prompt(f: Field, text: str) -> None:
    inner = f.rect.width() - 2 * PROMPT_PAD
    if not text:
        f.value = static_text(f.name, inner)
    else:  # as rich text, so its line breaks and runs of spaces show as typed
        f.value = QStaticText(f'<p style="white-space:pre-wrap">{html.escape(text)}</p>')
        f.value.setTextFormat(Qt.TextFormat.RichText)
        f.value.setTextWidth(inner)
        f.value.prepare(font=font())
    f.extra["overflow"] = f.value.size().height() > f.rect.height() - 2 * PROMPT_PAD + 1


def seed_mode_of(graph: Graph, node_id: str, name: str) -> str:
    """What happens to a seed input after each run: fixed, randomize or increment."""
    entry = graph.editor.get(node_id)
    modes = entry.get("seed_modes") if isinstance(entry, dict) else None
    mode = modes.get(name) if isinstance(modes, dict) else None
    return mode if mode in SEED_MODES else "fixed"
