"""Check, plan, then run: the executor.

An `Executor` keeps an output cache, a model manager and a pool of worker threads,
and runs graphs one at a time: it checks the part of the graph the requested outputs
need (`nodeflow.validate`; problems elsewhere are warnings), plans (`nodeflow.plan`:
cache keys, what must run), estimates memory (`nodeflow.memory_plan`), and hands the
plan to a `Scheduler` (`nodeflow.scheduler`), which runs the nodes, emitting events,
isolating failures and honouring cancellation.

Using one executor for many runs (an editor, a job server, a cluster worker):

- Make it once and keep it: its cache serves unchanged nodes, its model manager keeps
  models loaded, and its worker threads (and their torch thread teams) are reused.
  ``close()`` (or a ``with`` block) stops the threads; nothing else needs tearing down.
- Hand it any graph, edited in place or a fresh copy or load: what it remembers between
  runs is keyed by the graph's process-unique ``uid`` and ``revision``, by its content
  (`nodeflow.graph_diff`: only nodes whose inputs changed are checked and keyed again)
  and by the settings, never by ``id()``; cache keys include the state of every file
  the graph reads, so a changed file or another graph folder never gets an old result.
  Change ``executor.settings`` between runs freely (a job server gives each job its
  own output folder: only output nodes are re-keyed).
- One run at a time per executor; run several executors for parallel jobs.
- ``RunResult.warnings`` lists problems outside what the run needed; ``RunResult.phases``
  the seconds spent checking, planning and running.

A remote worker that places nodes its own way (one Ray task per node, say) reuses
planning and caching without the thread scheduler: ``GraphValidator`` then
``graph_structure`` (order and cache keys, with file fingerprints; ``refresh_structure``
fingerprints again for a later run), ``plan_execution`` against its own `OutputCache`
(what must run, what is served), ``estimate_plan_memory`` / ``check_plan_memory``; then,
per node, ``nodeflow.scheduler.check_actual_inputs`` on the gathered inputs, the node's
``run``, ``normalise_outputs`` and ``locate_error`` for failures, and ``cache.put`` under
the plan's key. `Scheduler` is only the local, threaded way of doing that loop.
"""

from __future__ import annotations

import dataclasses
import gc
import os
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nodeflow.cache import OutputCache
from nodeflow.errors import GraphInvalid, NodeflowError, Problem, UsageError
from nodeflow.events import CancelToken, Event, NodeCached, RunFinished, RunStarted
from nodeflow.graph import Graph, Link
from nodeflow.graph_diff import GraphSnapshot
from nodeflow.memory_plan import check_plan_memory, declares_estimate, estimate_plan_memory
from nodeflow.node import MemoryEstimate, Node
from nodeflow.plan import (
    GraphStructure,
    Plan,
    _Structure,
    graph_structure,
    plan_execution,
    refresh_structure,
    rekey,
    topological_order,
)
from nodeflow.registry import NodeRegistry
from nodeflow.scheduler import RunState, Scheduler
from nodeflow.settings import Settings
from nodeflow.threads import configure_threads
from nodeflow.validate import GraphValidator, ancestry, checked_input, output_nodes, split_problems

EventSink = Callable[[Event], None]


