"""The editor window: canvas, properties, problems, image viewer, run controls and files."""

from __future__ import annotations

import html
import json
import time
from pathlib import Path
from typing import Any

import shiboken6
from PySide6.QtCore import QPointF, Qt, QTimer
from PySide6.QtGui import QAction, QGuiApplication, QKeySequence
from PySide6.QtWidgets import (
    QDockWidget,
    QFileDialog,
    QLabel,
    QListWidget,
    QListWidgetItem,
    QMainWindow,
    QMessageBox,
    QProgressBar,
    QPushButton,
    QSizePolicy,
    QWidget,
)

from nodeflow.errors import GraphFileError, GraphInvalid, NodeflowError
from nodeflow.graph import Graph
from nodeflow.registry import NodeRegistry
from nodeflow.trust import is_foreign_picture_graph, restrict_for_source

from . import commands as cmd
from .autosave import AutosaveStore, Recovered
from .clipboard import MIME, fragment_text, paste_records
from .document import Document
from .notices import Notices
from .palette import NodePalette
from .properties import PropertiesPanel
from .run_view import RunView
from .runner import RunController
from .scene import GraphScene, PaletteFilter
from .view import GraphView
from .viewer import ImageViewer

MAX_RECENT = 10
AUTOSAVE_DELAY_MS = 1500
THUMB_MAX = 400
RECOVERY_PATH_WIDTH = 460
"""Pixels a file path may take in the recovery question before it is cut in the middle."""
REDO_KEYS = [QKeySequence("Ctrl+Shift+Z"), QKeySequence("Ctrl+Y")]
"""Redo on every platform, as ComfyUI binds it."""


def demo_graph_path() -> Path | None:
    """The graph the editor starts with when no file is given.

    ``graphs/demo.json`` beside this package's folder: the source checkout's
    ``graphs/`` folder, or in an installed package its copy ``nodeflow/graphs``
    (``nodeflow.graphs``, see setup.py), found by the same relative path.
    """
    path = Path(__file__).resolve().parent.parent / "graphs" / "demo.json"
    return path if path.is_file() else None


ALLOW_FOLDER_HINT = "If you trust it, allow the folder with Run ▸ Allow a Folder…"


def load_graph(path: Path, registry: NodeRegistry) -> Graph:
    """Read a graph file, a PNG with an embedded graph or a ComfyUI workflow, as `nodeflow run` does."""
    from nodeflow.comfy import load_graph_any

    return load_graph_any(path, registry)


