"""Caching, cancellation, failure isolation and scale of the executor."""

import threading

import pytest

from nodeflow.events import CancelToken, NodeCached, NodeFailed, NodeFinished, NodeProgress, NodeSkipped
from nodeflow.executor import Executor
from nodeflow.graph import Graph
from nodeflow.models import ModelManager
from nodeflow.node import Input, MemoryEstimate, Node, Output
from nodeflow.types import INT

from . import helpers
from .helpers import CALLS, chain, make_registry

REG = make_registry()


@pytest.fixture(autouse=True)
def reset_counts():
    CALLS.clear()


def two_counted():
    g = Graph()
    g.add_node("test.Counted", "a", {"x": 1.0})
    g.add_node("test.Counted", "b")
    g.connect("a.y", "b.x")
    return g


def test_unchanged_inputs_are_not_rerun():
    ex = Executor(REG)
    g = two_counted()
    assert ex.run(g, ["b"]).outputs["b"]["y"] == 3.0
    events = []
    result = ex.run(g, ["b"], on_event=events.append)
    assert CALLS == {"a": 1, "b": 1}
    assert result.outputs["b"]["y"] == 3.0 and result.ran == [] and result.cached == ["b"]
    assert any(isinstance(e, NodeCached) and e.node == "b" for e in events)


def test_changed_input_reruns_only_what_depends_on_it():
    ex = Executor(REG)
    g = two_counted()
    g.add_node("test.Counted", "other", {"x": 10.0})
    ex.run(g, ["b", "other"])
    g.set_input("b", "x", 5.0)  # literal on b is not allowed while linked: relink instead
    g.disconnect("b.x")
    result = ex.run(g, ["b", "other"])
    assert result.ran == ["b"] and result.outputs["b"]["y"] == 6.0
    assert CALLS == {"a": 1, "b": 2, "other": 1}


def test_an_equal_graph_loaded_again_hits_the_cache():
    ex = Executor(REG)
    g = two_counted()
    ex.run(g, ["b"])
    ex.run(Graph.loads(g.dumps()), ["b"])
    assert CALLS == {"a": 1, "b": 1}


def test_non_deterministic_nodes_always_run():
    ex = Executor(REG)
    g = Graph()
    g.add_node("test.Clock", "clock")
    g.add_node("test.Counted", "after")
    g.connect("clock.t", "after.x")
    first = ex.run(g, ["after"]).outputs["after"]["y"]
    second = ex.run(g, ["after"]).outputs["after"]["y"]
    assert CALLS == {"clock": 2, "after": 2} and first != second


def test_failure_is_located_and_independent_branches_finish():
    ex = Executor(REG)
    g = Graph(source=None)
    g.add_node("test.Fails", "bad", {"x": 13.0})
    g.add_node("test.Counted", "after_bad")
    g.connect("bad.y", "after_bad.x")
    g.add_node("test.Counted", "good", {"x": 1.0})
    events = []
    result = ex.run(g, ["after_bad", "good"], on_event=events.append)
    assert result.outputs == {"good": {"y": 2.0}}
    assert result.skipped == ["after_bad"] and "after_bad" not in CALLS
    error = result.failed["bad"]
    assert error.location.node == "bad" and error.location.socket == "x"
    assert "cursed" in str(error) and "Use another value." in str(error)
    assert any(isinstance(e, NodeFailed) for e in events)
    assert any(isinstance(e, NodeSkipped) and e.node == "after_bad" for e in events)
    # Nothing partial was cached: the failing node runs again, the good one does not.
    ex.run(g, ["after_bad", "good"])
    assert CALLS["bad"] == 2 and CALLS["good"] == 1


def test_python_exception_becomes_a_located_error():
    g = Graph()
    g.add_node("test.Crashes", "boom")
    result = Executor(REG).run(g, ["boom"])
    assert "ZeroDivisionError: division by zero" in str(result.failed["boom"])
    assert result.failed["boom"].location.node_type == "test.Crashes"


