"""Running the editor's graph on a nodeflow server ("Run on Server…").

`RemoteRunController` has the signals of the local `RunController`, so the window
shows a remote run exactly as a local one: per-node progress, live previews and
the output pictures. It submits the graph (uploading the pictures the graph
loads), follows the job's events on the server's websocket (resuming from the
last event number if the connection drops) and downloads the files the job
wrote into the editor's output folder.
"""

from __future__ import annotations

import json
import time
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

from PySide6.QtGui import QImage

from nodeflow import events as ev
from nodeflow.errors import GraphInvalid, Location, NodeFailed, NodeflowError, Problem
from nodeflow.executor import RunResult
from nodeflow.graph import Graph
from nodeflow.registry import NodeRegistry
from nodeflow.settings import Settings

from .run_view import RunView
from .runner import RunController

if TYPE_CHECKING:
    from .window import MainWindow

FINAL = ("finished", "failed", "cancelled")
RECONNECT_FOR = 120.0
"""Seconds a run keeps trying to reach a server that went away (it may be restarting)."""


class ServerError(NodeflowError):
    """The server could not be reached or refused the request."""


class RemoteRunController(RunController):
    """Runs graphs on a nodeflow server; reports what happens with the local runner's signals."""

    def __init__(self, registry: NodeRegistry, settings: Settings, url: str, token: str | None = None,
                 parent: Any = None) -> None:
        super().__init__(registry, settings, parent)
        self.registry = registry
        self.settings = settings
        self.url = url.rstrip("/")
        self.token = token or None
        self.job_id: str | None = None
        self._down_since: float | None = None

    def set_settings(self, settings: Settings) -> None:
        super().set_settings(settings)
        self.settings = settings

    # --- worker thread ------------------------------------------------------------------------
    def _work(self, run_id: int, graph: Graph, outputs: list[str] | None, token: ev.CancelToken) -> None:
        emit = self._bridge.delivered.emit
        try:
            import httpx

            headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
            with httpx.Client(base_url=self.url, headers=headers, timeout=30.0) as http:
                self._run_remote(http, run_id, graph, outputs, token)
        except GraphInvalid as exc:
            emit(run_id, ("invalid", exc))
        except NodeflowError as exc:
            emit(run_id, ("error", str(exc)))
        except Exception as exc:  # noqa: BLE001 - shown to the user, never kills the editor
            emit(run_id, ("error", f"the server at {self.url} failed: {type(exc).__name__}: {exc}"))
        finally:
            emit(run_id, ("thread_done", None))

    def _run_remote(self, http: Any, run_id: int, graph: Graph, outputs: list[str] | None,
                    token: ev.CancelToken) -> None:
        emit = self._bridge.delivered.emit
        graph = self._with_uploads(http, graph)
        since = _json(_request(http, "GET", "/api/health"))["last_event"]
        # Listen before submitting: previews are sent live only, and a small job is quick.
        try:
            ws: Any = self._connect(f"since={since}")
        except OSError as exc:
            raise ServerError(f"cannot reach the server at {self.url}: {exc}") from None
        try:
            accepted = _json(_request(http, "POST", "/api/jobs", json={
                "graph": graph.to_json(), "outputs": outputs, "name": graph.file_name or "graph"}))
        except BaseException:
            with ws:  # closes it
                pass
            raise
        job_id = self.job_id = accepted["id"]
        result = RunResult()
        cancel_sent = False
        while True:
            # Once the cancel is sent, follow the job to its end (it stops at its next step).
            since, outcome = self._follow(http, job_id, since, run_id, result,
                                          None if cancel_sent else token, ws)
            ws = None
            if outcome is not None:
                break
            if token.cancelled and not cancel_sent:
                _request(http, "POST", f"/api/jobs/{job_id}/cancel")
                cancel_sent = True
        job = _json(_request(http, "GET", f"/api/jobs/{job_id}"))
        if job["state"] == "cancelled":
            result.cancelled = True
        error = job.get("error")
        if job["state"] == "failed" and not result.failed:
            if error and error.get("type") == "graph_invalid":
                raise GraphInvalid([_problem(p) for p in error.get("problems", [])], graph.file_name)
            raise ServerError((error or {}).get("message", "the job failed on the server"))
        for node, values in (job.get("values") or {}).items():
            images = []
            for value in values.values():
                if isinstance(value, dict) and "images" in value:
                    for name in value["images"]:
                        data = _request(http, "GET", f"/api/jobs/{job_id}/files/{name}").content
                        images.append(QImage.fromData(data))
            if images:
                emit(run_id, ("images", node, images))
        emit(run_id, ("result", result))

    def _connect(self, query: str) -> Any:
        from websockets.exceptions import InvalidStatus
        from websockets.sync.client import connect

        ws_url = "ws" + self.url[4:] if self.url.startswith("http") else self.url
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        try:
            return connect(f"{ws_url}/api/events?{query}", additional_headers=headers, open_timeout=30,
                           max_size=None)
        except InvalidStatus as exc:
            raise ServerError(f"the server at {self.url} refused the event stream ({exc})",
                              hint="Check the token.") from None

    def _follow(self, http: Any, job_id: str, since: int, run_id: int, result: RunResult,
                token: ev.CancelToken | None, ws: Any = None) -> tuple[int, str | None]:
        """Relay the job's events after ``since`` until it ends, the connection drops, or the
        user cancels; returns the last event number seen and how the job ended (or None).
        ``ws``: a connection already open (to every job's events), else one is opened."""
        from websockets.exceptions import ConnectionClosed

        try:
            if ws is None:
                ws = self._connect(f"since={since}&job={job_id}")
            with ws:
                self._down_since = None
                while token is None or not token.cancelled:
                    try:
                        raw = ws.recv(timeout=0.2)
                    except TimeoutError:
                        continue
                    event = json.loads(raw)
                    if event.get("seq") is not None:
                        since = event["seq"]  # events come in order: all before it were seen
                    if event.get("job") != job_id:
                        continue
                    self._relay(http, job_id, event, run_id, result)
                    if event["type"] in FINAL:
                        return since, event["type"]
                return since, None
        except (ConnectionClosed, OSError, EOFError) as exc:
            # The connection dropped (the server may be restarting): resume from the last event.
            now = time.monotonic()
            self._down_since = self._down_since or now
            if now - self._down_since > RECONNECT_FOR:
                raise ServerError(f"lost the server at {self.url} for {RECONNECT_FOR:.0f}s ({exc})") from None
            if token is None or not token.cancelled:
                time.sleep(0.5)
            return since, None

    def _relay(self, http: Any, job_id: str, event: dict[str, Any], run_id: int, result: RunResult) -> None:
        emit = self._bridge.delivered.emit
        t, d = event["type"], event.get("data", {})
        if t == "run_started":
            result.cached = list(d.get("cached", []))
            emit(run_id, ev.RunStarted(list(d.get("to_run", [])), list(d.get("cached", []))))
        elif t == "node_started":
            emit(run_id, ev.NodeStarted(d["node"], d.get("type", "")))
        elif t == "node_cached":
            emit(run_id, ev.NodeCached(d["node"], d.get("type", "")))
        elif t == "node_progress":
            emit(run_id, ev.NodeProgress(d["node"], d["done"], d.get("total"), d.get("message")))
        elif t == "preview":
            import base64

            image = QImage.fromData(base64.b64decode(d.get("base64", "")))
            if not image.isNull():
                emit(run_id, ("preview", d["node"], image))
        elif t == "node_finished":
            files = [self._download(http, job_id, name) for name in d.get("files", [])]
            result.ran.append(d["node"])
            result.timings[d["node"]] = float(d.get("seconds", 0.0))
            result.files.extend(files)
            pictures = [(p, QImage(str(p))) for p in files
                        if p.suffix.lower() in (".png", ".jpg", ".jpeg", ".webp")]
            if pictures:
                emit(run_id, ("files", d["node"], pictures))
            emit(run_id, ev.NodeFinished(d["node"], d.get("type", ""), float(d.get("seconds", 0.0)), files))
        elif t == "node_failed":
            error = _node_error(d.get("error", {}))
            result.failed[d["node"]] = error
            emit(run_id, ev.NodeFailed(d["node"], d.get("type", ""), error))
        elif t == "node_skipped":
            result.skipped.append(d["node"])
            emit(run_id, ev.NodeSkipped(d["node"], d.get("type", ""), d.get("reason", "")))
        elif t == "requeued":
            # The server restarted mid-run; the job starts again there.
            result.ran.clear()
            result.files.clear()

    def _download(self, http: Any, job_id: str, name: str) -> Path:
        """Fetch an output file into the editor's output folder, under a fresh number."""
        from nodeflow.files import write_new_numbered

        data = _request(http, "GET", f"/api/jobs/{job_id}/files/{name}").content
        rel = PurePosixPath(name)
        folder = Path(self.settings.out_dir).joinpath(*rel.parts[:-1])
        stem = rel.stem.rsplit("_", 1)[0] if "_" in rel.stem else rel.stem
        return write_new_numbered(folder, stem, rel.suffix, data)

    def _with_uploads(self, http: Any, graph: Graph) -> Graph:
        """A copy of the graph whose input pictures name their uploaded copies on the server."""
        graph = graph.copy()
        for node in graph:
            cls = self.registry.get(node.type)
            if cls is None:
                continue
            for spec in cls.inputs:
                value = node.inputs.get(spec.name)
                if spec.path_kind != "image" or not isinstance(value, str) or not value:
                    continue
                found = self.settings.resolve_path("image", value)
                if found is None or not found.is_file():
                    continue  # the server reports it, located
                response = _request(http, "POST", "/api/uploads", files={
                    "file": (found.name, found.read_bytes(), "application/octet-stream")})
                node.inputs[spec.name] = _json(response)["name"]
        return graph


