"""Typing a value on the node itself: a click on a field (see `node_widgets`) opens a small editor
over it (a spin box, a dropdown, a line or a prompt box that grows with its text).

Enter commits (Ctrl+Enter in a prompt box, where Enter starts a new line), Esc cancels, Tab and
Shift+Tab commit and move to the next or previous value; a commit is one undo step. The widget
lives only while editing, so nothing drifts when the view zooms (nodes stay painted)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import shiboken6
from PySide6.QtCore import QEvent, QObject, QPointF, Qt, QTimer
from PySide6.QtWidgets import QAbstractSpinBox, QApplication, QGraphicsProxyWidget, QWidget

from . import theme
from .properties import BigIntEditor, NumberEditor, PromptEditor, editor_for

if TYPE_CHECKING:
    from .items import NodeItem
    from .scene import GraphScene

_MISSING = object()


PROMPT_MAX_H = 320.0
"""A prompt box being typed in grows with its text up to this height (then it scrolls)."""


class InlineEditor(QObject):
    """At most one value editor open on the canvas of a scene."""

    def __init__(self, scene: GraphScene) -> None:
        super().__init__(scene)
        self.scene = scene
        self.node_id: str | None = None
        self.name: str | None = None
        self.widget: Any = None
        self.proxy: QGraphicsProxyWidget | None = None
        self._value: Any = _MISSING
        self._min_h = 0.0

    @property
    def is_open(self) -> bool:
        return self.proxy is not None

    def editable_rows(self, item: NodeItem) -> list[str]:
        """The node's inputs edited by a field on the node, in the order shown (Tab's order)."""
        return [f.name for f in item.fields if f.edits_input]

    def open(self, node_id: str, name: str, *, popup: bool = False) -> bool:
        """Open the editor of ``name`` on ``node_id`` over its field; False if it has no field.
        ``popup``: a dropdown opens its list at once (a click on it)."""
        self.commit()
        item = self.scene.node_items.get(node_id)
        cls = item.cls if item is not None else None
        if item is None or cls is None or name not in self.editable_rows(item):
            return False
        spec = cls.input_map[name]
        f = next(f for f in item.fields if f.name == name and f.edits_input)
        doc = self.scene.doc
        widget: Any
        if f.kind == "seed":
            widget = BigIntEditor(spec)  # the dice and the mode are on the node
        else:
            widget = editor_for(spec, doc.settings)
        if isinstance(widget, NumberEditor) and widget.slider is not None:
            widget.slider.hide()  # the field on the node is the slider
        node = self.scene.graph.nodes[node_id]
        value = node.inputs.get(name, spec.default if spec.has_default else None)
        widget.set_value(value)
        widget.edited.connect(self._edited)
        widget.setAutoFillBackground(True)
        widget.setStyleSheet(f"background: {theme.NODE_BODY.name()};")
        rect = f.rect
        if isinstance(widget, PromptEditor):
            widget.text.setMinimumHeight(0)
            height = rect.height()
        else:
            height = max(rect.height() + 4, float(widget.sizeHint().height()))
        proxy = QGraphicsProxyWidget()
        proxy.setWidget(widget)
        proxy.setZValue(60)
        proxy.resize(max(rect.width(), 116.0), height)
        proxy.setPos(item.mapToScene(QPointF(rect.x(), rect.center().y() - height / 2
                                             if not isinstance(widget, PromptEditor) else rect.y())))
        self.scene.addItem(proxy)
        if isinstance(widget, PromptEditor):
            self._min_h = rect.height()
            widget.text.document().documentLayout().documentSizeChanged.connect(self._grow)
        self.node_id, self.name, self.widget, self.proxy = node_id, name, widget, proxy
        self._value = _MISSING
        for child in [widget, *widget.findChildren(QWidget)]:
            child.installEventFilter(self)
        focus = next((c for c in widget.findChildren(QWidget)
                      if c.focusPolicy() != Qt.FocusPolicy.NoFocus and c.isVisibleTo(widget)), widget)
        self.scene.setFocusItem(proxy)
        focus.setFocus(Qt.FocusReason.OtherFocusReason)
        combo = getattr(widget, "combo", None)
        if popup and combo is not None and combo.count() > 0:  # nothing to list: type a name instead
            combo.showPopup()
        return True

    def _grow(self, *_args: Any) -> None:
        """A prompt box grows with its text while it is typed in (then scrolls)."""
        widget, proxy = self.widget, self.proxy
        if not isinstance(widget, PromptEditor) or proxy is None:
            return
        doc = widget.text.document()
        line = widget.text.fontMetrics().lineSpacing()
        needed = doc.size().height() * line + 2 * doc.documentMargin() + 6  # a plain text's size is in lines
        height = max(self._min_h, min(PROMPT_MAX_H, needed))
        if abs(height - proxy.size().height()) > 1:
            proxy.resize(proxy.size().width(), height)

    def _edited(self, value: Any) -> None:
        self._value = value

    def commit(self) -> None:
        """Write the edited value (one undo step) and close."""
        if self.proxy is None:
            return
        for spin in self.widget.findChildren(QAbstractSpinBox):
            spin.interpretText()  # typed digits count even before the box saw Enter
        flush = getattr(self.widget, "flush", None)
        if callable(flush):
            flush()
        text_box = getattr(self.widget, "text", None)
        if isinstance(self.widget, PromptEditor) and text_box is not None:
            self._value = text_box.toPlainText()
        node_id, name, value = self.node_id, self.name, self._value
        self._close()
        if value is not _MISSING and node_id in self.scene.graph.nodes and name is not None:
            self.scene.doc.set_input(node_id, name, value, merge=False)

    def cancel(self) -> None:
        """Close without changing anything."""
        self._close()

    def _close(self) -> None:
        proxy, widget = self.proxy, self.widget
        self.proxy = self.widget = None
        self.node_id = self.name = None
        self._value = _MISSING
        if proxy is None:
            return
        if widget is not None and shiboken6.isValid(widget):
            widget.edited.disconnect(self._edited)
            for child in [widget, *widget.findChildren(QWidget)]:
                child.removeEventFilter(self)
        if shiboken6.isValid(proxy):
            proxy.clearFocus()  # shortcuts (Ctrl+Z, Delete) go to the canvas again
            proxy.hide()
            # Deleted later: the widget may be inside its own key or focus event right now.
            QTimer.singleShot(0, lambda p=proxy: self._delete(p))
        views = self.scene.views()
        if views:
            views[0].setFocus()

    def _delete(self, proxy: QGraphicsProxyWidget) -> None:
        if shiboken6.isValid(proxy):
            if proxy.scene() is not None:
                proxy.scene().removeItem(proxy)
            proxy.deleteLater()

    def move(self, step: int) -> None:
        """Commit and open the next (or previous) value of the same node."""
        node_id, name = self.node_id, self.name
        self.commit()
        item = self.scene.node_items.get(node_id or "")
        if item is None or name is None:
            return
        rows = self.editable_rows(item)
        if name in rows and len(rows) > 1:
            self.open(item.node_id, rows[(rows.index(name) + step) % len(rows)])

    def eventFilter(self, obj: Any, event: Any) -> bool:
        if self.proxy is None:
            return False
        kind = event.type()
        if kind == QEvent.Type.ShortcutOverride and event.key() in (Qt.Key.Key_Return, Qt.Key.Key_Enter,
                                                                    Qt.Key.Key_Escape):
            event.accept()  # Enter, Ctrl+Enter (not Run) and Esc belong to the field being edited
            return True
        if kind == QEvent.Type.KeyPress:
            key, mods = event.key(), event.modifiers()
            if key == Qt.Key.Key_Escape:
                self.cancel()
                return True
            if key in (Qt.Key.Key_Return, Qt.Key.Key_Enter):
                multiline = isinstance(self.widget, PromptEditor)
                if not multiline or mods & Qt.KeyboardModifier.ControlModifier:
                    self.commit()
                    return True
            if key == Qt.Key.Key_Tab:
                self.move(1)
                return True
            if key == Qt.Key.Key_Backtab:
                self.move(-1)
                return True
        elif kind == QEvent.Type.FocusOut and self.widget is not None:
            # Focus left the editor (a click elsewhere): commit, unless it went to a popup of it
            # (a dropdown's list) or to another of its own widgets.
            QTimer.singleShot(0, self._commit_if_focus_left)
        return False

    def _commit_if_focus_left(self) -> None:
        if self.widget is None or not shiboken6.isValid(self.widget):
            return
        if QApplication.activePopupWidget() is not None or self.scene.focusItem() is self.proxy:
            return
        self.commit()
