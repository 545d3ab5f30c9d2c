"""``nodeflow serve --ray ADDRESS``: the job server's workers as Ray actors.

Each `RayServerWorker` implements the server's worker protocol (``name``, ``run``,
``close``; see `nodeflow.server.worker`) around one long-lived `NodeflowWorker` actor:
the server keeps its queue, history and events; the actor holds the models. A job's
input pictures go with it, its files come back and are written atomically into the
job's output folder. If the actor is lost mid-job, a new one is started and the job runs
again on it (up to `ATTEMPTS` times), so the server sees one outcome per job.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from nodeflow.cluster.worker import NodeflowWorker, WorkerConfig, input_files

ATTEMPTS = 3
"""Times a job is started on a fresh actor after losing the previous one."""
POLL = 0.2


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """``--ray`` and ``--ray-workers`` of ``nodeflow serve``."""
    parser.add_argument("--ray", metavar="auto|ADDRESS", default=None,
                        help="run the jobs on Ray workers (auto: RAY_ADDRESS or a cluster on this "
                             "machine); needs pip install 'nodeflow[ray]'")
    parser.add_argument("--ray-workers", metavar="N", type=int, default=None,
                        help="Ray workers (default: one per GPU, else one per machine)")


def ray_server_workers(args: argparse.Namespace, config: Any) -> list[RayServerWorker]:
    """Connect to Ray and start the server's workers there (each checked to be up)."""
    from nodeflow.cluster.driver import START_TIMEOUT, ClusterError, connect, plan_workers
    from nodeflow.errors import UsageError

    if args.ray_workers is not None and args.ray_workers < 1:
        raise UsageError("--ray-workers must be at least 1")
    connect(args.ray)
    count, options, _ = plan_workers(args.ray_workers)
    folders = {kind: [str(Path(d).resolve()) for d in dirs]
               for kind, dirs in getattr(config, "model_folders", {}).items()}
    # Jobs come from requests: the actors read pictures only from the server's input folder
    # (or the copy sent with the job) and models only from the models folders.
    plugins = getattr(args, "plugins", [])
    from nodeflow.threads import default_threads, requested_threads

    worker_config = WorkerConfig(plugins=[str(Path(d).expanduser().resolve()) for d in plugins],
                                 models=[str(Path(d).resolve()) for d in config.models_dirs],
                                 folders=folders, allowed_dirs=[str(config.input_dir.resolve())],
                                 threads=requested_threads(None) or default_threads(),
                                 vram_budget=_size(getattr(config, "vram_budget", None)),
                                 ram_budget=_size(getattr(config, "ram_budget", None)))
    workers = [RayServerWorker(f"ray:w{i}", config.registry, worker_config, config.input_dir,
                               options) for i in range(count)]
    try:
        for worker in workers:
            worker.wait_ready(START_TIMEOUT)
    except ClusterError:
        for worker in workers:
            worker.close()
        raise
    return workers


def _size(n: int | None) -> str | None:
    """A budget in bytes as the worker's configuration writes sizes."""
    return None if n is None else str(n)


