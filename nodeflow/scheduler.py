"""Scheduling: run a plan's nodes as their inputs become ready, on threads and devices.

A `Scheduler` lives for one run; its state (what waits for what, what is ready,
running, placed on which device, dead) is held in named attributes, and each step
of the loop is a method. Worker threads come from the executor's long-lived pool.
`RunState` is what every node of one run shares (events, cancellation, provenance);
`NodeContext` is the `RunContext` a node gets.
"""

from __future__ import annotations

import heapq
import threading
import time
import traceback
from collections.abc import Callable, Mapping
from concurrent.futures import FIRST_COMPLETED, Future, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nodeflow.errors import Cancelled, Location, ModelError, NodeFailed, NodeflowError, NodeInputError
from nodeflow.events import (
    CancelToken,
    Event,
    NodeFinished,
    NodePreview,
    NodeProgress,
    NodeSkipped,
    NodeStarted,
)
from nodeflow.events import NodeFailed as NodeFailedEvent
from nodeflow.graph import Graph
from nodeflow.models import current_device, current_node
from nodeflow.node import Node, check_value
from nodeflow.plan import Plan

if TYPE_CHECKING:
    from nodeflow.executor import Executor, RunResult

EventSink = Callable[[Event], None]
NOTES_KEPT = 4096
"""Nodes' notes an executor keeps for cached outputs (oldest dropped first)."""


class RunState:
    """What the nodes of one run share: the event sink, cancellation and the graph as run."""

    def __init__(self, executor: Executor, graph: Graph, on_event: EventSink | None,
                 cancel: CancelToken) -> None:
        self.executor = executor
        self.graph = graph
        self.on_event = on_event
        self.cancel = cancel
        self._graph_json: str | None = None
        self._emit_lock = threading.Lock()
        self._dropped: list[str] = []
        self.notes: dict[str, dict[str, str]] = {}
        """What nodes of this run resolved (e.g. a sampler's settings), by node id."""
        self.plan: Plan | None = None

    def note(self, node: str, facts: Mapping[str, str]) -> None:
        """Record what a node resolved; kept by its cache key too, so that a run serving the
        node from the cache still knows it."""
        with self._emit_lock:
            self.notes[node] = dict(facts)
            if self.plan is not None and node in self.plan.keys:
                kept = self.executor.notes
                kept[self.plan.keys[node]] = dict(facts)
                while len(kept) > NOTES_KEPT:
                    kept.pop(next(iter(kept)))

    def notes_above(self, node: str) -> dict[str, dict[str, str]]:
        """The notes of a node's ancestors (and its own), from this run or the cache."""
        plan = self.plan
        if plan is None:
            return dict(self.notes)
        seen, stack, found = set(), [node], {}
        while stack:
            n = stack.pop()
            if n in seen:
                continue
            seen.add(n)
            facts = self.notes.get(n) or self.executor.notes.get(plan.keys.get(n, ""))
            if facts:
                found[n] = facts
            stack.extend(ln.src for ln in plan.incoming.get(n, ()))
        return dict(sorted(found.items()))

    def model_dropped(self, entry: Any) -> None:
        """The model manager let a model go: so must the outputs holding it."""
        if entry.node is not None:
            self.executor.cache.evict_node(entry.node)
            with self._emit_lock:
                self._dropped.append(entry.node)

    @property
    def has_dropped(self) -> bool:
        """Has the model manager let go of models since `take_dropped` (no lock: a hint)?"""
        return bool(self._dropped)

    def take_dropped(self) -> list[str]:
        if not self._dropped:  # the common case: no lock needed to see it is empty
            return []
        with self._emit_lock:
            dropped, self._dropped = self._dropped, []
        return dropped

    def emit(self, event: Event) -> None:
        # Nodes running in worker threads report progress too: one event at a time.
        if self.on_event is not None:
            with self._emit_lock:
                self.on_event(event)

    @property
    def listening(self) -> bool:
        return self.on_event is not None

    def graph_json(self) -> str:
        """The graph as run, for provenance; relative input files are made absolute so the
        graph embedded in an output can be run again from wherever that output is."""
        if self._graph_json is None:
            graph = self.graph.copy()
            settings = self.executor.settings
            for node in graph:
                cls = self.executor.registry.get(node.type)
                if cls is None:
                    continue
                if node.version is None:
                    node.version = cls.version
                for spec in cls.inputs:
                    value = node.inputs.get(spec.name)
                    if spec.path_kind == "image" and isinstance(value, str):
                        found = settings.resolve_path("image", value)
                        if found is not None:
                            node.inputs[spec.name] = str(found.resolve())
            self._graph_json = graph.dumps()
        return self._graph_json


