"""Node declarations are checked when a pack is registered; deprecated and experimental node
types are exported, listed and warned about, and still run."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from nodeflow.cli import main
from nodeflow.errors import PluginError
from nodeflow.node import FLOAT, INT, STRING, Input, Node, Output, RunContext, declaration_problems
from nodeflow.registry import NodeRegistry, load_registry
from nodeflow.testing import run_node
from nodeflow.types import BOOL, IMAGE

from .conftest import REPO


def test_every_built_in_node_type_passes_the_declaration_checks() -> None:
    registry = load_registry(use_env=False)
    assert registry.problems() == []
    assert len(registry) > 50
    broken = {cls.id: declaration_problems(cls) for cls in registry.types()}
    assert {k: v for k, v in broken.items() if v} == {}


def _node(inputs: tuple[Input, ...] = (), run: Any = None, **attrs: Any) -> type[Node]:
    """A node class declared like a plugin's, named t.Under (test) in module 'mypack'."""
    def default_run(self: Node, ctx: RunContext, **values: Any) -> Any:
        return 0

    body = {"id": "t.Under", "__module__": "mypack", "inputs": inputs,
            "outputs": (Output("out", INT),), "run": run or default_run, **attrs}
    return type("Under", (Node,), body)


def _problem(cls: type[Node]) -> str:
    with pytest.raises(PluginError) as caught:
        NodeRegistry().register(cls, "mypack")
    return str(caught.value)


def run_a(self: Node, ctx: RunContext, a: Any) -> Any:
    return a


@pytest.mark.parametrize(("inputs", "expected"), [
    ((Input("a", INT, default=1, multiline=True),),
     "input 'a': multiline applies to STRING inputs, not INT; remove it"),
    ((Input("a", STRING, default="x", min=0),),
     "input 'a': min applies to INT or FLOAT inputs, not STRING; remove it"),
    ((Input("a", BOOL, default=True, step=1),),
     "input 'a': step applies to INT or FLOAT inputs, not BOOL"),
    ((Input("a", FLOAT, default=0.5, min=1.0, max=0.0),), "input 'a': min 1 is above max 0"),
    ((Input("a", FLOAT, default=0.5, step=0.0),), "input 'a': step must be above 0, not 0"),
    ((Input("a", INT, default=1, step=0.5),),
     "input 'a': step 0.5 is not a whole number, but the input is an INT"),
    ((Input("a", FLOAT, default=2.0, min=0.0, max=1.0),),
     "input 'a': default: 2.0 is above the maximum 1"),
    ((Input("a", INT, default=3, choices=(1, 2)),),
     "input 'a': default: 3 is not one of the choices: 1, 2"),
    ((Input("a", STRING, default="x", choices=("x", 2)),),
     "input 'a': choice 2: expected text, got 2"),
    ((Input("a", INT, default=1, choices=(1, 1, 2)),), "input 'a': choices lists a value twice"),
    ((Input("a", INT, default=1, choices=()),), "input 'a': choices is empty"),
    ((Input("a", IMAGE, choices=("x",)),), "input 'a': choices need a type that takes values"),
    ((Input("a", FLOAT, default=1.0, seed=True),), "input 'a': seed applies to INT inputs, not FLOAT"),
    ((Input("a", INT, default=0, path_kind="loras"),),
     "input 'a': path_kind applies to STRING inputs (a file name), not INT"),
    ((Input("a", STRING, default="x", hash_content=True),),
     "input 'a': hash_content applies to file inputs; add path_kind"),
    ((Input("a", STRING, default="x", multiline=True, choices=("x", "y")),),
     "input 'a': multiline and choices do not go together"),
    ((Input("a", STRING, default="x", widget="range.start"), Input("b", FLOAT, default=1.0, widget="range.end")),
     "input 'a': widget='range.start' applies to INT or FLOAT inputs"),
    ((Input("a", FLOAT, default=0.0, widget="range.start"),),
     "input 'a': its range.start has no range.end after it"),
    ((Input("a", FLOAT, default=1.0, widget="range.end"), Input("b", FLOAT, default=0.0, widget="range.start")),
     "input 'a': its range.end has no range.start before it"),
    ((Input("a", INT, default=0, widget="area.x"), Input("b", INT, default=0, widget="area.y")),
     "an area needs one input each declared widget='area.x', 'area.y', 'area.width' and 'area.height'"),
])
def test_input_options_must_fit_the_input_type(inputs: tuple[Input, ...], expected: str) -> None:
    message = _problem(_node(inputs, run_a))
    assert message.startswith("node type 't.Under' (mypack.Under) is not registered: ")
    assert expected in message
    assert message.endswith("Fix its declaration in the pack; the pack's other node types still load.")


