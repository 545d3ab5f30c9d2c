"""Running a sweep on a Ray cluster: long-lived workers, model affinity, no job lost.

The driver (the ``nodeflow run --ray`` process) connects to Ray, starts one
`NodeflowWorker` actor per GPU (or per machine, on CPUs), has every worker check that the
model files exist on its node before any job runs, then hands out jobs with the
`JobScheduler`. Input pictures travel with each job; output files come back as bytes and
are written by the driver into the output folder, atomically, under the job's name. A
worker lost mid-job (its actor killed, its machine gone) gives its job to another worker;
a job that fails on its own is reported once with its located error.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Any

from nodeflow.cluster.scheduler import JobScheduler, WorkerSlot
from nodeflow.cluster.worker import NodeflowWorker, WorkerConfig, input_files, model_key, model_refs
from nodeflow.errors import GraphInvalid, Location, NodeflowError, Problem, UsageError
from nodeflow.events import CancelToken
from nodeflow.graph import Graph
from nodeflow.settings import Settings
from nodeflow.sweeps.runner import (
    PreparedJob,
    SweepEvent,
    SweepResult,
    SweepSink,
    WorkerStats,
    start_sweep,
    validate_jobs,
)
from nodeflow.sweeps.spec import Job

START_TIMEOUT = 180.0
"""Seconds to wait for the workers to start (a cluster without the resources never would)."""
POLL = 0.2
"""Seconds between progress polls of the busy workers."""
GROW_INTERVAL = 2.0
"""Seconds between two looks for lost workers to replace and new machines to use."""


class ClusterError(NodeflowError):
    """The Ray cluster cannot run the sweep (not reachable, no resources, every worker lost)."""


@dataclass(frozen=True)
class ClusterOptions(WorkerConfig):
    """Where and how to run: the Ray address, how many workers and how to choose their jobs,
    and (the `WorkerConfig` fields) what each worker loads."""

    address: str = "auto"
    workers: int | None = None
    policy: str = "affinity"
    """``affinity`` (default) or ``round-robin`` (for comparison)."""

    def worker_config(self) -> WorkerConfig:
        """What each worker is built from. ``threads`` defaults to what a local run here uses
        (``--threads``, ``NODEFLOW_THREADS``, ``OMP_NUM_THREADS`` or this machine's cores), so
        the bytes match a local run."""
        from nodeflow.threads import default_threads, requested_threads

        try:
            threads = requested_threads(self.threads) or default_threads()
        except ValueError as exc:
            raise UsageError(str(exc), hint="Give --threads or NODEFLOW_THREADS a whole number "
                             "from 1.") from None
        own = {f.name: getattr(self, f.name) for f in fields(WorkerConfig)}
        return WorkerConfig(**{**own, "threads": threads})


def connect(address: str) -> bool:
    """Connect to Ray; return True when this call started it (so the caller shuts it down).

    ``auto`` joins the cluster named by RAY_ADDRESS or running on this machine, and
    starts a single-machine Ray when there is none.
    """
    try:
        import ray
    except ImportError:
        raise UsageError("--ray needs Ray", hint="Install it with: pip install 'nodeflow[ray]'") from None
    if ray.is_initialized():
        return False
    options: dict[str, Any] = {"log_to_driver": False, "include_dashboard": False}
    try:
        ray.init(address=address, **options)
    except ConnectionError:
        if address != "auto":
            raise ClusterError(f"cannot reach the Ray cluster at {address}",
                               hint="Start it with `ray start --head` there, or check the "
                                    "address and port (ray status shows them).") from None
        ray.init(**options)  # no cluster running: one on this machine
    return True


def plan_workers(requested: int | None) -> tuple[int, dict[str, Any], dict[str, str]]:
    """How many workers the cluster can have now (``requested``, else one per GPU, else one
    per machine), the Ray options of each (one GPU, or a share of its machine's cores), and
    each machine's address by node id."""
    import ray

    resources = ray.cluster_resources()
    gpus = int(resources.get("GPU", 0))
    nodes = [n for n in ray.nodes() if n.get("Alive")]
    addresses = {n["NodeID"]: n.get("NodeManagerAddress", "?") for n in nodes}
    count = requested or (gpus if gpus else max(1, len(nodes)))
    options: dict[str, Any] = {"max_concurrency": 2}  # a job, and progress polls beside it
    if gpus:
        options.update(num_gpus=1, num_cpus=1)
    else:
        per_node = min((int(n["Resources"].get("CPU", 1)) for n in nodes), default=1)
        options["num_cpus"] = max(1, per_node // math.ceil(count / max(1, len(nodes))))
    return count, options, addresses


@dataclass
class _Worker:
    slot: WorkerSlot
    actor: Any
    stats: WorkerStats
    job: PreparedJob | None = None
    ref: Any = None
    attempt: int = 0


class RaySweep:
    """One sweep on a Ray cluster. `run` drives it; `workers` are its live actors (by name)."""

    def __init__(self, options: ClusterOptions, registry: Any, settings: Settings) -> None:
        self.options = options
        self.registry = registry
        self.settings = settings
        self.workers: dict[str, _Worker] = {}
        self.on_worker_started: Callable[[str, Any], None] | None = None
        """Called with each worker's name and actor handle as it joins."""
        self._starting: dict[Any, tuple[str, Any]] = {}
        self._actor_options: dict[str, Any] | None = None
        self._next_worker = 0
        self._grown = time.monotonic()
        self._model_refs: list[tuple[str, str, str, str, str, str | None]] = []
        self._picture_bytes: dict[str, bytes] = {}

    # --- workers -------------------------------------------------------------------
    def _wanted_workers(self) -> tuple[int, dict[str, Any], dict[str, str]]:
        """How many workers the cluster should have now, each one's resources, node addresses
        (the resources are chosen once: every worker of a sweep gets the same)."""
        count, options, addresses = plan_workers(self.options.workers)
        if self._actor_options is None:
            self._actor_options = options
        return count, self._actor_options, addresses

    def _launch(self, count: int) -> None:
        """Create ``count`` more worker actors; they join once started (`_admit`)."""
        import ray

        assert self._actor_options is not None
        actor_class: Any = ray.remote(NodeflowWorker).options(**self._actor_options)
        config = self.options.worker_config()
        for _ in range(count):
            name = f"w{self._next_worker}"
            self._next_worker += 1
            actor = actor_class.remote(name, config)
            self._starting[actor.identity.remote()] = (name, actor)

    def _admit(self, ref: Any, sink: SweepSink, addresses: dict[str, str]) -> _Worker:
        """A started actor becomes a worker (raise `ClusterError` if it could not start)."""
        import ray

        name, actor = self._starting.pop(ref)
        try:
            identity = ray.get(ref)
        except ray.exceptions.RayError as exc:
            ray.kill(actor)
            raise ClusterError(f"worker {name} could not start: {_ray_cause(exc)}") from None
        address = addresses.get(identity["node_id"], identity["host"])
        node = f"{address} ({identity['host']}, {identity['device']})"
        worker = _Worker(WorkerSlot(name), actor, WorkerStats(name, node))
        self.workers[name] = worker
        sink(SweepEvent("worker_ready", worker=name, data={"node": node, "pid": identity["pid"]}))
        if self.on_worker_started is not None:
            self.on_worker_started(name, actor)
        return worker

    def start_workers(self, sink: SweepSink) -> None:
        """Start the workers and wait until every one is up (or fail, saying what is missing)."""
        import ray

        count, options, addresses = self._wanted_workers()
        self._launch(count)
        ready, not_ready = ray.wait(list(self._starting), num_returns=len(self._starting),
                                    timeout=START_TIMEOUT)
        if not_ready:
            resources = ray.cluster_resources()
            need = (f"{options.get('num_gpus', 0)} GPU" if "num_gpus" in options
                    else f"{options['num_cpus']} CPU")
            self.stop()
            raise ClusterError(f"only {len(ready)} of {count} workers started within "
                               f"{START_TIMEOUT:.0f} s: each needs {need} and the cluster has "
                               f"{resources.get('CPU', 0):g} CPU, {resources.get('GPU', 0):g} GPU",
                               hint="Give fewer --ray-workers, or add machines to the cluster.")
        try:
            for ref in ready:
                self._admit(ref, sink, addresses)
        except ClusterError:
            self.stop()
            raise

    def _grow(self, sink: SweepSink, jobs_left: int, result: SweepResult, *,
              now: bool = False) -> None:
        """Keep the pool at its size: replace lost workers, and use machines added to the
        cluster meanwhile (every `GROW_INTERVAL` seconds, or ``now``). A newcomer checks the
        models first; one lacking some is let go."""
        import ray

        if not jobs_left or (not now and time.monotonic() - self._grown < GROW_INTERVAL):
            return
        self._grown = time.monotonic()
        count, _, addresses = self._wanted_workers()
        missing = count - len(self.workers) - len(self._starting)
        if missing > 0:
            self._launch(missing)
        if not self._starting:
            return
        ready, _ = ray.wait(list(self._starting), num_returns=len(self._starting), timeout=0)
        for ref in ready:
            try:
                worker = self._admit(ref, sink, addresses)
            except ClusterError as exc:
                sink(SweepEvent("message", data={"text": str(exc)}))
                continue
            lacks = self._missing_models([worker])
            if lacks:
                sink(SweepEvent("message", worker=worker.stats.name, data={
                    "text": f"worker {worker.stats.name} not used: {lacks[0]} "
                            f"({len(lacks)} model file(s) missing on its node)"}))
                del self.workers[worker.stats.name]
                ray.kill(worker.actor)
                continue
            result.workers[worker.stats.name] = worker.stats

    def check_models(self, todo: list[PreparedJob]) -> None:
        """Every worker looks for every model file the jobs name; report what is missing where."""
        refs: dict[tuple[str, ...], tuple[str, str, str, str, str, str | None]] = {}
        for p in todo:
            for ref in model_refs(p.graph, self.registry):
                refs.setdefault(ref, (*ref, p.graph.file_name))
        self._model_refs = list(refs.values())
        problems = self._missing_models(list(self.workers.values()))
        if problems:
            raise GraphInvalid(problems, todo[0].graph.file_name)

    def _missing_models(self, workers: list[_Worker]) -> list[Problem]:
        import ray

        if not self._model_refs:
            return []
        answers = ray.get([w.actor.check_models.remote(self._model_refs) for w in workers])
        problems = []
        for worker, missing in zip(workers, answers, strict=True):
            for m in missing:
                problems.append(Problem(
                    "missing_model", f"on worker {worker.stats.name}, node {worker.stats.node}: "
                    f"{m['message']}", Location(m["file"], m["node"], m["type"], m["socket"])))
        return problems

    def stop(self) -> None:
        """Let every worker go, started or starting."""
        import ray

        actors = [w.actor for w in self.workers.values()] + [a for _, a in self._starting.values()]
        for actor in actors:
            try:
                ray.kill(actor)
            except Exception:  # noqa: BLE001 - already gone
                pass
        self.workers.clear()
        self._starting.clear()

    # --- the sweep -----------------------------------------------------------------
    def run(self, graph: Graph, jobs: list[Job], *, outputs: list[str] | None = None,
            on_event: SweepSink | None = None, cancel: CancelToken | None = None) -> SweepResult:
        import ray

        sink: SweepSink = on_event or (lambda e: None)
        cancel = cancel or CancelToken()
        # The driver needs the input pictures (they travel with the jobs), not the models:
        # those must exist where the workers run, and the workers check for them.
        store, todo, result = start_sweep(
            self.settings.out_dir, graph, jobs, outputs, sink,
            lambda todo: validate_jobs(self.registry, self.settings, todo, skip_codes=lambda p: (
                p.code == "missing_file" and _is_model_input(self.registry, graph, p))))
        if not todo:
            return result
        self.start_workers(sink)
        for w in self.workers.values():
            result.workers[w.stats.name] = w.stats
        self.check_models(todo)

        scheduler: JobScheduler[int] = JobScheduler(self.options.policy)
        by_index = {p.job.index: p for p in todo}
        models = {p.job.index: [model_key(r[3], r[4]) for r in model_refs(p.graph, self.registry)]
                  for p in todo}
        for p in todo:
            scheduler.add(p.job.index, models[p.job.index])
        attempts: dict[int, int] = {}
        cancelling = False
        lost_since: float | None = None
        while True:
            if cancel.cancelled and not cancelling:
                cancelling = True
                result.cancelled = True
                for w in self.workers.values():
                    if w.ref is not None:
                        w.actor.cancel.remote()
            if not cancelling:
                live = [w.slot for w in self.workers.values()]
                for slot, index, _key in scheduler.assign(live):
                    w = self.workers[slot.name]
                    p = by_index[index]
                    attempts[index] = attempts.get(index, 0) + 1
                    w.job, w.attempt = p, attempts[index]
                    spec = {"name": p.job.name, "graph": p.graph.dumps(), "file": p.graph.file_name,
                            "outputs": outputs, "pictures": self._pictures(p.graph),
                            "models": models[index], "attempt": attempts[index]}
                    w.ref = w.actor.run_job.remote(spec)
                    sink(SweepEvent("job_started", p.job.name, w.stats.name,
                                    {"overrides": p.job.overrides, "attempt": attempts[index]}))
            busy = {w.ref: w for w in self.workers.values() if w.ref is not None}
            if not busy:
                if not len(scheduler) or cancelling:
                    break
                # Every worker was lost: wait a while for replacements, then give up.
                lost_since = lost_since or time.monotonic()
                self._grow(sink, len(scheduler), result, now=True)
                if self.workers:
                    continue  # a replacement joined: it takes the jobs now
                if not self._starting or time.monotonic() - lost_since > START_TIMEOUT:
                    raise ClusterError(
                        f"every worker was lost; {len(scheduler)} of {result.total} jobs not done",
                        hint="Finished jobs are kept: run the same command again to resume.")
                time.sleep(POLL)
                continue
            lost_since = None
            done, _ = ray.wait(list(busy), num_returns=1, timeout=POLL)
            self._poll_events(busy.values(), sink)
            for ref in done:
                w = busy[ref]
                running = w.job
                assert running is not None
                p = running
                w.ref, w.job = None, None
                try:
                    answer = ray.get(ref)
                except ray.exceptions.RayActorError as exc:
                    # The worker died: its job was not done (no output came back); run it again.
                    w.stats.lost = True
                    del self.workers[w.stats.name]
                    result.retried.append(p.job.name)
                    sink(SweepEvent("job_retried", p.job.name, w.stats.name,
                                    {"reason": _ray_cause(exc)}))
                    if not cancelling:
                        scheduler.add(p.job.index, models[p.job.index], first=True)
                    continue
                except ray.exceptions.RayError as exc:
                    scheduler.done(w.slot)
                    result.failed[p.job.name] = f"the worker could not run the job: {_ray_cause(exc)}"
                    sink(SweepEvent("job_failed", p.job.name, w.stats.name,
                                    {"error": result.failed[p.job.name]}))
                    continue
                scheduler.done(w.slot, answer["holds"])
                w.stats.loads += answer["loads"]
                for data in answer["events"]:
                    sink(SweepEvent("node", p.job.name, w.stats.name, data))
                self._finish(store, p, w, answer, result, sink)
            if not cancelling:
                self._grow(sink, len(scheduler), result)
        store.tidy()
        return result

    def _finish(self, store: Any, p: PreparedJob, w: _Worker, answer: dict[str, Any],
                result: SweepResult, sink: SweepSink) -> None:
        name = p.job.name
        if answer["status"] == "cancelled":
            result.cancelled = True
            return
        if answer["status"] == "failed":
            result.failed[name] = answer["error"]
            sink(SweepEvent("job_failed", name, w.stats.name, {"error": answer["error"]}))
            return
        staged = store.write_staged(name, answer["files"])
        files = store.commit(name, p.job.index, p.job.overrides, p.fingerprint, staged,
                             worker=w.stats.name, seconds=round(answer["seconds"], 3))
        w.stats.jobs += 1
        result.done.append(name)
        result.files += files
        sink(SweepEvent("job_finished", name, w.stats.name,
                        {"files": [str(f) for f in files], "seconds": round(answer["seconds"], 3),
                         "loads": answer["loads"]}))

    def _poll_events(self, busy: Any, sink: SweepSink) -> None:
        import ray

        polls = {w.actor.take_events.remote(): w for w in busy}
        ready, _ = ray.wait(list(polls), num_returns=len(polls), timeout=2.0)
        for ref in ready:
            w = polls[ref]
            try:
                events = ray.get(ref)
            except ray.exceptions.RayError:
                continue  # a lost worker: its job's result says so
            if w.job is None:
                continue
            for data in events:
                sink(SweepEvent("node", w.job.job.name, w.stats.name, data))

    def _pictures(self, graph: Graph) -> dict[tuple[str, str], dict[str, Any]]:
        """The input pictures a job's graph reads, as bytes to send with it."""
        out = {}
        for key, found in input_files(graph, self.registry, self.settings).items():
            path = str(found)
            if path not in self._picture_bytes:  # read once for every job
                self._picture_bytes[path] = found.read_bytes()
            out[key] = {"path": path, "data": self._picture_bytes[path]}
        return out


def run_on_ray(options: ClusterOptions, registry: Any, graph: Graph, jobs: list[Job],
               settings: Settings, *, outputs: list[str] | None = None,
               on_event: SweepSink | None = None, cancel: CancelToken | None = None) -> SweepResult:
    """Run the jobs on Ray workers; outputs land in ``settings.out_dir`` as with `run_local`."""
    started = connect(options.address)
    sweep = RaySweep(options, registry, settings)
    try:
        return sweep.run(graph, jobs, outputs=outputs, on_event=on_event, cancel=cancel)
    finally:
        sweep.stop()
        if started:
            import ray

            ray.shutdown()


def _is_model_input(registry: Any, graph: Graph, problem: Problem) -> bool:
    loc = problem.location
    node = graph.nodes.get(loc.node or "")
    cls = registry.get(node.type) if node else None
    spec = cls.input_map.get(loc.socket or "") if cls else None
    return spec is not None and spec.path_kind not in (None, "image", "file")


def _ray_cause(exc: BaseException) -> str:
    """Ray's error in a line or two: its summary, and the remote exception's own message."""
    lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
    if not lines:
        return type(exc).__name__
    return lines[0] if len(lines) == 1 else f"{lines[0]} ... {lines[-1]}"