class NodeContext:
    """The `RunContext` a node gets while it runs."""

    def __init__(self, run: RunState, node_id: str) -> None:
        self._run = run
        self.node_id = node_id
        self.settings = run.executor.settings
        self.files: list[Path] = []
        self.low_memory = False
        """True when the node is retried after running out of memory: use tiling if you can."""

    def progress(self, done: float, total: float | None = None, message: str | None = None) -> None:
        self._run.cancel.raise_if_cancelled()
        self._run.emit(NodeProgress(self.node_id, done, total, message))

    def check_cancelled(self) -> None:
        self._run.cancel.raise_if_cancelled()

    def preview(self, image: Any) -> None:
        self._run.emit(NodePreview(self.node_id, image))

    def record_file(self, path: Path) -> None:
        self.files.append(Path(path))

    def note(self, facts: Mapping[str, str]) -> None:
        self._run.note(self.node_id, facts)

    @property
    def notes(self) -> dict[str, dict[str, str]]:
        return self._run.notes_above(self.node_id)

    @property
    def graph_json(self) -> str:
        return self._run.graph_json()

    @property
    def models(self) -> Any:
        return self._run.executor.models


@dataclass(eq=False, slots=True)
class Job:
    """One node ready to run: its inputs gathered, its context made."""

    node: str
    cls: type[Node]
    kwargs: dict[str, Any]
    ctx: NodeContext
    device: str | None = None
    components: list[Any] = field(default_factory=list)


