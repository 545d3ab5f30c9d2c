"""The HTTP and websocket API of ``nodeflow serve`` (FastAPI); OpenAPI is served at ``/docs``.

Native API under ``/api``: jobs (submit, list, get, cancel, files, events),
uploads, node types, health, and the ``/api/events`` websocket with resume by
event number. The ComfyUI-compatible endpoints live in `nodeflow.server.comfy`.
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
import logging
import os
import shutil
import threading
import time
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fastapi import FastAPI, File, Form, Query, Request, UploadFile, WebSocket, WebSocketDisconnect
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from nodeflow import __version__
from nodeflow.errors import GraphInvalid, Location, NodeflowError, Problem, UsageError
from nodeflow.graph import Graph, parse_graph_data
from nodeflow.registry import NodeRegistry
from nodeflow.server.guard import BodyLimit, TokenGuard
from nodeflow.server.hub import EventHub
from nodeflow.server.retention import (
    DEFAULT_INTERVAL,
    DEFAULT_POLICY,
    RetentionPolicy,
    RetentionSweeper,
    parse_retention,
)
from nodeflow.server.safety import (
    ApiError,
    Limits,
    ServerSettings,
    check_request_graph,
    inside,
    safe_file_name,
)
from nodeflow.server.store import FINAL_STATES, QUEUED, RUNNING, Job, JobStore, StoredEvent
from nodeflow.server.worker import Dispatcher, Worker, error_json

log = logging.getLogger("nodeflow.server")

PICTURE_FORMATS = {"PNG": ".png", "JPEG": ".jpg", "WEBP": ".webp"}
"""Formats an upload may be in."""


def invalid(problems: list[Problem], name: str) -> ApiError:
    exc = GraphInvalid(problems, name)
    return ApiError(400, str(exc), type_="graph_invalid", problems=[p.to_json() for p in problems])


@dataclass
class ServerConfig:
    """Everything a server instance needs; `nodeflow serve` builds it from its flags."""

    data_dir: Path
    registry: NodeRegistry
    models_dirs: list[Path] = field(default_factory=list)
    model_folders: dict[str, list[Path]] = field(default_factory=dict)
    """Extra folders per model kind (ComfyUI's, from --comfy-models)."""
    token: str | None = None
    cors: list[str] = field(default_factory=list)
    limits: Limits = field(default_factory=Limits)
    drain_timeout: float = 30.0
    """Seconds a running job may take to finish on shutdown before it is re-queued."""
    workers: list[Worker] | None = None
    """Job runners; default: one `LocalWorker` per compute device."""
    keep: RetentionPolicy = field(default_factory=lambda: parse_retention(DEFAULT_POLICY))
    """Which finished jobs (history, events and files) are kept."""
    keep_interval: float = DEFAULT_INTERVAL
    """Seconds between two applications of ``keep`` while the server runs."""
    policy: str = "affinity"
    """How a free worker picks its job: ``affinity`` or ``oldest`` (for comparison)."""
    devices: list[str] | None = None
    vram_budget: int | None = None
    """Bytes of models each device may hold (default: its free memory less a reserve)."""
    ram_budget: int | None = None
    """Bytes of models each local worker may keep in RAM (default: no limit)."""

    @property
    def input_dir(self) -> Path:
        return self.data_dir / "input"

    @property
    def output_dir(self) -> Path:
        return self.data_dir / "output"


class Server:
    """A running server's parts: the store, the event hub, the dispatcher and its workers."""

    def __init__(self, config: ServerConfig) -> None:
        self.config = config
        self.registry = config.registry
        for folder in (config.data_dir, config.input_dir, config.output_dir):
            folder.mkdir(parents=True, exist_ok=True)
        self._lock_file = _lock_data_dir(config.data_dir)
        self._upload_lock = threading.Lock()
        self.store = JobStore(config.data_dir / "jobs.sqlite3")
        self.hub = EventHub(self.store)
        workers = config.workers if config.workers is not None else default_workers(config)
        self.dispatcher = Dispatcher(self.store, self.hub, workers, config.output_dir, config.policy)
        self.retention = RetentionSweeper(self.store, config.output_dir, config.keep,
                                          config.keep_interval)
        self.started = time.time()

    # --- submitting ----------------------------------------------------------------------
    def build_graph(self, data: Any, name: str, overrides: Any) -> Graph:
        """A checked, validated graph from a request's graph document and overrides."""
        from nodeflow.validate import GraphValidator, migrate_nodes

        if isinstance(data, str):
            try:
                data = json.loads(data)
            except json.JSONDecodeError as exc:
                raise invalid([Problem("json", f"malformed JSON: {exc.msg}",
                                       Location(name, line=exc.lineno, column=exc.colno))], name) from None
        graph, problems = parse_graph_data(data, name)
        if graph is not None:
            problems += migrate_nodes(graph, self.registry)
        if problems or graph is None:
            raise invalid(problems, name)
        problems = check_request_graph(graph, self.registry, self.config.limits)
        if problems:
            raise invalid(problems, name)
        apply_request_overrides(graph, self.registry, overrides)
        problems = GraphValidator(self.registry, self.request_settings()).validate(graph)
        if problems:
            raise invalid(problems, name)
        return graph

    def request_settings(self) -> ServerSettings:
        """Where a request's graph finds files: the server's models folders (and ComfyUI
        folders) and its input folder, nothing else."""
        return ServerSettings(models_dirs=self.config.models_dirs, out_dir=self.config.output_dir,
                              input_dir=self.config.input_dir, folders=self.config.model_folders)

    def submit(self, graph: Graph, *, kind: str, outputs: list[str] | None, request: Any = None,
               client_id: str | None = None, idempotency_key: str | None = None) -> tuple[Job, bool]:
        """Queue a job; True when it is new (False: the idempotency key named an earlier one)."""
        name = graph.file_name or "graph"
        if outputs is not None:
            missing = [n for n in outputs if n not in graph.nodes]
            if missing:
                raise invalid([Problem("usage", f"'outputs' names node '{n}', which is not in the "
                                       "graph", Location(name, n)) for n in missing], name)
        elif not any((c := self.registry.get(n.type)) is not None and c.output_node for n in graph):
            raise invalid([Problem("usage", "the graph has no output node (such as image.Save); name "
                                   "the nodes whose values you want in 'outputs'", Location(name))], name)
        self.check_memory(graph, outputs)
        text = graph.dumps()
        created: list[bool] = []

        models = job_models(graph, self.registry)

        def change() -> StoredEvent | None:
            job, event = self.store.submit(kind=kind, graph=text, request=request, outputs=outputs,
                                           client_id=client_id, idempotency_key=idempotency_key,
                                           models=models)
            created.append(event is not None)
            self.hub.remember_client(job.id, client_id)
            holder.append(job)
            return event

        holder: list[Job] = []
        self.hub.commit(change)
        self.dispatcher.notify()
        return holder[0], created[0]

    def check_memory(self, graph: Graph, outputs: list[str] | None) -> None:
        """Refuse (400, located) a job that no worker's device can hold: a node it needs is
        larger than every budget. It would fail when it started; better to say so now. Workers
        that cannot tell (remote ones) accept it; the check at start still stands."""
        checks = [check for w in self.dispatcher.workers
                  if (check := getattr(w, "check_memory", None)) is not None]
        refused: NodeflowError | None = None
        for check in checks:
            try:
                check(graph, outputs)
                return
            except NodeflowError as exc:
                refused = refused or exc
            except Exception:  # noqa: BLE001 - an estimate that fails must not refuse the job
                log.exception("could not check the memory plan of a submitted job")
                return
        if refused is not None:
            body = error_json(refused)
            raise ApiError(400, body["message"], type_=body["type"], problems=body["problems"])

    def cancel(self, job_id: str) -> Job:
        job = self.store.get(job_id)
        if job is None:
            raise ApiError(404, f"no job '{job_id}'", type_="not_found")
        if job.state == QUEUED:
            if self.hub.commit(lambda: self.store.cancel_queued(job_id)) is None:
                self.dispatcher.cancel(job_id)  # it started meanwhile
        elif job.state == RUNNING:
            self.dispatcher.cancel(job_id)
        return self.store.get(job_id) or job

    def job_file(self, job_id: str, name: str) -> Path:
        job = self.store.get(job_id)
        if job is None:
            raise ApiError(404, f"no job '{job_id}'", type_="not_found")
        path = inside(self.config.output_dir / job_id, name)
        if path is None:
            raise ApiError(400, f"'{name}' is not a file name inside the job's outputs", type_="path")
        if not path.is_file():
            raise ApiError(404, f"job '{job_id}' has no output '{name}'", type_="not_found")
        return path

    def save_upload(self, data: bytes, name: str, subfolder: str = "", overwrite: bool = False) -> str:
        """Store an uploaded picture in the input folder; returns its name there."""
        from PIL import Image, UnidentifiedImageError

        if len(data) > self.config.limits.max_upload_bytes:
            raise ApiError(413, f"the upload is larger than {self.config.limits.max_upload_bytes:,} bytes",
                           type_="too_large")
        base = name or ""
        if not safe_file_name(base) or Path(base).name != base:
            raise ApiError(400, f"'{name}' is not a plain file name (letters, digits, spaces, "
                           "'.', '_', '-', '(', ')')", type_="path")
        if subfolder:
            folder = inside(self.config.input_dir, subfolder)
            if folder is None:
                raise ApiError(400, f"subfolder '{subfolder}' must stay inside the input folder",
                               type_="path")
        else:
            folder = self.config.input_dir
        try:
            with Image.open(io.BytesIO(data)) as picture:
                kind = picture.format
                width, height = picture.size
                if kind not in PICTURE_FORMATS:
                    raise ApiError(400, f"'{base}' is a {kind} picture; upload PNG, JPEG or WebP",
                                   type_="bad_picture")
                if width * height > self.config.limits.max_pixels:
                    raise ApiError(413, f"'{base}' is {width}×{height}; this server accepts at most "
                                   f"{self.config.limits.max_pixels:,} pixels", type_="too_large")
                picture.verify()
        except ApiError:
            raise
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError):
            raise ApiError(400, f"'{base}' is not a picture nodeflow can read; upload PNG, JPEG or "
                           "WebP", type_="bad_picture") from None
        from nodeflow.files import atomic_write
        from nodeflow.server.retention import folder_bytes

        folder.mkdir(parents=True, exist_ok=True)
        stem, suffix = os.path.splitext(base)
        with self._upload_lock:  # one upload at a time checks the room left and takes it
            target, n = folder / base, 1
            existing = target.read_bytes() if target.exists() else None
            while not overwrite and existing is not None and existing != data:
                target, n = folder / f"{stem} ({n}){suffix}", n + 1
                existing = target.read_bytes() if target.exists() else None
            if existing != data:  # the same picture already there takes no room
                limit = self.config.limits.max_input_bytes
                used = folder_bytes(self.config.input_dir)
                if used - len(existing or b"") + len(data) > limit:
                    raise ApiError(507, f"the server's input folder is full: it holds {used:,} bytes of "
                                   f"uploads and keeps at most {limit:,}; delete pictures from it, or "
                                   "start the server with a larger --max-input-mb", type_="too_large")
                atomic_write(target, data)
        return target.relative_to(self.config.input_dir).as_posix()

    def queue_counts(self) -> dict[str, int]:
        return {"queued": self.store.count((QUEUED,)), "running": self.store.count((RUNNING,))}


