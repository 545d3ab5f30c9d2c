"""Runs a copy of the graph on a worker thread and reports the executor's events as Qt signals."""

from __future__ import annotations

import threading
import time
import traceback
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from PySide6.QtCore import QObject, Signal
from PySide6.QtGui import QImage

from nodeflow import events as ev
from nodeflow.api import IMAGE, MASK
from nodeflow.errors import GraphInvalid, NodeflowError
from nodeflow.executor import Executor
from nodeflow.graph import Graph
from nodeflow.registry import NodeRegistry
from nodeflow.settings import Settings

from .images import array_to_qimages, is_image_array

PREVIEW_INTERVAL = 0.08
"""Seconds between two previews of one node shown (sampling may publish faster than that)."""


class _Bridge(QObject):
    delivered = Signal(int, object)


def image_nodes(graph: Graph, registry: NodeRegistry, wanted: Iterable[str]) -> list[str]:
    """Nodes the wanted ones depend on that produce pictures (their outputs are shown)."""
    parents: dict[str, list[str]] = {}
    for ln in graph.links:
        parents.setdefault(ln.dst, []).append(ln.src)
    seen: set[str] = set()
    stack = list(wanted)
    while stack:
        n = stack.pop()
        if n in seen or n not in graph.nodes:
            continue
        seen.add(n)
        stack.extend(parents.get(n, ()))
    out = []
    for n in graph.nodes:
        cls = registry.get(graph.nodes[n].type)
        if n in seen and cls is not None and any(o.type in (IMAGE, MASK) for o in cls.outputs):
            out.append(n)
    return out


BATCH_SHOWN = 16
"""Pictures of a batch shown (in the node and the Images panel); a larger batch shows its first ones."""


