"""Running a sweep's jobs on this machine, on one shared executor.

The executor keeps its output cache and model manager from job to job, so the
checkpoint is loaded once and a prompt's text encoding is computed once for every
job that uses it. The same job preparation, events and result serve the Ray driver.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from nodeflow import events as ev
from nodeflow.errors import GraphInvalid, NodeflowError, Problem
from nodeflow.graph import Graph
from nodeflow.sweeps.spec import Job
from nodeflow.sweeps.store import SweepStore, job_fingerprint


@dataclass(frozen=True)
class SweepEvent:
    """Something that happened in a sweep, tagged with its job and the worker running it.

    ``kind`` is ``sweep_started``, ``worker_ready``, ``job_started``, ``job_skipped``,
    ``job_finished``, ``job_failed``, ``job_retried``, ``message`` or ``node`` (an executor
    event of the job, in ``data`` as its JSON form, e.g. ``{"event": "node_progress", ...}``).
    """

    kind: str
    job: str | None = None
    worker: str | None = None
    data: dict[str, Any] = field(default_factory=dict)


SweepSink = Callable[[SweepEvent], None]


@dataclass
class WorkerStats:
    """What one worker did: jobs run and model files it loaded from disk."""

    name: str
    node: str = ""
    jobs: int = 0
    loads: int = 0
    lost: bool = False

    def to_json(self) -> dict[str, Any]:
        return {"worker": self.name, "node": self.node, "jobs": self.jobs, "loads": self.loads,
                "lost": self.lost}


@dataclass
class SweepResult:
    """What a sweep did, job by job."""

    total: int = 0
    done: list[str] = field(default_factory=list)
    """Jobs run to completion by this run."""
    skipped: list[str] = field(default_factory=list)
    """Jobs already complete from an earlier run."""
    failed: dict[str, str] = field(default_factory=dict)
    """Job → its located error."""
    retried: list[str] = field(default_factory=list)
    """Jobs started again elsewhere after their worker was lost."""
    cancelled: bool = False
    files: list[Path] = field(default_factory=list)
    workers: dict[str, WorkerStats] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.failed and not self.cancelled and \
            len(self.done) + len(self.skipped) == self.total

    def to_json(self) -> dict[str, Any]:
        return {
            "status": "cancelled" if self.cancelled else ("ok" if self.ok else "failed"),
            "jobs": self.total, "done": self.done, "skipped": self.skipped,
            "failed": self.failed, "retried": self.retried,
            "files": [str(p) for p in self.files],
            "workers": [w.to_json() for w in self.workers.values()],
        }


@dataclass
class PreparedJob:
    """A job with its graph (overrides applied) and the fingerprint that recognises it."""

    job: Job
    graph: Graph
    fingerprint: str


def prepare_jobs(graph: Graph, jobs: Iterable[Job], outputs: list[str] | None,
                 store: SweepStore) -> tuple[list[PreparedJob], list[PreparedJob]]:
    """Split the jobs into those to run and those a previous run completed."""
    completed = store.completed()
    todo, done = [], []
    for job in jobs:
        job_graph = job.apply(graph)
        prepared = PreparedJob(job, job_graph, job_fingerprint(job_graph, outputs))
        if store.is_complete(completed.get(job.name), prepared.fingerprint):
            done.append(prepared)
        else:
            todo.append(prepared)
    return todo, done


def validate_jobs(registry: Any, settings: Any, prepared: Iterable[PreparedJob],
                  skip_codes: Callable[[Problem], bool] | None = None) -> None:
    """Validate every job's graph before any runs; raise `GraphInvalid` with each problem once."""
    from nodeflow.validate import GraphValidator

    validator = GraphValidator(registry, settings)
    problems: dict[str, Problem] = {}
    file = None
    for p in prepared:
        file = p.graph.file_name
        for problem in validator.validate(p.graph):
            if skip_codes is not None and skip_codes(problem):
                continue
            problems.setdefault(str(problem), problem)
    if problems:
        raise GraphInvalid(list(problems.values()), file)


def node_event_json(event: ev.Event) -> dict[str, Any] | None:
    """An executor event as a JSON-ready dict (previews and the run's end are left out)."""
    if isinstance(event, ev.NodePreview | ev.RunFinished):
        return None
    name = type(event).__name__
    data: dict[str, Any] = {"event": "".join("_" + c.lower() if c.isupper() else c
                                             for c in name).lstrip("_")}
    for key, value in vars(event).items():
        if key == "error":
            data["error"] = str(value)
            data["message"] = value.message
            data["socket"] = value.location.socket
        elif key == "traceback":
            continue
        elif key == "files":
            data["files"] = [str(p) for p in value]
        else:
            data[key] = value
    return data


