"""Sweep specifications: ``--sweep NODE.INPUT=VALUES`` turned into a list of jobs.

VALUES is one of

- ``A..B`` or ``A..B..STEP``: numbers from A to B inclusive (integers, or decimals with a step);
- ``@FILE``: one value per non-blank line of a text file (a prompt list, a seed list);
- ``[...]``: a JSON list;
- ``V1,V2,V3``: a comma-separated list (numbers and choices; text takes ``@FILE`` or JSON);
- a single value.

Several axes make a grid (every combination, the first axis outermost) or, with ``zip``,
one job per position (the axes must be equally long). Each job is a set of overrides with a
stable name built from them (``seed-17_text-3``), so outputs and the manifest can be named
by job and a re-run recognises the jobs it has already done.
"""

from __future__ import annotations

import itertools
import json
import re
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

from nodeflow.errors import GraphInvalid, Location, Problem
from nodeflow.graph import Graph, split_ref
from nodeflow.node import Input, check_literal, parse_literal
from nodeflow.overrides import override_target

MAX_JOBS = 1_000_000
"""A sweep larger than this is almost certainly a typo in a range."""


@dataclass(frozen=True)
class SweepAxis:
    """One ``--sweep``: the input it varies and its values, each with a short label."""

    node: str
    socket: str
    values: tuple[Any, ...]
    labels: tuple[str, ...]
    spec: str

    @property
    def ref(self) -> str:
        return f"{self.node}.{self.socket}"


@dataclass(frozen=True)
class Job:
    """One run of a sweep: the inputs it overrides, and a name made from them."""

    index: int
    name: str
    overrides: dict[str, Any] = field(default_factory=dict)
    """``node.input`` → value."""

    def apply(self, graph: Graph) -> Graph:
        """A copy of ``graph`` with this job's overrides set."""
        job_graph = graph.copy()
        for ref, value in self.overrides.items():
            node_id, socket = split_ref(ref)
            job_graph.set_input(node_id, socket, value)
        return job_graph


def parse_sweeps(graph: Graph, registry: Any, specs: list[str], *, zipped: bool = False,
                 cwd: Path | None = None) -> list[Job]:
    """The jobs of ``specs`` on ``graph``; raise `GraphInvalid` listing every bad spec, located."""
    axes: list[SweepAxis] = []
    problems: list[Problem] = []
    seen: dict[str, str] = {}
    for spec in specs:
        axis, found = _parse_axis(graph, registry, spec, cwd or Path.cwd())
        problems += found
        if axis is None:
            continue
        if axis.ref in seen:
            problems.append(Problem("usage", f"--sweep {spec!r}: {axis.ref} is already swept by "
                                    f"--sweep {seen[axis.ref]!r}; give one --sweep per input",
                                    _location(graph, registry, axis.node, axis.socket)))
            continue
        seen[axis.ref] = spec
        axes.append(axis)
    if problems:
        raise GraphInvalid(problems, graph.file_name)
    if not axes:
        return [Job(0, "job", {})]
    if zipped:
        lengths = {len(a.values) for a in axes}
        if len(lengths) > 1:
            counts = ", ".join(f"{a.ref} has {len(a.values)}" for a in axes)
            raise GraphInvalid([Problem("usage", f"--zip needs sweeps of equal length: {counts}",
                                        Location(graph.file_name))], graph.file_name)
        combos: list[tuple[int, ...]] = [(i,) * len(axes) for i in range(len(axes[0].values))]
    else:
        total = 1
        for a in axes:
            total *= len(a.values)
        if total > MAX_JOBS:
            raise GraphInvalid([Problem("usage", f"the sweep makes {total} jobs, more than "
                                        f"{MAX_JOBS}; check the ranges", Location(graph.file_name))],
                               graph.file_name)
        combos = list(itertools.product(*(range(len(a.values)) for a in axes)))
    keys = _axis_keys(axes)
    jobs: list[Job] = []
    used: dict[str, int] = {}
    for index, combo in enumerate(combos):
        parts = [f"{key}-{axis.labels[i]}" for key, axis, i in zip(keys, axes, combo, strict=True)]
        name = "_".join(parts)
        if name in used:  # the same values twice (a zipped list with repeats): keep names unique
            used[name] += 1
            name = f"{name}-{used[name]}"
        else:
            used[name] = 1
        jobs.append(Job(index, name, {a.ref: a.values[i] for a, i in zip(axes, combo, strict=True)}))
    return jobs


def _location(graph: Graph, registry: Any, node_id: str, socket: str | None) -> Location:
    node = graph.nodes.get(node_id)
    return Location(graph.file_name, node_id, node.type if node else None, socket)


