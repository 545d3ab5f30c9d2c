"""The model service nodes see (`RunContext.models`): one load lock for every loader.

diffusers, transformers and peft build models by patching torch process-wide, so two loads
at once corrupt each other. Nodes of any pack, running in parallel branches, load through
`ctx.models.load` (or build inside `ctx.models.loading()`), and the engine serialises them.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest

from nodeflow.api import STRING, Input, ModelService, Node, Output, RunContext
from nodeflow.executor import Executor
from nodeflow.graph import Graph
from nodeflow.models import ModelManager
from nodeflow.registry import NodeRegistry
from nodeflow.settings import Settings

EVENTS: list[tuple[str, str]] = []
STARTED = {name: threading.Event() for name in ("a", "b")}
_record = threading.Lock()
WAIT = 30.0
"""Seconds a loader waits for the other branch to start: reached only when the executor does
not run the two branches at once, which fails the test."""


def record(what: str, name: str) -> None:
    with _record:
        EVENTS.append((what, name))


def other(name: str) -> str:
    return "b" if name == "a" else "a"


def build(name: str) -> str:
    """A model build that holds the lock until the other branch has started and asked for it."""
    record("enter", name)
    STARTED[other(name)].wait(WAIT)
    record("exit", name)
    return name


class LoadLocked(Node):
    """Loads its file through the model service; its loader waits for the other branch."""

    id = "locktest.Load"
    deterministic = False
    inputs = (Input("path", STRING, "A file."), Input("name", STRING, "a or b."),
              Input("how", STRING, "load: a loader inside load; loading: a build inside loading()."))
    outputs = (Output("name", STRING, "The name."),)

    def run(self, ctx: RunContext, path: str, name: str, how: str) -> Any:
        record("start", name)
        STARTED[name].set()
        if how == "loading":
            with ctx.models.loading():
                return build(name)
        return ctx.models.load(Path(path), lambda _p: build(name), kind="locktest")


def as_service(manager: ModelManager) -> ModelService:
    return manager  # the manager is what nodes get, typed as the narrow protocol


@pytest.mark.parametrize("how_b", ["load", "loading"])
def test_two_branches_load_one_at_a_time(tmp_path: Path, how_b: str) -> None:
    EVENTS.clear()
    for event in STARTED.values():
        event.clear()
    registry = NodeRegistry()
    registry.register_module("locktest", [LoadLocked], "tests/test_model_service.py")
    graph = Graph()
    for name, how in (("a", "load"), ("b", how_b)):
        (tmp_path / f"{name}.bin").write_bytes(name.encode())
        graph.add_node("locktest.Load", name, {"path": str(tmp_path / f"{name}.bin"), "name": name, "how": how})
    executor = Executor(registry, Settings(out_dir=tmp_path), workers=2, models=ModelManager(["cpu"]))
    result = executor.run(graph, ["a", "b"])
    assert not result.failed, result.failed
    assert {result.outputs[n]["name"] for n in ("a", "b")} == {"a", "b"}
    builds = [e for e in EVENTS if e[0] != "start"]
    first = builds[0][1]
    # One build ran whole, then the other: never both inside the lock.
    assert builds == [("enter", first), ("exit", first), ("enter", other(first)), ("exit", other(first))]
    # ...while both branches were running at once: the second started during the first build.
    assert EVENTS.index(("start", other(first))) < EVENTS.index(("exit", first)), EVENTS


def test_the_manager_is_the_service_nodes_get(tmp_path: Path) -> None:
    models = as_service(ModelManager(["cpu"]))
    path = tmp_path / "m.bin"
    path.write_bytes(b"x")
    calls: list[Path] = []

    def loader(p: Path) -> list[str]:
        calls.append(p)
        return [f"loaded {len(calls)}"]

    first = models.load(path, loader, kind="k")
    again = models.load(path, loader, kind="k")
    assert first is again and calls == [path]  # read once, shared after
    with models.loading(), models.loading():  # re-entrant: a loader may build inside loading()
        pass
    assert not hasattr(ModelManager, "register") and not hasattr(ModelManager, "get")


def test_two_managers_in_one_process_share_the_load_lock() -> None:
    """The patching the lock guards is process-wide, so a server's per-device managers must
    not load at the same time either."""
    import threading

    a, b = ModelManager(["cpu"]), ModelManager(["cpu"])
    entered = threading.Event()

    def load_under_b() -> None:
        with b.loading():
            entered.set()

    with a.loading():
        thread = threading.Thread(target=load_under_b, daemon=True)
        thread.start()
        assert not entered.wait(0.3)  # b waits while a holds the lock
    thread.join(5)
    assert entered.is_set() and not thread.is_alive()