def _lock_data_dir(data_dir: Path) -> Any:
    """Hold a lock on the data folder for the life of the process: two servers on one queue
    would run its jobs twice. The kernel lets go of it when the process dies, even by kill -9."""
    try:
        import fcntl
    except ImportError:  # not POSIX: no lock
        return None
    handle = (data_dir / "server.lock").open("a+")
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        handle.close()
        raise UsageError(f"another nodeflow server is using {data_dir}",
                         hint="Stop it, or give this one its own --data folder.") from None
    return handle


def job_models(graph: Graph, registry: NodeRegistry) -> list[str]:
    """The model files a job's graph names (``kind:name``), which the dispatcher matches with
    what each worker holds."""
    from nodeflow.cluster.worker import model_key, model_refs

    return sorted({model_key(kind, value) for _, _, _, kind, value in model_refs(graph, registry)})


def default_workers(config: ServerConfig) -> list[Worker]:
    """One long-lived executor per compute device."""
    from nodeflow.models import ModelManager
    from nodeflow.server.worker import LocalWorker

    names = config.devices or [d.name for d in ModelManager().devices]
    return [LocalWorker(config.registry, config.models_dirs, config.input_dir, device=name,
                        models=ModelManager([name], vram_budget=config.vram_budget,
                                            ram_budget=config.ram_budget),
                        folders=config.model_folders) for name in names]


