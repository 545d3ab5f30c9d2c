"""A nodeflow worker: one long-lived executor and model manager, run as a Ray actor.

The class is plain Python (Ray wraps it in `nodeflow.cluster.driver`), so this module does
not import Ray. The driver sends job specs (a graph as JSON text, the outputs wanted,
the input pictures' bytes); the worker sends back events, output files as bytes, and what
models it holds. Nothing else is shared.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import socket
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

MODEL_KINDS_EXCLUDED = ("image", "file")
"""Path kinds that are not model files (pictures travel with the job)."""


@dataclass(frozen=True)
class WorkerConfig:
    """How to build a worker: node packs, models folders and the model manager's options."""

    plugins: list[str] = field(default_factory=list)
    models: list[str] = field(default_factory=list)
    devices: str | None = None
    vram_budget: str | None = None
    ram_budget: str | None = None
    dtype: str | None = None
    node_workers: int | None = None
    """Nodes one job may run at once (``--workers``)."""
    folders: dict[str, list[str]] = field(default_factory=dict)
    """Extra model folders per kind, searched first (ComfyUI's)."""
    allowed_dirs: list[str] | None = None
    """The only folders besides the models an untrusted graph may read; None: any."""
    threads: int | None = None
    """torch threads per computation. The thread count changes the last bits of CPU
    results, so the driver gives its own local count: a job's bytes match a local run."""


def path_inputs(graph: Any, registry: Any) -> Iterator[tuple[Any, Any, str]]:
    """Every input of a graph that names a file: (node, its declared input, the name given)."""
    for node in graph:
        cls = registry.get(node.type)
        if cls is None:
            continue
        for spec in cls.inputs:
            value = node.inputs.get(spec.name, spec.default if spec.has_default else None)
            if spec.path_kind and isinstance(value, str) and value:
                yield node, spec, value


def model_refs(graph: Any, registry: Any) -> list[tuple[str, str, str, str, str]]:
    """Every model file a graph names: (node, node type, input, models subfolder, value)."""
    return [(node.id, node.type, spec.name, spec.path_kind, value)
            for node, spec, value in path_inputs(graph, registry)
            if spec.path_kind not in MODEL_KINDS_EXCLUDED]


def input_files(graph: Any, registry: Any, settings: Any) -> dict[tuple[str, str], Path]:
    """The pictures (and other files that are not models) a graph reads, found by the rules
    of ``settings``: (node, input) -> the file. They travel with a job; models never do."""
    out = {}
    for node, spec, value in path_inputs(graph, registry):
        if spec.path_kind in MODEL_KINDS_EXCLUDED:
            found = settings.resolve_path(spec.path_kind, value)
            if found is not None:
                out[(node.id, spec.name)] = found.resolve()
    return out


def model_key(kind: str, value: str) -> str:
    """How the scheduler names a model: its subfolder and the name the graph gives it."""
    return f"{kind}:{value}"


def problem_json(error: Any) -> dict[str, Any]:
    """A located nodeflow error as the JSON of a validation problem (what `nodeflow serve`
    reports; its `error_json` is made from this)."""
    from nodeflow.errors import with_hint

    loc = error.location
    code = "".join("_" + c.lower() if c.isupper() else c for c in type(error).__name__).lstrip("_")
    message = with_hint(error.message, error.hint)
    return {"code": code, "message": message, "file": loc.file, "node": loc.node,
            "node_type": loc.node_type, "socket": loc.socket, "line": loc.line,
            "column": loc.column}