class RunController(QObject):
    """One executor per window (its cache makes re-runs fast); one run at a time.

    Every run gets a fresh copy of the window's graph; the executor checks and keys again
    only what changed since the last run (see `nodeflow.executor`), so a copy never gets an
    earlier graph's result.

    Cancel returns at once: the run's later events are ignored, and a new run
    waits for the cancelled one's thread to stop at its next cancellation point.
    """

    runStarted = Signal(list, list)
    nodeStarted = Signal(str)
    nodeProgress = Signal(str, float, object, object)
    nodePreview = Signal(str, QImage)
    nodeCached = Signal(str)
    nodeFinished = Signal(str, float, list)
    nodeFailed = Signal(str, str)
    nodeSkipped = Signal(str, str)
    nodeImages = Signal(str, list, int)
    """Node, its first pictures (at most BATCH_SHOWN), and how many its outputs held."""
    fileImages = Signal(str, list)
    runFinished = Signal(object)
    """The `RunResult`, or None when the run was cancelled or could not start."""
    runInvalid = Signal(object)

    def __init__(self, registry: NodeRegistry, settings: Settings, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.executor = Executor(registry, settings)
        self._bridge = _Bridge()
        self._bridge.delivered.connect(self._on_event)
        self.run_id = 0
        self.running = False
        self._thread: threading.Thread | None = None
        self._thread_done = True
        """The last worker thread has sent its last event. Its Python thread may still be alive
        for a moment after that, so `is_alive()` cannot say whether a "thread_done" is to come."""
        self._token: ev.CancelToken | None = None
        self._pending: tuple[Graph, list[str] | None] | None = None
        self.last_result: Any = None

    def set_settings(self, settings: Settings) -> None:
        self.executor.settings = settings

    @property
    def busy(self) -> bool:
        """A run is in progress (or a cancelled one has not yet reached a cancellation point)."""
        return self.running or not self._thread_done

    def start(self, graph: Graph, outputs: list[str] | None) -> bool:
        """Run ``graph`` (the caller's copy) for ``outputs``; False if a run is already going."""
        if self.running:
            return False
        self.running = True
        self.run_id += 1
        if not self._thread_done:  # a cancelled run's thread has not stopped yet: start after it
            self._pending = (graph, outputs)
            return True
        self._launch(graph, outputs)
        return True

    def _launch(self, graph: Graph, outputs: list[str] | None) -> None:
        self._token = token = ev.CancelToken()
        run_id = self.run_id
        self._thread_done = False
        self._thread = threading.Thread(target=self._work, args=(run_id, graph, outputs, token),
                                        name=f"nodeflow-run-{run_id}", daemon=True)
        self._thread.start()

    def cancel(self) -> None:
        if not self.running:
            return
        if self._token is not None:
            self._token.cancel()
        self._pending = None
        self.running = False
        self.run_id += 1  # later events of the cancelled run are ignored
        self.runFinished.emit(None)

    def shutdown(self, timeout: float = 2.0) -> None:
        """Cancel any run, give its thread a moment to stop, and let the executor's worker
        threads go (the window is closing; a node that ignores cancellation is not waited for)."""
        self.cancel()
        self.wait(timeout)
        self.executor.close(wait=False)

    def wait(self, timeout: float = 10.0) -> bool:
        """Block until the worker thread has stopped (for tests and quitting)."""
        thread = self._thread
        if thread is not None:
            thread.join(timeout)
            return not thread.is_alive()
        return True

    # --- worker thread --------------------------------------------------------------------------
    def _work(self, run_id: int, graph: Graph, outputs: list[str] | None, token: ev.CancelToken) -> None:
        emit = self._bridge.delivered.emit
        last_preview: dict[str, float] = {}

        def on_event(event: ev.Event) -> None:
            if isinstance(event, ev.NodePreview):
                now = time.monotonic()
                if now - last_preview.get(event.node, 0.0) < PREVIEW_INTERVAL:
                    return
                last_preview[event.node] = now
                images = array_to_qimages(event.image, limit=1)
                if images:
                    emit(run_id, ("preview", event.node, images[0]))
                return
            if isinstance(event, ev.NodeFinished) and event.files:
                pictures = [QImage(str(p)) for p in event.files if Path(p).suffix.lower() in (".png", ".jpg", ".webp")]
                emit(run_id, ("files", event.node, [(p, img) for p, img in zip(event.files, pictures, strict=False)]))
            emit(run_id, event)

        try:
            result = self.executor.run(graph, outputs, on_event=on_event, cancel=token)
            for node_id, values in result.outputs.items():
                images = []
                total = 0
                for value in values.values():
                    if is_image_array(value):  # the first picture output (image.Load: not its mask)
                        images.extend(array_to_qimages(value, limit=BATCH_SHOWN))
                        shape = value.shape
                        total += int(shape[0]) if len(shape) == 4 or (len(shape) == 3 and shape[-1] != 3) else 1
                        break
                if images:
                    emit(run_id, ("images", node_id, images[:BATCH_SHOWN], total))
            emit(run_id, ("result", result))
        except GraphInvalid as exc:
            emit(run_id, ("invalid", exc))
        except NodeflowError as exc:
            emit(run_id, ("error", str(exc)))
        except Exception:  # noqa: BLE001 - shown to the user, never kills the editor
            emit(run_id, ("error", traceback.format_exc()))
        finally:
            emit(run_id, ("thread_done", None))

    # --- GUI thread ---------------------------------------------------------------------------
    def _on_event(self, run_id: int, event: Any) -> None:
        if isinstance(event, tuple) and event[0] == "thread_done":
            self._thread_done = True
            if self._pending is not None and self.running:
                graph, outputs = self._pending
                self._pending = None
                self._launch(graph, outputs)
            return
        if run_id != self.run_id or not self.running:
            return
        if isinstance(event, tuple):
            kind, payload = event[0], event[1:]
            if kind == "preview":
                self.nodePreview.emit(payload[0], payload[1])
            elif kind == "images":
                # A remote run (gui/remote.py) sends no batch size: the pictures are the batch.
                total = payload[2] if len(payload) > 2 else len(payload[1])
                self.nodeImages.emit(payload[0], payload[1], total)
            elif kind == "files":
                self.fileImages.emit(payload[0], payload[1])
            elif kind == "result":
                self.running = False
                self.last_result = payload[0]
                self.runFinished.emit(payload[0])
            elif kind == "invalid":
                self.running = False
                self.runInvalid.emit(payload[0])
                self.runFinished.emit(None)
            elif kind == "error":
                self.running = False
                self.nodeFailed.emit("", payload[0])
                self.runFinished.emit(None)
            return
        if isinstance(event, ev.RunStarted):
            self.runStarted.emit(list(event.to_run), list(event.cached))
        elif isinstance(event, ev.NodeStarted):
            self.nodeStarted.emit(event.node)
        elif isinstance(event, ev.NodeProgress):
            self.nodeProgress.emit(event.node, float(event.done), event.total, event.message)
        elif isinstance(event, ev.NodeCached):
            self.nodeCached.emit(event.node)
        elif isinstance(event, ev.NodeFinished):
            self.nodeFinished.emit(event.node, event.seconds, [str(p) for p in event.files])
        elif isinstance(event, ev.NodeFailed):
            error = event.error
            message = error.message + (f" {error.hint}" if error.hint else "")
            if error.location.socket:
                message = f"socket '{error.location.socket}': {message}"
            self.nodeFailed.emit(event.node, message)
        elif isinstance(event, ev.NodeSkipped):
            self.nodeSkipped.emit(event.node, event.reason)
