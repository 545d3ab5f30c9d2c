"""Colours and sizes of the editor (one dark theme)."""

from __future__ import annotations

from PySide6.QtGui import QColor, QFont

CANVAS = QColor("#1e1f22")
GRID_MINOR = QColor("#26282c")
GRID_MAJOR = QColor("#30333a")
NODE_BODY = QColor("#2d2f34")
NODE_BORDER = QColor("#16171a")
NODE_SELECTED = QColor("#f0c674")
NODE_TEXT = QColor("#e6e6e6")
NODE_DIM_TEXT = QColor("#9aa0a6")
PROBLEM = QColor("#ef5350")
RUNNING = QColor("#42a5f5")
DONE = QColor("#66bb6a")
CACHED = QColor("#8d6e63")
SKIPPED = QColor("#757575")
FRAME = QColor(120, 144, 156, 60)
FRAME_TITLE = QColor(120, 144, 156, 150)
LINK_INVALID = QColor("#ef5350")

CATEGORY_COLORS = {
    "image": "#3f6fa8",
    "value": "#5b7d3a",
    "math": "#6d5a96",
    "util": "#5f6670",
    "diffusion": "#a0522d",
    "control": "#8e6b23",
    "upscale": "#2e7d6f",
    "ar": "#8b3a62",
    "test": "#555555",
}


def category_color(category: str) -> QColor:
    """A stable colour per category; unknown categories get one derived from the name."""
    if category in CATEGORY_COLORS:
        return QColor(CATEGORY_COLORS[category])
    h = sum(ord(c) * 31 ** i for i, c in enumerate(category)) % 360
    return QColor.fromHsl(h, 90, 90)


TITLE_H = 26.0
ROW_H = 20.0
SOCKET_R = 5.5
MIN_WIDTH = 170.0
PREVIEW_MAX_H = 180.0
PREVIEW_H = 150.0
"""Height of the picture area a node that makes pictures keeps from the start, so a run never grows it."""
PREVIEW_W = 200.0


def ui_font(point_size: float = 9.0, bold: bool = False) -> QFont:
    font = QFont()
    font.setPointSizeF(point_size)
    font.setBold(bold)
    return font