class RayServerWorker:
    """A server worker whose jobs run in a Ray actor (a `NodeflowWorker`)."""

    def __init__(self, name: str, registry: Any, config: WorkerConfig, input_dir: Path,
                 options: dict[str, Any]) -> None:
        self.name = name
        self.registry = registry
        self.config = config
        self.input_dir = input_dir
        self.options = options
        self.loads = 0
        self._holds: set[str] = set()
        self.node = ""
        self.actor: Any = None
        self._ready: Any = None
        self._start()

    def _start(self) -> None:
        import ray

        actor_class: Any = ray.remote(NodeflowWorker).options(**self.options)
        self.actor = actor_class.remote(self.name, self.config)
        self._ready = self.actor.identity.remote()

    def wait_ready(self, timeout: float) -> None:
        """Wait until the actor is up; raise `ClusterError` if it cannot start."""
        import ray

        from nodeflow.cluster.driver import ClusterError, _ray_cause

        ready, _ = ray.wait([self._ready], timeout=timeout)
        if not ready:
            raise ClusterError(f"Ray worker {self.name} did not start within {timeout:.0f} s: "
                               f"the cluster lacks the resources it needs ({self.options})",
                               hint="Give fewer --ray-workers, or add machines.")
        try:
            identity = ray.get(self._ready)
        except ray.exceptions.RayError as exc:
            raise ClusterError(f"Ray worker {self.name} could not start: {_ray_cause(exc)}") from None
        self.node = f"{identity['host']} ({identity['device']})"

    def holds(self) -> set[str]:
        """The models (``kind:name``) the actor held after its last job."""
        return set(self._holds)

    def close(self) -> None:
        import ray

        if self.actor is not None:
            try:
                ray.kill(self.actor)
            except Exception:  # noqa: BLE001 - already gone
                pass
            self.actor = None

    def run(self, job: Any, emit: Any, cancel: Any) -> Any:
        """Run a server job (`nodeflow.server.worker.JobSpec`) on the actor; a lost actor is
        replaced and the job started again."""
        import ray

        from nodeflow.server.store import FAILED
        from nodeflow.server.worker import JobOutcome

        for attempt in range(1, ATTEMPTS + 1):
            try:
                return self._run_once(job, emit, cancel, attempt)
            except ray.exceptions.RayActorError as exc:
                from nodeflow.cluster.driver import _ray_cause

                self._holds = set()  # a new actor holds nothing
                emit("worker_lost", {"worker": self.name, "attempt": attempt,
                                     "reason": _ray_cause(exc)})
                self.close()
                self._start()
        return JobOutcome(FAILED, error={
            "type": "worker_lost", "problems": [],
            "message": f"the Ray worker running this job was lost {ATTEMPTS} times"})

    def _run_once(self, job: Any, emit: Any, cancel: Any, attempt: int) -> Any:
        import ray

        from nodeflow.files import atomic_write
        from nodeflow.graph import Graph
        from nodeflow.server.store import CANCELLED, DONE, FAILED
        from nodeflow.server.worker import JobOutcome

        graph = Graph.loads(job.graph)
        spec = {"name": job.id, "graph": job.graph, "file": None, "outputs": job.outputs,
                "pictures": self._pictures(graph, job.out_dir), "models": list(job.models),
                "attempt": attempt}
        ref = self.actor.run_job.remote(spec)
        cancelled = False
        while True:
            done, _ = ray.wait([ref], timeout=POLL)
            if cancel.cancelled and not cancelled:
                cancelled = True
                self.actor.cancel.remote()
            if done:
                break
            try:
                events = ray.get(self.actor.take_events.remote(), timeout=10)
            except (ray.exceptions.RayError, TimeoutError):
                continue  # the job's own result says what happened
            self._forward(events, emit)
        answer = ray.get(ref)
        self._forward(answer["events"], emit)
        self.loads += answer["loads"]
        self._holds = set(answer["holds"])
        files = []
        for rel, data in answer["files"]:
            target = (job.out_dir / rel).resolve()
            if not target.is_relative_to(job.out_dir.resolve()):
                continue  # a name leaving the job's folder is never written
            atomic_write(target, data)
            files.append(rel)
        summary = {"files": files, "values": {}, "worker": self.name, "loads": answer["loads"],
                   "seconds": round(answer["seconds"], 6)}
        if answer["status"] == "cancelled":
            return JobOutcome(CANCELLED, summary)
        if answer["status"] == "failed":
            problems = answer.get("problems", [])
            return JobOutcome(FAILED, summary, {"type": "node_failed", "problems": problems,
                                                "message": answer["error"]})
        return JobOutcome(DONE, summary)

    @staticmethod
    def _forward(events: list[dict[str, Any]], emit: Any) -> None:
        for data in events:
            data = dict(data)
            kind = data.pop("event")
            if kind == "node_failed" and "problem" in data:
                data = {"node": data["node"], "type": data["type"], "error": data["problem"]}
            emit(kind, data)

    def _pictures(self, graph: Any, out_dir: Path) -> dict[tuple[str, str], dict[str, Any]]:
        """The job's input pictures, found by the server's own rules (its input folder only)."""
        from nodeflow.server.safety import ServerSettings

        settings = ServerSettings(models_dirs=[], out_dir=out_dir, input_dir=self.input_dir)
        return {key: {"path": str(found), "data": found.read_bytes()}
                for key, found in input_files(graph, self.registry, settings).items()}