class Scheduler:
    """Runs the planned nodes of one run as their inputs become ready.

    Independent branches run concurrently: nodes that compute on an accelerator run one
    at a time per device (branches spread over several devices), the others go to the
    executor's worker pool. Among ready accelerator nodes, the one whose models are
    already resident goes first, so nodes sharing a model are grouped and swaps are few.
    When only one node can run, it runs in the calling thread, so a chain costs no more
    than a plain loop. All bookkeeping happens in the calling thread; the workers only
    call the nodes.
    """

    def __init__(self, executor: Executor, graph: Graph, plan: Plan, run: RunState,
                 result: RunResult) -> None:
        self.executor = executor
        self.cache = executor.cache
        self.graph = graph
        self.plan = plan
        self.run_state = run
        run.plan = plan
        result.notes = run.notes
        self.result = result
        in_run = set(plan.to_run)
        order = depth_first(plan) if executor.model_aware else plan.to_run
        self.position = dict(zip(order, range(len(order))))
        """Each node's turn among those ready at once (depth first when model-aware)."""
        self.frugal = getattr(executor._models, "ram_budget", None) is not None  # noqa: SLF001
        """Under a RAM budget: one node at a time, depth first."""
        self.waiting: dict[str, int] = {}
        """Per node to run: parents still to finish."""
        self.children: dict[str, list[str]] = {}
        self.remaining_uses: dict[str, int] = {}
        """Per node: how many nodes of the run still read its outputs (see `consumers`)."""
        uses, children, waiting = self.remaining_uses, self.children, self.waiting
        incoming = plan.incoming
        for n in plan.to_run:  # one pass for all three
            count = 0
            for ln in incoming.get(n, ()):
                src = ln.src
                uses[src] = uses.get(src, 0) + 1
                if src in in_run:
                    count += 1
                    if src in children:
                        children[src].append(n)
                    else:
                        children[src] = [n]
            waiting[n] = count
        self.ready = [(self.position[n], n) for n in plan.to_run if self.waiting[n] == 0]
        heapq.heapify(self.ready)
        self.pending: list[Job] = []
        """Ready jobs with their inputs gathered, waiting for a device or a turn."""
        self.running: dict[Future[tuple[dict[str, Any], float]], Job] = {}
        self.values: dict[str, dict[str, Any]] = {}
        """Outputs of this run still needed by a later node or requested."""
        self.dead: set[str] = set()
        """Failed or skipped nodes: their descendants are skipped."""
        self.busy: set[str] = set()
        """Devices computing an accelerator node now."""
        self.placed: dict[str, str] = {}
        self.retried: set[str] = set()
        self.retry_jobs: dict[str, Job] = {}
        self.listening = run.listening
        """Is anyone listening to events (decided for the whole run)?"""

    @property
    def models(self) -> Any:
        return self.executor.models

    def run(self) -> tuple[dict[str, dict[str, Any]], set[str]]:
        """Run every planned node; returns the outputs kept and the nodes that did not run."""
        cancel = self.run_state.cancel
        ready, running, pending = self.ready, self.running, self.pending
        try:
            while ready or running or pending:
                if cancel.cancelled:
                    self.result.cancelled = True
                    ready.clear()
                    pending.clear()
                elif len(ready) == 1 and not running and not pending and not self.retry_jobs:
                    # One node can run and nothing else is under way (a chain): prepare it
                    # and, on the CPU, run it here, without the general steps below.
                    job = self._prepare(ready.pop()[1])
                    if job is None:
                        continue
                    if not job.cls.uses_accelerator:
                        self._start(job, "cpu")
                        continue
                    pending.append(job)
                self._prepare_ready()
                self._start_cpu_nodes()
                self._start_accelerator_nodes()
                if self.running:
                    self._collect_finished()
        finally:
            if self.running:  # leaving early (Ctrl-C): let no node run on after the run returns
                cancel.cancel()
                wait(list(self.running))
        return self.values, self.dead

    # --- the loop's steps -------------------------------------------------------------
    def _prepare_ready(self) -> None:
        while self.ready:
            _pos, n = heapq.heappop(self.ready)
            job = self.retry_jobs.pop(n, None) or self._prepare(n)
            if job is not None:
                self.pending.append(job)
        if len(self.pending) > 1:
            self.pending.sort(key=lambda j: self.position[j.node])

    def _start_cpu_nodes(self) -> None:
        # CPU nodes start at once (under a RAM budget only in depth-first turn, so models are
        # loaded just before they are used).
        pending = self.pending
        if len(pending) == 1 and not pending[0].cls.uses_accelerator and not (
                self.frugal and self.running):  # one ready node (a chain): no list to sort out
            self._start(pending.pop(), "cpu")
            return
        for job in [j for j in pending if not j.cls.uses_accelerator]:
            if self.frugal and (self.running or job is not self.pending[0]):
                break
            self.pending.remove(job)
            self._start(job, "cpu")
            if self.run_state.cancel.cancelled or self.frugal:
                break

    def _start_accelerator_nodes(self) -> None:
        # Accelerator nodes go by resident models first.
        while self.pending and not self.run_state.cancel.cancelled:
            if self.frugal and (self.running or self.pending[0].cls.uses_accelerator is False):
                break  # under a RAM budget: one node at a time, depth first
            options = [(d, j) for j in self.pending
                       if j.cls.uses_accelerator and (d := self._choose_device(j)) is not None]
            if not options:
                break  # every device is busy: wait for one
            device, job = min(options, key=lambda o: (
                self.models.bytes_to_load(o[1].components, o[0]) if self.executor.model_aware else 0,
                self.position[o[1].node]))
            self.pending.remove(job)
            self.placed[job.node] = device
            self._start(job, device)
            if job not in self.running.values():
                break  # it ran here: its children may be ready now and go first

    def _collect_finished(self) -> None:
        done, _ = wait(list(self.running), return_when=FIRST_COMPLETED)
        for future in sorted(done, key=lambda f: self.position[self.running[f].node]):
            job = self.running.pop(future)
            if job.cls.uses_accelerator:
                self.busy.discard(job.device or "")
            error = future.exception()
            if error is not None:
                self._done_with_error(job, error, "".join(traceback.format_exception(error)))
            else:
                outputs, seconds = future.result()
                self._finish(job, outputs, seconds)

    # --- one node ---------------------------------------------------------------------
    def _release(self, n: str) -> None:
        for child in self.children.get(n, ()):
            self.waiting[child] -= 1
            if self.waiting[child] == 0:
                heapq.heappush(self.ready, (self.position[child], child))

    def _finish(self, job: Job, outputs: dict[str, Any], seconds: float) -> None:
        n, ctx, plan, result = job.node, job.ctx, self.plan, self.result
        self.cache.put(plan.keys[n], n, outputs)
        self.values[n] = outputs
        result.ran.append(n)
        result.timings[n] = seconds
        if ctx.files:
            result.files.extend(ctx.files)
        if self.listening:
            self.run_state.emit(NodeFinished(n, job.cls.id, seconds, list(ctx.files)))
        # Drop values nothing later in this run needs (they stay in the cache).
        uses = self.remaining_uses
        for ln in plan.incoming.get(n, ()):
            left = uses.get(ln.src)
            if left is not None:
                uses[ln.src] = left - 1
                if left <= 1 and ln.src not in plan.requested:
                    self.values.pop(ln.src, None)
        # Its children are one parent closer to ready (as `_release`, inlined: once per node).
        waiting = self.waiting
        for child in self.children.get(n, ()):
            waiting[child] -= 1
            if waiting[child] == 0:
                heapq.heappush(self.ready, (self.position[child], child))

    def _fail(self, n: str, exc: BaseException, tb: str) -> None:
        cls = self.plan.classes[n]
        if isinstance(exc, Cancelled):
            self.result.cancelled = True
        else:
            error = locate_error(exc, self.graph, n, cls)
            self.result.failed[n] = error
            self.run_state.emit(NodeFailedEvent(n, cls.id, error, tb))
        self.dead.add(n)
        self._release(n)

    def _prepare(self, n: str) -> Job | None:
        plan, run = self.plan, self.run_state
        cls = plan.classes[n]
        links = plan.incoming.get(n, ())
        blocked = next((ln.src for ln in links if ln.src in self.dead), None) if self.dead else None
        if blocked is not None:
            self.dead.add(n)
            self.result.skipped.append(n)
            run.emit(NodeSkipped(n, cls.id, f"input from '{blocked}' is missing"))
            self._release(n)
            return None
        try:
            if run.has_dropped:
                for gone in run.take_dropped():
                    self.values.pop(gone, None)
            kwargs = self.gather_inputs(n, recompute=True)
            if links and _ranged_inputs(cls):
                check_actual_inputs(cls, kwargs, (ln.dst_socket for ln in links))
        except Exception as exc:  # noqa: BLE001
            self._fail(n, exc, traceback.format_exc())
            return None
        return Job(n, cls, kwargs, NodeContext(run, n))

    def _choose_device(self, job: Job) -> str | None:
        """A free device for an accelerator node, or None to wait for one."""
        devices = [d for d in self.models.devices if d.name not in self.busy]
        if not devices:
            return None
        parents = [self.placed[ln.src] for ln in self.plan.incoming.get(job.node, ())
                   if ln.src in self.placed]
        components = self.models.components_in(job.kwargs.values())
        job.components = components
        return min(devices, key=lambda d: (d.name not in parents,
                                           self.models.bytes_to_load(components, d.name),
                                           self.models.accounted(d.name))).name

    def _start(self, job: Job, device: str) -> None:
        job.device = device
        run = self.run_state
        if job.cls.uses_accelerator:
            why = self.models.check_fits(job.components, self.models.device_named(device))
            if why is not None:
                self._fail(job.node, ModelError(
                    why, hint="Raise --vram-budget, use --dtype fp16 or bf16, or a smaller "
                    "model."), "")
                return
        if self.listening and job.node not in self.retried:
            run.emit(NodeStarted(job.node, job.cls.id))
        if (not self.running and not self.ready and not self.pending) or self.executor.workers == 1:
            # Nothing else can run meanwhile: run it here.
            try:
                outputs, seconds = call_node(job)
            except BaseException as exc:  # noqa: BLE001 - includes Cancelled
                if isinstance(exc, KeyboardInterrupt):
                    raise
                self._done_with_error(job, exc, traceback.format_exc())
            else:
                self._finish(job, outputs, seconds)
            return
        self.running[self.executor.worker_pool().submit(call_node, job)] = job
        if job.cls.uses_accelerator:
            self.busy.add(device)

    def _done_with_error(self, job: Job, exc: BaseException, tb: str) -> None:
        if is_out_of_memory(exc) and job.node not in self.retried:
            # Out of memory: free what the budget allows and try once more, frugally.
            self.retried.add(job.node)
            self.models.free(job.device)
            job.ctx = NodeContext(self.run_state, job.node)
            job.ctx.low_memory = True
            heapq.heappush(self.ready, (self.position[job.node], job.node))
            self.retry_jobs[job.node] = job
            return
        self._fail(job.node, exc, tb)

    # --- inputs -----------------------------------------------------------------------
    def gather_inputs(self, n: str, *, recompute: bool = False) -> dict[str, Any]:
        """A node's keyword arguments: literals, defaults and its parents' outputs."""
        plan = self.plan
        cls = plan.classes[n]
        literals = self.graph.nodes[n].inputs
        defaults = _input_defaults(cls)
        if literals.keys() <= defaults.keys():  # the usual case: no value for an unknown input
            kwargs = {**defaults, **literals}  # in the order the inputs are declared
        else:
            get = literals.get
            kwargs = {name: get(name, default) for name, default in defaults.items()}
        for ln in plan.incoming.get(n, ()):
            source = self.values.get(ln.src)
            if source is None:
                source = self.cache.get(plan.keys[ln.src])
            if source is None and recompute:
                source = self._recompute(ln.src)
            if source is None:
                raise NodeflowError(f"the output of '{ln.src}' is no longer available")
            kwargs[ln.dst_socket] = source[ln.src_socket]
        return kwargs

    def _recompute(self, node: str) -> dict[str, Any]:
        """Run again a node whose output was let go (its model was dropped to keep within the
        RAM budget), and whatever of its ancestors is gone too; walks without recursion."""
        plan = self.plan
        missing: list[str] = []
        stack = [node]
        while stack:
            n = stack.pop()
            if n in missing or n in self.values or self.cache.get(plan.keys[n]) is not None:
                continue
            missing.append(n)
            stack.extend(ln.src for ln in plan.incoming.get(n, ()))
        position = {n: i for i, n in enumerate(plan.order)}
        for n in sorted(missing, key=position.__getitem__):
            job = Job(n, plan.classes[n], self.gather_inputs(n), NodeContext(self.run_state, n),
                      device="cpu")
            outputs, _seconds = call_node(job)
            self.cache.put(plan.keys[n], n, outputs)
            self.values[n] = outputs
        return self.values[node]