def _request(http: Any, method: str, path: str, **kw: Any) -> Any:
    import httpx

    try:
        response = http.request(method, path, **kw)
    except httpx.HTTPError as exc:
        raise ServerError(f"cannot reach the server at {http.base_url}: {exc}",
                          hint="Check the URL and that `nodeflow serve` is running there.") from None
    if response.status_code >= 400:
        try:
            error = response.json()["error"]
        except (ValueError, KeyError, TypeError):
            raise ServerError(f"the server answered {response.status_code}") from None
        if error.get("type") == "graph_invalid":
            raise GraphInvalid([_problem(p) for p in error.get("problems", [])], None)
        raise ServerError(f"the server refused: {error.get('message')}")
    return response


def _json(response: Any) -> Any:
    return response.json()


def _problem(p: dict[str, Any]) -> Problem:
    return Problem(p.get("code", "error"), p.get("message", ""),
                   Location(p.get("file"), p.get("node"), p.get("node_type"), p.get("socket"),
                            p.get("line"), p.get("column")))


def _node_error(p: dict[str, Any]) -> NodeFailed:
    return NodeFailed(p.get("message", ""), location=Location(
        p.get("file"), p.get("node"), p.get("node_type"), p.get("socket")))


# --- the window's "Run on Server…" --------------------------------------------------------------------

