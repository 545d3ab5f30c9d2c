"""Who runs the jobs: workers behind a small protocol, and the dispatcher that feeds them.

A `Worker` runs one job at a time and reports events through a callback. The
built-in `LocalWorker` keeps one long-lived `Executor` (with its model manager
and cache) for one device; another pool (Ray actors, say) plugs in by
implementing the same three members. The `Dispatcher` gives each worker a
thread that claims the oldest queued job from the store, runs it, and records
how it ended; it also cancels, and drains on shutdown.
"""

from __future__ import annotations

import functools
import io
import logging
import shutil
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from nodeflow import events as ev
from nodeflow.errors import GraphInvalid, NodeflowError
from nodeflow.events import CancelToken
from nodeflow.graph import Graph
from nodeflow.registry import NodeRegistry
from nodeflow.server.hub import EventHub
from nodeflow.server.safety import ServerSettings
from nodeflow.server.store import CANCELLED, DONE, FAILED, Choose, Job, JobStore, StoredEvent

log = logging.getLogger("nodeflow.server")

PREVIEW_INTERVAL = 0.1
"""Seconds between two previews of one node sent to clients."""
PREVIEW_SIZE = 256
"""Longest side of a preview picture, in pixels."""

POLICIES = ("affinity", "oldest")
"""How the dispatcher picks a free worker's job: model affinity, or the oldest (to compare)."""

EventCallback = Callable[[str, dict[str, Any]], None]
"""``emit(type, data)``: an event of the running job. ``type == "preview"`` is not logged."""


@dataclass
class JobSpec:
    """What a worker needs to run a job: no Python objects beyond plain data."""

    id: str
    graph: str
    """The graph, as graph-file JSON."""
    outputs: list[str] | None
    out_dir: Path
    """Where the job's files go (named by the job: one folder per job)."""
    models: list[str] = field(default_factory=list)
    """The model files the graph names, as ``kind:name`` (see `model_key`)."""


@dataclass
class JobOutcome:
    """How a job ended."""

    state: str
    """`DONE`, `FAILED` or `CANCELLED`."""
    result: dict[str, Any] = field(default_factory=dict)
    error: dict[str, Any] | None = None


class Worker(Protocol):
    """Runs jobs, one at a time. A pool of remote workers implements this too.

    A worker may also have ``holds() -> set[str]``, the models (``kind:name``) it holds now:
    the dispatcher then gives it the queued jobs that need them (model affinity)."""

    name: str

    def run(self, job: JobSpec, emit: EventCallback, cancel: CancelToken) -> JobOutcome:
        """Run the job to its end (or until ``cancel`` is set); never raises for a job's fault."""

    def close(self) -> None:
        """Let go of models and threads."""


def error_json(exc: NodeflowError) -> dict[str, Any]:
    """A nodeflow error as JSON: the message and every located problem, as `nodeflow validate`
    reports them."""
    if isinstance(exc, GraphInvalid):
        return {"type": "graph_invalid", "message": exc.message,
                "problems": [p.to_json() for p in exc.problems]}
    from nodeflow.cluster.worker import problem_json

    problem = problem_json(exc)
    return {"type": problem["code"], "message": str(exc), "problems": [problem]}


