"""One executor, many runs: every run's result is right, whatever happened before it."""

from __future__ import annotations

import gc
import threading

import pytest

from nodeflow.executor import Executor
from nodeflow.graph import Graph

from .helpers import CALLS, make_registry

REG = make_registry()


@pytest.fixture(autouse=True)
def reset_counts():
    CALLS.clear()


def adder(a: float = 0.0) -> Graph:
    g = Graph()
    g.add_node("math.Add", "add", {"a": a, "b": 1.0})
    return g


def test_a_copy_of_an_edited_graph_is_never_served_the_previous_result():
    """Edit, copy, run, drop the copy: 2,000 times, each result is the edited value's."""
    ex = Executor(REG)
    g = adder()
    wrong = []
    for i in range(2000):
        g.set_input("add", "a", float(i))
        result = ex.run(g.copy(), ["add"])
        if result.outputs["add"]["sum"] != i + 1.0:
            wrong.append((i, result.outputs["add"]["sum"]))
    assert wrong == []


def test_a_new_graph_at_a_freed_graphs_address_gets_its_own_result():
    """Two graphs at the same address and revision (CPython reuses freed ids): the second
    is checked and run for what it holds, not for what the first held."""
    ex = Executor(REG)
    first = adder(1.0)
    assert ex.run(first, ["add"]).outputs["add"]["sum"] == 2.0
    address, revision = id(first), first.revision
    del first
    gc.collect()
    second = adder(5.0)
    for _ in range(10_000):  # allocate until a graph lands where the first one was
        if id(second) == address and second.revision == revision:
            break
        second = adder(5.0)
    assert ex.run(second, ["add"]).outputs["add"]["sum"] == 6.0


def test_an_invalid_copy_is_not_let_through_by_an_earlier_valid_graph():
    from nodeflow.errors import GraphInvalid

    ex = Executor(REG)
    good = adder()
    for _ in range(50):
        ex.run(good.copy(), ["add"])
        bad = good.copy()
        bad.nodes["add"].inputs["a"] = "not a number"  # same revision as a fresh copy
        with pytest.raises(GraphInvalid):
            ex.run(bad, ["add"])


def test_many_runs_share_one_worker_pool():
    """Worker threads live as long as the executor: many runs do not add threads."""
    from tests.test_executor import branches

    def workers() -> set[threading.Thread]:
        return {t for t in threading.enumerate() if t.name.startswith("nodeflow-worker")}

    others = workers()  # other executors' pools, if any are alive
    ex = Executor(REG, workers=2)
    g = branches("test.Busy")
    for n in ("left1", "right1", "left2", "right2"):
        g.set_input(n, "seconds", 0.0)
    mine = None
    for i in range(20):
        g.set_input("left1", "x", float(i))
        result = ex.run(g, ["join"])
        assert result.outputs["join"]["sum"] == i + 2.0 + 12.0
        if mine is None:
            mine = workers() - others
            assert 1 <= len(mine) <= 2
        assert workers() - others == mine
    ex.close()
    assert not mine & workers()


def test_every_run_through_the_editors_run_controller_shows_the_edited_value(qtbot):
    """The editor copies its graph for every run; 60 value edits, 60 right results."""
    from nodeflow.gui.runner import RunController
    from nodeflow.settings import Settings

    runner = RunController(REG, Settings())
    g = adder()
    try:
        for i in range(60):
            g.set_input("add", "a", float(i))
            with qtbot.waitSignal(runner.runFinished, timeout=10_000) as finished:
                assert runner.start(g.copy(), ["add"])
            assert finished.args[0].outputs["add"]["sum"] == i + 1.0
    finally:
        runner.cancel()
        runner.wait()
        runner.executor.close()


def counted_chain(n: int) -> Graph:
    g = Graph()
    g.add_node("test.Counted", "c0", {"x": 0.0})
    for i in range(1, n):
        g.add_node("test.Counted", f"c{i}")
        g.connect(f"c{i - 1}.y", f"c{i}.x")
    g.add_node("test.Counted", "stray", {"x": 1.0})
    return g


def test_an_edit_in_a_fresh_copy_reruns_only_what_depends_on_it_and_is_checked_again():
    from nodeflow.errors import GraphInvalid

    ex = Executor(REG)
    g = counted_chain(6)
    assert ex.run(g.copy(), ["c5"]).outputs["c5"]["y"] == 6.0
    edited = Graph.loads(g.dumps())
    edited.disconnect("c3.x")
    edited.set_input("c3", "x", 10.0)
    result = ex.run(edited, ["c5"])
    assert result.outputs["c5"]["y"] == 13.0 and result.ran == ["c3", "c4", "c5"]
    bad = edited.copy()
    bad.nodes["c3"].inputs["x"] = "ten"  # the same revision as a fresh copy
    with pytest.raises(GraphInvalid) as caught:
        ex.run(bad, ["c5"])
    assert [(p.location.node, p.location.socket) for p in caught.value.problems] == [("c3", "x")]
    stray = edited.copy()
    stray.nodes["stray"].inputs["x"] = "one"  # outside what c5 needs: a warning
    result = ex.run(stray, ["c5"])
    assert result.ok and [p.location.node for p in result.warnings] == ["stray"]
    assert result.ran == []
    fixed = edited.copy()
    assert ex.run(fixed, ["c5"]).warnings == []


def test_jobs_with_their_own_output_folders_each_get_their_files(tmp_path):
    """As a job server runs them: the same graph, freshly loaded, a new output folder each."""
    from PIL import Image

    from nodeflow.settings import Settings

    Image.new("RGB", (4, 4), (9, 9, 9)).save(tmp_path / "in.png")
    g = Graph()
    g.add_node("image.Load", "load", {"path": str(tmp_path / "in.png")})
    g.add_node("image.Save", "save", {"prefix": "job"})
    g.connect("load.image", "save.image")
    text = g.dumps()
    ex = Executor(REG)
    for job in range(3):
        ex.settings = Settings(out_dir=tmp_path / f"job{job}")
        result = ex.run(Graph.loads(text))
        assert result.ran == (["load", "save"] if job == 0 else ["save"])
        assert [p.parent.name for p in result.files] == [f"job{job}"]