def _parse_axis(graph: Graph, registry: Any, spec: str, cwd: Path) -> tuple[SweepAxis | None, list[Problem]]:
    ref, eq, text = spec.partition("=")
    file = graph.file_name
    try:
        if not eq or not text:
            raise ValueError("use --sweep NODE.INPUT=VALUES (A..B, @FILE, V1,V2 or a JSON list)")
        node_id, socket = split_ref(ref.strip())
    except ValueError as exc:
        return None, [Problem("usage", f"--sweep {spec!r}: {exc}", Location(file))]
    input_spec, loc, problem = override_target(graph, registry, node_id, socket, "--sweep", "sweep")
    if problem is not None or input_spec is None:
        return None, [problem] if problem is not None else []
    try:
        values, labels = _values(input_spec, text.strip(), cwd)
    except ValueError as exc:
        return None, [Problem("bad_value", f"--sweep {spec!r}: {exc}", loc)]
    problems = []
    for i, value in enumerate(values):
        why = check_literal(input_spec, value)
        if why:
            problems.append(Problem("bad_value", f"--sweep value {labels[i]} ({value!r}): {why}", loc))
            if len(problems) >= 5:
                break
    if problems:
        return None, problems
    if not values:
        return None, [Problem("bad_value", f"--sweep {spec!r}: no values", loc)]
    return SweepAxis(node_id, socket, tuple(values), tuple(labels), spec), []


_RANGE = re.compile(r"^\s*(-?[0-9.eE+-]+?)\s*\.\.\s*(-?[0-9.eE+-]+?)\s*(?:\.\.\s*(-?[0-9.eE+-]+)\s*)?$")


def _values(spec: Input, text: str, cwd: Path) -> tuple[list[Any], list[str]]:
    literal = spec.type.literal
    if text.startswith("@"):
        return _file_values(spec, text[1:], cwd)
    if text.startswith("["):
        try:
            items = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValueError(f"not a JSON list: {exc.msg}") from None
        if not isinstance(items, list):
            raise ValueError("not a JSON list")
        if literal is float:
            items = [float(v) if isinstance(v, int) and not isinstance(v, bool) else v for v in items]
        return items, [_label(v, i) for i, v in enumerate(items)]
    if ".." in text and literal in (int, float) and literal is not bool:
        values = _range(text, literal is int)
        return values, [_label(v, i) for i, v in enumerate(values)]
    if literal is str:
        if spec.choices is not None and "," in text:
            items = [t.strip() for t in text.split(",")]
        else:
            items = [text]
    else:
        items = [t.strip() for t in text.split(",")]
    values = [parse_literal(spec, item) for item in items]
    return values, [_label(v, i) for i, v in enumerate(values)]


def _range(text: str, integer: bool) -> list[Any]:
    match = _RANGE.match(text)
    if not match:
        raise ValueError(f"{text!r} is not a range: write START..END or START..END..STEP")
    try:
        start, end = Decimal(match.group(1)), Decimal(match.group(2))
        step = Decimal(match.group(3)) if match.group(3) else Decimal(1)
    except InvalidOperation:
        raise ValueError(f"{text!r} is not a range of numbers: write START..END or "
                         "START..END..STEP") from None
    if integer and any(d != d.to_integral_value() for d in (start, end, step)):
        raise ValueError(f"{text!r}: this input takes integers")
    if step == 0:
        raise ValueError(f"{text!r}: the step must not be 0")
    if (end - start) * step < 0:
        raise ValueError(f"{text!r} is empty: the end is {'below' if step > 0 else 'above'} the "
                         f"start (for a descending range give a negative step: {end}..{start}..-1)")
    count = int((end - start) / step) + 1
    if count > MAX_JOBS:
        raise ValueError(f"{text!r} has {count} values, more than {MAX_JOBS}")
    values = [start + step * i for i in range(count)]
    return [int(v) for v in values] if integer else [float(v) for v in values]


def _file_values(spec: Input, name: str, cwd: Path) -> tuple[list[Any], list[str]]:
    path = Path(name).expanduser()
    if not path.is_absolute():
        path = cwd / path
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ValueError(f"the values file '{name}' does not exist (looked for {path})") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"cannot read the values file '{name}': {exc}") from None
    values, labels = [], []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        item = line.rstrip("\r") if spec.type.literal is str else line.strip()
        try:
            values.append(parse_literal(spec, item))
        except ValueError as exc:
            raise ValueError(f"{name}:{number}: {exc}") from None
        labels.append(str(number))
    if not values:
        raise ValueError(f"the values file '{name}' has no values (one per line)")
    return values, labels


def _label(value: Any, index: int) -> str:
    """A short, file-name-safe label: numbers and short words as they are, else the position."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        text = repr(value) if isinstance(value, float) else str(value)
        return text.replace("-", "m").replace("+", "")
    if isinstance(value, str) and re.fullmatch(r"[A-Za-z0-9.]{1,24}", value):
        return value
    return str(index + 1)


def _axis_keys(axes: list[SweepAxis]) -> list[str]:
    """Names for the axes in job names: the input name, or node-input when two share it."""
    sockets = [a.socket for a in axes]
    return [a.socket if sockets.count(a.socket) == 1 else f"{a.node}-{a.socket}" for a in axes]