class LocalWorker:
    """One long-lived executor on one device (its models and cache stay between jobs)."""

    def __init__(self, registry: NodeRegistry, models_dirs: list[Path], input_dir: Path, *,
                 device: str | None = None, models: Any = None, workers: int | None = None,
                 folders: dict[str, list[Path]] | None = None) -> None:
        from nodeflow.executor import Executor

        self.name = f"local:{device or 'default'}"
        self.registry = registry
        self.models_dirs = list(models_dirs)
        self.input_dir = input_dir
        self.folders = dict(folders or {})
        self.executor = Executor(registry, self._settings(input_dir), models=models, workers=workers)
        self._resolved: dict[str, str] = {}
        """Model key -> the file it resolved to, for every model a job of this worker named."""

    def _settings(self, out_dir: Path) -> ServerSettings:
        return ServerSettings(models_dirs=self.models_dirs, out_dir=out_dir, input_dir=self.input_dir,
                              folders=self.folders)

    def close(self) -> None:
        self.executor.close()

    def check_memory(self, graph: Graph, outputs: list[str] | None) -> None:
        """Raise `ModelError` (located, with what to try) when a node the job needs can never
        fit this worker's device: the check a run makes before anything runs, made when the
        job is submitted. Everything the job needs is planned, as if nothing were cached."""
        from nodeflow.cache import OutputCache
        from nodeflow.memory_plan import check_plan_memory, estimate_plan_memory
        from nodeflow.plan import plan_execution

        settings = self._settings(self.input_dir)
        plan = plan_execution(graph, self.registry, OutputCache(), outputs, settings=settings)
        if not any(plan.classes[n].uses_accelerator for n in plan.to_run):
            return
        models = self.executor.models
        devices = list(models.devices)
        estimates = estimate_plan_memory(graph, plan, settings, models.dtype_name, devices[0].name)
        check_plan_memory(graph, plan, estimates, devices, models.dtype_override)

    def holds(self) -> set[str]:
        """The models (``kind:name``) this worker's model manager holds now."""
        loaded = {str(m.path.resolve()) for m in self.executor.models.loaded() if m.path is not None}
        return {key for key, path in self._resolved.items() if path in loaded}

    def run(self, job: JobSpec, emit: EventCallback, cancel: CancelToken) -> JobOutcome:
        graph = Graph.loads(job.graph)
        settings = self._settings(job.out_dir)
        # One executor serves every job; each job writes into its own folder.
        self.executor.settings = settings
        previews: dict[str, float] = {}
        loads = self.executor.models.loads
        for key in job.models:
            kind, _, name = key.partition(":")
            found = settings.resolve_path(kind, name)
            if found is not None:
                self._resolved[key] = str(found.resolve())

        def on_event(event: ev.Event) -> None:
            try:
                _forward(event, emit, job.out_dir, previews)
            except Exception:  # noqa: BLE001 - a listener's fault must not fail the job
                log.exception("could not report an event of job %s", job.id)

        try:
            result = self.executor.run(graph, job.outputs, on_event=on_event, cancel=cancel)
        except NodeflowError as exc:
            return JobOutcome(FAILED, error=error_json(exc))
        files = [_relative(p, job.out_dir) for p in result.files]
        values = _values(result.outputs, job.out_dir, job.outputs) if job.outputs else {}
        summary: dict[str, Any] = {"files": files, "values": values, "ran": result.ran, "cached": result.cached,
                   "skipped": result.skipped,
                   "node_seconds": {k: round(v, 6) for k, v in result.timings.items()},
                   "worker": self.name, "loads": self.executor.models.loads - loads}
        for name in values.get("_files", []):
            summary["files"].append(name)
        values.pop("_files", None)
        if result.cancelled:
            return JobOutcome(CANCELLED, summary)
        if result.failed:
            problems = [error_json(e)["problems"][0] for e in result.failed.values()]
            count = len(problems)
            return JobOutcome(FAILED, summary, {
                "type": "node_failed", "problems": problems,
                "message": f"{count} node{'s' if count != 1 else ''} failed: "
                           + "; ".join(str(e) for e in result.failed.values())})
        return JobOutcome(DONE, summary)


def _holds(worker: Worker) -> set[str]:
    holds = getattr(worker, "holds", None)
    try:
        return set(holds()) if holds is not None else set()
    except Exception:  # noqa: BLE001 - a worker that cannot tell holds nothing we know of
        log.exception("worker %s could not say which models it holds", worker.name)
        return set()


def _relative(path: Path, root: Path) -> str:
    try:
        return Path(path).resolve().relative_to(root.resolve()).as_posix()
    except ValueError:
        return Path(path).name


