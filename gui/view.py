"""The canvas view: grid, smooth zoom around the pointer, panning, fit-all and a minimap."""

from __future__ import annotations

import math
from typing import Any

from PySide6.QtCore import QPointF, QRect, QRectF, Qt, QTimer, QVariantAnimation, Signal
from PySide6.QtGui import QBrush, QColor, QPainter, QPen, QPixmap, QTransform
from PySide6.QtWidgets import QGraphicsView, QWidget

from . import theme
from .items import LOW_DETAIL, NodeItem
from .scene import GraphScene

MIN_ZOOM, MAX_ZOOM = 0.01, 4.0  # 0.01: a few thousand nodes still fit in one view


class GraphView(QGraphicsView):
    paletteRequested = Signal(QPointF)
    filesDropped = Signal(list)

    def __init__(self, scene: GraphScene, parent: QWidget | None = None) -> None:
        super().__init__(scene, parent)
        self.setRenderHints(QPainter.RenderHint.Antialiasing | QPainter.RenderHint.TextAntialiasing)
        self.setViewportUpdateMode(QGraphicsView.ViewportUpdateMode.SmartViewportUpdate)
        self.setOptimizationFlags(QGraphicsView.OptimizationFlag.DontSavePainterState)
        self.setTransformationAnchor(QGraphicsView.ViewportAnchor.NoAnchor)
        self.setResizeAnchor(QGraphicsView.ViewportAnchor.AnchorViewCenter)
        self.setDragMode(QGraphicsView.DragMode.RubberBandDrag)
        self.setRubberBandSelectionMode(Qt.ItemSelectionMode.IntersectsItemShape)
        self.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.setVerticalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.setSceneRect(QRectF(-1e6, -1e6, 2e6, 2e6))
        self.setAcceptDrops(True)
        self.viewport().setAcceptDrops(True)
        self.setFocusPolicy(Qt.FocusPolicy.StrongFocus)
        self._pan_from: QPointF | None = None
        self._tile: QPixmap | None = None
        self._zoom_anim = QVariantAnimation(self)
        self._zoom_anim.setDuration(120)
        self._zoom_anim.valueChanged.connect(self._animate_zoom)
        self._zoom_anchor = QPointF()
        self._zoom_settled = QTimer(self)
        self._zoom_settled.setSingleShot(True)
        self._zoom_settled.setInterval(250)
        self._zoom_settled.timeout.connect(lambda: self.graph_scene.set_item_cache(True))
        self.minimap = Minimap(self)
        self.set_scene(scene)

    def set_scene(self, scene: GraphScene) -> None:
        self.setScene(scene)
        scene.set_overview(self.zoom < LOW_DETAIL)
        self.minimap.schedule()
        scene.changed.connect(lambda _r: self.minimap.schedule())

    @property
    def graph_scene(self) -> GraphScene:
        scene = self.scene()
        assert isinstance(scene, GraphScene)
        return scene

    # --- zoom and pan -------------------------------------------------------------------------
    @property
    def zoom(self) -> float:
        return self.transform().m11()

    def set_zoom(self, zoom: float, anchor: QPointF | None = None) -> None:
        """Zoom keeping the scene point under ``anchor`` (viewport coordinates) in place."""
        zoom = max(MIN_ZOOM, min(MAX_ZOOM, zoom))
        if zoom != self.zoom:
            self.graph_scene.set_item_cache(False)
            self._zoom_settled.start()
        anchor = anchor if anchor is not None else QPointF(self.viewport().rect().center())
        before = self.mapToScene(anchor.toPoint())
        factor = zoom / self.zoom
        self.scale(factor, factor)
        after = self.mapToScene(anchor.toPoint())
        delta = after - before
        self.translate(delta.x(), delta.y())
        self.graph_scene.set_overview(self.zoom < LOW_DETAIL)
        self.minimap.update()

    def _animate_zoom(self, value: Any) -> None:
        self.set_zoom(float(value), self._zoom_anchor)

    def wheelEvent(self, event: Any) -> None:
        delta = event.angleDelta().y() or event.angleDelta().x()
        if not delta:
            return
        target = (self._zoom_anim.endValue() if self._zoom_anim.state() == QVariantAnimation.State.Running
                  else self.zoom)
        target = max(MIN_ZOOM, min(MAX_ZOOM, float(target) * math.pow(1.0015, delta)))
        self._zoom_anchor = event.position()
        if abs(delta) < 120:  # touchpads send small steps: follow them directly
            self.set_zoom(target, self._zoom_anchor)
            return
        self._zoom_anim.stop()
        self._zoom_anim.setStartValue(self.zoom)
        self._zoom_anim.setEndValue(target)
        self._zoom_anim.start()

    def pan(self, dx: float, dy: float) -> None:
        """Move the view by (dx, dy) viewport pixels."""
        z = self.zoom
        self.translate(dx / z, dy / z)
        self.minimap.update()

    def fit_all(self) -> None:
        rect = self.graph_scene.items_rect()
        self.fit_rect(rect)

    def fit_selection(self) -> None:
        rect = QRectF()
        for item in self.graph_scene.selectedItems():
            rect = rect.united(item.sceneBoundingRect())
        self.fit_rect(rect if not rect.isNull() else self.graph_scene.items_rect())

    def fit_rect(self, rect: QRectF) -> None:
        if rect.isNull() or rect.isEmpty():
            self.resetTransform()
            self.graph_scene.set_overview(False)
            self.centerOn(0, 0)
            return
        rect = rect.adjusted(-40, -40, 40, 40)
        view = self.viewport().rect()
        zoom = min(view.width() / rect.width(), view.height() / rect.height(), 1.25)
        self.resetTransform()
        self.set_zoom(zoom)
        self.centerOn(rect.center())
        self.minimap.schedule()

    def mousePressEvent(self, event: Any) -> None:
        if event.button() == Qt.MouseButton.MiddleButton or (
                event.button() == Qt.MouseButton.LeftButton
                and event.modifiers() & Qt.KeyboardModifier.AltModifier):
            self._pan_from = event.position()
            self.viewport().setCursor(Qt.CursorShape.ClosedHandCursor)
            event.accept()
            return
        super().mousePressEvent(event)

    def mouseMoveEvent(self, event: Any) -> None:
        if self._pan_from is not None:
            delta = event.position() - self._pan_from
            self._pan_from = event.position()
            self.pan(delta.x(), delta.y())
            event.accept()
            return
        super().mouseMoveEvent(event)

    def mouseReleaseEvent(self, event: Any) -> None:
        if self._pan_from is not None:
            self._pan_from = None
            self.viewport().unsetCursor()
            event.accept()
            return
        super().mouseReleaseEvent(event)

    def mouseDoubleClickEvent(self, event: Any) -> None:
        item = self.itemAt(event.position().toPoint())
        if item is None:
            self.paletteRequested.emit(self.mapToScene(event.position().toPoint()))
            return
        super().mouseDoubleClickEvent(event)

    def keyPressEvent(self, event: Any) -> None:
        if self.graph_scene.inline.is_open:  # keys belong to the value being edited on a node
            super().keyPressEvent(event)
            return
        key = event.key()
        if key == Qt.Key.Key_Tab:
            pos = self.mapFromGlobal(self.cursor().pos())
            if not self.viewport().rect().contains(pos):
                pos = self.viewport().rect().center()
            self.paletteRequested.emit(self.mapToScene(pos))
            return
        if key == Qt.Key.Key_Escape and self.graph_scene.drag is not None:
            self.graph_scene.cancel_link_drag()
            return
        grabber = self.graph_scene.mouseGrabberItem()
        if key == Qt.Key.Key_Escape and isinstance(grabber, NodeItem) and grabber.cancel_field_drag():
            return
        selected = self.graph_scene.selected_node_ids()
        if key in (Qt.Key.Key_Return, Qt.Key.Key_Enter, Qt.Key.Key_F2) and len(selected) == 1 \
                and not event.modifiers() & Qt.KeyboardModifier.ControlModifier:
            # Enter on a selected node types into its first field (then Tab goes on to the next).
            item = self.graph_scene.node_items[selected[0]]
            names = self.graph_scene.inline.editable_rows(item)
            if names and self.graph_scene.inline.open(item.node_id, names[0]):
                return
        if key in (Qt.Key.Key_Plus, Qt.Key.Key_Equal, Qt.Key.Key_Minus):
            self.set_zoom(self.zoom * (1.25 if key != Qt.Key.Key_Minus else 0.8))
            return
        step = 10 if not event.modifiers() & Qt.KeyboardModifier.ShiftModifier else 50
        arrows = {Qt.Key.Key_Left: (-step, 0), Qt.Key.Key_Right: (step, 0),
                  Qt.Key.Key_Up: (0, -step), Qt.Key.Key_Down: (0, step)}
        if key in arrows and self.graph_scene.selected_node_ids():
            self.graph_scene.nudge(*arrows[key])
            return
        super().keyPressEvent(event)

    def focusNextPrevChild(self, next: bool) -> bool:
        return False  # Tab opens the palette instead of moving focus

    # --- background --------------------------------------------------------------------------------
    def drawBackground(self, painter: QPainter, rect: QRectF | QRect) -> None:  # type: ignore[override]
        """The canvas colour and a grid (100 units, minor lines every 20), as one tiled fill."""
        origin = painter.worldTransform().map(QPointF(0, 0))
        painter.save()
        painter.resetTransform()
        target = QRectF(self.viewport().rect())
        tile = self._grid_tile(100.0 * self.zoom)
        if tile is None:
            painter.fillRect(target, theme.CANVAS)
        else:
            brush = QBrush(tile)
            brush.setTransform(QTransform.fromTranslate(origin.x() % tile.width(), origin.y() % tile.height()))
            painter.fillRect(target, brush)
        painter.restore()

    def _grid_tile(self, size: float) -> QPixmap | None:
        """One grid cell, drawn in device pixels; cached per size (None when the grid is too fine)."""
        px = int(round(size))
        if px < 12:
            return None
        if self._tile is not None and self._tile.width() == px:
            return self._tile
        tile = QPixmap(px, px)
        tile.fill(theme.CANVAS)
        p = QPainter(tile)
        if px / 5 >= 8:
            p.setPen(QPen(theme.GRID_MINOR, 0))
            for i in range(1, 5):
                at = int(round(i * px / 5))
                p.drawLine(at, 0, at, px)
                p.drawLine(0, at, px, at)
        p.setPen(QPen(theme.GRID_MAJOR, 0))
        p.drawLine(0, 0, 0, px)
        p.drawLine(0, 0, px, 0)
        p.end()
        self._tile = tile
        return tile

    # --- files dropped on the canvas -----------------------------------------------------------
    def dragEnterEvent(self, event: Any) -> None:
        if event.mimeData().hasUrls():
            event.acceptProposedAction()
            return
        super().dragEnterEvent(event)

    def dragMoveEvent(self, event: Any) -> None:
        if event.mimeData().hasUrls():
            event.acceptProposedAction()
            return
        super().dragMoveEvent(event)

    def dropEvent(self, event: Any) -> None:
        if event.mimeData().hasUrls():
            paths = [u.toLocalFile() for u in event.mimeData().urls() if u.isLocalFile()]
            event.acceptProposedAction()
            self.filesDropped.emit(paths)
            return
        super().dropEvent(event)

    def resizeEvent(self, event: Any) -> None:
        super().resizeEvent(event)
        self.minimap.place()


