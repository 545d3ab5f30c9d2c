"""Plan, then run: the executor.

``plan_execution`` works out what the requested outputs need: it computes every
node's cache key in topological order and walks back from the requested nodes
only as far as the cache does not reach. ``estimate_plan_memory`` then estimates
each node's memory need from its literal inputs and what flows into it, and
``check_plan_memory`` fails the run, before any node runs, when a node can never
fit a device's budget. ``Executor.run`` then runs the nodes that must run,
emitting events, isolating failures and honouring cancellation.
"""

from __future__ import annotations

import heapq
import os
import threading
import time
import traceback
import uuid
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nodeflow.cache import OutputCache, node_key
from nodeflow.devices import Device, format_size
from nodeflow.errors import (
    Cancelled,
    GraphInvalid,
    Location,
    ModelError,
    NodeFailed,
    NodeflowError,
    NodeInputError,
    UsageError,
)
from nodeflow.events import (
    CancelToken,
    Event,
    NodeCached,
    NodeFinished,
    NodePreview,
    NodeProgress,
    NodeSkipped,
    NodeStarted,
    RunFinished,
    RunStarted,
)
from nodeflow.events import NodeFailed as NodeFailedEvent
from nodeflow.graph import Graph, Link
from nodeflow.node import EstimateContext, MemoryEstimate, Node, ValueEstimate
from nodeflow.registry import NodeRegistry
from nodeflow.settings import Settings
from nodeflow.threads import configure_threads
from nodeflow.types import TypeParam
from nodeflow.validate import GraphValidator, kahn_order, literal_values

EventSink = Callable[[Event], None]


@dataclass
class Plan:
    """What a run will do: nodes to run in order, and nodes served from the cache."""

    order: list[str]
    """Every node the requested outputs depend on, in topological order."""
    keys: dict[str, str]
    to_run: list[str]
    cached: list[str]
    requested: list[str]
    classes: dict[str, type[Node]]
    incoming: dict[str, list[Link]]


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
        }


def topological_order(nodes: Iterable[str], links: Iterable[Link]) -> list[str]:
    """Kahn's algorithm, iterative (a 100,000-node chain is fine); raises on a cycle."""
    order, cyclic = kahn_order(list(nodes), links)
    if cyclic:
        raise UsageError("the graph has a cycle; run `nodeflow validate` to see it")
    return order


@dataclass
class _Structure:
    """The parts of a plan that depend only on the graph, not on the cache."""

    order: list[str]
    keys: dict[str, str]
    wanted: list[str]
    classes: dict[str, type[Node]]
    incoming: dict[str, list[Link]]
    deterministic: bool


def plan_execution(graph: Graph, registry: NodeRegistry, cache: OutputCache,
                   requested: Iterable[str] | None = None, *, settings: Settings | None = None,
                   force: Iterable[str] = (), structure: _Structure | None = None) -> Plan:
    """Work out which nodes the requested outputs need and which of those must run.

    ``requested`` defaults to every output node. ``force`` names nodes to run even if cached.
    ``structure`` reuses the keys computed for the same, unchanged graph.
    """
    if structure is None:
        structure = graph_structure(graph, registry, requested, settings or Settings())
    order, keys, wanted = structure.order, structure.keys, structure.wanted
    classes, incoming = structure.classes, structure.incoming

    # Walk back from the requested nodes as far as the cache does not reach.
    forced = set(force)
    must_run: set[str] = set()
    cached: list[str] = []
    seen: set[str] = set()
    stack = list(wanted)
    while stack:
        n = stack.pop()
        if n in seen:
            continue
        seen.add(n)
        if n not in forced and keys[n] in cache:
            cached.append(n)
            continue
        must_run.add(n)
        stack.extend(link.src for link in incoming.get(n, ()))
    to_run = [n for n in order if n in must_run] if len(must_run) != len(order) else list(order)
    return Plan(order, keys, to_run, cached, wanted, classes, incoming)