def _forward(event: ev.Event, emit: EventCallback, out_dir: Path, previews: dict[str, float]) -> None:
    """Turn an executor event into a JSON-able server event."""
    if isinstance(event, ev.RunStarted):
        emit("run_started", {"to_run": event.to_run, "cached": event.cached})
    elif isinstance(event, ev.NodeStarted):
        emit("node_started", {"node": event.node, "type": event.type})
    elif isinstance(event, ev.NodeCached):
        emit("node_cached", {"node": event.node, "type": event.type})
    elif isinstance(event, ev.NodeProgress):
        emit("node_progress", {"node": event.node, "done": event.done, "total": event.total,
                               "message": event.message})
    elif isinstance(event, ev.NodePreview):
        now = time.monotonic()
        if now - previews.get(event.node, 0.0) < PREVIEW_INTERVAL:
            return
        previews[event.node] = now
        jpeg = preview_jpeg(event.image)
        if jpeg is not None:
            emit("preview", {"node": event.node, "mime": "image/jpeg", "bytes": jpeg})
    elif isinstance(event, ev.NodeFinished):
        emit("node_finished", {"node": event.node, "type": event.type,
                               "seconds": round(event.seconds, 6),
                               "files": [_relative(p, out_dir) for p in event.files]})
    elif isinstance(event, ev.NodeFailed):
        emit("node_failed", {"node": event.node, "type": event.type,
                             "error": error_json(event.error)["problems"][0]})
    elif isinstance(event, ev.NodeSkipped):
        emit("node_skipped", {"node": event.node, "type": event.type, "reason": event.reason})


def preview_jpeg(image: Any) -> bytes | None:
    """The first picture of an IMAGE batch as a small JPEG."""
    from nodeflow.imaging import image_to_pils

    try:
        pictures = image_to_pils(image[:1])
    except Exception:  # noqa: BLE001 - a malformed preview is skipped, not fatal
        return None
    if not pictures:
        return None
    picture = pictures[0].convert("RGB")
    picture.thumbnail((PREVIEW_SIZE, PREVIEW_SIZE))
    buffer = io.BytesIO()
    picture.save(buffer, format="JPEG", quality=85)
    return buffer.getvalue()


def _values(outputs: dict[str, dict[str, Any]], out_dir: Path, wanted: Sequence[str]) -> dict[str, Any]:
    """Values of the requested nodes: numbers and text as they are, pictures as PNG files."""
    from nodeflow.files import atomic_write
    from nodeflow.imaging import image_to_pils

    values: dict[str, Any] = {}
    written: list[str] = []
    for node in wanted:
        for socket, value in outputs.get(node, {}).items():
            if isinstance(value, bool | int | float | str) or value is None:
                values.setdefault(node, {})[socket] = value
            elif _is_image(value):
                names = []
                for i, picture in enumerate(image_to_pils(value)):
                    buffer = io.BytesIO()
                    picture.save(buffer, format="PNG", compress_level=4)
                    name = f"{node}.{socket}.{i}.png"
                    atomic_write(out_dir / name, buffer.getvalue())
                    names.append(name)
                written += names
                values.setdefault(node, {})[socket] = {"images": names}
            else:
                values.setdefault(node, {})[socket] = {"kind": type(value).__name__}
    if written:
        values["_files"] = written
    return values


def _is_image(value: Any) -> bool:
    shape = getattr(value, "shape", None)
    return shape is not None and len(shape) == 4 and shape[-1] in (1, 3, 4)