def test_options_on_unions_and_generics_follow_their_members() -> None:
    from nodeflow.types import TypeParam

    number = INT | FLOAT
    assert declaration_problems(_node((Input("a", number, min=0, max=10, step=1),), run_a)) == []
    assert declaration_problems(_node((Input("a", TypeParam("T", bound=INT), seed=True),),
                                      run_a)) == []
    assert "input 'a': step 0.5 is not a whole number" in _problem(
        _node((Input("a", TypeParam("N", bound=INT), step=0.5),), run_a))
    assert "input 'a': min applies to INT or FLOAT inputs, not INT | STRING" in _problem(
        _node((Input("a", INT | STRING, min=0),), run_a))
    assert "input 'a': choices need a type that takes values" in _problem(
        _node((Input("a", INT | IMAGE, choices=(1, 2)),), run_a))


def test_run_parameters_must_match_the_declared_inputs() -> None:
    two = (Input("a", INT, default=1), Input("b", INT, default=2))

    def run_only_a(self: Node, ctx: RunContext, a: int) -> Any:
        return a
    assert "input 'b' has no parameter in run(); add a parameter b (or **inputs)" in \
        _problem(_node(two, run_only_a))

    def run_extra(self: Node, ctx: RunContext, a: int, b: int, c: int) -> Any:
        return a
    assert ("run() parameter 'c' is not a declared input, so it never gets a value; declare "
            "Input('c', ...) or give it a default") in _problem(_node(two, run_extra))

    def run_positional_only(self: Node, ctx: RunContext, a: int, /, b: int) -> Any:
        return a
    assert "run() parameter 'a' is positional-only" in _problem(_node(two, run_positional_only))

    def run_without_ctx(self: Node) -> Any:
        return 0
    assert "run() must take the run context as its first parameter" in \
        _problem(_node((), run_without_ctx))

    def run_ctx_named_like_an_input(self: Node, a: Any, b: int) -> Any:
        return b
    assert "input 'a' clashes with run()'s context parameter 'a'" in \
        _problem(_node(two, run_ctx_named_like_an_input))

    class NoRun(Node):
        id = "t.NoRun"
        outputs = (Output("out", INT),)
    assert "it has no run() method" in _problem(NoRun)

    # Fine: **inputs takes whatever is declared; extra parameters with defaults are unused.
    def run_kwargs(self: Node, ctx: RunContext, **inputs: Any) -> Any:
        return 0

    def run_with_spare(self: Node, ctx: RunContext, a: int, b: int, scale: float = 1.0) -> Any:
        return a
    assert declaration_problems(_node(two, run_kwargs)) == []
    assert declaration_problems(_node(two, run_with_spare)) == []


def test_hooks_and_flags_are_checked() -> None:
    def check(cls: Any, values: Any, settings: Any) -> Any:  # no @classmethod
        return ()
    assert "check() must be a @classmethod" in _problem(_node(check=check))
    assert "it is declared both deprecated and experimental; keep one" in \
        _problem(_node(deprecated=True, experimental=True))
    assert "deprecated must be True, False or a note" in _problem(_node(deprecated="  "))
    assert "constant = True needs a deterministic node" in \
        _problem(_node(constant=True, deterministic=False))
    assert "constant = True is for instant, pure functions" in \
        _problem(_node(constant=True, output_node=True))


def test_every_problem_of_a_node_is_listed_at_once() -> None:
    def run_a_only(self: Node, ctx: RunContext, a: int) -> Any:
        return a
    message = _problem(_node((Input("a", INT, default=1, multiline=True),
                              Input("b", STRING, default="", seed=True)), run_a_only))
    assert "(3 problems) 1) input 'a': multiline" in message
    assert "2) input 'b': seed" in message and "3) input 'b' has no parameter in run()" in message


def test_run_node_fails_a_broken_declaration_saying_why() -> None:
    broken = _node((Input("a", INT, default=1, multiline=True),), run_a)
    with pytest.raises(PluginError, match="multiline applies to STRING inputs"):
        run_node(broken, a=2)