def graph_structure(graph: Graph, registry: NodeRegistry, requested: Iterable[str] | None,
                    settings: Settings) -> _Structure:
    """Order and cache keys of every node the requested outputs depend on."""
    classes = {}
    for node in graph:
        cls = registry.get(node.type)
        if cls is None:
            raise UsageError(f"unknown node type '{node.type}'",
                             location=Location(graph.file_name, node.id, node.type))
        classes[node.id] = cls
    if requested is None:
        wanted = [n for n, c in classes.items() if c.output_node]
    else:
        wanted = list(dict.fromkeys(requested))
        for n in wanted:
            if n not in graph.nodes:
                raise UsageError(f"--output names node '{n}', which is not in the graph",
                                 location=Location(graph.file_name))
    incoming: dict[str, list[Link]] = {}
    links = graph.links
    for link in links:
        incoming.setdefault(link.dst, []).append(link)

    # Everything the requested nodes depend on (iterative walk, never recursion).
    needed: set[str] = set()
    stack = list(wanted)
    while stack:
        n = stack.pop()
        if n in needed:
            continue
        needed.add(n)
        stack.extend(link.src for link in incoming.get(n, ()))
    order = topological_order((n for n in graph.nodes if n in needed),
                              (ln for ln in links if ln.dst in needed))

    keys: dict[str, str] = {}
    out_dir = str(settings.out_dir.resolve())
    for n in order:
        cls = classes[n]
        if not cls.deterministic:
            keys[n] = uuid.uuid4().hex
            continue
        upstream = [(ln.dst_socket, keys[ln.src], ln.src_socket) for ln in incoming.get(n, ())]
        keys[n] = node_key(cls.id, cls.version, graph.nodes[n].inputs, upstream,
                           out_dir if cls.output_node else "")
    deterministic = all(classes[n].deterministic for n in order)
    return _Structure(order, keys, wanted, classes, incoming, deterministic)


def estimate_plan_memory(graph: Graph, plan: Plan, settings: Settings,
                         dtypes: Callable[[str, str], str] | None = None,
                         accelerator: str = "cpu") -> dict[str, MemoryEstimate]:
    """Each planned node's memory estimate, made before anything runs; nodes whose need is
    unknown or nil are left out.

    Walks the nodes in order, giving each its literal inputs and what its linked inputs
    carry (see `Node.estimate_memory`). ``dtypes`` is the model manager's dtype rule;
    nodes that use the accelerator are estimated for the device named ``accelerator``.
    """
    hooked = {cls for cls in set(plan.classes.values()) if declares_estimate(cls)}
    if not hooked:
        return {}  # nothing declares a need: nothing can flow either
    contexts = {False: EstimateContext(settings, "cpu", dtypes),
                True: EstimateContext(settings, accelerator, dtypes)}
    carried: dict[tuple[str, str], ValueEstimate] = {}
    estimates: dict[str, MemoryEstimate] = {}
    for n in plan.order:
        cls = plan.classes[n]
        links = plan.incoming.get(n, ())
        upstream = {ln.dst_socket: carried[(ln.src, ln.src_socket)] for ln in links
                    if (ln.src, ln.src_socket) in carried}
        if cls not in hooked and not upstream:
            continue
        estimate = None
        if cls in hooked:
            try:
                estimate = cls.estimate_memory(_literal_values(graph, n, cls, links), upstream,
                                               contexts[cls.uses_accelerator])
            except Exception:  # noqa: BLE001 - a faulty estimate must not stop a run: unknown
                estimate = None
        elif cls.uses_accelerator:
            estimate = MemoryEstimate(_merged(v.models for v in upstream.values()))
        outputs = _default_carry(cls, upstream)
        if estimate is not None:
            outputs.update(estimate.outputs)
            if estimate.total > 0:
                estimates[n] = estimate
        for name, value in outputs.items():
            if value.models or value.info:
                carried[(n, name)] = value
    return estimates


def declares_estimate(cls: type[Node]) -> bool:
    """Does the node type have its own `Node.estimate_memory`?"""
    return getattr(cls.estimate_memory, "__func__", None) is not _BASE_ESTIMATE


_BASE_ESTIMATE = Node.estimate_memory.__func__  # type: ignore[attr-defined]