def use_server(window: MainWindow, url: str, token: str | None = None) -> RemoteRunController:
    """Route the window's Run, Run to Selected and Cancel to the server at ``url``."""
    assert window.doc is not None
    if window.runner is not None and window.runner.busy:
        window.runner.cancel()
    local = getattr(window, "_local_run", None)
    if local is None:
        window._local_run = (window.runner, window.run_view)  # type: ignore[attr-defined]
    runner = RemoteRunController(window.registry, window.doc.settings, url, token, window)
    window.runner = runner
    window.run_view = RunView(window, runner)
    window.status(f"Runs go to the server at {runner.url}")
    return runner


def use_local(window: MainWindow) -> None:
    """Run in this process again."""
    local = getattr(window, "_local_run", None)
    if local is None:
        return
    if window.runner is not None and window.runner.busy:
        window.runner.cancel()
    window.runner, window.run_view = local
    window._local_run = None  # type: ignore[attr-defined]
    window.status("Runs happen on this computer")


def ask_and_run(window: MainWindow) -> bool:
    """Ask for the server's URL and token, then run the graph there."""
    from PySide6.QtWidgets import QDialog, QDialogButtonBox, QFormLayout, QLineEdit

    current = window.runner if isinstance(window.runner, RemoteRunController) else None
    dialog = QDialog(window)
    dialog.setWindowTitle("Run on Server")
    form = QFormLayout(dialog)
    url = QLineEdit(current.url if current else "http://127.0.0.1:8188", dialog)
    token = QLineEdit(current.token or "" if current else "", dialog)
    token.setEchoMode(QLineEdit.EchoMode.Password)
    token.setPlaceholderText("the token `nodeflow serve` printed (none on this machine)")
    form.addRow("Server URL", url)
    form.addRow("Token", token)
    buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel)
    buttons.accepted.connect(dialog.accept)
    buttons.rejected.connect(dialog.reject)
    form.addRow(buttons)
    if dialog.exec() != QDialog.DialogCode.Accepted or not url.text().strip():
        return False
    use_server(window, url.text().strip(), token.text().strip() or None)
    return window.run()
