"""A run checks only what its requested outputs need; problems elsewhere are warnings."""

from __future__ import annotations

import json

import pytest

from nodeflow.cli import main
from nodeflow.errors import GraphInvalid
from nodeflow.executor import Executor
from nodeflow.graph import Graph

from .helpers import make_registry

REG = make_registry()


def with_stray() -> Graph:
    g = Graph()
    g.add_node("math.Add", "good", {"a": 1.0, "b": 2.0})
    g.add_node("image.Resize", "stray")  # required image not linked: a problem
    g.add_node("math.Add", "bad", {"a": "text"})  # a wrong value
    return g


def test_problems_outside_the_requested_ancestry_are_warnings():
    result = Executor(REG).run(with_stray(), ["good"])
    assert result.ok and result.outputs["good"]["sum"] == 3.0
    assert sorted(p.location.node for p in result.warnings) == ["bad", "stray"]


def test_a_problem_in_the_ancestry_stops_the_run_and_names_it():
    g = with_stray()
    g.connect("bad.sum", "good.a")
    g.clear_input("good", "a")
    with pytest.raises(GraphInvalid) as caught:
        Executor(REG).run(g, ["good"])
    assert [p.location.node for p in caught.value.problems] == ["bad"]


def test_cli_run_prints_warnings_and_succeeds_validate_still_reports_everything(tmp_path, capsys):
    path = tmp_path / "g.json"
    with_stray().save(path)
    assert main(["run", str(path), "--output", "good", "--out", str(tmp_path / "out")]) == 0
    err = capsys.readouterr().err
    assert "warning:" in err and "'stray'" in err and "'bad'" in err
    assert main(["run", str(path), "--output", "good", "--json", "--out", str(tmp_path)]) == 0
    events = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    started = next(e for e in events if e["event"] == "run_started")
    assert {w["node"] for w in started["warnings"]} == {"stray", "bad"}
    assert main(["validate", str(path)]) == 2
    err = capsys.readouterr().err
    assert "'stray'" in err and "'bad'" in err and "2 problems found" in err


def test_cli_run_with_no_output_node_says_what_to_ask_for(tmp_path, capsys):
    path = tmp_path / "chain.json"
    g = Graph()
    g.add_node("math.Add", "n0", {"a": 1.0})
    g.save(path)
    assert main(["run", str(path), "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "no output node" in err and "--output" in err
    assert main(["run", str(path), "--output", "n0", "--out", str(tmp_path), "-q"]) == 0


def test_a_stray_node_of_an_unknown_type_is_a_warning():
    g = with_stray()
    g.add_node("nosuchpack.Thing", "ghost")
    result = Executor(REG).run(g, ["good"])
    assert result.ok and "ghost" in {p.location.node for p in result.warnings}