class NodeflowWorker:
    """One worker process: an executor kept across jobs, reporting events and model loads."""

    def __init__(self, name: str, config: WorkerConfig) -> None:
        # Before anything can import huggingface_hub: a worker never reaches for a model hub.
        for key in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_HUB_DISABLE_TELEMETRY"):
            os.environ.setdefault(key, "1")
        from nodeflow.devices import parse_size
        from nodeflow.executor import Executor
        from nodeflow.models import ModelManager
        from nodeflow.registry import load_registry
        from nodeflow.settings import Settings

        self.name = name
        self.registry = load_registry(config.plugins)
        self.scratch = Path(tempfile.mkdtemp(prefix=f"nodeflow-{name}-"))
        self.settings = Settings.from_env(config.models)
        self.settings.folders = {kind: [Path(d) for d in dirs] for kind, dirs in config.folders.items()}
        if config.allowed_dirs is not None:  # pictures sent with a job land in the scratch folder
            self.settings.allowed_dirs = [*(Path(d) for d in config.allowed_dirs),
                                          self.scratch / "pictures"]
        self.models = ModelManager(
            config.devices.split(",") if config.devices else None,
            vram_budget=parse_size(config.vram_budget) if config.vram_budget else None,
            ram_budget=parse_size(config.ram_budget) if config.ram_budget else None,
            dtype=config.dtype)
        self.executor = Executor(self.registry, self.settings, workers=config.node_workers,
                                 models=self.models, threads=config.threads)
        self._events: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._cancel: Any = None
        self._resolved: dict[str, str] = {}
        """Model key → the resolved file, for every model a job of this worker named."""

    # --- called by the driver ------------------------------------------------------
    def identity(self) -> dict[str, Any]:
        """Where this worker runs: its node address, host name and process id."""
        try:
            import ray

            node_id = ray.get_runtime_context().get_node_id()
        except Exception:  # noqa: BLE001 - outside Ray
            node_id = ""
        return {"worker": self.name, "node_id": node_id, "host": socket.gethostname(),
                "pid": os.getpid(), "device": self.models.device}

    def check_models(self, refs: list[tuple[str, str, str, str, str, str | None]]) -> list[dict[str, Any]]:
        """The model files (node, type, input, kind, value, graph file) not found on this node."""
        missing = []
        for node, node_type, socket_name, kind, value, file in refs:
            if self.settings.resolve_path(kind, value) is None:
                missing.append({"node": node, "type": node_type, "socket": socket_name,
                                "file": file, "value": value,
                                "message": self.settings.describe_search(kind, value)})
        return missing

    def run_job(self, job: dict[str, Any]) -> dict[str, Any]:
        """Run one job; return its status, located error, output files (bytes) and model state."""
        from nodeflow.errors import GraphInvalid, NodeflowError
        from nodeflow.events import CancelToken
        from nodeflow.graph import Graph
        from nodeflow.sweeps.runner import node_event_json

        name = job["name"]
        graph = Graph.loads(job["graph"], job.get("file"))
        for (node_id, socket_name), picture in job.get("pictures", {}).items():
            graph.set_input(node_id, socket_name, self._picture(picture))
        out_dir = self.scratch / "jobs" / f"{name}-{job['attempt']}"
        if out_dir.exists():
            shutil.rmtree(out_dir)
        out_dir.mkdir(parents=True)
        self.executor.settings = replace(self.settings, out_dir=out_dir)
        self._cancel = CancelToken()
        loads = self.models.loads

        def on_event(event: Any) -> None:
            data = node_event_json(event)
            if data is not None:
                if "files" in data:  # paths inside this worker's scratch folder mean nothing
                    data["files"] = [str(Path(f).relative_to(out_dir)) for f in data["files"]]
                if data["event"] == "node_failed":
                    data["problem"] = problem_json(event.error)
                with self._lock:
                    self._events.append(data)

        started = time.perf_counter()
        status, error, problems = "ok", None, []
        try:
            result = self.executor.run(graph, job.get("outputs"), on_event=on_event,
                                       cancel=self._cancel)
            if result.cancelled:
                status = "cancelled"
            elif result.failed:
                status, error = "failed", "; ".join(str(e) for e in result.failed.values())
                problems = [problem_json(e) for e in result.failed.values()]
        except GraphInvalid as exc:
            status, error = "failed", str(exc)
            problems = [p.to_json() for p in exc.problems]
        except NodeflowError as exc:
            status, error, problems = "failed", str(exc), [problem_json(exc)]
        finally:
            self.executor.settings = self.settings
        files = []
        if status == "ok":
            for path in sorted(p for p in out_dir.rglob("*") if p.is_file()):
                files.append((path.relative_to(out_dir).as_posix(), path.read_bytes()))
        shutil.rmtree(out_dir, ignore_errors=True)
        for ref in job.get("models", []):
            kind, _, value = ref.partition(":")
            found = self.settings.resolve_path(kind, value)
            if found is not None:
                self._resolved[ref] = str(found.resolve())
        return {"status": status, "error": error, "problems": problems, "files": files,
                "events": self.take_events(),
                "seconds": time.perf_counter() - started, "loads": self.models.loads - loads,
                "holds": self.holds()}

    def take_events(self) -> list[dict[str, Any]]:
        """The events since the last call (the driver polls while a job runs)."""
        with self._lock:
            events, self._events = self._events, []
        return events

    def cancel(self) -> None:
        """Cancel the running job between steps (Ctrl-C on the driver)."""
        if self._cancel is not None:
            self._cancel.cancel()

    def holds(self) -> list[str]:
        """The model keys whose files this worker's model manager holds now."""
        loaded = {str(m.path.resolve()) for m in self.models.loaded() if m.path is not None}
        return sorted(ref for ref, path in self._resolved.items() if path in loaded)

    def stats(self) -> dict[str, Any]:
        return {"loads": self.models.loads, "holds": self.holds()}

    def close(self) -> None:
        """Stop the executor's threads and remove the scratch folder (the driver kills the
        actor; a worker used in-process is closed)."""
        self.executor.close()
        shutil.rmtree(self.scratch, ignore_errors=True)

    # --- helpers -------------------------------------------------------------------
    def _picture(self, picture: dict[str, Any]) -> str:
        """The local path of an input picture sent with a job.

        The driver's own path is used when it holds the same bytes here (one machine, or
        shared storage), so the graph embedded in the outputs is the same as a local run's;
        otherwise the picture is written into this worker's scratch folder.
        """
        data: bytes = picture["data"]
        digest = hashlib.sha256(data).hexdigest()
        original = Path(picture["path"])
        try:
            if original.is_file() and original.stat().st_size == len(data) and \
                    hashlib.sha256(original.read_bytes()).hexdigest() == digest:
                return str(original)
        except OSError:
            pass
        target = self.scratch / "pictures" / digest[:16] / original.name
        if not target.exists():
            from nodeflow.files import atomic_write

            atomic_write(target, data)
        return str(target)