def test_cancel_is_prompt_leaves_no_partial_results_and_engine_is_reusable():
    ex = Executor(REG)
    g = Graph()
    g.add_node("test.Counted", "first", {"x": 1.0})
    g.add_node("test.Slow", "slow", {"steps": 1000})
    g.connect("first.y", "slow.x")
    g.add_node("test.Counted", "last")
    g.connect("slow.y", "last.x")
    token = CancelToken()

    def on_event(event):
        if isinstance(event, NodeProgress) and event.done == 5:
            token.cancel()

    result = ex.run(g, ["last"], on_event=on_event, cancel=token)
    assert result.cancelled and not result.ok
    assert CALLS == {"first": 1, "slow": 1}
    assert "last" not in result.outputs
    # Reusable: the finished node is cached, the cancelled one is not.
    g.set_input("slow", "steps", 3)
    result = ex.run(g, ["last"])
    assert result.ok and result.outputs["last"]["y"] == 4.0
    assert CALLS == {"first": 1, "slow": 2, "last": 1}


def test_cancel_from_another_thread():
    ex = Executor(REG)
    g = Graph()
    g.add_node("test.Slow", "slow", {"steps": 10000})
    token = CancelToken()
    timer = threading.Timer(0.2, token.cancel)
    timer.start()
    result = ex.run(g, ["slow"], cancel=token)
    assert result.cancelled and sum(result.timings.values()) == 0


def test_default_outputs_are_the_output_nodes(tmp_path):
    from PIL import Image

    from nodeflow.settings import Settings

    Image.new("RGB", (8, 8), (255, 0, 0)).save(tmp_path / "in.png")
    g = Graph()
    g.add_node("image.Load", "load", {"path": str(tmp_path / "in.png")})
    g.add_node("image.Invert", "unused")
    g.connect("load.image", "unused.image")
    g.add_node("image.Save", "save", {"prefix": "x"})
    g.connect("load.image", "save.image")
    events = []
    result = Executor(REG, Settings(out_dir=tmp_path / "out")).run(g, on_event=events.append)
    finished = [e.node for e in events if isinstance(e, NodeFinished)]
    assert finished == ["load", "save"]
    assert [p.name for p in result.files] == ["x_00001.png"]


def test_a_100000_node_chain_validates_and_runs():
    g = chain(100_000)
    result = Executor(REG).run(g, ["n99999"])
    assert result.outputs["n99999"]["sum"] == 100_000.0


def test_independent_results_are_identical_across_runs():
    g = chain(50)
    a = Executor(REG).run(g, ["n49"]).outputs
    b = Executor(REG).run(Graph.loads(g.dumps()), ["n49"]).outputs
    assert a == b == {"n49": {"sum": 50.0}}


def test_cache_keeps_a_bounded_number_of_results_per_node():
    ex = Executor(REG)
    g = Graph()
    g.add_node("test.Counted", "a", {"x": 0.0})
    for value in range(10):
        g.set_input("a", "x", float(value))
        ex.run(g, ["a"])
    assert len(ex.cache) == ex.cache.per_node


def test_helpers_module_is_the_one_registered():
    assert REG.get("test.Counted") is helpers.Counted


def overlapping(a, b):
    spans = {n: (s, e) for n, s, e in helpers.SPANS}
    (s1, e1), (s2, e2) = spans[a], spans[b]
    return s1 < e2 and s2 < e1


def branches(type_id):
    g = Graph()
    for side in ("left", "right"):
        g.add_node(type_id, f"{side}1", {"x": 1.0 if side == "left" else 10.0})
        g.add_node(type_id, f"{side}2")
        g.connect(f"{side}1.y", f"{side}2.x")
    g.add_node("math.Add", "join")
    g.connect("left2.y", "join.a")
    g.connect("right2.y", "join.b")
    return g


def test_independent_branches_run_at_the_same_time_with_serial_results():
    helpers.SPANS.clear()
    parallel = Executor(REG, workers=2).run(branches("test.Busy"), ["join"])
    assert overlapping("left1", "right1") or overlapping("left2", "right2")
    serial = Executor(REG, workers=1).run(branches("test.Busy"), ["join"])
    assert parallel.outputs == serial.outputs == {"join": {"sum": 15.0}}


def test_accelerator_nodes_run_one_at_a_time_beside_cpu_nodes():
    helpers.SPANS.clear()
    g = branches("test.BusyOnDevice")
    g.add_node("test.Busy", "cpu", {"seconds": 0.5})
    result = Executor(REG, workers=3, models=ModelManager(devices=["cpu"])).run(g, ["join", "cpu"])
    assert result.ok
    device = ["left1", "left2", "right1", "right2"]
    for i, a in enumerate(device):
        for b in device[i + 1:]:
            assert not overlapping(a, b), (a, b)
    assert any(overlapping("cpu", d) for d in device)


