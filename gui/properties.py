"""The properties panel: widgets generated from each input's declared type and hints."""

from __future__ import annotations

import inspect
import random
from pathlib import Path
from typing import Any

from PySide6.QtCore import QRegularExpression, Qt, QTimer, Signal
from PySide6.QtGui import QRegularExpressionValidator
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QFrame,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPlainTextEdit,
    QScrollArea,
    QSlider,
    QSpinBox,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from nodeflow.api import BOOL, FLOAT, INT, Input
from nodeflow.settings import Settings, model_kind

from . import commands as cmd
from .connect import type_label
from .document import Document
from .labels import node_title, with_article

INT32 = 2**31 - 1
SLIDER_STEPS = 1000
SEED_MODES = ("fixed", "randomize", "increment")


class InputEditor(QWidget):
    """A widget editing one literal input; emits ``edited`` with the new value."""

    edited = Signal(object)

    def set_value(self, value: Any) -> None:
        raise NotImplementedError


def _row() -> QHBoxLayout:
    layout = QHBoxLayout()
    layout.setContentsMargins(0, 0, 0, 0)
    layout.setSpacing(4)
    return layout


class BoolEditor(InputEditor):
    def __init__(self, spec: Input) -> None:
        super().__init__()
        layout = _row()
        self.setLayout(layout)
        self.box = QCheckBox(self)
        layout.addWidget(self.box)
        layout.addStretch()
        self.box.toggled.connect(lambda on: self.edited.emit(bool(on)))

    def set_value(self, value: Any) -> None:
        self.box.blockSignals(True)
        self.box.setChecked(bool(value))
        self.box.blockSignals(False)


class ChoiceEditor(InputEditor):
    def __init__(self, spec: Input) -> None:
        super().__init__()
        layout = _row()
        self.setLayout(layout)
        self.choices = list(spec.choices or ())
        self.combo = QComboBox(self)
        self.combo.addItems([str(c) for c in self.choices])
        layout.addWidget(self.combo)
        self.combo.currentIndexChanged.connect(lambda i: self.edited.emit(self.choices[i]) if i >= 0 else None)

    def set_value(self, value: Any) -> None:
        self.combo.blockSignals(True)
        self.combo.setCurrentIndex(self.choices.index(value) if value in self.choices else -1)
        self.combo.blockSignals(False)


class NumberEditor(InputEditor):
    """A spin box with the input's range and step, and a slider when the range is bounded."""

    def __init__(self, spec: Input) -> None:
        super().__init__()
        layout = _row()
        self.setLayout(layout)
        self.is_int = spec.type is INT or spec.type.literal is int
        lo = spec.min if spec.min is not None else (-INT32 if self.is_int else -1e12)
        hi = spec.max if spec.max is not None else (INT32 if self.is_int else 1e12)
        self.lo, self.hi = lo, hi
        self.spin: QSpinBox | QDoubleSpinBox
        if self.is_int:
            self.spin = QSpinBox(self)
            self.spin.setRange(int(max(lo, -INT32)), int(min(hi, INT32)))
            self.spin.setSingleStep(int(spec.step or 1))
            self.spin.valueChanged.connect(lambda v: self._emit(int(v)))
        else:
            self.spin = QDoubleSpinBox(self)
            step = spec.step or 0.01
            decimals = max(2, min(6, len(f"{step:g}".split(".")[-1]) if "." in f"{step:g}" else 2))
            self.spin.setDecimals(decimals)
            self.spin.setRange(lo, hi)
            self.spin.setSingleStep(step)
            self.spin.valueChanged.connect(lambda v: self._emit(float(v)))
        self.spin.setKeyboardTracking(False)
        self.spin.setMinimumWidth(90)
        self.slider: QSlider | None = None
        if spec.min is not None and spec.max is not None and spec.max > spec.min:
            self.slider = QSlider(Qt.Orientation.Horizontal, self)
            self.slider.setRange(0, SLIDER_STEPS)
            self.slider.valueChanged.connect(self._from_slider)
            layout.addWidget(self.slider, 2)
        layout.addWidget(self.spin, 1)
        self._updating = False

    def _emit(self, value: Any) -> None:
        if self._updating:
            return
        self._sync_slider(value)
        self.edited.emit(value)

    def _from_slider(self, pos: int) -> None:
        if self._updating:
            return
        value = self.lo + (self.hi - self.lo) * pos / SLIDER_STEPS
        step = self.spin.singleStep()
        if step:
            value = self.lo + round((value - self.lo) / step) * step
        value = int(round(value)) if self.is_int else round(value, self.spin.decimals())  # type: ignore[union-attr]
        self._updating = True
        self.spin.setValue(value)  # type: ignore[arg-type]
        self._updating = False
        self.edited.emit(value)

    def _sync_slider(self, value: float) -> None:
        if self.slider is not None:
            self._updating = True
            self.slider.setValue(int(round((value - self.lo) / (self.hi - self.lo) * SLIDER_STEPS)))
            self._updating = False

    def set_value(self, value: Any) -> None:
        if not isinstance(value, int | float) or isinstance(value, bool):
            return
        self._updating = True
        self.spin.setValue(int(value) if self.is_int else float(value))  # type: ignore[arg-type]
        self._updating = False
        self._sync_slider(value)


