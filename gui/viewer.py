"""The image viewer panel: outputs of this session, zoom and pan, a split compare, open folder."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from PySide6.QtCore import QPointF, QRectF, QSize, Qt, QUrl
from PySide6.QtGui import QColor, QDesktopServices, QIcon, QImage, QPainter, QPen, QPixmap
from PySide6.QtWidgets import (
    QHBoxLayout,
    QLabel,
    QListWidget,
    QListWidgetItem,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

MAX_HISTORY = 200
STRIP_ICON = 96
"""Size of the pictures in the strip under the viewer."""


class ImageCanvas(QWidget):
    """Shows one image (or two, split by a draggable line) with wheel zoom and drag pan."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.image: QImage | None = None
        self.other: QImage | None = None
        self.zoom: float | None = None  # None = fit
        self.offset = QPointF(0, 0)
        self.split = 0.5
        self._drag: QPointF | None = None
        self._splitting = False
        self.setMinimumHeight(160)
        self.setMouseTracking(True)

    def set_images(self, image: QImage | None, other: QImage | None = None) -> None:
        self.image, self.other = image, other
        self.update()

    def fit(self) -> None:
        self.zoom, self.offset = None, QPointF(0, 0)
        self.update()

    def actual_size(self) -> None:
        self.zoom, self.offset = 1.0, QPointF(0, 0)
        self.update()

    def _scale(self) -> float:
        if self.image is None or self.image.isNull():
            return 1.0
        if self.zoom is None:
            return min(self.width() / self.image.width(), self.height() / self.image.height(), 8.0)
        return self.zoom

    def _target(self) -> QRectF:
        assert self.image is not None
        s = self._scale()
        w, h = self.image.width() * s, self.image.height() * s
        return QRectF((self.width() - w) / 2 + self.offset.x(), (self.height() - h) / 2 + self.offset.y(), w, h)

    def paintEvent(self, event: Any) -> None:
        painter = QPainter(self)
        painter.fillRect(self.rect(), QColor("#141517"))
        if self.image is None or self.image.isNull():
            painter.setPen(QColor("#777"))
            painter.drawText(self.rect(), Qt.AlignmentFlag.AlignCenter, "Run the graph to see its images here")
            return
        painter.setRenderHint(QPainter.RenderHint.SmoothPixmapTransform, self._scale() < 2.0)
        target = self._target()
        painter.drawImage(target, self.image)
        if self.other is not None and not self.other.isNull():
            x = target.left() + target.width() * self.split
            clip = QRectF(x, target.top(), target.right() - x, target.height())
            painter.save()
            painter.setClipRect(clip)
            painter.drawImage(target, self.other)
            painter.restore()
            painter.setPen(QPen(QColor("#f0c674"), 2))
            painter.drawLine(QPointF(x, target.top()), QPointF(x, target.bottom()))
        painter.setPen(QColor("#aaa"))
        painter.drawText(self.rect().adjusted(6, 4, -6, -4), Qt.AlignmentFlag.AlignTop | Qt.AlignmentFlag.AlignRight,
                         f"{self.image.width()}×{self.image.height()}  {self._scale() * 100:.0f}%")

    def wheelEvent(self, event: Any) -> None:
        factor = 1.0015 ** event.angleDelta().y()
        self.zoom = max(0.05, min(32.0, self._scale() * factor))
        self.update()

    def mousePressEvent(self, event: Any) -> None:
        if self.other is not None and self.image is not None:
            target = self._target()
            x = target.left() + target.width() * self.split
            if abs(event.position().x() - x) < 8:
                self._splitting = True
                return
        self._drag = event.position()

    def mouseMoveEvent(self, event: Any) -> None:
        if self._splitting and self.image is not None:
            target = self._target()
            self.split = max(0.0, min(1.0, (event.position().x() - target.left()) / max(1.0, target.width())))
            self.update()
        elif self._drag is not None:
            if self.zoom is None:
                self.zoom = self._scale()
            self.offset += event.position() - self._drag
            self._drag = event.position()
            self.update()

    def mouseReleaseEvent(self, event: Any) -> None:
        self._drag = None
        self._splitting = False

    def mouseDoubleClickEvent(self, event: Any) -> None:
        self.fit()