def apply_request_overrides(graph: Graph, registry: NodeRegistry, overrides: Any) -> None:
    """``set``: a list of ``NODE.INPUT=VALUE`` texts (as ``--set``), or a map of ``NODE.INPUT``
    to JSON values."""
    from nodeflow.overrides import apply_overrides

    if not overrides:
        return
    if isinstance(overrides, list) and all(isinstance(o, str) for o in overrides):
        apply_overrides(graph, registry, overrides)
        return
    if not isinstance(overrides, dict):
        raise ApiError(400, "'set' must be a list of \"NODE.INPUT=VALUE\" or an object of "
                       "\"NODE.INPUT\": value")
    try:
        apply_overrides(graph, registry, {str(ref): value for ref, value in overrides.items()}, "set")
    except GraphInvalid as exc:
        raise invalid(exc.problems, graph.file_name or "graph") from None


# --- request bodies (also documented in OpenAPI) ----------------------------------------------

class JobRequest(BaseModel):
    """Submit a job: one of ``graph`` (nodeflow), ``workflow`` or ``prompt`` (ComfyUI)."""

    graph: dict[str, Any] | str | None = Field(None, description="A nodeflow graph document.")
    workflow: dict[str, Any] | None = Field(None, description="A ComfyUI workflow (UI format).")
    prompt: dict[str, Any] | None = Field(None, description="A ComfyUI API-format prompt.")
    set: list[str] | dict[str, Any] | None = Field(
        None, description="Overrides, as `--set`: [\"node.input=value\"] or {\"node.input\": value}.")
    outputs: list[str] | None = Field(
        None, description="Nodes whose outputs are wanted (default: every output node); their "
                          "numbers and text come back in `values`, their pictures as files.")
    idempotency_key: str | None = Field(
        None, max_length=200, description="Submitting again with the same key returns the same job.")
    client_id: str | None = Field(None, max_length=200)
    name: str | None = Field(None, max_length=200, description="Name used in error locations.")