class BigIntEditor(InputEditor):
    """Whole numbers beyond 32 bits (seeds): a checked text field."""

    def __init__(self, spec: Input) -> None:
        super().__init__()
        layout = _row()
        self.setLayout(layout)
        self.spec = spec
        self.line = QLineEdit(self)
        self.line.setValidator(QRegularExpressionValidator(QRegularExpression(r"-?\d{0,20}"), self))
        layout.addWidget(self.line, 1)
        self.line.editingFinished.connect(self._commit)

    def _commit(self) -> None:
        try:
            value = int(self.line.text())
        except ValueError:
            return
        if self.spec.min is not None:
            value = max(int(self.spec.min), value)
        if self.spec.max is not None:
            value = min(int(self.spec.max), value)
        self.edited.emit(value)

    def set_value(self, value: Any) -> None:
        self.line.setText("" if value is None else str(value))


class SeedEditor(BigIntEditor):
    """A seed with a dice button and what happens after each run: fixed, randomize or increment."""

    modeChanged = Signal(str)

    def __init__(self, spec: Input, mode: str) -> None:
        super().__init__(spec)
        layout = self.layout()
        dice = QToolButton(self)
        dice.setText("Random")
        dice.setToolTip("Pick a new random seed now")
        dice.clicked.connect(lambda: self.edited.emit(random_seed(spec)))
        self.mode = QComboBox(self)
        self.mode.addItems(list(SEED_MODES))
        self.mode.setCurrentText(mode if mode in SEED_MODES else "fixed")
        self.mode.setToolTip("What happens to the seed after each run")
        self.mode.currentTextChanged.connect(self.modeChanged.emit)
        layout.addWidget(dice)  # type: ignore[union-attr]
        layout.addWidget(self.mode)  # type: ignore[union-attr]


def random_seed(spec: Input) -> int:
    lo = int(spec.min) if spec.min is not None else 0
    hi = int(spec.max) if spec.max is not None else 2**32 - 1
    return random.randint(lo, min(hi, 2**53 - 1))


class TextEditor(InputEditor):
    def __init__(self, spec: Input) -> None:
        super().__init__()
        layout = _row()
        self.setLayout(layout)
        self.line = QLineEdit(self)
        layout.addWidget(self.line)
        self.line.textEdited.connect(lambda t: self.edited.emit(t))

    def set_value(self, value: Any) -> None:
        if self.line.text() != (value or ""):
            self.line.setText("" if value is None else str(value))


class PromptEditor(InputEditor):
    """Multi-line text (prompts); edits are committed as you type, merged into one undo step."""

    def __init__(self, spec: Input) -> None:
        super().__init__()
        layout = _row()
        self.setLayout(layout)
        self.text = QPlainTextEdit(self)
        self.text.setMinimumHeight(90)
        self.text.setTabChangesFocus(True)
        layout.addWidget(self.text)
        self._timer = QTimer(self)
        self._timer.setSingleShot(True)
        self._timer.setInterval(250)
        self._timer.timeout.connect(lambda: self.edited.emit(self.text.toPlainText()))
        self.text.textChanged.connect(self._changed)
        self._updating = False

    def _changed(self) -> None:
        if not self._updating:
            self._timer.start()

    def flush(self) -> None:
        if self._timer.isActive():
            self._timer.stop()
            self.edited.emit(self.text.toPlainText())

    def focusOutEvent(self, event: Any) -> None:
        self.flush()
        super().focusOutEvent(event)

    def set_value(self, value: Any) -> None:
        if self.text.toPlainText() != (value or ""):
            self._updating = True
            self.text.setPlainText("" if value is None else str(value))
            self._updating = False