class Dispatcher:
    """Feeds queued jobs to workers, one thread per worker; cancels; drains on shutdown."""

    def __init__(self, store: JobStore, hub: EventHub, workers: Sequence[Worker], output_dir: Path,
                 policy: str = "affinity") -> None:
        if policy not in POLICIES:
            raise ValueError(f"unknown dispatch policy {policy!r} (choose from {POLICIES})")
        self.policy = policy
        self.store = store
        self.hub = hub
        self.workers = list(workers)
        self.output_dir = output_dir
        self._wake = threading.Condition()
        self._stopping = False
        self._threads: list[threading.Thread] = []
        self._running: dict[str, tuple[CancelToken, list[bool]]] = {}
        """Running job id -> its cancel token and a flag: re-queue instead of cancel."""
        self._loading: dict[str, frozenset[str]] = {}
        """Worker name -> the models of the job it runs (it will hold them)."""
        self._passed = ("", 0)
        """The oldest queued job and how often a worker took another job before it."""
        self._lock = threading.Lock()
        self.idle = threading.Event()

    def start(self) -> None:
        for worker in self.workers:
            thread = threading.Thread(target=self._loop, args=(worker,), daemon=True,
                                      name=f"nodeflow-{worker.name}")
            thread.start()
            self._threads.append(thread)

    def notify(self) -> None:
        """A job was queued: wake an idle worker."""
        with self._wake:
            self._wake.notify_all()

    def running_ids(self) -> list[str]:
        with self._lock:
            return list(self._running)

    def cancel(self, job_id: str) -> bool:
        """Cancel a running job (it stops at its next cancellation point)."""
        with self._lock:
            entry = self._running.get(job_id)
        if entry is None:
            return False
        entry[0].cancel()
        return True

    def hurry(self) -> None:
        """Stop the running jobs now and put them back in the queue (a second Ctrl-C)."""
        with self._lock:
            for token, requeue in self._running.values():
                requeue[0] = True
                token.cancel()

    def stop(self, timeout: float) -> None:
        """Stop taking jobs; let running ones finish for ``timeout`` seconds, then stop them and
        put them back in the queue, so the next start runs them again."""
        with self._wake:
            self._stopping = True
            self._wake.notify_all()
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        self.hurry()
        for thread in self._threads:
            thread.join(30.0)
        for worker in self.workers:
            worker.close()

    def _loop(self, worker: Worker) -> None:
        while True:
            with self._wake:
                if self._stopping:
                    return
            claimed: list[Job] = []
            self.hub.commit(functools.partial(self._claim, worker, claimed))
            if not claimed:
                with self._wake:
                    if self._stopping:
                        return
                    self._wake.wait(0.5)
                continue
            try:
                self._run(worker, claimed[0])
            except Exception:  # noqa: BLE001 - the worker thread must survive any job
                log.exception("job %s could not be recorded", claimed[0].id)

    def _claim(self, worker: Worker, claimed: list[Job]) -> StoredEvent | None:
        got = self.store.claim(worker.name, self._chooser(worker))
        if got is None:
            return None
        job, event = got
        claimed.append(job)
        self.hub.remember_client(job.id, job.client_id)
        with self._lock:
            self._running[job.id] = (CancelToken(), [False])
            self._loading[worker.name] = frozenset(job.models)
        return event

    def _chooser(self, worker: Worker) -> Choose | None:
        """Model affinity: the free worker takes a queued job whose models it holds, else one
        whose models no other worker holds or is loading, else the oldest (`choose_job`). So
        that no job waits for ever, once the oldest job has been passed over twice per worker
        it goes next. None (the oldest job) when no worker can say what it holds."""
        from nodeflow.cluster.scheduler import choose_job

        if self.policy == "oldest" or not any(hasattr(w, "holds") for w in self.workers):
            return None
        with self._lock:
            others = [_holds(w) | self._loading.get(w.name, frozenset())
                      for w in self.workers if w is not worker]
        holds = _holds(worker)
        limit = 2 * len(self.workers)

        def choose(waiting: list[tuple[str, list[str]]]) -> str:
            head = waiting[0][0]
            job_id = waiting[choose_job([frozenset(m) for _, m in waiting], holds, others)][0]
            if job_id != head:
                passes = self._passed[1] + 1 if self._passed[0] == head else 1
                if passes > limit:
                    job_id, passes = head, 0
                self._passed = (head, passes)
            return job_id

        return choose

    def _run(self, worker: Worker, job: Job) -> None:
        out_dir = self.output_dir / job.id
        # A job that ran before a crash starts over: its earlier files go.
        shutil.rmtree(out_dir, ignore_errors=True)
        out_dir.mkdir(parents=True, exist_ok=True)
        with self._lock:
            token, requeue = self._running[job.id]

        def emit(type_: str, data: dict[str, Any]) -> None:
            self.hub.publish(job.id, type_, data, persist=type_ != "preview")

        try:
            outcome = worker.run(JobSpec(job.id, job.graph, job.outputs, out_dir, job.models),
                                 emit, token)
        except Exception as exc:  # noqa: BLE001 - a bug in a node or a worker fails one job
            log.exception("job %s failed unexpectedly", job.id)
            outcome = JobOutcome(FAILED, error={
                "type": "internal", "problems": [],
                "message": f"the job failed unexpectedly ({type(exc).__name__}: {exc}); "
                           "the server log has the details"})
        finally:
            with self._lock:
                self._running.pop(job.id, None)
                self._loading.pop(worker.name, None)
        if requeue[0]:
            self.hub.commit(lambda: self.store.requeue(job.id, "the server is shutting down"))
            return
        data: dict[str, Any] = {"files": outcome.result.get("files", [])}
        if outcome.error is not None:
            data["error"] = outcome.error
        self.hub.commit(lambda: self.store.finish(job.id, outcome.state, outcome.result,
                                                  outcome.error, data))