class JobAccepted(BaseModel):
    id: str
    number: int
    state: str
    created: bool


# --- the application ----------------------------------------------------------------------------

def create_app(config: ServerConfig) -> FastAPI:
    """The ASGI application of one server (with its store, queue and workers)."""
    server = Server(config)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> Any:
        server.hub.attach(asyncio.get_running_loop())
        for job_id in server.store.recover():
            log.warning("job %s was running when the server stopped; it runs again", job_id)
        await asyncio.to_thread(server.retention.sweep)
        server.retention.start()
        server.dispatcher.start()
        try:
            yield
        finally:
            server.retention.stop()
            await asyncio.to_thread(server.dispatcher.stop, config.drain_timeout)
            server.store.close()

    app = FastAPI(title="nodeflow server", version=__version__, lifespan=lifespan,
                  description="Run nodeflow graphs (and ComfyUI prompts) as queued jobs. "
                              "See docs/server.md.")
    app.state.server = server
    _install_errors(app)

    @app.get("/api/health", tags=["server"])
    async def health() -> dict[str, Any]:
        """Is the server up; how many jobs wait and run."""
        return {"ok": True, "version": __version__, **server.queue_counts(),
                "workers": [w.name for w in server.dispatcher.workers],
                "last_event": server.store.last_seq()}

    @app.post("/api/jobs", status_code=202, response_model=JobAccepted, tags=["jobs"])
    async def submit_job(body: JobRequest, request: Request) -> Any:
        """Queue a job; returns its id at once. Events follow on the /api/events websocket."""
        key = body.idempotency_key or request.headers.get("idempotency-key")
        name = body.name or "graph"
        given = [k for k in ("graph", "workflow", "prompt") if getattr(body, k) is not None]
        if len(given) != 1:
            raise ApiError(400, "give exactly one of 'graph' (a nodeflow graph), 'workflow' or "
                           "'prompt' (ComfyUI)")

        def accept() -> tuple[Job, bool]:
            # One trip off the event loop: check, convert, validate and queue.
            earlier = server.store.by_key(key) if key else None
            if earlier is not None:
                return earlier, False  # a retry: nothing to check again
            if body.graph is not None:
                graph = server.build_graph(body.graph, name, body.set)
                kind, original = "graph", None
            else:
                from nodeflow.server.comfy import import_comfy

                original = body.workflow if body.workflow is not None else body.prompt
                graph = import_comfy(server, original, name, body.set)
                kind = "comfy"
            return server.submit(graph, kind=kind, outputs=body.outputs, request=original,
                                 client_id=body.client_id, idempotency_key=key)

        job, created = await asyncio.to_thread(accept)
        return JSONResponse({"id": job.id, "number": job.number, "state": job.state,
                             "created": created}, status_code=202 if created else 200)

    @app.get("/api/jobs", tags=["jobs"])
    async def list_jobs(state: str = Query("all", pattern="^(all|queue|history|queued|running|done|"
                                                            "failed|cancelled)$"),
                        limit: int = Query(50, ge=1, le=500), before: int | None = None) -> Any:
        """Jobs, oldest first for the queue and newest first for the history; page with
        ``before`` (the ``next`` of the previous page)."""
        states = {"all": (QUEUED, RUNNING, *FINAL_STATES), "queue": (RUNNING, QUEUED),
                  "history": FINAL_STATES}.get(state, (state,))
        newest_first = state not in ("queue", "queued", "running")
        jobs = server.store.jobs(tuple(states), limit=limit, before=before, newest_first=newest_first)
        return {"jobs": [j.to_json() for j in jobs],
                "next": jobs[-1].number if len(jobs) == limit else None}

    @app.get("/api/jobs/{job_id}", tags=["jobs"])
    async def get_job(job_id: str) -> Any:
        """One job: state, timings, errors located by node and socket, output files."""
        job = server.store.get(job_id)
        if job is None:
            raise ApiError(404, f"no job '{job_id}'", type_="not_found")
        return job.to_json()

    @app.post("/api/jobs/{job_id}/cancel", tags=["jobs"])
    async def cancel_job(job_id: str) -> Any:
        """Cancel a queued job, or stop a running one at its next cancellation point."""
        return server.cancel(job_id).to_json()

    @app.delete("/api/jobs/{job_id}", tags=["jobs"])
    async def delete_job(job_id: str) -> Any:
        """Cancel a job that is not finished; forget a finished one and delete its files."""
        job = server.store.get(job_id)
        if job is None:
            raise ApiError(404, f"no job '{job_id}'", type_="not_found")
        if job.state in FINAL_STATES:
            server.store.delete(job_id)
            await asyncio.to_thread(shutil.rmtree, config.output_dir / job_id, True)
            return {"id": job_id, "deleted": True}
        return server.cancel(job_id).to_json()

    @app.get("/api/jobs/{job_id}/files/{name:path}", tags=["jobs"])
    async def job_file(job_id: str, name: str) -> Any:
        """An output file of a job (files appear whole: they are written atomically)."""
        return FileResponse(server.job_file(job_id, name))

    @app.get("/api/jobs/{job_id}/events", tags=["jobs"])
    async def job_events(job_id: str, since: int = 0, limit: int = Query(1000, ge=1, le=10000)) -> Any:
        """A job's logged events after event number ``since`` (for clients that poll)."""
        events = server.store.events_since(since, job_id=job_id, limit=limit)
        return {"events": [e.to_json() for e in events]}

    @app.post("/api/uploads", tags=["files"])
    async def upload(file: UploadFile = File(...), subfolder: str = Form(""),  # noqa: B008
                     overwrite: bool = Form(False)) -> Any:  # noqa: B008
        """Upload an input picture (PNG, JPEG or WebP); graphs name it by the returned name."""
        data = await file.read()
        name = await asyncio.to_thread(server.save_upload, data, file.filename or "", subfolder,
                                       overwrite)
        return {"name": name}

    @app.get("/api/nodes", tags=["nodes"])
    async def node_types() -> Any:
        """Every node type with its full schema (as `nodeflow nodes --json`)."""
        return json.loads(json.dumps([t.to_json() for t in server.registry.types()], default=str))

    @app.get("/api/nodes/{type_id}", tags=["nodes"])
    async def node_type(type_id: str) -> Any:
        cls = server.registry.get(type_id)
        if cls is None:
            raise ApiError(404, f"no node type '{type_id}'", type_="not_found")
        return json.loads(json.dumps(cls.to_json(), default=str))

    @app.websocket("/api/events")
    async def events(ws: WebSocket, since: int | None = None, job: str | None = None) -> None:
        """Every event as JSON ``{"seq", "job", "time", "type", "data"}``. With ``since=N`` the
        logged events after N come first, so a client that reconnects misses nothing."""
        await ws.accept()
        await stream_events(server, ws, since, job)

    from nodeflow.server.comfy import install_comfy_routes

    install_comfy_routes(app, server)
    app.add_middleware(BodyLimit, limits=config.limits)
    if config.cors:
        from starlette.middleware.cors import CORSMiddleware

        app.add_middleware(CORSMiddleware, allow_origins=config.cors, allow_methods=["*"],
                           allow_headers=["*"])
    app.add_middleware(TokenGuard, token=config.token, cors=config.cors)
    return app