class Minimap(QWidget):
    """The whole graph in a corner; the visible area is outlined; click or drag to go there."""

    SIZE = (200, 130)

    def __init__(self, view: GraphView) -> None:
        super().__init__(view)
        self.view = view
        self.resize(*self.SIZE)
        self._timer = QTimer(self)
        self._timer.setSingleShot(True)
        self._timer.setInterval(60)
        self._timer.timeout.connect(self.update)
        self.setCursor(Qt.CursorShape.PointingHandCursor)
        self._dirty = True
        self._pixmap: QPixmap | None = None
        self._world = QRectF(-500, -300, 1000, 600)
        self.place()

    def place(self) -> None:
        parent = self.view.rect()
        self.move(parent.width() - self.width() - 12, parent.height() - self.height() - 12)

    def schedule(self) -> None:
        """The graph changed: redraw the map soon (at most every 60 ms)."""
        self._dirty = True
        if not self._timer.isActive():
            self._timer.start()

    def _mapping(self) -> tuple[QRectF, float, QPointF]:
        world = self._world
        scale = min(self.width() / max(world.width(), 1), self.height() / max(world.height(), 1))
        offset = QPointF((self.width() - world.width() * scale) / 2, (self.height() - world.height() * scale) / 2)
        return world, scale, offset

    def _to_map(self, r: QRectF) -> QRectF:
        world, scale, offset = self._mapping()
        return QRectF(offset.x() + (r.x() - world.x()) * scale, offset.y() + (r.y() - world.y()) * scale,
                      max(2.0, r.width() * scale), max(2.0, r.height() * scale))

    def _render(self) -> None:
        """Draw the nodes into a cached picture; painting the map is then one blit and a frame."""
        scene = self.view.graph_scene
        world = scene.items_rect()
        self._world = (world if not world.isNull() else QRectF(-500, -300, 1000, 600)).adjusted(-80, -80, 80, 80)
        ratio = self.devicePixelRatioF()
        pixmap = QPixmap(int(self.width() * ratio), int(self.height() * ratio))
        pixmap.setDevicePixelRatio(ratio)
        pixmap.fill(QColor(20, 21, 24, 220))
        painter = QPainter(pixmap)
        painter.setPen(Qt.PenStyle.NoPen)
        world, scale, offset = self._mapping()
        ox, oy = offset.x() - world.x() * scale, offset.y() - world.y() * scale
        groups: dict[int, tuple[QColor, list[QRectF]]] = {}
        for item in scene.node_items.values():
            color = theme.PROBLEM if item.problems else item.color
            p = item.pos()
            rect = QRectF(ox + p.x() * scale, oy + p.y() * scale,
                          max(2.0, item.width * scale), max(2.0, item.height * scale))
            groups.setdefault(color.rgba(), (color, []))[1].append(rect)
        for color, rects in groups.values():
            painter.setBrush(color)
            painter.drawRects(rects)
        painter.setPen(QPen(QColor("#555"), 1))
        painter.setBrush(Qt.BrushStyle.NoBrush)
        painter.drawRect(QRectF(0, 0, self.width() - 1, self.height() - 1))
        painter.end()
        self._pixmap = pixmap
        self._dirty = False

    def paintEvent(self, event: Any) -> None:
        if self._dirty or self._pixmap is None:
            self._render()
        painter = QPainter(self)
        assert self._pixmap is not None
        painter.drawPixmap(0, 0, self._pixmap)
        visible = self.view.mapToScene(self.view.viewport().rect()).boundingRect()
        painter.setPen(QPen(theme.NODE_SELECTED, 1))
        painter.drawRect(self._to_map(visible).intersected(QRectF(self.rect()).adjusted(0, 0, -1, -1)))

    def _go(self, pos: QPointF) -> None:
        world, scale, offset = self._mapping()
        target = QPointF(world.x() + (pos.x() - offset.x()) / scale, world.y() + (pos.y() - offset.y()) / scale)
        self.view.centerOn(target)
        self.update()

    def mousePressEvent(self, event: Any) -> None:
        self._go(event.position())

    def mouseMoveEvent(self, event: Any) -> None:
        if event.buttons() & Qt.MouseButton.LeftButton:
            self._go(event.position())