def start_sweep(out_dir: Path, graph: Graph, jobs: list[Job], outputs: list[str] | None,
                on_event: SweepSink, check: Callable[[list[PreparedJob]], None]
                ) -> tuple[SweepStore, list[PreparedJob], SweepResult]:
    """The common start of a local or a Ray sweep: what is left to do, checked by ``check``
    (which raises on a problem, before anything is written), then announced."""
    store = SweepStore(out_dir)
    todo, done = prepare_jobs(graph, jobs, outputs, store)
    check(todo)
    store.clear_staging()
    result = SweepResult(total=len(jobs), skipped=[p.job.name for p in done])
    on_event(SweepEvent("sweep_started", data={"jobs": len(jobs), "to_run": len(todo),
                                                "complete": len(done)}))
    for p in done:
        on_event(SweepEvent("job_skipped", p.job.name, data={"reason": "complete"}))
    return store, todo, result


def cache_friendly_order(graph: Graph, todo: list[PreparedJob]) -> list[PreparedJob]:
    """The jobs in the order that reuses the most cached results: grouped by the values of
    the nodes nearest the graph's start (a prompt before a seed), so a prompt is encoded
    once for all its seeds whichever ``--sweep`` came first. Jobs keep their names."""
    depth: dict[str, int] = {}
    incoming: dict[str, list[str]] = {}
    for link in graph.links:
        incoming.setdefault(link.dst, []).append(link.src)

    def node_depth(node: str) -> int:
        # Iterative longest path from a source; graphs are validated acyclic by now.
        stack = [node]
        while stack:
            n = stack[-1]
            parents = [s for s in incoming.get(n, ()) if s not in depth]
            if parents:
                stack.extend(parents)
                continue
            stack.pop()
            depth[n] = 1 + max((depth[s] for s in incoming.get(n, ())), default=-1)
        return depth[node]

    refs = list(todo[0].job.overrides) if todo else []
    refs.sort(key=lambda ref: node_depth(ref.partition(".")[0]))

    def text(p: PreparedJob, ref: str) -> str:
        return json.dumps(p.job.overrides.get(ref), sort_keys=True, default=str)

    first: dict[str, dict[str, int]] = {r: {} for r in refs}  # each value's first position
    for i, p in enumerate(todo):
        for r in refs:
            first[r].setdefault(text(p, r), i)

    def key(p: PreparedJob) -> tuple[int, ...]:
        return tuple(first[r][text(p, r)] for r in refs)

    return sorted(todo, key=key)  # stable: the original order within a group


def run_local(executor: Any, graph: Graph, jobs: list[Job], out_dir: Path, *,
              outputs: list[str] | None = None, on_event: SweepSink | None = None,
              cancel: ev.CancelToken | None = None) -> SweepResult:
    """Run the jobs one after another on ``executor``; skip those a previous run completed."""
    sink: SweepSink = on_event or (lambda e: None)
    cancel = cancel or ev.CancelToken()
    store, todo, result = start_sweep(
        out_dir, graph, jobs, outputs, sink,
        lambda todo: validate_jobs(executor.registry, executor.settings, todo))
    stats = result.workers.setdefault("local", WorkerStats("local", "this machine"))
    base = executor.settings
    for p in cache_friendly_order(graph, todo):
        if cancel.cancelled:
            result.cancelled = True
            break
        name = p.job.name
        staged = store.staging(name)
        sink(SweepEvent("job_started", name, "local", {"overrides": p.job.overrides}))

        def forward(event: ev.Event, name: str = name) -> None:
            data = node_event_json(event)
            if data is not None:
                sink(SweepEvent("node", name, "local", data))

        loads = getattr(executor.models, "loads", 0)
        started = time.perf_counter()
        executor.settings = replace(base, out_dir=staged)  # this job's outputs go to its staging
        try:
            run = executor.run(p.graph, outputs, on_event=forward, cancel=cancel)
        except NodeflowError as exc:  # e.g. a model that can never fit: fails before running
            store.discard(name)
            result.failed[name] = str(exc)
            sink(SweepEvent("job_failed", name, "local", {"error": str(exc)}))
            continue
        finally:
            executor.settings = base
        stats.loads += getattr(executor.models, "loads", 0) - loads
        if run.cancelled:
            store.discard(name)
            result.cancelled = True
            break
        if run.failed:
            store.discard(name)
            error = "; ".join(str(e) for e in run.failed.values())
            result.failed[name] = error
            sink(SweepEvent("job_failed", name, "local", {"error": error}))
            continue
        seconds = time.perf_counter() - started
        files = store.commit(name, p.job.index, p.job.overrides, p.fingerprint, staged,
                             worker="local", seconds=round(seconds, 3))
        stats.jobs += 1
        result.done.append(name)
        result.files += files
        sink(SweepEvent("job_finished", name, "local",
                        {"files": [str(f) for f in files], "seconds": round(seconds, 3)}))
    store.tidy()
    return result
