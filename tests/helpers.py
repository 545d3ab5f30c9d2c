"""Node types and graph builders shared by the engine tests."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

from nodeflow.errors import Cancelled, NodeInputError
from nodeflow.graph import Graph
from nodeflow.node import Input, Node, Output, RunContext
from nodeflow.registry import NodeRegistry, load_registry
from nodeflow.settings import Settings
from nodeflow.types import FLOAT, INT

CALLS: dict[str, int] = {}
_lock = threading.Lock()


def count(node_id: str) -> None:
    with _lock:
        CALLS[node_id] = CALLS.get(node_id, 0) + 1


class Counted(Node):
    """Adds 1 to its input and counts how often it ran, by node id."""

    id = "test.Counted"
    category = "test"
    inputs = (Input("x", FLOAT, "A number.", default=0.0),)
    outputs = (Output("y", FLOAT, "x + 1."),)

    def run(self, ctx: RunContext, x: float) -> Any:
        count(ctx.node_id)
        return x + 1


class Fails(Node):
    """Always fails, naming its input."""

    id = "test.Fails"
    category = "test"
    inputs = (Input("x", FLOAT, "A number.", default=0.0),)
    outputs = (Output("y", FLOAT, "Never produced."),)

    def run(self, ctx: RunContext, x: float) -> Any:
        count(ctx.node_id)
        raise NodeInputError("x", f"the value {x} is cursed", hint="Use another value.")


class Crashes(Node):
    """Raises an ordinary Python exception."""

    id = "test.Crashes"
    category = "test"
    inputs = (Input("x", FLOAT, "A number.", default=0.0),)
    outputs = (Output("y", FLOAT, "Never produced."),)

    def run(self, ctx: RunContext, x: float) -> Any:
        raise ZeroDivisionError("division by zero")


class Slow(Node):
    """Takes `steps` steps of 10 ms, reporting progress each step."""

    id = "test.Slow"
    category = "test"
    inputs = (Input("x", FLOAT, "A number.", default=0.0),
              Input("steps", INT, "Steps.", default=200, min=1, max=100000))
    outputs = (Output("y", FLOAT, "x + 1."),)

    def run(self, ctx: RunContext, x: float, steps: int) -> Any:
        count(ctx.node_id)
        for i in range(steps):
            time.sleep(0.01)
            ctx.progress(i + 1, steps)
        return x + 1


class Clock(Node):
    """Non-deterministic: a new value every run."""

    id = "test.Clock"
    category = "test"
    deterministic = False
    outputs = (Output("t", FLOAT, "A time."),)

    def run(self, ctx: RunContext) -> Any:
        count(ctx.node_id)
        return time.perf_counter()


SPANS: list[tuple[str, float, float]] = []


class Busy(Node):
    """Sleeps `seconds` (releasing the GIL, like numpy or Pillow work) and records when."""

    id = "test.Busy"
    category = "test"
    inputs = (Input("x", FLOAT, "A number.", default=0.0),
              Input("seconds", FLOAT, "How long.", default=0.3, min=0.0, max=10.0))
    outputs = (Output("y", FLOAT, "x + 1."),)

    def run(self, ctx: RunContext, x: float, seconds: float) -> Any:
        start = time.perf_counter()
        deadline = start + seconds
        while time.perf_counter() < deadline:
            time.sleep(0.01)
            ctx.check_cancelled()
        with _lock:
            SPANS.append((ctx.node_id, start, time.perf_counter()))
        return x + 1


class BusyOnDevice(Busy):
    """Like test.Busy, but computes on the accelerator."""

    id = "test.BusyOnDevice"
    uses_accelerator = True


TEST_NODES = [Counted, Fails, Crashes, Slow, Clock, Busy, BusyOnDevice]


def make_registry() -> NodeRegistry:
    """The installed packs plus the test nodes."""
    registry = load_registry(use_env=False)
    registry.register_module("test", TEST_NODES, "tests/helpers.py")
    return registry


def chain(n: int, type_id: str = "math.Add") -> Graph:
    graph = Graph()
    graph.add_node(type_id, "n0", {"a": 0.0, "b": 1.0} if type_id == "math.Add" else {})
    socket_in, socket_out = ("a", "sum") if type_id == "math.Add" else ("x", "y")
    for i in range(1, n):
        graph.add_node(type_id, f"n{i}", {"b": 1.0} if type_id == "math.Add" else {})
        graph.connect(f"n{i - 1}.{socket_out}", f"n{i}.{socket_in}")
    return graph


class DirectContext:
    """A RunContext for calling one node's `run` directly; records progress."""

    def __init__(self, settings: Settings, models: Any = None, cancel_after: int | None = None):
        from nodeflow.models import ModelManager

        self.node_id = "node"
        self.settings = settings
        self.models = models if models is not None else ModelManager()
        self.events: list[tuple[float, float | None, str | None]] = []
        self.cancel_after = cancel_after

    def progress(self, done: float, total: float | None = None, message: str | None = None) -> None:
        self.events.append((done, total, message))
        self.check_cancelled()

    def check_cancelled(self) -> None:
        if self.cancel_after is not None and len(self.events) >= self.cancel_after:
            raise Cancelled()

    def preview(self, image: Any) -> None:
        pass

    def record_file(self, path: Path) -> None:
        pass

    graph_json = "{}"