class PathEditor(InputEditor):
    """A file input: the files of its kind in the models folders, or browse for one."""

    def __init__(self, spec: Input, settings: Settings) -> None:
        super().__init__()
        layout = _row()
        self.setLayout(layout)
        self.spec, self.settings = spec, settings
        self.combo = QComboBox(self)
        self.combo.setEditable(True)
        self.combo.setInsertPolicy(QComboBox.InsertPolicy.NoInsert)
        self.combo.addItems(self.known_files())
        browse = QToolButton(self)
        browse.setText("…")
        browse.setToolTip(f"Choose a file ({spec.path_kind})")
        browse.clicked.connect(self.browse)
        layout.addWidget(self.combo, 1)
        layout.addWidget(browse)
        line = self.combo.lineEdit()
        assert line is not None
        line.editingFinished.connect(lambda: self.edited.emit(self.combo.currentText()))
        self.combo.activated.connect(lambda _i: self.edited.emit(self.combo.currentText()))

    def known_files(self) -> list[str]:
        """The files and folders in the models folders' subfolders of the input's model kind
        (one a pack declared), those with the kind's suffixes when it names any."""
        declared = model_kind(self.spec.path_kind or "file")
        if declared is None:
            return []
        names: list[str] = []
        for folder in self.settings.search_dirs(declared.name):
            if folder.is_dir():
                for entry in sorted(folder.iterdir()):
                    if entry.name.startswith(".") or entry.name in names:
                        continue
                    if declared.suffixes and not entry.is_dir() \
                            and entry.suffix.lower() not in declared.suffixes:
                        continue
                    names.append(entry.name)
        return names

    def browse(self) -> None:
        kind = self.spec.path_kind or "file"
        start = next((str(d) for d in self.settings.search_dirs(kind) if d.is_dir()), str(Path.cwd()))
        declared = model_kind(kind)
        suffixes = declared.suffixes if declared is not None and declared.suffixes else \
            (".safetensors", ".pth", ".pt", ".ckpt", ".bin", ".json")
        filters = "Pictures (*.png *.jpg *.jpeg *.webp *.bmp);;All files (*)" if kind == "image" else \
            f"Model files ({' '.join('*' + s for s in suffixes)});;All files (*)"
        path, _ = QFileDialog.getOpenFileName(self, f"Choose {kind}", start, filters)
        if path:
            self.edited.emit(self.relative(Path(path)))

    def relative(self, path: Path) -> str:
        """Name the file relative to the folder it is searched in, when it is inside one."""
        for folder in self.settings.search_dirs(self.spec.path_kind or "file"):
            try:
                return path.resolve().relative_to(folder.resolve()).as_posix()
            except ValueError:
                continue
        return str(path)

    def set_value(self, value: Any) -> None:
        self.combo.blockSignals(True)
        self.combo.setCurrentText("" if value is None else str(value))
        self.combo.blockSignals(False)


def editor_for(spec: Input, settings: Settings, seed_mode: str = "fixed") -> InputEditor:
    """The widget for an input, chosen from its type and hints."""
    t = spec.type
    if spec.choices:
        return ChoiceEditor(spec)
    if t is BOOL or t.literal is bool:
        return BoolEditor(spec)
    if spec.seed:
        return SeedEditor(spec, seed_mode)
    if t is INT or t.literal is int:
        big = (spec.max is not None and spec.max > INT32) or (spec.min is not None and spec.min < -INT32)
        return BigIntEditor(spec) if big else NumberEditor(spec)
    if t is FLOAT or t.literal is float:
        return NumberEditor(spec)
    if spec.path_kind:
        return PathEditor(spec, settings)
    if spec.multiline:
        return PromptEditor(spec)
    return TextEditor(spec)


def sockets_shown(doc: Document, node_id: str) -> list[str]:
    """Literal inputs the user turned into sockets (editor-only, per node)."""
    entry = doc.graph.editor.get(node_id, {})
    names = entry.get("sockets") if isinstance(entry, dict) else None
    return [n for n in names if isinstance(n, str)] if isinstance(names, list) else []


def seed_modes(doc: Document, node_id: str) -> dict[str, str]:
    entry = doc.graph.editor.get(node_id, {})
    modes = entry.get("seed_modes") if isinstance(entry, dict) else None
    return dict(modes) if isinstance(modes, dict) else {}