class ImageViewer(QWidget):
    """Images the runs produced; click one to see it, Compare to split it with the one before."""

    def __init__(self, out_dir: Path, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.out_dir = out_dir
        self.canvas = ImageCanvas(self)
        self.caption = QLabel(self)
        self.caption.setStyleSheet("color: #9aa0a6;")
        self.strip = QListWidget(self)
        self.strip.setViewMode(QListWidget.ViewMode.IconMode)
        self.strip.setFlow(QListWidget.Flow.LeftToRight)
        self.strip.setWrapping(False)
        # Room for a picture and its name under it; long names are cut in the middle (the number
        # at the end stays), so names never run into each other.
        self.strip.setIconSize(QSize(STRIP_ICON, STRIP_ICON))
        self.strip.setGridSize(QSize(STRIP_ICON + 28, STRIP_ICON + 26))
        self.strip.setUniformItemSizes(True)
        self.strip.setWordWrap(False)
        self.strip.setTextElideMode(Qt.TextElideMode.ElideMiddle)
        self.strip.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOn)
        self.strip.setFixedHeight(STRIP_ICON + 26 + 24)
        self.strip.setMovement(QListWidget.Movement.Static)
        self.strip.currentRowChanged.connect(self._show_row)
        bar = QHBoxLayout()
        buttons = []
        for text, tip, slot in (("Fit", "Fit the image in the panel", self.canvas.fit),
                                ("1:1", "Actual pixels", self.canvas.actual_size),
                                ("Folder", "Open the output folder", self.open_folder)):
            b = QToolButton(self)
            b.setText(text)
            b.setToolTip(tip)
            b.clicked.connect(slot)
            buttons.append(b)
        self.compare = QToolButton(self)
        self.compare.setText("Compare")
        self.compare.setCheckable(True)
        self.compare.setToolTip("Split view with the previous image (drag the line)")
        self.compare.toggled.connect(lambda _on: self._show_row(self.strip.currentRow()))
        for b in buttons[:2]:
            bar.addWidget(b)
        bar.addWidget(self.compare)
        bar.addWidget(buttons[2])
        bar.addStretch()
        bar.addWidget(self.caption)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(4, 4, 4, 4)
        layout.addLayout(bar)
        layout.addWidget(self.canvas, 1)
        layout.addWidget(self.strip)
        self.entries: list[tuple[QImage, str, Path | None]] = []
        self._live: str | None = None

    def add_image(self, image: QImage, label: str, path: Path | None = None) -> None:
        """Add an output to the history and show it."""
        self.entries.append((image, label, path))
        icon = QIcon(QPixmap.fromImage(image.scaled(144, 144, Qt.AspectRatioMode.KeepAspectRatio,
                                                    Qt.TransformationMode.SmoothTransformation)))
        item = QListWidgetItem(icon, label)
        item.setToolTip(str(path) if path else label)
        self.strip.addItem(item)
        if len(self.entries) > MAX_HISTORY:
            self.entries.pop(0)
            self.strip.takeItem(0)
        self._live = None
        self.strip.setCurrentRow(self.strip.count() - 1)
        self._show_row(self.strip.count() - 1)

    def show_live(self, node: str, image: QImage) -> None:
        """A preview while a node works (not kept in the history)."""
        self._live = node
        self.canvas.set_images(image)
        self.caption.setText(f"{node} (preview)")

    def _show_row(self, row: int) -> None:
        if not 0 <= row < len(self.entries):
            return
        image, label, path = self.entries[row]
        other = self.entries[row - 1][0] if self.compare.isChecked() and row > 0 else None
        self.canvas.set_images(image, other)
        self.caption.setText(label + (f"  ↔  {self.entries[row - 1][1]}" if other is not None else ""))

    @property
    def current_image(self) -> QImage | None:
        return self.canvas.image

    def open_folder(self) -> None:
        row = self.strip.currentRow()
        folder = self.out_dir
        if 0 <= row < len(self.entries) and self.entries[row][2] is not None:
            folder = Path(self.entries[row][2]).parent  # type: ignore[arg-type]
        folder.mkdir(parents=True, exist_ok=True)
        QDesktopServices.openUrl(QUrl.fromLocalFile(str(folder.resolve())))