def check_plan_memory(graph: Graph, plan: Plan, estimates: Mapping[str, MemoryEstimate],
                      devices: list[Device], dtype_override: str | None = None) -> None:
    """Raise `ModelError`, before anything runs, when a node to run that uses the accelerator
    needs more than the budget of every device, even with every other model offloaded."""
    if not devices:
        return
    largest = max(devices, key=lambda d: d.budget)
    too_big = [n for n in plan.to_run if plan.classes[n].uses_accelerator and n in estimates
               and estimates[n].least > largest.budget]
    if not too_big:
        return
    n = too_big[0]
    cls, estimate = plan.classes[n], estimates[n]
    models = ", ".join(f"{name} {format_size(size)}" for name, size in estimate.models.items())
    parts = [f"models {format_size(estimate.model_bytes)}: {models or 'none known'}"]
    if estimate.activations:
        adapts = estimate.least < estimate.total
        activations = estimate.least - estimate.model_bytes
        parts.append(f"activations {'at least' if adapts else 'about'} {format_size(activations)}"
                     f"{f' at {estimate.note}' if estimate.note else ''}")
    where = (f"the budget of {largest.name}" if len(devices) == 1
             else f"the largest budget, of {largest.name}")
    others = (f" ({len(too_big) - 1} other node{'s' if len(too_big) > 2 else ''} cannot fit either: "
              f"{', '.join(too_big[1:])})" if len(too_big) > 1 else "")
    values = _literal_values(graph, n, cls, plan.incoming.get(n, ()))
    tries = [f"a larger --vram-budget (at least {format_size(estimate.least)})"]
    if dtype_override not in ("fp16", "bf16"):
        tries.append("--dtype fp16 or bf16 (half the bytes of fp32 weights and activations)")
    if "tiled" in cls.input_map and values.get("tiled") is False:
        tries.append(f"tiling (--set {n}.tiled=true)")
    if estimate.activations:
        tries.append("a smaller image size or batch")
    raise ModelError(
        f"needs about {format_size(estimate.least)} on the device ({'; '.join(parts)}), more "
        f"than {where}, {format_size(largest.budget)}, even with every other model offloaded. "
        f"Nothing was run{others}.",
        location=Location(graph.file_name, n, cls.id),
        hint=f"Try {', '.join(tries[:-1]) + ' or ' + tries[-1] if len(tries) > 1 else tries[0]}.")


def _literal_values(graph: Graph, n: str, cls: type[Node], links: Iterable[Link]) -> dict[str, Any]:
    """The literal inputs of a node and the defaults of its unset, unlinked inputs (as `check`
    gets them)."""
    return literal_values(cls, graph.nodes[n].inputs, (ln.dst_socket for ln in links))


def _merged(groups: Iterable[Mapping[str, int]]) -> dict[str, int]:
    merged: dict[str, int] = {}
    for models in groups:
        for name, size in models.items():
            merged[name] = max(size, merged.get(name, 0))
    return merged


def _same_type(a: Any, b: Any) -> bool:
    if isinstance(a, TypeParam) or isinstance(b, TypeParam):
        return isinstance(a, TypeParam) and isinstance(b, TypeParam) and a.name == b.name
    return bool(a == b)


def _default_carry(cls: type[Node], upstream: Mapping[str, ValueEstimate]) -> dict[str, ValueEstimate]:
    """What a node's outputs carry when it does not say: the models of the inputs of the same
    type (with what is known of them), and, for nodes that do not use the accelerator, of
    inputs no output's type matches."""
    if not upstream:
        return {}
    packed: dict[str, int] = {}
    if not cls.uses_accelerator:
        packed = _merged(value.models for name, value in upstream.items()
                         if not any(_same_type(cls.input_map[name].type, o.type) for o in cls.outputs))
    carry = {}
    for out in cls.outputs:
        same = [value for name, value in upstream.items()
                if _same_type(cls.input_map[name].type, out.type)]
        models = _merged([*(value.models for value in same), packed])
        if models:
            # What is known of models (their widths, dtype) travels with them; the sizes of
            # other values (images, latents) may have been changed by the node.
            info = {k: v for value in reversed(same) if value.models for k, v in value.info.items()}
            carry[out.name] = ValueEstimate(models, info)
    return carry


class _Context:
    """The `RunContext` a node gets while it runs."""

    def __init__(self, run: _Run, node_id: str) -> None:
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

    @property
    def graph_json(self) -> str:
        return self._run.graph_json()

    @property
    def models(self) -> Any:
        return self._run.executor.models