async def stream_events(server: Server, ws: WebSocket, since: int | None, job: str | None) -> None:
    listener = server.hub.subscribe()
    watcher = asyncio.create_task(listener.watch(ws))
    try:
        last = since if since is not None else server.store.last_seq()
        if since is not None:
            while True:  # the log first, in pages, then live events not yet sent
                backlog = await asyncio.to_thread(server.store.events_since, last, job_id=job)
                for event in backlog:
                    await ws.send_json(event.to_json())
                    last = event.seq or last
                if len(backlog) < 1000:
                    break
        while True:
            live = await listener.get()
            if live is None:
                if listener.overflowed:
                    await ws.close(code=1013, reason="too far behind; reconnect with since=")
                return
            if job is not None and live.job_id != job:
                continue
            if live.seq is not None:
                if live.seq <= last:
                    continue
                last = live.seq
            await ws.send_json(_event_json(live))
    except (WebSocketDisconnect, RuntimeError):
        pass
    finally:
        watcher.cancel()
        listener.close()


def _event_json(event: StoredEvent) -> dict[str, Any]:
    if event.type == "preview":
        data = dict(event.data)
        data["base64"] = base64.b64encode(data.pop("bytes")).decode("ascii")
        return {"seq": None, "job": event.job_id, "time": event.time, "type": "preview", "data": data}
    return event.to_json()