BROKEN_PACK = '''
from nodeflow.api import INT, STRING, Input, Node, Output


class Fine(Node):
    id = "halfbroken.Fine"
    inputs = (Input("n", INT, default=1),)
    outputs = (Output("n", INT),)

    def run(self, ctx, n):
        return n


class Wrong(Node):
    id = "halfbroken.Wrong"
    inputs = (Input("n", INT, default=1, multiline=True), Input("label", STRING, default=""))
    outputs = (Output("n", INT),)

    def run(self, ctx, n):
        return n
'''


def test_a_broken_declaration_is_reported_like_a_broken_pack(tmp_path: Path, capsys: Any) -> None:
    (tmp_path / "halfbroken.py").write_text(BROKEN_PACK)
    assert main(["plugins", "--plugins", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    line = next(x for x in out.splitlines() if x.startswith("halfbroken "))
    assert "partial" in line and "1 nodes" in line
    assert ("error: node type 'halfbroken.Wrong' (nodeflow_plugins.halfbroken.Wrong) is not "
            "registered: (2 problems) 1) input 'n': multiline applies to STRING inputs, not INT; "
            "remove it 2) input 'label' has no parameter in run()") in out
    # Every other pack still loads, and the pack's sound node type is there.
    loaded = [x for x in out.splitlines() if " loaded " in x]
    assert any(x.startswith("diffusion ") for x in loaded)
    assert main(["nodes", "halfbroken", "--plugins", str(tmp_path)]) == 0
    captured = capsys.readouterr()
    assert "halfbroken.Fine" in captured.out and "halfbroken.Wrong" not in captured.out
    assert ("nodeflow: warning: node pack 'halfbroken' (" in captured.err
            and "partial: node type 'halfbroken.Wrong'" in captured.err)


FLAGGED_PACK = '''
from nodeflow.api import FLOAT, IMAGE, Input, Node, Output


class OldInvert(Node):
    """Invert images (the first version)."""

    id = "flagged.OldInvert"
    category = "flagged"
    deprecated = "use image.Invert instead"
    inputs = (Input("image", IMAGE, "The images."),)
    outputs = (Output("image", IMAGE, "Inverted."),)

    def run(self, ctx, image):
        return 1.0 - image


class Dim(Node):
    """Darken images by a factor."""

    id = "flagged.Dim"
    category = "flagged"
    experimental = True
    inputs = (Input("image", IMAGE, "The images."),
              Input("factor", FLOAT, "Brightness kept.", default=0.5, min=0.0, max=1.0))
    outputs = (Output("image", IMAGE, "Darker."),)

    def run(self, ctx, image, factor):
        return image * factor
'''


@pytest.fixture
def flagged(tmp_path: Path) -> tuple[Path, Path]:
    """A plugin folder with a deprecated and an experimental node type, and a graph using both."""
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    (plugins / "flagged.py").write_text(FLAGGED_PACK)
    graph = {"format": "nodeflow.graph", "version": 1, "nodes": {
        "load": {"type": "image.Load", "inputs": {"path": str(REPO / "graphs/assets/pattern.png")}},
        "old": {"type": "flagged.OldInvert", "inputs": {}},
        "dim": {"type": "flagged.Dim", "inputs": {"factor": 0.25}},
        "save": {"type": "image.Save", "inputs": {"prefix": "flagged"}}},
        "links": [{"from": "load.image", "to": "old.image"}, {"from": "old.image", "to": "dim.image"},
                  {"from": "dim.image", "to": "save.image"}]}
    path = tmp_path / "flagged.json"
    path.write_text(json.dumps(graph))
    return plugins, path


def test_flags_are_in_the_node_schemas(flagged: tuple[Path, Path], capsys: Any) -> None:
    plugins, _graph = flagged
    assert main(["nodes", "flagged", "--json", "--plugins", str(plugins)]) == 0
    schemas = {s["id"]: s for s in json.loads(capsys.readouterr().out)}
    old, dim = schemas["flagged.OldInvert"], schemas["flagged.Dim"]
    assert (old["deprecated"], old["experimental"], old["flag_note"]) == \
        (True, False, "use image.Invert instead")
    assert (dim["deprecated"], dim["experimental"]) == (False, True) and "flag_note" not in dim
    assert main(["nodes", "image.Invert", "--json"]) == 0
    plain = json.loads(capsys.readouterr().out)[0]
    assert (plain["deprecated"], plain["experimental"]) == (False, False)
    assert main(["nodes", "flagged", "--plugins", str(plugins)]) == 0
    listing = capsys.readouterr().out
    assert "[deprecated: use image.Invert instead] Invert images" in listing
    assert "[experimental] Darken images" in listing


def test_validate_warns_about_flagged_nodes_but_passes(flagged: tuple[Path, Path], capsys: Any) -> None:
    plugins, graph = flagged
    assert main(["validate", str(graph), "--plugins", str(plugins)]) == 0
    captured = capsys.readouterr()
    assert f"{graph}: valid (4 nodes, 3 links)" in captured.out
    assert (f"warning: {graph}, node 'old' (flagged.OldInvert): this node type is deprecated: "
            "use image.Invert instead") in captured.err
    assert (f"warning: {graph}, node 'dim' (flagged.Dim): this node type is experimental: its "
            "inputs and results may change in a later version") in captured.err
    assert main(["validate", str(graph), "--plugins", str(plugins), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["valid"] is True and report["problems"] == []
    assert [(w["code"], w["node"], w["node_type"]) for w in report["warnings"]] == [
        ("deprecated", "old", "flagged.OldInvert"), ("experimental", "dim", "flagged.Dim")]


def test_validate_lists_warnings_beside_errors(flagged: tuple[Path, Path], capsys: Any) -> None:
    plugins, graph = flagged
    doc = json.loads(graph.read_text())
    doc["nodes"]["dim"]["inputs"]["factor"] = 3.0
    graph.write_text(json.dumps(doc))
    assert main(["validate", str(graph), "--plugins", str(plugins), "--json"]) == 2
    report = json.loads(capsys.readouterr().out)
    assert [p["code"] for p in report["problems"]] == ["bad_value"]
    assert [w["code"] for w in report["warnings"]] == ["deprecated", "experimental"]


def test_run_prints_the_warnings_and_runs_the_flagged_nodes(flagged: tuple[Path, Path],
                                                            tmp_path: Path) -> None:
    plugins, graph = flagged
    out = tmp_path / "out"
    done = subprocess.run([sys.executable, "-m", "nodeflow", "run", str(graph), "--plugins",
                           str(plugins), "--out", str(out)], capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    assert (f"warning: {graph}, node 'old' (flagged.OldInvert): this node type is "
            "deprecated: use image.Invert instead") in done.stderr
    assert "node 'dim' (flagged.Dim): this node type is experimental" in done.stderr
    assert [p.name for p in out.iterdir()] == ["flagged_00001.png"]
    from PIL import Image

    source = Image.open(REPO / "graphs/assets/pattern.png").convert("RGB").getpixel((0, 0))
    pixel = Image.open(out / "flagged_00001.png").convert("RGB").getpixel((0, 0))
    assert all(abs(p - (255 - s) * 0.25) <= 1 for p, s in zip(pixel, source, strict=True))


def test_ids_versions_and_sockets_are_checked_with_the_pack_too(tmp_path: Path, capsys: Any) -> None:
    (tmp_path / "typos.py").write_text('''
from nodeflow.api import IMAGE, INT, Input, Node, Output


class Fine(Node):
    id = "typos.Fine"
    outputs = (Output("n", INT),)

    def run(self, ctx):
        return 1


class NoComma(Node):
    id = "typos.NoComma"
    inputs = (Input("image", IMAGE))
    outputs = (Output("image", IMAGE),)

    def run(self, ctx, image):
        return image


class BadId(Node):
    id = "typos-bad"
    version = "1.0"
    outputs = (Output("n", INT), Output("n", INT))

    def run(self, ctx):
        return 1
''')
    assert main(["plugins", "--plugins", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    line = next(x for x in out.splitlines() if x.startswith("typos "))
    assert "partial" in line and "1 nodes" in line  # typos.Fine loads
    assert ("node type 'typos.NoComma' (nodeflow_plugins.typos.NoComma) is not registered: inputs "
            "must be a tuple of Input(...) declarations (a single one needs a comma: "
            "(Input(...),))") in out
    assert ("node type 'typos-bad' (nodeflow_plugins.typos.BadId) is not registered: (3 problems) "
            "1) id 'typos-bad' must look like 'pack.Name' 2) version '1.0' must be semantic, like "
            "'1.0.0' 3) socket 'n' is declared twice") in out
