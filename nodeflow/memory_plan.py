"""Memory planning: each planned node's memory need, estimated before anything runs.

``estimate_plan_memory`` walks the plan in order, giving each node its input values and
what its linked inputs carry (`ValueEstimate`); ``check_plan_memory`` fails a run, before
any node runs, when a node can never fit a device's budget.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

from nodeflow.devices import Device, format_size
from nodeflow.errors import Location, ModelError
from nodeflow.graph import Graph, Link
from nodeflow.node import EstimateContext, MemoryEstimate, Node, ValueEstimate
from nodeflow.plan import Plan
from nodeflow.settings import Settings
from nodeflow.types import TypeParam
from nodeflow.validate import constant_inputs, literal_values


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
    constants = plan_constants(graph, plan)
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
                estimate = cls.estimate_memory(_literal_values(graph, n, cls, links, constants), upstream,
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
    values = _literal_values(graph, n, cls, plan.incoming.get(n, ()), plan_constants(graph, plan))
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


def plan_constants(graph: Graph, plan: Plan) -> Mapping[tuple[str, str], tuple[Any, Link]]:
    """The constants that arrive through links into the planned nodes (see
    `nodeflow.validate.constant_inputs`): the memory plan sizes what will actually run."""
    return constant_inputs(graph, plan.classes,
                           (ln for links in plan.incoming.values() for ln in links), plan.order)


def _literal_values(graph: Graph, n: str, cls: type[Node], links: Iterable[Link],
                    constants: Mapping[tuple[str, str], tuple[Any, Link]]) -> dict[str, Any]:
    """The literal inputs of a node, the defaults of its unset, unlinked inputs (as `check`
    gets them) and the constants that arrive through its links."""
    links = list(links)
    values = literal_values(cls, graph.nodes[n].inputs, (ln.dst_socket for ln in links))
    for ln in links:
        arriving = constants.get((n, ln.dst_socket))
        if arriving is not None:
            values[ln.dst_socket] = arriving[0]
    return values


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