@dataclass
class RunResult:
    """What a run produced."""

    outputs: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Outputs of the requested nodes, by node id and output name."""
    files: list[Path] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    ran: list[str] = field(default_factory=list)
    cached: list[str] = field(default_factory=list)
    failed: dict[str, NodeflowError] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)
    cancelled: bool = False
    warnings: list[Problem] = field(default_factory=list)
    """Problems in parts of the graph the requested outputs do not need (nothing there ran)."""
    phases: dict[str, float] = field(default_factory=dict)
    """Seconds spent checking the graph, planning (keys, cache, memory) and running the nodes."""
    notes: dict[str, dict[str, str]] = field(default_factory=dict)
    """What the nodes that ran resolved (e.g. a sampler's scheduler settings), by node id."""

    @property
    def ok(self) -> bool:
        return not self.failed and not self.cancelled

    def to_json(self) -> dict[str, Any]:
        return {
            "status": "cancelled" if self.cancelled else ("failed" if self.failed else "ok"),
            "files": [str(p) for p in self.files],
            "timings": {k: round(v, 6) for k, v in self.timings.items()},
            "ran": self.ran,
            "cached": self.cached,
            "failed": {k: str(v) for k, v in self.failed.items()},
            "skipped": self.skipped,
            "warnings": [p.to_json() for p in self.warnings],
        }


class Executor:
    """Runs graphs. Keeps an output cache, a model manager and worker threads across runs;
    reusable after a failure or a cancel. Not re-entrant: run one graph at a time per executor.
    """

    def __init__(self, registry: NodeRegistry, settings: Settings | None = None, *,
                 cache: OutputCache | None = None, models: Any = None,
                 workers: int | None = None, model_aware: bool = True,
                 threads: int | None = None) -> None:
        self.registry = registry
        try:
            self.threads = configure_threads(threads)
            """torch threads per computation, set once for the process (see `nodeflow.threads`)."""
        except ValueError as exc:
            raise UsageError(str(exc), hint="Give --threads or NODEFLOW_THREADS a whole number "
                             "from 1.") from None
        self.model_aware = model_aware
        """Start first the ready accelerator node whose models are already resident."""
        self.workers = max(1, workers if workers is not None else min(4, os.cpu_count() or 1))
        """Nodes run at once at most; 1 runs every node in the calling thread, in order."""
        self.settings = settings or Settings()
        self.cache = cache if cache is not None else OutputCache()
        self.notes: dict[str, dict[str, str]] = {}
        """What nodes resolved when they ran (see `RunContext.note`), by cache key."""
        self._models = models
        self._checked: tuple[tuple[Any, ...], list[Problem]] | None = None
        self._last: _LastGraph | None = None
        self._validated: tuple[Any, ...] | None = None
        self._declared: tuple[dict[str, type[Node]], bool] | None = None
        self._pool: ThreadPoolExecutor | None = None
        self._pool_lock = threading.Lock()

    # --- resources -----------------------------------------------------------------
    @property
    def models(self) -> Any:
        if self._models is None:
            from nodeflow.models import ModelManager

            self._models = ModelManager()
        return self._models

    def worker_pool(self) -> ThreadPoolExecutor:
        """The executor's worker threads, made once and reused by every run.

        Each thread that calls torch gets its own OpenMP team; a pool per run left idle teams
        behind that competed for the cores, and later runs grew slower.
        """
        with self._pool_lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self.workers, thread_name_prefix="nodeflow-worker")
            return self._pool

    def close(self, wait: bool = True) -> None:
        """Stop the worker threads (the cache and the models stay; a later run starts them
        again). ``wait`` False returns at once; idle threads still end."""
        with self._pool_lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=wait)

    def __enter__(self) -> Executor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- checking ------------------------------------------------------------------
    def _settings_stamp(self, but: str = "") -> tuple[Any, ...]:
        """Everything in the settings (of whatever subclass) but the field ``but``: a change in
        any of them may change what a file name resolves to."""
        s = self.settings
        return (type(s), *(_frozen(v) for v in sorted(vars(s).items()) if v[0] != but))

    def validate(self, graph: Graph) -> None:
        """Raise `GraphInvalid` if the graph has any problem, wherever it is (remembered per
        graph state and settings)."""
        stamp = (graph.uid, graph.revision, self._settings_stamp())
        if self._validated == stamp:
            return
        problems = GraphValidator(self.registry, self.settings).validate(graph)
        if problems:
            raise GraphInvalid(problems, graph.file_name)
        self._validated = stamp

    def check(self, graph: Graph, outputs: Iterable[str] | None = None) -> list[Problem]:
        """Check what the requested outputs (default: every output node) need: raise
        `GraphInvalid` naming the problems there; return the problems elsewhere (warnings)."""
        requested = None if outputs is None else tuple(outputs)
        stamp = (graph.uid, graph.revision, requested, self._settings_stamp())
        if self._checked is not None and self._checked[0] == stamp:
            return list(self._checked[1])
        problems = GraphValidator(self.registry, self.settings).validate(graph)
        if problems:
            wanted = output_nodes(graph, self.registry) if requested is None else requested
            errors, warnings = split_problems(problems, ancestry(graph, wanted))
            if errors:
                raise GraphInvalid(errors, graph.file_name)
        else:
            warnings = []
        self._checked = (stamp, warnings)
        return list(warnings)

    # --- running -------------------------------------------------------------------
    def run(self, graph: Graph, outputs: Iterable[str] | None = None, *,
            on_event: EventSink | None = None, cancel: CancelToken | None = None,
            force: Iterable[str] = ()) -> RunResult:
        """Run what the requested outputs (default: all output nodes) need.

        Raises `GraphInvalid` for problems in what the requested outputs need (problems
        elsewhere are returned as ``RunResult.warnings`` and given with `RunStarted`), and
        `ModelError` before any node runs when the plan-time estimates show a node that can
        never fit a device's memory budget; node failures and cancellation are reported in
        the result (and as events), never raised.
        """
        with _collector_paused(len(graph.nodes)):
            return self._run(graph, outputs, on_event, cancel, force)

    def _run(self, graph: Graph, outputs: Iterable[str] | None, on_event: EventSink | None,
             cancel: CancelToken | None, force: Iterable[str]) -> RunResult:
        started = time.perf_counter()
        requested = None if outputs is None else tuple(outputs)
        warnings, structure = self._check_and_key(graph, requested)
        checked = time.perf_counter()
        run = RunState(self, graph, on_event, cancel or CancelToken())
        plan = plan_execution(graph, self.registry, self.cache, requested, force=force,
                              structure=structure)
        self._plan_memory(graph, plan)
        planned = time.perf_counter()
        result = RunResult(cached=list(plan.cached), warnings=warnings,
                           phases={"check": checked - started, "plan": planned - checked})
        run.emit(RunStarted(list(plan.to_run), list(plan.cached), list(warnings)))
        if run.listening:
            for n in plan.cached:
                run.emit(NodeCached(n, plan.classes[n].id))

        watch_drops = self._models is not None and hasattr(self._models, "on_drop")
        if watch_drops:
            self._models.on_drop.append(run.model_dropped)
        try:
            values, dead = Scheduler(self, graph, plan, run, result).run()
        finally:
            if watch_drops:
                self._models.on_drop.remove(run.model_dropped)
        result.phases["run"] = time.perf_counter() - planned
        for n in plan.requested:
            if n in values:
                result.outputs[n] = values[n]
            elif n not in dead and not result.cancelled:
                cached = self.cache.get(plan.keys[n])
                if cached is not None:
                    result.outputs[n] = cached
        run.emit(RunFinished(result))
        return result

    def _check_and_key(self, graph: Graph, requested: tuple[str, ...] | None
                       ) -> tuple[list[Problem], GraphStructure]:
        """Check what the run needs and key its nodes, redoing only what changed since the
        last run: nothing for the same graph state, only the edited nodes (and what depends
        on them) for a copy, an edit or a fresh load of the same graph. Files are
        fingerprinted again every run."""
        out_dir = str(self.settings.out_dir.resolve())
        rest = (requested, self._settings_stamp(but="out_dir"))
        stamp = (graph.uid, graph.revision, rest, out_dir)
        last = self._last
        if last is not None and last.stamp == stamp:
            structure = (refresh_structure(graph, last.structure, self.settings)
                         if last.structure is not None
                         else graph_structure(graph, self.registry, requested, self.settings))
            if last.structure is not None:
                last.structure = structure
            return list(last.warnings), structure
        changed = last.snapshot.changed_nodes(graph) if last is not None and last.rest == rest else None
        if changed is not None and last is not None and last.out_dir != out_dir:
            # Another output folder (a job server gives each job its own): output nodes only.
            changed |= {n for n in graph.nodes
                        if getattr(self.registry.get(graph.nodes[n].type), "output_node", False)}
        self._last = None
        needed: set[str] | None = None
        order: list[str] | None = None
        if changed is not None and last is not None and self._local_edits(graph, changed, last):
            problems = self._revalidate(graph, changed, last.problems)
            needed = last.needed  # the links are the same: so is what the run needs
        else:
            validator = GraphValidator(self.registry, self.settings)
            problems = validator.validate(graph)
            order = validator.order
        if problems and needed is None:
            needed = ancestry(graph, output_nodes(graph, self.registry) if requested is None
                              else requested)
        errors, warnings = split_problems(problems, needed or set())
        if errors:
            raise GraphInvalid(errors, graph.file_name)
        if changed is not None and last is not None and last.structure is not None:
            structure = refresh_structure(graph, last.structure, self.settings)
            if structure is last.structure:
                structure = dataclasses.replace(structure, keys=dict(structure.keys))
            structure.out_dir = out_dir
            rekey(graph, structure, changed)
        else:
            structure = graph_structure(graph, self.registry, requested, self.settings, order)
        self._last = _LastGraph(stamp, rest, out_dir, GraphSnapshot(graph), problems, needed,
                                warnings, structure if structure.deterministic else None)
        return list(warnings), structure

    def _local_edits(self, graph: Graph, changed: set[str], last: _LastGraph) -> bool:
        """Can the checks of the last run stand for every node but the ``changed`` ones? Yes
        when they are few, none of them had a problem, no constant arrives at an input of theirs
        that is checked, and the constants they compute (value nodes, arithmetic) reach no
        checked input downstream."""
        if len(changed) > 64:
            return False
        had_problem = {p.location.node for p in last.problems}
        if had_problem & changed:
            return False
        classes: dict[str, type[Node] | None] = {}

        def cls_of(n: str) -> type[Node] | None:
            if n not in classes:
                classes[n] = self.registry.get(graph.nodes[n].type)
            return classes[n]

        children: dict[str, list[Link]] = {}
        for ln in graph.links:
            if ln.dst in changed and getattr(cls_of(ln.src), "constant", True):
                dst = cls_of(ln.dst)
                if dst is None or checked_input(dst, ln.dst_socket):
                    return False  # a constant it checks may make a new problem with the edit
            children.setdefault(ln.src, []).append(ln)
        stack = [n for n in changed if getattr(cls_of(n), "constant", True)]
        seen = set(stack)
        while stack:  # where the edited constants flow, through other constant nodes
            n = stack.pop()
            for ln in children.get(n, ()):
                dst = cls_of(ln.dst)
                if dst is None or checked_input(dst, ln.dst_socket):
                    return False
                if dst.constant and ln.dst not in seen:
                    seen.add(ln.dst)
                    stack.append(ln.dst)
        return True

    def _revalidate(self, graph: Graph, changed: set[str], before: list[Problem]) -> list[Problem]:
        """The problems of the last run, with those of the edited nodes found again."""
        validator = GraphValidator(self.registry, self.settings)
        into: dict[str, list[Link]] = {}
        for ln in graph.links:
            if ln.dst in changed:
                into.setdefault(ln.dst, []).append(ln)
        fresh: list[Problem] = []
        for n in changed:
            part = Graph(source=graph.source)
            feeders = into.get(n, [])
            for m in [n, *(ln.src for ln in feeders)]:
                part.nodes[m] = graph.nodes[m]
            for ln in feeders:
                part.connect(ln.source, ln.target)
            fresh += [p for p in validator.validate(part) if p.location.node == n]
        return [p for p in before if p.location.node not in changed] + fresh

    def _plan_memory(self, graph: Graph, plan: Plan) -> dict[str, MemoryEstimate]:
        """Estimate each node's memory need (kept for the memory report) and fail the run
        before anything runs when a node can never fit. The just-before-run check stays."""
        if not plan.to_run:
            return {}
        if self._declared is None or self._declared[0] is not plan.classes:  # once per graph
            self._declared = (plan.classes,
                              any(declares_estimate(c) for c in set(plan.classes.values())))
        if not self._declared[1]:
            return {}
        models = self.models
        accelerated = any(plan.classes[n].uses_accelerator for n in plan.to_run)
        dtypes = getattr(models, "dtype_name", None)
        estimates = estimate_plan_memory(graph, plan, self.settings, dtypes,
                                         _first_device(models) if accelerated else "cpu")
        if not estimates:
            return estimates
        note = getattr(models, "note_estimates", None)
        if note is not None:
            note(estimates)
        if accelerated:
            check_plan_memory(graph, plan, estimates, list(getattr(models, "devices", ())),
                              getattr(models, "dtype_override", None))
        return estimates