def check_actual_inputs(cls: type[Node], kwargs: Mapping[str, Any], linked: Any) -> None:
    """Raise `NodeInputError` when a value that arrived through a link is outside the input's
    declared range or choices (literals were checked by validation already)."""
    for name in linked:
        spec = cls.input_map.get(name)
        if spec is None or (spec.min is None and spec.max is None and spec.choices is None):
            continue
        why = check_value(spec, kwargs.get(name))
        if why:
            raise NodeInputError(name, f"the linked value {why}",
                                 hint="Change the value of the node that feeds this input.")


def _ranged_inputs(cls: type[Node]) -> bool:
    """Does the node type declare a range or choices on any input?"""
    known = _RANGED.get(cls)
    if known is None:
        known = any(s.min is not None or s.max is not None or s.choices is not None
                    for s in cls.inputs)
        _RANGED[cls] = known
    return known


_RANGED: dict[type[Node], bool] = {}


def _input_defaults(cls: type[Node]) -> dict[str, Any]:
    """Each input's name and the value it gets when the graph gives none (None if required)."""
    known = _DEFAULTS.get(cls)
    if known is None:
        known = _DEFAULTS[cls] = {s.name: s.default if s.has_default else None for s in cls.inputs}
    return known


_DEFAULTS: dict[type[Node], dict[str, Any]] = {}
_OUTPUT_NAMES: dict[type[Node], list[str]] = {}
_PLAIN = frozenset({int, float, str, bool, bytes, type(None)})
"""Types that are never a mapping of outputs (no Mapping check, which is slow for a number)."""