def test_failure_and_cancel_under_concurrency():
    g = branches("test.Busy")
    g.add_node("test.Fails", "bad")
    g.disconnect("right2.x")
    g.connect("bad.y", "right2.x")
    result = Executor(REG, workers=2).run(g, ["left2", "right2"])
    assert result.outputs == {"left2": {"y": 3.0}}
    assert "bad" in result.failed and result.skipped == ["right2"]

    token = CancelToken()
    threading.Timer(0.15, token.cancel).start()
    slow = branches("test.Busy")
    for n in ("left1", "right1"):
        slow.set_input(n, "seconds", 5.0)
    ex = Executor(REG, workers=2)
    result = ex.run(slow, ["join"], cancel=token)
    assert result.cancelled and result.ran == [] and len(ex.cache) == 0


SCALE_PLUGIN = '''
from nodeflow.api import INT, Input, Node, Output


class Scale(Node):
    """Multiplies an integer by 1000 when it runs (not known before)."""

    id = "scaletest.Scale"
    inputs = (Input("x", INT, "A number.", default=1),)
    outputs = (Output("y", INT, "x * 1000."),)

    def run(self, ctx, x):
        return x * 1000


class Steps(Node):
    """Takes a step count in 1..100000."""

    id = "scaletest.Steps"
    output_node = True
    inputs = (Input("steps", INT, "Steps.", default=1, min=1, max=100000),)
    outputs = (Output("steps", INT, "The steps."),)

    def run(self, ctx, steps):
        return steps
'''


def test_a_value_computed_at_run_time_is_checked_against_the_range_before_the_node_runs(tmp_path,
                                                                                       capsys):
    from nodeflow.cli import main

    (tmp_path / "plugins").mkdir()
    (tmp_path / "plugins" / "scaletest.py").write_text(SCALE_PLUGIN)
    g = Graph()
    g.add_node("scaletest.Scale", "scale", {"x": 200})
    g.add_node("scaletest.Steps", "steps")
    g.connect("scale.y", "steps.steps")
    path = tmp_path / "g.json"
    g.save(path)
    assert main(["validate", str(path), "--plugins", str(tmp_path / "plugins")]) == 0
    capsys.readouterr()
    assert main(["run", str(path), "--plugins", str(tmp_path / "plugins"), "--out",
                 str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err
    assert "node 'steps'" in err and "socket 'steps'" in err
    assert "200000 is above the maximum 100000" in err and "Traceback" not in err


class Hungry(Node):
    """Needs `size` MiB of working memory on the accelerator."""

    id = "hungrytest.Hungry"
    uses_accelerator = True
    inputs = (Input("size", INT, "MiB.", default=1, min=1, max=10**6),)
    outputs = (Output("y", INT, "The size."),)

    @classmethod
    def estimate_memory(cls, values, upstream, ctx):
        size = values.get("size")
        return MemoryEstimate(activations=size * 2**20) if isinstance(size, int) else None

    def run(self, ctx, size):
        helpers.count(ctx.node_id)
        return size


def test_the_memory_plan_sizes_a_node_by_the_constant_that_arrives_through_a_link():
    from nodeflow.errors import ModelError
    from nodeflow.registry import load_registry

    registry = load_registry(use_env=False)
    registry.register_module("hungrytest", [Hungry], "tests/test_executor.py")
    g = Graph()
    g.add_node("value.Int", "size", {"value": 5000})
    g.add_node("hungrytest.Hungry", "hungry")
    g.connect("size.value", "hungry.size")
    ex = Executor(registry, models=ModelManager(devices=["cpu"], vram_budget=100 * 2**20))
    with pytest.raises(ModelError) as caught:
        ex.run(g, ["hungry"])
    assert caught.value.location.node == "hungry" and "5.2 GB" in str(caught.value)
    assert "hungry" not in CALLS  # refused before anything ran
    g.set_input("size", "value", 5)
    assert ex.run(g, ["hungry"]).outputs["hungry"]["y"] == 5