@dataclass
class _LastGraph:
    """What the last run's checks and keys were made from, to redo only what changes."""

    stamp: tuple[Any, ...]
    rest: tuple[Any, ...]
    out_dir: str
    snapshot: GraphSnapshot
    problems: list[Problem]
    needed: set[str] | None
    """What the run needs, when it was worked out (only when there were problems)."""
    warnings: list[Problem]
    structure: GraphStructure | None


class _collector_paused:  # noqa: N801 - used like a function
    """Keep the cyclic garbage collector out of the checking, planning and running of a
    graph of thousands of nodes.

    Each of those steps allocates a few objects per node, and the collector walked every
    object in the process again and again, which made the cost per node grow with the graph
    (measured in ``bench/executor_overhead.py``). Objects alive before the run are frozen
    out of its reach and collection is paused while a graph of thousands of nodes is
    handled; it is restored, and the frozen objects handed back to it, afterwards. Large
    values (tensors, pictures) are freed by reference counting as before.
    """

    THRESHOLD = 1000

    def __init__(self, nodes: int) -> None:
        self.active = nodes >= self.THRESHOLD and gc.isenabled()

    def __enter__(self) -> None:
        if self.active:
            gc.freeze()
            gc.disable()

    def __exit__(self, *exc: object) -> None:
        if self.active:
            gc.enable()
            gc.unfreeze()


class graph_loading:  # noqa: N801 - used like a function
    """Pause the cyclic garbage collector while a graph file is read and prepared.

    Reading a graph of many nodes allocates a few objects per node and no reference cycles;
    the collector walked them, and everything the process had imported, again and again
    (``bench/executor_overhead.py`` measures it). Restored on leaving the block.
    """

    def __enter__(self) -> None:
        self.was = gc.isenabled()
        gc.disable()

    def __exit__(self, *exc: object) -> None:
        if self.was:
            gc.enable()


def _frozen(value: Any) -> Any:
    """A hashable, comparable stand-in for a settings value (lists and dicts of paths)."""
    if isinstance(value, dict):
        return tuple(sorted((str(k), _frozen(v)) for k, v in value.items()))
    if isinstance(value, list | tuple):
        return tuple(_frozen(v) for v in value)
    return value


def _first_device(models: Any) -> str:
    devices = getattr(models, "devices", None)
    return devices[0].name if devices else "cpu"


__all__ = ["EventSink", "Executor", "graph_loading", "GraphStructure", "Plan", "RunResult", "_Structure",
           "check_plan_memory", "declares_estimate", "estimate_plan_memory", "graph_structure",
           "plan_execution", "topological_order"]