def call_node(job: Job) -> tuple[dict[str, Any], float]:
    """Run one node (in whichever thread), on the device the scheduler gave it."""
    node_token = current_node.set(job.node)
    device_token = current_device.set(job.device)
    try:
        started = time.perf_counter()
        raw = job.cls().run(job.ctx, **job.kwargs)
        return normalise_outputs(job.cls, raw), time.perf_counter() - started
    finally:
        current_node.reset(node_token)
        current_device.reset(device_token)


def is_out_of_memory(exc: BaseException) -> bool:
    if isinstance(exc, MemoryError):
        return True
    return type(exc).__name__ == "OutOfMemoryError" or "out of memory" in str(exc).lower()


def depth_first(plan: Plan) -> list[str]:
    """The nodes to run, each branch finished before the next starts (parents first).

    Running in this order keeps few intermediate values and models alive at once;
    it is computed with an explicit stack, never recursion.
    """
    in_run = set(plan.to_run)
    incoming = plan.incoming
    order: list[str] = []
    seen: set[str] = set()
    """Placed, or on the stack below their parents (a DAG: no parent of a node is on the stack)."""
    roots = [n for n in plan.requested if n in in_run]
    first = set(roots)
    roots += [n for n in reversed(plan.to_run) if n not in first]
    for root in roots:
        if root in seen:
            continue
        seen.add(root)
        # Each entry: a node and where it is in its links; a parent not yet seen is entered
        # before the node's next link is looked at (first parent first).
        stack = [(root, iter(incoming.get(root, ())))]
        while stack:
            n, links = stack[-1]
            for ln in links:
                src = ln.src
                if src in in_run and src not in seen:
                    seen.add(src)
                    stack.append((src, iter(incoming.get(src, ()))))
                    break
            else:  # every parent placed: the node goes next
                stack.pop()
                order.append(n)
    return order