class MainWindow(QMainWindow):
    def __init__(self, registry: NodeRegistry, *, models: list[Path] | None = None, out_dir: Path | None = None,
                 home: Path, interactive: bool = True) -> None:
        super().__init__()
        self.registry = registry
        self.models = list(models or [])
        self.out_dir = out_dir
        self.home = home
        self.interactive = interactive
        """False: never block on a dialog (tests, screenshots); questions get their safe answer."""
        self.setAcceptDrops(True)
        self.resize(1400, 860)
        self.autosaves = AutosaveStore(home / "autosave")
        self.autosave = self.autosaves.session()
        self._autosave_timer = QTimer(self)
        self._autosave_timer.setSingleShot(True)
        self._autosave_timer.setInterval(AUTOSAVE_DELAY_MS)
        self._autosave_timer.timeout.connect(self.write_autosave)
        self.doc: Document | None = None
        self.scene: GraphScene | None = None
        self.view: GraphView | None = None

        self.node_palette = NodePalette(registry, self, usage_file=home / "palette.json")
        self.node_palette.chosen.connect(self._palette_chosen)
        self._palette_at = QPointF()
        self._palette_filter: PaletteFilter | None = None

        self.properties: PropertiesPanel | None = None
        self._properties_dock: QDockWidget | None = None
        self.problems_list = QListWidget(self)
        self.problems_list.setWordWrap(True)
        self.problems_list.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.problems_list.itemActivated.connect(self._problem_activated)
        self.problems_list.itemClicked.connect(self._problem_activated)
        self.viewer = ImageViewer(self._out_dir(), self)
        self.notices = Notices(self)
        self.status_label = QLabel(self)
        # A long message is cut (whole in its tooltip) rather than squeezing the progress bar.
        self.status_label.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        self.status_label.setMinimumWidth(0)
        self.progress = QProgressBar(self)
        self.progress.setFixedWidth(260)
        self.progress.setTextVisible(True)
        self.progress.hide()
        self.cancel_button = QPushButton("Cancel", self)
        self.cancel_button.hide()
        self.cancel_button.clicked.connect(self.cancel_run)
        self.statusBar().addWidget(self.status_label, 1)
        self.statusBar().addPermanentWidget(self.progress)
        self.statusBar().addPermanentWidget(self.cancel_button)

        self.runner: RunController | None = None
        self.run_view: RunView = None  # type: ignore[assignment]  # made with the first document
        self._build_actions()
        self.set_document(self._new_document(None))

    # --- documents ----------------------------------------------------------------------------
    def _out_dir(self) -> Path:
        return self.out_dir or Path("out")

    def _new_document(self, graph: Graph | None, path: Path | None = None, base_dir: Path | None = None) -> Document:
        return Document(self.registry, graph, path=path, base_dir=base_dir, models=self.models,
                        out_dir=self.out_dir, parent=self)

    def set_document(self, doc: Document) -> None:
        old = self.doc
        if self.runner is not None and self.runner.busy:
            self.runner.cancel()
        self.notices.resolve_all()  # they were about the graph being closed
        self.doc = doc
        scene = GraphScene(doc, self)
        scene.linkRefused.connect(self._link_refused)
        scene.paletteRequested.connect(self._palette_from_link)
        scene.selectionChanged.connect(self._selection_changed)
        scene.nodeActivated.connect(self._raise_properties)
        if self.view is None:
            self.view = GraphView(scene, self)
            self.view.paletteRequested.connect(lambda at: self.open_palette(at))
            self.view.filesDropped.connect(self.open_dropped)
            self.setCentralWidget(self.view)
            for action in self._view_actions:
                self.view.addAction(action)
        else:
            self.view.set_scene(scene)
        old_scene = self.scene
        self.scene = scene
        if old_scene is not None:
            old_scene.deleteLater()
        if self.properties is None:
            self.properties = PropertiesPanel(doc, self)
            self._properties_dock = self._dock("Properties", self.properties, Qt.DockWidgetArea.RightDockWidgetArea)
            self._viewer_dock = self._dock("Images", self.viewer, Qt.DockWidgetArea.RightDockWidgetArea)
            self._problems_dock = self._dock("Problems", self.problems_list, Qt.DockWidgetArea.BottomDockWidgetArea)
            self._messages_dock = self._dock("Messages", self.notices.list, Qt.DockWidgetArea.BottomDockWidgetArea)
            self.tabifyDockWidget(self._problems_dock, self._messages_dock)
            self._problems_dock.raise_()
            self.resizeDocks([self._properties_dock, self._viewer_dock], [380, 380], Qt.Orientation.Horizontal)
            self.resizeDocks([self._properties_dock, self._viewer_dock], [430, 330], Qt.Orientation.Vertical)
            self.resizeDocks([self._problems_dock], [110], Qt.Orientation.Vertical)
        else:
            self.properties.set_document(doc)
        if self.runner is None:
            self.runner = RunController(self.registry, doc.settings, self)
            self.run_view = RunView(self, self.runner)
        else:
            self.runner.set_settings(doc.settings)
        self.allow_folder_action.setEnabled(doc.settings.allowed_dirs is not None)
        doc.problemsChanged.connect(self._refresh_problems)
        doc.graphChanged.connect(self.notices.graph_changed)
        doc.pathChanged.connect(self._update_title)
        doc.undo.cleanChanged.connect(self._update_title)
        doc.undo.indexChanged.connect(self._schedule_autosave)
        self._undo_group_switch(doc)
        self._refresh_problems()
        self._update_title()
        self.run_view.node_images = {}
        if old is not None:
            old.close()
            old.deleteLater()
        QTimer.singleShot(0, self.view.fit_all)

    def _raise_properties(self) -> None:
        if self._properties_dock is not None:
            self._properties_dock.raise_()

    def _dock(self, title: str, widget: QWidget, area: Qt.DockWidgetArea) -> QDockWidget:
        dock = QDockWidget(title, self)
        dock.setObjectName(title)
        dock.setWidget(widget)
        self.addDockWidget(area, dock)
        self._panels_menu.addAction(dock.toggleViewAction())
        return dock

    def _schedule_autosave(self) -> None:
        self._autosave_timer.start()

    def _update_title(self) -> None:
        if self.doc is None or not shiboken6.isValid(self.doc):
            return
        mark = "●" if self.doc.dirty else ""
        self.setWindowTitle(f"{mark}{self.doc.title} — nodeflow")

    # --- actions ---------------------------------------------------------------------------------
    def _action(self, text: str, slot: Any, shortcut: Any = None, *, view_only: bool = False,
                tip: str = "") -> QAction:
        action = QAction(text, self)
        if shortcut is not None:
            action.setShortcut(QKeySequence(shortcut))
        if tip:
            action.setToolTip(tip)
            action.setStatusTip(tip)
        action.triggered.connect(lambda _checked=False: slot())
        if view_only:
            action.setShortcutContext(Qt.ShortcutContext.WidgetWithChildrenShortcut)
            self._view_actions.append(action)
        else:
            self.addAction(action)
        return action

    def _build_actions(self) -> None:
        self._view_actions: list[QAction] = []
        bar = self.menuBar()
        file = bar.addMenu("&File")
        file.addAction(self._action("&New", self.new_graph, QKeySequence.StandardKey.New))
        file.addAction(self._action("New &Window", self.new_window, "Ctrl+Shift+N"))
        file.addAction(self._action("&Open…", self.open_dialog, QKeySequence.StandardKey.Open))
        self.recent_menu = file.addMenu("Open &Recent")
        self.recent_menu.aboutToShow.connect(self._fill_recent)
        file.addSeparator()
        file.addAction(self._action("&Save", self.save, QKeySequence.StandardKey.Save))
        file.addAction(self._action("Save &As…", self.save_as_dialog, "Ctrl+Shift+S"))
        file.addSeparator()
        file.addAction(self._action("&Quit", self.close, QKeySequence.StandardKey.Quit))

        edit = bar.addMenu("&Edit")
        self.undo_action = QAction("Undo", self)
        self.undo_action.setShortcut(QKeySequence.StandardKey.Undo)
        self.undo_action.triggered.connect(lambda: self.doc.undo.undo() if self.doc else None)
        self.redo_action = QAction("Redo", self)
        # Both redo keys, each once: on Linux the standard Redo key already is Ctrl+Shift+Z, and a
        # key bound twice is ambiguous to Qt, which then does nothing.
        self.redo_action.setShortcuts(REDO_KEYS)
        self.redo_action.triggered.connect(lambda: self.doc.undo.redo() if self.doc else None)
        self.addAction(self.undo_action)
        self.addAction(self.redo_action)
        edit.addAction(self.undo_action)
        edit.addAction(self.redo_action)
        edit.addSeparator()
        edit.addAction(self._action("Cu&t", self.cut, QKeySequence.StandardKey.Cut, view_only=True))
        edit.addAction(self._action("&Copy", self.copy, QKeySequence.StandardKey.Copy, view_only=True))
        edit.addAction(self._action("&Paste", self.paste, QKeySequence.StandardKey.Paste, view_only=True))
        edit.addAction(self._action("&Duplicate", self.duplicate, "Ctrl+D", view_only=True))
        edit.addAction(self._action("De&lete", self.delete, QKeySequence.StandardKey.Delete, view_only=True))
        self._action("Delete", self.delete, "Backspace", view_only=True)
        edit.addAction(self._action("Select &All", self.select_all, QKeySequence.StandardKey.SelectAll,
                                    view_only=True))
        edit.addAction(self._action("&Group in a Frame", self.group, "Ctrl+G", view_only=True))
        edit.addAction(self._action("A&rrange Nodes", self.arrange, "Ctrl+L",
                                    tip="Lay the nodes out in columns, following the links"))
        edit.addSeparator()
        edit.addAction(self._action("Add &Node…", lambda: self.open_palette(None), "Shift+A"))

        view = bar.addMenu("&View")
        fit = self._action("&Fit All", lambda: self.view.fit_all() if self.view else None, "Home",
                           tip="Show the whole graph")
        view.addAction(fit)
        view.addAction(self._action("Fit &Selection", lambda: self.view.fit_selection() if self.view else None,
                                    "F", view_only=True))
        minimap = QAction("&Minimap", self, checkable=True, checked=True)
        minimap.toggled.connect(lambda on: self.view.minimap.setVisible(on) if self.view else None)
        view.addAction(minimap)
        self._panels_menu = view.addMenu("&Panels")

        run = bar.addMenu("&Run")
        self.run_action = self._action("&Run", self.run, "Ctrl+Return", tip="Run the whole graph (Ctrl+Enter)")
        self.run_selected_action = self._action("Run to &Selected", self.run_selected, "Ctrl+Shift+Return",
                                                tip="Run what the selected node needs, and show its outputs")
        self.cancel_action = self._action("&Cancel", self.cancel_run, "Ctrl+.", tip="Stop the run")
        self.cancel_action.setEnabled(False)
        for a in (self.run_action, self.run_selected_action, self.cancel_action):
            run.addAction(a)
        run.addSeparator()
        run.addAction(self._action("Run on Se&rver…", self.run_on_server,
                                   tip="Run on a nodeflow server (nodeflow serve): enter its URL and token"))
        run.addAction(self._action("Run &Locally", self.run_locally, tip="Run on this computer again"))
        run.addSeparator()
        self.allow_folder_action = self._action(
            "&Allow a Folder…", self.allow_folder_dialog,
            tip="Let a graph taken from a picture read files in one more folder")
        self.allow_folder_action.setEnabled(False)
        run.addAction(self.allow_folder_action)

        tools = self.addToolBar("Main")
        tools.setObjectName("main-toolbar")
        tools.setMovable(False)
        tools.addAction(self.run_action)
        tools.addAction(self.run_selected_action)
        tools.addAction(self.cancel_action)
        tools.addSeparator()
        tools.addAction(fit)

    def _undo_group_switch(self, doc: Document) -> None:
        for action, can, changed in ((self.undo_action, doc.undo.canUndo, doc.undo.canUndoChanged),
                                     (self.redo_action, doc.undo.canRedo, doc.undo.canRedoChanged)):
            action.setEnabled(can())
            changed.connect(action.setEnabled)
        doc.undo.undoTextChanged.connect(self._undo_text)
        doc.undo.redoTextChanged.connect(self._redo_text)

    def _undo_text(self, text: str) -> None:
        self.undo_action.setText(f"Undo {text}".strip())

    def _redo_text(self, text: str) -> None:
        self.redo_action.setText(f"Redo {text}".strip())

    # --- files -----------------------------------------------------------------------------------------
    def ask_save_changes(self) -> str:
        """'save', 'discard' or 'cancel' for unsaved changes."""
        if not self.interactive or self.doc is None or not self.doc.dirty:
            return "discard"
        answer = QMessageBox.question(
            self, "Unsaved changes", f"Save the changes to {self.doc.title}?",
            QMessageBox.StandardButton.Save | QMessageBox.StandardButton.Discard
            | QMessageBox.StandardButton.Cancel)
        return {QMessageBox.StandardButton.Save: "save",
                QMessageBox.StandardButton.Discard: "discard"}.get(answer, "cancel")

    def _may_replace(self) -> bool:
        if self.doc is None or not self.doc.dirty:
            return True
        answer = self.ask_save_changes()
        if answer == "save":
            return self.save()
        return answer == "discard"

    def new_graph(self) -> None:
        if self._may_replace():
            self.set_document(self._new_document(None))

    def new_window(self) -> MainWindow:
        window = MainWindow(self.registry, models=self.models, out_dir=self.out_dir, home=self.home,
                            interactive=self.interactive)
        window.show()
        _WINDOWS.append(window)
        return window

    def open_dialog(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Open graph", str(self._start_dir()),
                                              "Graphs (*.json *.png);;All files (*)")
        if path:
            self.open_file(Path(path))

    def _start_dir(self) -> Path:
        if self.doc is not None and self.doc.path is not None:
            return self.doc.path.parent
        return Path.cwd()

    def open_file(self, path: Path, *, as_untitled: bool = False) -> bool:
        """Open a graph file, or the graph embedded in a PNG written by image.Save."""
        path = Path(path)
        try:
            graph = load_graph(path, self.registry)
        except (GraphInvalid, GraphFileError) as exc:
            self.show_error(f"Cannot open {path.name}", str(exc))
            return False
        if not self._may_replace():
            return False
        from nodeflow.comfy import is_comfy_file

        # A PNG or a ComfyUI workflow opens untitled, so Save never writes over the original.
        is_png = path.suffix.lower() == ".png" or is_comfy_file(path)
        if is_png or as_untitled:
            graph.source = path
            doc = self._new_document(graph, None, base_dir=path.resolve().parent)
        else:
            doc = self._new_document(graph, path.resolve())
        from_picture = is_foreign_picture_graph(path)
        if from_picture:
            # A graph from a picture someone else made reads only files beside it and in the
            # models folders, as `nodeflow run` does; Run ▸ Allow a Folder… widens that.
            restrict_for_source(doc.settings, path)
            doc.settings.allow_hint = ALLOW_FOLDER_HINT
            doc.validate_now(full=True)
        self.set_document(doc)
        if from_picture:
            self.notices.post("picture-graph", f"This graph came from the picture {path.name}: it "
                              "may read files only beside that picture and in the models folders. "
                              "Use Run ▸ Allow a Folder… to let it read another folder.",
                              level="hint")
        if not as_untitled:
            self.add_recent(path.resolve())
        self.status(f"Opened {path.name}: {len(graph.nodes)} nodes, {len(graph.links)} links")
        return True

    def allow_folder_dialog(self) -> None:
        if not self.interactive:
            return
        folder = QFileDialog.getExistingDirectory(self, "Allow the graph to read files in", str(self._start_dir()))
        if folder:
            self.allow_folder(Path(folder))

    def allow_folder(self, folder: Path) -> None:
        """Let the open graph, taken from a picture, read files inside ``folder`` too."""
        doc = self.doc
        if doc is None or doc.settings.allowed_dirs is None:
            return
        doc.settings.allowed_dirs = [*doc.settings.allowed_dirs, folder.expanduser().resolve()]
        doc.validate_now(full=True)
        if self.runner is not None:
            self.runner.set_settings(doc.settings)
        self.status(f"The graph may now read files in {folder}")

    def open_dropped(self, paths: list[str]) -> None:
        for p in paths:
            if Path(p).suffix.lower() in (".json", ".png"):
                self.open_file(Path(p))
                return
        self.status("Drop a .json graph or a PNG written by image.Save")

    def dragEnterEvent(self, event: Any) -> None:
        if event.mimeData().hasUrls():
            event.acceptProposedAction()

    def dropEvent(self, event: Any) -> None:
        self.open_dropped([u.toLocalFile() for u in event.mimeData().urls() if u.isLocalFile()])

    def save(self) -> bool:
        if self.doc is None:
            return False
        if self.doc.path is None:
            return self.save_as_dialog()
        return self.save_to(self.doc.path)

    def save_as_dialog(self) -> bool:
        if self.doc is None:
            return False
        start = self.doc.path or (self._start_dir() / "graph.json")
        path, _ = QFileDialog.getSaveFileName(self, "Save graph", str(start), "Graphs (*.json)")
        if not path:
            return False
        if not path.endswith(".json"):
            path += ".json"
        return self.save_to(Path(path))

    def save_to(self, path: Path) -> bool:
        assert self.doc is not None
        if self.properties is not None:
            self.properties.flush()
        try:
            saved = self.doc.save(path)
        except (OSError, NodeflowError) as exc:
            self.show_error("Cannot save", f"{path}: {exc}")
            return False
        self.autosave.discard()
        self.add_recent(saved)
        self.runner.set_settings(self.doc.settings)  # type: ignore[union-attr]
        self.status(f"Saved {saved}")
        return True

    # --- recent files -----------------------------------------------------------------------------
    def _recent_file(self) -> Path:
        return self.home / "recent.json"

    def recent_files(self) -> list[Path]:
        try:
            items = json.loads(self._recent_file().read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return []
        return [Path(p) for p in items if isinstance(p, str)]

    def add_recent(self, path: Path) -> None:
        items = [p for p in self.recent_files() if p != path]
        items.insert(0, path)
        self.home.mkdir(parents=True, exist_ok=True)
        self._recent_file().write_text(json.dumps([str(p) for p in items[:MAX_RECENT]], indent=2),
                                       encoding="utf-8")

    def _fill_recent(self) -> None:
        self.recent_menu.clear()
        for path in self.recent_files():
            action = self.recent_menu.addAction(str(path))
            action.setEnabled(path.exists())
            action.triggered.connect(lambda _c=False, p=path: self.open_file(p))
        if self.recent_menu.isEmpty():
            self.recent_menu.addAction("(none)").setEnabled(False)

    # --- autosave -----------------------------------------------------------------------------------
    def write_autosave(self) -> None:
        if self.doc is None:
            return
        if self.doc.dirty:
            origin = str(self.doc.path) if self.doc.path else (self.doc.graph.file_name or None)
            self.autosave.write(self.doc.graph.dumps(), origin)
        else:
            self.autosave.discard()

    def offer_recovery(self) -> None:
        """After a crash: offer to reopen the graphs that were being edited."""
        for rec in self.autosaves.orphans():
            when = time.strftime("%Y-%m-%d %H:%M", time.localtime(rec.saved))
            if self.interactive:
                answer = self.recovery_question(rec, when).exec()
                if answer != QMessageBox.StandardButton.Yes:
                    self.autosaves.forget(rec)
                    continue
            self.recover(rec)

    def recovery_question(self, rec: Recovered, when: str) -> QMessageBox:
        """The question asked after a crash; the file's path stays on one line, cut in the middle
        when too long (the whole path is in the details)."""
        box = QMessageBox(QMessageBox.Icon.Question, "Recover unsaved work", "",
                          QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.No, self)
        box.setTextFormat(Qt.TextFormat.RichText)
        if rec.origin:
            metrics = box.fontMetrics()
            shown = metrics.elidedText(rec.origin, Qt.TextElideMode.ElideMiddle, RECOVERY_PATH_WIDTH)
            name = f"<p style='white-space:pre'>{html.escape(shown)}</p>"
            box.setDetailedText(rec.origin)
        else:
            name = "<p>an untitled graph</p>"
        box.setText(f"The editor did not close normally. Recover the unsaved changes to{name}"
                    f"(autosaved {when})?")
        return box

    def recover(self, rec: Recovered) -> bool:
        try:
            graph = Graph.loads(rec.graph_text, rec.origin)
        except NodeflowError as exc:
            self.show_error("Cannot recover", str(exc))
            return False
        window = self if (self.doc is None or (not self.doc.dirty and self.doc.path is None)) else self.new_window()
        origin = Path(rec.origin) if rec.origin and rec.origin.endswith(".json") else None
        doc = window._new_document(graph, origin, base_dir=Path(rec.origin).parent if rec.origin else None)
        window.set_document(doc)
        # Recovered changes are unsaved: one undo step back to the empty state marks them so.
        doc.undo.resetClean()
        doc.undo.push(_Marker())
        window._update_title()
        window.write_autosave()
        self.autosaves.forget(rec)
        window.status(f"Recovered unsaved changes to {rec.origin or 'an untitled graph'}")
        return True

    # --- editing ----------------------------------------------------------------------------------------
    def open_palette(self, at: QPointF | None, f: PaletteFilter | None = None) -> None:
        assert self.view is not None
        if at is None:
            at = self.view.mapToScene(self.view.viewport().rect().center())
        self._palette_at = at
        self._palette_filter = f
        global_pos = self.view.viewport().mapToGlobal(self.view.mapFromScene(at))
        self.node_palette.open_at(global_pos, f)

    def _palette_from_link(self, at: QPointF, f: PaletteFilter) -> None:
        self.open_palette(at, f)

    def _palette_chosen(self, type_id: str) -> None:
        assert self.scene is not None
        node_id = self.scene.add_node(type_id, self._palette_at, self._palette_filter)
        self._palette_filter = None
        self.scene.select_nodes([node_id])

    def _link_refused(self, message: str) -> None:
        text = f"Link refused: {message}"
        self.status(text, error=True)
        at = None
        target = self.scene.last_refused_target if self.scene is not None else None
        node = target.split(".", 1)[0] if target else None
        if target and self.scene is not None and node in self.scene.node_items:
            at = self.scene.node_items[node].socket_pos("in", target.split(".", 1)[1])
        self.notices.post("link", text, level="hint", node=node, at=at)

    def _selection_changed(self) -> None:
        if self.scene is None or self.properties is None or not shiboken6.isValid(self.scene) \
                or self.sender() is not self.scene:
            return
        ids = self.scene.selected_node_ids()
        self.properties.show_node(ids[0] if len(ids) == 1 else None)

    def copy(self) -> None:
        if self.scene is None or self.doc is None:
            return
        ids = self.scene.selected_node_ids()
        if not ids:
            return
        from PySide6.QtCore import QMimeData

        text = fragment_text(self.doc.graph, ids)
        data = QMimeData()
        data.setData(MIME, text.encode("utf-8"))
        data.setText(text)
        QGuiApplication.clipboard().setMimeData(data)
        self.status(f"Copied {len(ids)} node{'s' if len(ids) != 1 else ''}")

    def cut(self) -> None:
        self.copy()
        self.delete()

    def paste(self, text: str | None = None) -> list[str]:
        if self.scene is None or self.doc is None or self.view is None:
            return []
        if text is None:
            data = QGuiApplication.clipboard().mimeData()
            if data.hasFormat(MIME):
                text = bytes(data.data(MIME).data()).decode("utf-8")
            else:
                text = data.text()
        if not text:
            return []
        cursor = self.view.mapFromGlobal(self.view.cursor().pos())
        at = None
        if self.view.viewport().rect().contains(cursor):
            scene_at = self.view.mapToScene(cursor)
            at = (scene_at.x(), scene_at.y())
        parsed = paste_records(self.doc.graph, text, at)
        if parsed is None:
            self.status("The clipboard holds no nodeflow nodes")
            return []
        records, links = parsed
        self.doc.push(cmd.InsertNodes(self.doc.graph, records, links, f"Paste {len(records)} nodes"))
        ids = [r.id for r in records]
        self.scene.select_nodes(ids)
        return ids

    def duplicate(self) -> list[str]:
        if self.scene is None or self.doc is None:
            return []
        ids = self.scene.selected_node_ids()
        if not ids:
            return []
        parsed = paste_records(self.doc.graph, fragment_text(self.doc.graph, ids), None)
        if parsed is None:
            return []
        records, links = parsed
        self.doc.push(cmd.InsertNodes(self.doc.graph, records, links, f"Duplicate {len(records)} nodes"))
        new = [r.id for r in records]
        self.scene.select_nodes(new)
        return new

    def delete(self) -> None:
        if self.scene is not None:
            self.scene.delete_selection()

    def select_all(self) -> None:
        if self.scene is not None:
            for item in self.scene.node_items.values():
                item.setSelected(True)

    def arrange(self) -> None:
        """Lay every node out again in columns by depth (one undo step)."""
        if self.scene is None or self.doc is None:
            return
        from .layout import auto_positions

        graph = self.doc.graph
        bare = graph.copy()
        bare.editor = {}
        placed = auto_positions(bare, {n: (it.width, it.height) for n, it in self.scene.node_items.items()})
        moves = {}
        for node_id, new in placed.items():
            item = self.scene.node_items.get(node_id)
            if item is not None and (item.pos().x(), item.pos().y()) != new:
                moves[node_id] = ((item.pos().x(), item.pos().y()), new)
        if moves:
            self.doc.push(cmd.MoveNodes(graph, moves))
            assert self.view is not None
            self.view.fit_all()

    def group(self) -> None:
        if self.scene is not None:
            self.scene.frame_selection()

    # --- problems --------------------------------------------------------------------------------------
    def _refresh_problems(self) -> None:
        if self.doc is None:
            return
        self.problems_list.clear()
        for p in self.doc.problems:
            item = QListWidgetItem(f"error: {p}")
            item.setData(Qt.ItemDataRole.UserRole, p.location.node)
            item.setForeground(Qt.GlobalColor.red)
            self.problems_list.addItem(item)
        count = len(self.doc.problems)
        self._problems_dock.setWindowTitle(f"Problems ({count})" if count else "Problems")
        if not count:
            self.notices.resolve("cannot-run")
        if self.view is not None:
            self.view.minimap.schedule()

    def _problem_activated(self, item: QListWidgetItem) -> None:
        node = item.data(Qt.ItemDataRole.UserRole)
        if node and self.scene is not None and node in self.scene.node_items:
            self.scene.select_nodes([node])
            assert self.view is not None
            self.view.centerOn(self.scene.node_items[node])

    # --- running ------------------------------------------------------------------------------------------
    def run(self) -> bool:
        """Run every output node (what `nodeflow run` runs) and show the pictures made on the way."""
        return self.run_view.run()

    def run_selected(self) -> bool:
        """Run what the selected node needs (and the node), showing its outputs."""
        return self.run_view.run_selected()

    def cancel_run(self) -> None:
        self.run_view.cancel_run()

    def run_on_server(self) -> bool:
        """Ask for a server's URL and token; from now on runs go there (see gui/remote.py)."""
        from .remote import ask_and_run

        return ask_and_run(self)

    def run_locally(self) -> None:
        from .remote import use_local

        use_local(self)

    # --- messages -----------------------------------------------------------------------------------------
    def status(self, text: str, *, error: bool = False) -> None:
        self.status_label.setText(text)
        self.status_label.setToolTip(text)
        self.status_label.setStyleSheet("color: #ef5350;" if error else "")

    def show_error(self, title: str, text: str) -> None:
        line = f"{title}: {text.splitlines()[0] if text else ''}"
        self.status(line, error=True)
        self.notices.post(f"error:{title}", line)
        if self.interactive:
            QMessageBox.warning(self, title, text)

    def closeEvent(self, event: Any) -> None:
        if not self._may_replace():
            event.ignore()
            return
        if self.runner is not None:
            self.runner.shutdown()
        self._autosave_timer.stop()
        self.autosave.close()
        if self.doc is not None:
            self.doc.close()
        event.accept()


class _Marker(cmd.QUndoCommand):
    """An undo step that changes nothing, so recovered work counts as unsaved."""

    def __init__(self) -> None:
        super().__init__("Recovered changes")


_WINDOWS: list[MainWindow] = []
"""Windows opened with File > New Window (kept alive here)."""