class _Run:
    def __init__(self, executor: Executor, graph: Graph, on_event: EventSink | None,
                 cancel: CancelToken) -> None:
        self.executor = executor
        self.graph = graph
        self.on_event = on_event
        self.cancel = cancel
        self._graph_json: str | None = None
        self._emit_lock = threading.Lock()
        self._dropped: list[str] = []

    def model_dropped(self, entry: Any) -> None:
        """The model manager let a model go: so must the outputs holding it."""
        if entry.node is not None:
            self.executor.cache.evict_node(entry.node)
            with self._emit_lock:
                self._dropped.append(entry.node)

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


class Executor:
    """Runs graphs. Keeps an output cache and a model manager across runs; reusable after
    a failure or a cancel. Not re-entrant: run one graph at a time per executor.
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
        self._models = models
        self._validated: tuple[Any, ...] | None = None
        self._structure: tuple[tuple[Any, ...], _Structure] | None = None
        self._declared: tuple[dict[str, type[Node]], bool] | None = None
        self._pool: ThreadPoolExecutor | None = None
        self._pool_lock = threading.Lock()

    def worker_pool(self) -> ThreadPoolExecutor:
        """The executor's worker threads, made once and reused by every run.

        Each thread that calls torch gets its own OpenMP team; a pool per run left idle teams
        behind that competed for the cores, and later runs grew slower.
        """
        with self._pool_lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self.workers, thread_name_prefix="nodeflow-worker")
            return self._pool

    def close(self) -> None:
        """Stop the worker threads (the cache and the models stay; a later run starts them
        again)."""
        with self._pool_lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True)

    def __enter__(self) -> Executor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _settings_stamp(self) -> tuple[Any, ...]:
        s = self.settings
        return (tuple(s.models_dirs), str(s.out_dir), s.base_dir)

    @property
    def models(self) -> Any:
        if self._models is None:
            from nodeflow.models import ModelManager

            self._models = ModelManager()
        return self._models

    def validate(self, graph: Graph) -> None:
        """Raise `GraphInvalid` if the graph has problems (remembered per graph revision)."""
        stamp = (graph.uid, graph.revision, self._settings_stamp())
        if self._validated == stamp:
            return
        problems = GraphValidator(self.registry, self.settings).validate(graph)
        if problems:
            raise GraphInvalid(problems, graph.file_name)
        self._validated = stamp

    def run(self, graph: Graph, outputs: Iterable[str] | None = None, *,
            on_event: EventSink | None = None, cancel: CancelToken | None = None,
            force: Iterable[str] = ()) -> RunResult:
        """Run what the requested outputs (default: all output nodes) need.

        Raises `GraphInvalid` for a bad graph, and `ModelError` before any node runs when
        the plan-time estimates show a node that can never fit a device's memory budget; node
        failures and cancellation are reported in the result (and as events), never raised.
        """
        self.validate(graph)
        run = _Run(self, graph, on_event, cancel or CancelToken())
        requested = None if outputs is None else tuple(outputs)
        stamp = (graph.uid, graph.revision, requested, self._settings_stamp())
        if self._structure is not None and self._structure[0] == stamp:
            structure = self._structure[1]
        else:
            structure = graph_structure(graph, self.registry, requested, self.settings)
            self._structure = (stamp, structure) if structure.deterministic else None
        plan = plan_execution(graph, self.registry, self.cache, requested, force=force,
                              structure=structure)
        self._plan_memory(graph, plan)
        result = RunResult(cached=list(plan.cached))
        run.emit(RunStarted(list(plan.to_run), list(plan.cached)))
        if run.listening:
            for n in plan.cached:
                run.emit(NodeCached(n, plan.classes[n].id))

        watch_drops = self._models is not None and hasattr(self._models, "on_drop")
        if watch_drops:
            self._models.on_drop.append(run.model_dropped)
        try:
            values, dead = self._execute(graph, plan, run, result)
        finally:
            if watch_drops:
                self._models.on_drop.remove(run.model_dropped)
        for n in plan.requested:
            if n in values:
                result.outputs[n] = values[n]
            elif n not in dead and not result.cancelled:
                cached = self.cache.get(plan.keys[n])
                if cached is not None:
                    result.outputs[n] = cached
        run.emit(RunFinished(result))
        return result

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

    def _execute(self, graph: Graph, plan: Plan, run: _Run,
                 result: RunResult) -> tuple[dict[str, dict[str, Any]], set[str]]:
        """Run the planned nodes as their inputs become ready.

        Independent branches run concurrently: nodes that compute on an
        accelerator run one at a time per device (branches spread over several
        devices), the others go to a worker pool. Among ready accelerator nodes,
        the one whose models are already resident goes first, so nodes sharing a
        model are grouped and swaps are few. When only one node can run, it runs
        in this thread, so a chain costs no more than a plain loop. All
        bookkeeping happens here; the workers only call the nodes.
        """
        in_run = set(plan.to_run)
        position = {n: i for i, n in enumerate(_depth_first(plan) if self.model_aware
                                               else plan.to_run)}
        frugal = getattr(self._models, "ram_budget", None) is not None
        waiting: dict[str, int] = {}
        children: dict[str, list[str]] = {}
        for n in plan.to_run:
            parents = [ln.src for ln in plan.incoming.get(n, ()) if ln.src in in_run]
            waiting[n] = len(parents)
            for p in parents:
                children.setdefault(p, []).append(n)
        ready = [(position[n], n) for n in plan.to_run if waiting[n] == 0]
        heapq.heapify(ready)
        values: dict[str, dict[str, Any]] = {}
        dead: set[str] = set()
        remaining_uses = _consumers(plan)
        running: dict[Future[tuple[dict[str, Any], float]], _Job] = {}
        busy: set[str] = set()
        placed: dict[str, str] = {}
        retried: set[str] = set()

        def release(n: str) -> None:
            for child in children.get(n, ()):
                waiting[child] -= 1
                if waiting[child] == 0:
                    heapq.heappush(ready, (position[child], child))

        def finish(job: _Job, outputs: dict[str, Any], seconds: float) -> None:
            n, ctx = job.node, job.ctx
            self.cache.put(plan.keys[n], n, outputs)
            values[n] = outputs
            result.ran.append(n)
            result.timings[n] = seconds
            if ctx.files:
                result.files.extend(ctx.files)
            if run.listening:
                run.emit(NodeFinished(n, plan.classes[n].id, seconds, list(ctx.files)))
            # Drop values nothing later in this run needs (they stay in the cache).
            for ln in plan.incoming.get(n, ()):
                if ln.src in remaining_uses:
                    remaining_uses[ln.src] -= 1
                    if remaining_uses[ln.src] <= 0 and ln.src not in plan.requested:
                        values.pop(ln.src, None)
            release(n)

        def fail(n: str, exc: BaseException, tb: str) -> None:
            cls = plan.classes[n]
            if isinstance(exc, Cancelled):
                result.cancelled = True
            else:
                error = _locate(exc, graph, n, cls)
                result.failed[n] = error
                run.emit(NodeFailedEvent(n, cls.id, error, tb))
            dead.add(n)
            release(n)

        def prepare(n: str) -> _Job | None:
            cls = plan.classes[n]
            blocked = next((ln.src for ln in plan.incoming.get(n, ()) if ln.src in dead), None)
            if blocked is not None:
                dead.add(n)
                result.skipped.append(n)
                run.emit(NodeSkipped(n, cls.id, f"input from '{blocked}' is missing"))
                release(n)
                return None
            try:
                for gone in run.take_dropped():
                    values.pop(gone, None)
                kwargs = self._gather_inputs(graph, plan, n, values, run)
            except Exception as exc:  # noqa: BLE001
                fail(n, exc, traceback.format_exc())
                return None
            return _Job(n, cls, kwargs, _Context(run, n))

        def choose_device(job: _Job) -> str | None:
            """A free device for an accelerator node, or None to wait for one."""
            devices = [d for d in self.models.devices if d.name not in busy]
            if not devices:
                return None
            parents = [placed[ln.src] for ln in plan.incoming.get(job.node, ()) if ln.src in placed]
            components = self.models.components_in(job.kwargs.values())
            job.components = components
            return min(devices, key=lambda d: (d.name not in parents,
                                               self.models.bytes_to_load(components, d.name),
                                               self.models.accounted(d.name))).name

        def start(job: _Job, device: str) -> None:
            job.device = device
            if job.cls.uses_accelerator:
                why = self.models.check_fits(job.components, self.models.device_named(device))
                if why is not None:
                    fail(job.node, ModelError(
                        why, hint="Raise --vram-budget, use --dtype fp16 or bf16, or a smaller "
                        "model."), "")
                    return
            if run.listening and job.node not in retried:
                run.emit(NodeStarted(job.node, job.cls.id))
            if (not running and not ready and not pending) or self.workers == 1:
                # Nothing else can run meanwhile: run it here.
                try:
                    outputs, seconds = _call(job)
                except BaseException as exc:  # noqa: BLE001 - includes Cancelled
                    if isinstance(exc, KeyboardInterrupt):
                        raise
                    done_with_error(job, exc, traceback.format_exc())
                else:
                    finish(job, outputs, seconds)
                return
            running[self.worker_pool().submit(_call, job)] = job
            if job.cls.uses_accelerator:
                busy.add(device)

        def done_with_error(job: _Job, exc: BaseException, tb: str) -> None:
            if _is_oom(exc) and job.node not in retried:
                # Out of memory: free what the budget allows and try once more, frugally.
                retried.add(job.node)
                self.models.free(job.device)
                job.ctx = _Context(run, job.node)
                job.ctx.low_memory = True
                heapq.heappush(ready, (position[job.node], job.node))
                retry_jobs[job.node] = job
                return
            fail(job.node, exc, tb)

        retry_jobs: dict[str, _Job] = {}
        pending: list[_Job] = []
        try:
            while ready or running or pending:
                if run.cancel.cancelled:
                    result.cancelled = True
                    ready.clear()
                    pending.clear()
                while ready:
                    _pos, n = heapq.heappop(ready)
                    job = retry_jobs.pop(n, None) or prepare(n)
                    if job is not None:
                        pending.append(job)
                # CPU nodes start at once (under a RAM budget only in depth-first turn, so
                # models are loaded just before they are used); accelerator nodes by
                # resident models first.
                pending.sort(key=lambda j: position[j.node])
                for job in [j for j in pending if not j.cls.uses_accelerator]:
                    if frugal and (running or job is not pending[0]):
                        break
                    pending.remove(job)
                    start(job, "cpu")
                    if run.cancel.cancelled or frugal:
                        break
                while pending and not run.cancel.cancelled:
                    if frugal and (running or pending[0].cls.uses_accelerator is False):
                        break  # under a RAM budget: one node at a time, depth first
                    options = [(d, j) for j in pending
                               if j.cls.uses_accelerator and (d := choose_device(j)) is not None]
                    if not options:
                        break  # every device is busy: wait for one
                    device, job = min(options, key=lambda o: (
                        self.models.bytes_to_load(o[1].components, o[0]) if self.model_aware else 0,
                        position[o[1].node]))
                    pending.remove(job)
                    placed[job.node] = device
                    start(job, device)
                    if job not in running.values():
                        break  # it ran here: its children may be ready now and go first
                if not running:
                    continue
                done, _ = wait(list(running), return_when=FIRST_COMPLETED)
                for future in sorted(done, key=lambda f: position[running[f].node]):
                    job = running.pop(future)
                    if job.cls.uses_accelerator:
                        busy.discard(job.device or "")
                    error = future.exception()
                    if error is not None:
                        done_with_error(job, error, "".join(traceback.format_exception(error)))
                    else:
                        outputs, seconds = future.result()
                        finish(job, outputs, seconds)
        finally:
            if running:  # leaving early (Ctrl-C): let no node run on after the run returns
                run.cancel.cancel()
                wait(list(running))
        return values, dead

    def _gather_inputs(self, graph: Graph, plan: Plan, n: str, values: dict[str, dict[str, Any]],
                       run: _Run | None = None) -> dict[str, Any]:
        cls = plan.classes[n]
        literals = graph.nodes[n].inputs
        kwargs: dict[str, Any] = {}
        for spec in cls.inputs:
            if spec.name in literals:
                kwargs[spec.name] = literals[spec.name]
            elif spec.has_default:
                kwargs[spec.name] = spec.default
            else:
                kwargs[spec.name] = None
        for ln in plan.incoming.get(n, ()):
            source = values.get(ln.src)
            if source is None:
                source = self.cache.get(plan.keys[ln.src])
            if source is None and run is not None:
                source = self._recompute(graph, plan, ln.src, values, run)
            if source is None:
                raise NodeflowError(f"the output of '{ln.src}' is no longer available")
            kwargs[ln.dst_socket] = source[ln.src_socket]
        return kwargs

    def _recompute(self, graph: Graph, plan: Plan, node: str, values: dict[str, dict[str, Any]],
                   run: _Run) -> dict[str, Any]:
        """Run again a node whose output was let go (its model was dropped to keep within the
        RAM budget), and whatever of its ancestors is gone too; walks without recursion."""
        missing: list[str] = []
        stack = [node]
        while stack:
            n = stack.pop()
            if n in missing or n in values or self.cache.get(plan.keys[n]) is not None:
                continue
            missing.append(n)
            stack.extend(ln.src for ln in plan.incoming.get(n, ()))
        position = {n: i for i, n in enumerate(plan.order)}
        outputs: dict[str, Any] = {}
        for n in sorted(missing, key=position.__getitem__):
            job = _Job(n, plan.classes[n], self._gather_inputs(graph, plan, n, values), _Context(run, n),
                       device="cpu")
            outputs, _seconds = _call(job)
            self.cache.put(plan.keys[n], n, outputs)
            values[n] = outputs
        return values[node]


@dataclass(eq=False)
class _Job:
    node: str
    cls: type[Node]
    kwargs: dict[str, Any]
    ctx: _Context
    device: str | None = None
    components: list[Any] = field(default_factory=list)


def _call(job: _Job) -> tuple[dict[str, Any], float]:
    """Run one node (in whichever thread), on the device the scheduler gave it."""
    from nodeflow.models import current_device, current_node

    node_token = current_node.set(job.node)
    device_token = current_device.set(job.device)
    try:
        started = time.perf_counter()
        raw = job.cls().run(job.ctx, **job.kwargs)
        return _normalise_outputs(job.cls, raw), time.perf_counter() - started
    finally:
        current_node.reset(node_token)
        current_device.reset(device_token)


def _first_device(models: Any) -> str:
    devices = getattr(models, "devices", None)
    return devices[0].name if devices else "cpu"


def _is_oom(exc: BaseException) -> bool:
    if isinstance(exc, MemoryError):
        return True
    return type(exc).__name__ == "OutOfMemoryError" or "out of memory" in str(exc).lower()


def _depth_first(plan: Plan) -> list[str]:
    """The nodes to run, each branch finished before the next starts (parents first).

    Running in this order keeps few intermediate values and models alive at once;
    it is computed with an explicit stack, never recursion.
    """
    in_run = set(plan.to_run)
    order: list[str] = []
    done: set[str] = set()
    roots = [n for n in plan.requested if n in in_run]
    roots += [n for n in reversed(plan.to_run) if n not in roots]
    for root in roots:
        if root in done:
            continue
        stack: list[tuple[str, bool]] = [(root, False)]
        while stack:
            n, expanded = stack.pop()
            if n in done:
                continue
            if expanded:
                done.add(n)
                order.append(n)
                continue
            stack.append((n, True))
            parents = [ln.src for ln in plan.incoming.get(n, ()) if ln.src in in_run and ln.src not in done]
            stack.extend((p, False) for p in reversed(parents))
    return order


def _consumers(plan: Plan) -> dict[str, int]:
    uses: dict[str, int] = {}
    for n in plan.to_run:
        for ln in plan.incoming.get(n, ()):
            uses[ln.src] = uses.get(ln.src, 0) + 1
    return uses


def _normalise_outputs(cls: type[Node], raw: Any) -> dict[str, Any]:
    names = [o.name for o in cls.outputs]
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


def _locate(exc: BaseException, graph: Graph, node_id: str, cls: type[Node]) -> NodeFailed:
    socket = exc.socket if isinstance(exc, NodeInputError) else None
    loc = Location(graph.file_name, node_id, cls.id, socket)
    if isinstance(exc, NodeflowError):
        return NodeFailed(exc.message, location=loc, hint=exc.hint, cause=exc)
    if isinstance(exc, MemoryError) or "out of memory" in str(exc).lower():
        return NodeFailed(f"out of memory: {exc}", location=loc, cause=exc,
                          hint="Use smaller images or batches, or a tiled mode where the node has one.")
    return NodeFailed(f"{type(exc).__name__}: {exc}", location=loc, cause=exc)