def consumers(plan: Plan) -> dict[str, int]:
    """How many nodes of the run read each node's outputs."""
    uses: dict[str, int] = {}
    for n in plan.to_run:
        for ln in plan.incoming.get(n, ()):
            uses[ln.src] = uses.get(ln.src, 0) + 1
    return uses


def normalise_outputs(cls: type[Node], raw: Any) -> dict[str, Any]:
    """A node's return value as a mapping by output name; a located error when it is not one."""
    names = _OUTPUT_NAMES.get(cls)
    if names is None:
        names = _OUTPUT_NAMES[cls] = [o.name for o in cls.outputs]
    if len(names) == 1 and (type(raw) in _PLAIN or (type(raw) is not dict and not isinstance(raw, Mapping))):
        return {names[0]: raw}  # the usual case first: one output, its value
    if isinstance(raw, Mapping):
        missing = [name for name in names if name not in raw]
        if missing:
            raise NodeflowError(f"the node returned no value for output '{missing[0]}'",
                                hint="This is a bug in the node type; report it to its pack.")
        return {name: raw[name] for name in names}
    if len(names) == 1:
        return {names[0]: raw}
    if not names and raw is None:
        return {}
    raise NodeflowError(f"the node returned {type(raw).__name__}, expected a mapping of "
                        f"its outputs ({', '.join(names)})",
                        hint="This is a bug in the node type; report it to its pack.")


def locate_error(exc: BaseException, graph: Graph, node_id: str, cls: type[Node]) -> NodeFailed:
    """Any exception from a node, as a `NodeFailed` naming the file, node and socket."""
    socket = exc.socket if isinstance(exc, NodeInputError) else None
    loc = Location(graph.file_name, node_id, cls.id, socket)
    if isinstance(exc, NodeflowError):
        return NodeFailed(exc.message, location=loc, hint=exc.hint, cause=exc)
    if isinstance(exc, MemoryError) or "out of memory" in str(exc).lower():
        return NodeFailed(f"out of memory: {exc}", location=loc, cause=exc,
                          hint="Use smaller images or batches, or a tiled mode where the node has one.")
    return NodeFailed(f"{type(exc).__name__}: {exc}", location=loc, cause=exc)
