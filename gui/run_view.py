"""Running from the editor: start and cancel runs, and show what the executor reports."""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from PySide6.QtCore import QObject, Qt
from PySide6.QtGui import QImage

from nodeflow.errors import GraphInvalid
from nodeflow.validate import ancestry, split_problems

from . import commands as cmd
from .properties import random_seed, seed_modes
from .runner import RunController, image_nodes

if TYPE_CHECKING:
    from .window import MainWindow

THUMB_MAX = 400
"""Widest picture shown inside a node (the viewer gets the full picture)."""


class RunView(QObject):
    """Connects a window's `RunController` to its canvas, viewer, properties and status bar."""

    def __init__(self, window: MainWindow, runner: RunController) -> None:
        super().__init__(window)
        self.w = window
        self.runner = runner
        self.started_at = 0.0
        self.total = 0
        self.done = 0
        self.wanted: set[str] = set()
        self.cancelled = False
        self.node_images: dict[str, QImage] = {}
        self._connect_runner(runner)

    def _connect_runner(self, runner: RunController) -> None:
        runner.runStarted.connect(self._run_started)
        runner.nodeStarted.connect(self._node_started)
        runner.nodeProgress.connect(self._node_progress)
        runner.nodePreview.connect(self._node_preview)
        runner.nodeCached.connect(self._node_cached)
        runner.nodeFinished.connect(self._node_finished)
        runner.nodeFailed.connect(self._node_failed)
        runner.nodeSkipped.connect(self._node_skipped)
        runner.nodeImages.connect(self._node_images)
        runner.fileImages.connect(self._file_images)
        runner.runFinished.connect(self._run_finished)
        runner.runInvalid.connect(self._run_invalid)

    def run(self) -> bool:
        """Run every output node (what `nodeflow run` runs) and show the pictures made on the way."""
        assert self.w.doc is not None
        graph = self.w.doc.graph
        outputs = [n.id for n in graph if (c := self.w.registry.get(n.type)) is not None and c.output_node]
        if not outputs:
            self.w.status("The graph has no output node (such as image.Save); select a node and use "
                        "Run to Selected", error=True)
            return False
        return self._start_run(outputs, outputs)

    def run_selected(self) -> bool:
        """Run what the selected node needs (and the node), showing its outputs."""
        assert self.w.scene is not None
        ids = self.w.scene.selected_node_ids()
        if not ids:
            self.w.status("Select the node to run up to", error=True)
            return False
        return self._start_run(ids, ids)

    def _start_run(self, outputs: list[str], shown: list[str]) -> bool:
        assert self.w.doc is not None and self.runner is not None
        if self.runner.running:
            return False
        if self.w.properties is not None:
            self.w.properties.flush()
        # Only problems in what the run needs stop it; the others stay marked on their nodes.
        problems, _elsewhere = split_problems(self.w.doc.validate_now(),
                                              ancestry(self.w.doc.graph, outputs))
        if problems:
            text = (f"Cannot run: {len(problems)} problem{'s' if len(problems) != 1 else ''} "
                    "(see the Problems panel)")
            self.w.status(text, error=True)
            first = next((p.location.node for p in problems if p.location.node), None)
            self.w.notices.post("cannot-run", f"{text}. First: {problems[0]}", node=first)
            self.w._problems_dock.raise_()
            return False
        self.w.notices.resolve("cannot-run")
        self.w.notices.resolve("failed:", prefix=True)  # a new run: old failures no longer stand
        self.w.notices.resolve("error:The run failed")
        graph = self.w.doc.graph.copy()
        wanted = list(dict.fromkeys(outputs + image_nodes(graph, self.w.registry, outputs)))
        self.wanted = set(shown)
        self._advance_seeds()
        for node_id in list(self.w.properties.errors if self.w.properties else []):
            self.w.properties.set_run_error(node_id, None)  # type: ignore[union-attr]
        assert self.w.scene is not None
        self.w.scene.clear_status()
        self.started_at = time.perf_counter()
        self.total = 0
        self.done = 0
        self.cancelled = False
        self.runner.start(graph, wanted)
        self.w.run_action.setEnabled(False)
        self.w.run_selected_action.setEnabled(False)
        self.w.cancel_action.setEnabled(True)
        self.w.cancel_button.show()
        self.w.progress.setValue(0)
        self.w.progress.show()
        self.w.status("Running…")
        return True

    def _advance_seeds(self) -> None:
        """Seeds set to randomize or increment change after a run is queued, for the next run."""
        assert self.w.doc is not None
        changes = []
        for node in self.w.doc.graph:
            modes = seed_modes(self.w.doc, node.id)
            cls = self.w.registry.get(node.type)
            if not modes or cls is None:
                continue
            for name, mode in modes.items():
                spec = cls.input_map.get(name)
                value = node.inputs.get(name, spec.default if spec is not None else None)
                if spec is None or not isinstance(value, int):
                    continue
                if mode == "randomize":
                    changes.append((node.id, name, random_seed(spec)))
                elif mode == "increment":
                    top = int(spec.max) if spec.max is not None else 2**64 - 1
                    changes.append((node.id, name, value + 1 if value < top else int(spec.min or 0)))
        if changes:
            self.w.doc.undo.beginMacro("Next seed")
            for node_id, name, value in changes:
                self.w.doc.push(cmd.SetInput(self.w.doc.graph, node_id, name, value))
            self.w.doc.undo.endMacro()

    def cancel_run(self) -> None:
        if self.runner is not None and self.runner.running:
            self.cancelled = True
            self.runner.cancel()

    def _set_status(self, node: str, status: str, text: str = "", progress: float | None = None) -> None:
        if self.w.scene is not None:
            self.w.scene.set_status(node, status, text, progress)

    def _node_started(self, node: str) -> None:
        self._set_status(node, "running", "0%", 0.0)

    def _node_cached(self, node: str) -> None:
        self._set_status(node, "cached", "cached")

    def _node_skipped(self, node: str, reason: str) -> None:
        self._set_status(node, "skipped", "skipped")

    def _run_started(self, to_run: list[str], cached: list[str]) -> None:
        self.total = len(to_run)
        for n in to_run:
            self._set_status(n, "queued", "queued")
        self.w.progress.setRange(0, max(1, self.total) * 100)

    def _node_progress(self, node: str, done: float, total: Any, message: Any) -> None:
        frac = (done / total) if total else None
        text = f"{done:g}/{total:g}" if total else f"{done:g}"
        self._set_status(node, "running", text, frac)
        self.w.progress.setValue(int((self.done + (frac or 0.0)) * 100))
        self.w.progress.setFormat(f"{node}: {text}")

    def _node_preview(self, node: str, image: QImage) -> None:
        self._set_node_image(node, image)
        self.w.viewer.show_live(node, image)

    def _node_finished(self, node: str, seconds: float, files: list[str]) -> None:
        self.done += 1
        self._set_status(node, "done", f"{seconds:.2f}s" if seconds < 10 else f"{seconds:.0f}s")
        self.w.progress.setValue(self.done * 100)
        self.w.progress.setFormat(f"{self.done}/{self.total} nodes")

    def _node_failed(self, node: str, message: str) -> None:
        if node:
            self._set_status(node, "failed", "failed")
            if self.w.properties is not None:
                self.w.properties.set_run_error(node, message)
            self.w.status(f"{node} failed: {message}", error=True)
            self.w.notices.post(f"failed:{node}", f"{node} failed: {message}", node=node)
            item = self.w.scene.node_items.get(node) if self.w.scene else None
            if item is not None:
                item.error = message
                item.setToolTip(item._tooltip(None))
        else:
            self.w.show_error("The run failed", message)

    def _set_node_image(self, node: str, image: QImage) -> None:
        self._set_node_images(node, [image])

    def _set_node_images(self, node: str, images: list[QImage], total: int | None = None) -> None:
        """Show a node's pictures (the whole batch) inside it, as small copies."""
        thumbs = [image if image.width() <= THUMB_MAX else image.scaledToWidth(
            THUMB_MAX, Qt.TransformationMode.SmoothTransformation) for image in images]
        if images:
            self.node_images[node] = images[0]
        item = self.w.scene.node_items.get(node) if self.w.scene else None
        if item is not None:
            item.set_images(thumbs, total)

    def _node_images(self, node: str, images: list[QImage], total: int | None = None) -> None:
        if not images:
            return
        self._set_node_images(node, images, total)
        if node in self.wanted:
            count = max(len(images), total or 0)
            for i, img in enumerate(images):
                self.w.viewer.add_image(img, f"{node}" + (f" [{i + 1}/{count}]" if count > 1 else ""))

    def _file_images(self, node: str, items: list[tuple[Path, QImage]]) -> None:
        shown = [(path, img) for path, img in items if not img.isNull()]
        if shown:
            self._set_node_images(node, [img for _path, img in shown])
        for path, img in shown:
            self.w.viewer.add_image(img, Path(path).name, Path(path))

    def _run_finished(self, result: Any) -> None:
        self.w.run_action.setEnabled(True)
        self.w.run_selected_action.setEnabled(True)
        self.w.cancel_action.setEnabled(False)
        self.w.cancel_button.hide()
        self.w.progress.hide()
        seconds = time.perf_counter() - self.started_at
        if result is None:  # cancelled, or the run could not start (the reason is shown already)
            for item in (self.w.scene.node_items.values() if self.w.scene else []):
                if item.status in ("running", "queued"):
                    self._set_status(item.node_id, "skipped", "cancelled")
            if self.cancelled:
                self.w.status(f"Cancelled after {seconds:.1f}s")
            return
        if result.failed:
            n = len(result.failed)
            self.w.status(f"{n} node{'s' if n != 1 else ''} failed ({seconds:.1f}s)", error=True)
        else:
            files = f"; wrote {', '.join(Path(p).name for p in result.files)}" if result.files else ""
            self.w.status(f"Done in {seconds:.2f}s: {len(result.ran)} ran, {len(result.cached)} cached{files}")

    def _run_invalid(self, exc: GraphInvalid) -> None:
        self.w.status(str(exc).splitlines()[0], error=True)