def _install_errors(app: FastAPI) -> None:
    """Every error is JSON ``{"error": {"type", "message", "problems"}}``; never a traceback."""

    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError) -> JSONResponse:
        return JSONResponse({"error": exc.body}, status_code=exc.status)

    @app.exception_handler(NodeflowError)
    async def nodeflow_error(request: Request, exc: NodeflowError) -> JSONResponse:
        return JSONResponse({"error": error_json(exc)}, status_code=400)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return JSONResponse({"error": {"type": "http", "message": str(exc.detail), "problems": []}},
                            status_code=exc.status_code)

    @app.exception_handler(RequestValidationError)
    async def bad_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        problems: list[dict[str, Any]] = []
        for err in exc.errors():
            where = ".".join(str(p) for p in err.get("loc", ()) if p != "body")
            problems.append({"code": "request", "message": f"{where}: {err.get('msg')}",
                             "file": None, "node": None, "node_type": None, "socket": None,
                             "line": None, "column": None})
        message = "the request is not valid: " + "; ".join(p["message"] for p in problems)
        return JSONResponse({"error": {"type": "bad_request", "message": message,
                                       "problems": problems}}, status_code=400)

    @app.exception_handler(Exception)
    async def internal(request: Request, exc: Exception) -> JSONResponse:
        log.exception("internal error on %s", request.url.path)
        return JSONResponse({"error": {"type": "internal", "message": "internal server error; the "
                                       "server log has the details", "problems": []}}, status_code=500)


__all__ = ["ApiError", "Server", "ServerConfig", "create_app"]