class PropertiesPanel(QScrollArea):
    """Shows the selected node: its description, problems and a widget per input."""

    def __init__(self, doc: Document, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWidgetResizable(True)
        self.setMinimumWidth(300)
        self.doc = doc
        self.node_id: str | None = None
        self.editors: dict[str, InputEditor] = {}
        self.errors: dict[str, str] = {}
        self._body: QWidget | None = None
        self._shown_layout: tuple[list[str], dict[str, str]] = ([], {})
        self._rebuild_timer = QTimer(self)
        self._rebuild_timer.setSingleShot(True)
        self._rebuild_timer.setInterval(0)
        self._rebuild_timer.timeout.connect(self.rebuild)
        self.set_document(doc)

    def set_document(self, doc: Document) -> None:
        self.doc = doc
        doc.graphChanged.connect(self._on_change)
        doc.problemsChanged.connect(self._on_problems)
        self.show_node(None)

    def show_node(self, node_id: str | None) -> None:
        self.node_id = node_id if node_id in self.doc.graph.nodes else None
        self.rebuild()

    def set_run_error(self, node_id: str, message: str | None) -> None:
        if message is None:
            self.errors.pop(node_id, None)
        else:
            self.errors[node_id] = message
        if node_id == self.node_id:
            self._rebuild_timer.start()

    def _on_change(self, kind: str, info: dict[str, Any]) -> None:
        if self.node_id is None:
            return
        if kind == "node_removed" and info.get("node") == self.node_id:
            self.node_id = None
            self._rebuild_timer.start()
            return
        node = info.get("node")
        if kind in ("input_set", "input_cleared") and node == self.node_id:
            socket = info["socket"]
            editor = self.editors.get(socket)
            value = self._value(socket)
            if editor is not None:
                editor.set_value(value)
            else:
                self._rebuild_timer.start()
            return
        link = info.get("link")
        target = info.get("target", "")
        if kind == "layout":
            # Moves do not change the panel; showing an input as a socket or a seed mode does.
            if node == self.node_id and self._layout_state() != self._shown_layout:
                self._rebuild_timer.start()
            return
        if (link is not None and self.node_id in (link.src, link.dst)) or target.startswith(f"{self.node_id}."):
            self._rebuild_timer.start()

    def _layout_state(self) -> tuple[list[str], dict[str, str]]:
        if self.node_id is None:
            return [], {}
        return sockets_shown(self.doc, self.node_id), seed_modes(self.doc, self.node_id)

    def _on_problems(self) -> None:
        if self.node_id is not None:
            self._refresh_problems()

    def _value(self, name: str) -> Any:
        node = self.doc.graph.nodes[self.node_id]  # type: ignore[index]
        cls = self.doc.registry.get(node.type)
        if name in node.inputs:
            return node.inputs[name]
        spec = cls.input_map.get(name) if cls else None
        return spec.default if spec is not None and spec.has_default else None

    def rebuild(self) -> None:
        self.editors = {}
        self._shown_layout = self._layout_state()
        body = QWidget()
        outer = QVBoxLayout(body)
        outer.setContentsMargins(10, 10, 10, 10)
        self._body = body
        self.problem_label = QLabel(body)
        self.problem_label.setWordWrap(True)
        self.problem_label.setStyleSheet("color: #ef5350;")
        self.problem_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        if self.node_id is None:
            hint = QLabel("Select a node to edit its inputs.\n\nTab or double-click on the canvas adds a "
                          "node; drag from a socket to link.", body)
            hint.setWordWrap(True)
            hint.setStyleSheet("color: #9aa0a6;")
            outer.addWidget(hint)
            outer.addStretch()
            self.setWidget(body)
            return
        graph = self.doc.graph
        node = graph.nodes[self.node_id]
        cls = self.doc.registry.get(node.type)
        title = QLabel(f"<b style='font-size:12pt'>{node_title(cls) if cls else node.type}</b>"
                       f"<br><span style='color:#9aa0a6'>{node.id} · {node.type} {cls.version if cls else ''}</span>",
                       body)
        outer.addWidget(title)
        if cls is not None and cls.description:
            paragraphs = inspect.cleandoc(cls.description).split("\n\n")
            desc = QLabel("\n\n".join(" ".join(p.split()) for p in paragraphs), body)
            desc.setWordWrap(True)
            desc.setStyleSheet("color: #b0b4b8;")
            outer.addWidget(desc)
        outer.addWidget(self.problem_label)
        self._refresh_problems()
        if cls is None:
            outer.addStretch()
            self.setWidget(body)
            return
        line = QFrame(body)
        line.setFrameShape(QFrame.Shape.HLine)
        outer.addWidget(line)
        form = QFormLayout()
        form.setFieldGrowthPolicy(QFormLayout.FieldGrowthPolicy.AllNonFixedFieldsGrow)
        outer.addLayout(form)
        incoming = graph.incoming().get(node.id, {})
        as_sockets = sockets_shown(self.doc, node.id)
        modes = seed_modes(self.doc, node.id)
        for spec in cls.inputs:
            label = QLabel(spec.name + ("" if not spec.required else " *"), body)
            label.setToolTip(f"{spec.description}\nType: {type_label(spec.type)}")
            field = QWidget(body)
            row = _row()
            field.setLayout(row)
            link = incoming.get(spec.name)
            if link is not None:
                shown = QLabel(f"← <b>{link.source}</b>", field)
                unlink = QToolButton(field)
                unlink.setText("✕")
                unlink.setToolTip("Remove this link")
                unlink.clicked.connect(lambda _=False, t=link.target: self.doc.push(cmd.DisconnectSocket(graph, t)))
                row.addWidget(shown, 1)
                row.addWidget(unlink)
            elif not spec.accepts_literal or spec.name in as_sockets:
                shown = QLabel(f"<span style='color:#9aa0a6'>link {with_article(type_label(spec.type))} here</span>", field)
                row.addWidget(shown, 1)
            else:
                editor = editor_for(spec, self.doc.settings, modes.get(spec.name, "fixed"))
                editor.set_value(self._value(spec.name))
                editor.edited.connect(lambda v, n=spec.name: self._edited(n, v))
                if isinstance(editor, SeedEditor):
                    editor.modeChanged.connect(lambda m, n=spec.name: self._seed_mode(n, m))
                editor.setToolTip(spec.description)
                self.editors[spec.name] = editor
                row.addWidget(editor, 1)
                reset = QToolButton(field)
                reset.setText("↺")
                reset.setToolTip("Reset to the default")
                reset.setEnabled(spec.has_default)
                reset.clicked.connect(lambda _=False, s=spec: self._reset(s))
                row.addWidget(reset)
            if spec.accepts_literal and link is None:
                toggle = QToolButton(field)
                toggle.setText("⇄")
                toggle.setCheckable(True)
                toggle.setChecked(spec.name in as_sockets)
                toggle.setToolTip("Show as a socket to link (checked) or as a value (unchecked)")
                toggle.toggled.connect(lambda on, s=spec: self.toggle_socket(s, on))
                row.addWidget(toggle)
            form.addRow(label, field)
        outer.addStretch()
        self.setWidget(body)

    def _refresh_problems(self) -> None:
        if self.node_id is None:
            return
        lines = [f"⚠ {p.location.socket + ': ' if p.location.socket else ''}{p.message}"
                 for p in self.doc.problems_by_node.get(self.node_id, [])]
        if self.node_id in self.errors:
            lines.append(f"✗ {self.errors[self.node_id]}")
        self.problem_label.setText("\n".join(lines))
        self.problem_label.setVisible(bool(lines))

    def _edited(self, name: str, value: Any) -> None:
        if self.node_id is not None:
            self.doc.set_input(self.node_id, name, value)

    def _reset(self, spec: Input) -> None:
        if self.node_id is not None and spec.has_default:
            self.doc.set_input(self.node_id, spec.name, spec.default)

    def _seed_mode(self, name: str, mode: str) -> None:
        if self.node_id is None:
            return
        modes = seed_modes(self.doc, self.node_id)
        modes[name] = mode
        self.doc.push(cmd.SetLayout(self.doc.graph, self.node_id, "seed_modes", modes, f"Seed {mode}"))

    def toggle_socket(self, spec: Input, as_socket: bool) -> None:
        """Show a literal input as a socket (its value is removed) or back as a value."""
        node_id = self.node_id
        if node_id is None:
            return
        graph = self.doc.graph
        names = [n for n in sockets_shown(self.doc, node_id) if n != spec.name]
        if as_socket:
            names.append(spec.name)
        self.doc.undo.beginMacro(f"Show {spec.name} as {'socket' if as_socket else 'value'}")
        self.doc.push(cmd.SetLayout(graph, node_id, "sockets", names, "Toggle socket"))
        if as_socket and spec.name in graph.nodes[node_id].inputs:
            self.doc.push(cmd.SetInput(graph, node_id, spec.name, None, clear=True))
        elif not as_socket and spec.has_default and spec.name not in graph.nodes[node_id].inputs:
            self.doc.push(cmd.SetInput(graph, node_id, spec.name, spec.default))
        self.doc.undo.endMacro()

    def flush(self) -> None:
        """Commit text still being typed (before a run or a save)."""
        for editor in self.editors.values():
            if isinstance(editor, PromptEditor):
                editor.flush()

