"""The headless CLI as a user runs it: exit codes, --set, --json, PNG-embedded graphs."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
from PIL import Image

from nodeflow.cli import main
from nodeflow.graph import Graph
from tests.child_signals import default_signals

from .conftest import REPO

PYTHON = sys.executable


def write_graph(path, nodes, links=(), meta=None):
    g = {"format": "nodeflow.graph", "version": 1, "nodes": nodes,
         "links": [{"from": a, "to": b} for a, b in links], "editor": {}, "meta": meta or {}}
    path.write_text(json.dumps(g, indent=2))
    return path


@pytest.fixture
def picture_graph(tmp_path):
    Image.new("RGB", (40, 30), (200, 40, 10)).save(tmp_path / "in.png")
    return write_graph(tmp_path / "g.json", {
        "load": {"type": "image.Load", "inputs": {"path": "in.png"}},
        "small": {"type": "image.Resize", "inputs": {"width": 20, "height": 10}},
        "save": {"type": "image.Save", "inputs": {"prefix": "out"}},
    }, [("load.image", "small.image"), ("small.image", "save.image")])


def test_run_writes_the_output_and_exits_0(picture_graph, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["run", str(picture_graph), "--out", str(out)]) == 0
    written = out / "out_00001.png"
    assert capsys.readouterr().out.strip() == str(written)
    with Image.open(written) as im:
        assert im.size == (20, 10)


def test_same_graph_same_bytes_and_never_overwrites(picture_graph, tmp_path):
    out = tmp_path / "out"
    assert main(["run", str(picture_graph), "--out", str(out), "-q"]) == 0
    assert main(["run", str(picture_graph), "--out", str(out), "-q"]) == 0
    first, second = sorted(out.iterdir())
    assert (first.name, second.name) == ("out_00001.png", "out_00002.png")
    assert first.read_bytes() == second.read_bytes()


def test_set_overrides_an_input_by_its_type(picture_graph, tmp_path):
    out = tmp_path / "out"
    assert main(["run", str(picture_graph), "--out", str(out), "-q",
                 "--set", "small.width=8", "--set", "save.prefix=tiny"]) == 0
    with Image.open(out / "tiny_00001.png") as im:
        assert im.size == (8, 10)


@pytest.mark.parametrize("override, fragment", [
    ("small.width=wide", "expected an integer"),
    ("small.width=0", "below the minimum"),
    ("small.colour=3", "no input 'colour'"),
    ("ghost.width=3", "no node 'ghost'"),
    ("small.image=x", "fed by a link from load.image"),
    ("nonsense", "NODE.INPUT=VALUE"),
])
def test_bad_set_is_reported_like_validation(picture_graph, tmp_path, capsys, override, fragment):
    assert main(["run", str(picture_graph), "--out", str(tmp_path), "--set", override]) == 2
    err = capsys.readouterr().err
    assert fragment in err and str(picture_graph) in err
    assert "Traceback" not in err


def test_failed_node_exits_1_with_a_located_message(tmp_path, capsys):
    Image.new("RGB", (10, 10)).save(tmp_path / "in.png")
    path = write_graph(tmp_path / "g.json", {
        "load": {"type": "image.Load", "inputs": {"path": "in.png"}},
        "crop": {"type": "image.Crop", "inputs": {"x": 5, "width": 20, "height": 5}},
        "save": {"type": "image.Save", "inputs": {}},
    }, [("load.image", "crop.image"), ("crop.image", "save.image")])
    assert main(["run", str(path), "--out", str(tmp_path / "o")]) == 1
    err = capsys.readouterr().err
    assert "node 'crop' (image.Crop), socket 'width'" in err and "outside the 10×10 image" in err
    assert "Traceback" not in err
    assert not (tmp_path / "o").exists() or not list((tmp_path / "o").iterdir())


def test_invalid_graph_exits_2_listing_every_problem(tmp_path, capsys):
    path = write_graph(tmp_path / "g.json", {
        "a": {"type": "image.Resise", "inputs": {}},
        "b": {"type": "math.Add", "inputs": {"a": "one"}},
    })
    assert main(["validate", str(path)]) == 2
    err = capsys.readouterr().err
    assert "unknown node type 'image.Resise'" in err and "expected a number" in err
    assert "2 problems found" in err


def test_validate_json_output(tmp_path, capsys):
    path = write_graph(tmp_path / "g.json", {"b": {"type": "math.Add", "inputs": {"a": "one"}}})
    assert main(["validate", str(path), "--json"]) == 2
    report = json.loads(capsys.readouterr().out)
    assert report["valid"] is False
    assert report["problems"][0]["node"] == "b" and report["problems"][0]["socket"] == "a"


def test_validate_valid_file_prints_a_summary(capsys):
    assert main(["validate", str(REPO / "graphs" / "resize.json")]) == 0
    assert "valid (3 nodes, 2 links)" in capsys.readouterr().out


@pytest.mark.parametrize("content, fragment", [
    ("{ not json", "malformed JSON"),
    ("[]", "JSON object"),
    ("\xff\xfe", None),
])
def test_unreadable_files_are_clear_errors(tmp_path, capsys, content, fragment):
    path = tmp_path / "g.json"
    if fragment is None:
        path.write_bytes(b"\xff\xfe\x00garbage")
        fragment = "not a UTF-8 text file"
    else:
        path.write_text(content)
    assert main(["run", str(path)]) == 2
    err = capsys.readouterr().err
    assert fragment in err and "Traceback" not in err


def test_missing_file(capsys):
    assert main(["validate", "/nonexistent/g.json"]) == 2
    assert "/nonexistent/g.json: file not found. Check the path." in capsys.readouterr().err
    assert main(["run", "/nonexistent/g.json"]) == 2  # the message and what to do, as sentences
    assert "/nonexistent/g.json: file not found. Check the path." in capsys.readouterr().err


def test_json_events_and_result(picture_graph, tmp_path, capsys):
    assert main(["run", str(picture_graph), "--out", str(tmp_path / "o"), "--json"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    kinds = [line["event"] for line in lines]
    assert kinds[0] == "run_started" and kinds[-1] == "result"
    assert kinds.count("node_finished") == 3
    result = lines[-1]
    assert result["status"] == "ok" and set(result["timings"]) == {"load", "small", "save"}
    assert result["files"] == [str(tmp_path / "o" / "out_00001.png")]


def test_output_option_runs_only_what_is_needed(picture_graph, tmp_path, capsys):
    assert main(["run", str(picture_graph), "--out", str(tmp_path / "o"), "--json",
                 "--output", "small"]) == 0
    result = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert result["ran"] == ["load", "small"] and result["files"] == []
    assert main(["run", str(picture_graph), "--output", "nope"]) == 2


def test_png_written_by_save_runs_its_embedded_graph(picture_graph, tmp_path, capsys, monkeypatch):
    out = tmp_path / "out"
    assert main(["run", str(picture_graph), "--out", str(out), "-q"]) == 0
    png = out / "out_00001.png"
    embedded = Graph.load(png)
    assert set(embedded.nodes) == {"load", "small", "save"}
    # The picture's graph runs from anywhere: its input path was made absolute, and this user
    # ran that graph here, so its picture reads the same files its graph file did.
    other = tmp_path / "elsewhere"
    other.mkdir()
    os.chdir(other)
    assert main(["run", str(png), "--out", str(other), "-q"]) == 0
    assert (other / "out_00001.png").read_bytes() == png.read_bytes()
    # Another user's copy of the same picture (no record of its graph) reads files outside the
    # picture's folder only where --allow-dir allows.
    monkeypatch.setenv("NODEFLOW_DATA_DIR", str(tmp_path / "another-user"))
    assert main(["run", str(png), "--out", str(other), "-q"]) == 2
    assert "--allow-dir" in capsys.readouterr().err
    assert main(["run", str(png), "--out", str(other), "-q", "--allow-dir", str(tmp_path)]) == 0
    assert (other / "out_00002.png").read_bytes() == png.read_bytes()


def test_nodes_lists_and_exports_schemas(capsys):
    assert main(["nodes"]) == 0
    listing = capsys.readouterr().out
    for type_id in ("value.Int", "value.Float", "value.String", "value.Seed", "math.Add",
                    "image.Load", "image.Save", "image.Resize", "image.Crop", "image.Blend",
                    "image.Invert"):
        assert type_id in listing
    assert main(["nodes", "--json", "image.Resize"]) == 0
    schemas = json.loads(capsys.readouterr().out)
    assert {s["id"] for s in schemas} == {"image.Resize", "image.ResizeBy"}
    schema = next(s for s in schemas if s["id"] == "image.Resize")
    width = next(i for i in schema["inputs"] if i["name"] == "width")
    assert (width["type"], width["default"], width["min"], width["max"]) == ("INT", 512, 1, 16384)
    assert schema["outputs"] == [{"name": "image", "type": "IMAGE", "description": "The resized images."}]
    assert schema["literal_schema"]["properties"]["method"]["enum"][0] == "lanczos"


def test_schema_command_publishes_a_json_schema(capsys):
    import jsonschema

    assert main(["schema"]) == 0
    schema = json.loads(capsys.readouterr().out)
    for name in ("resize.json", "image_effects.json"):
        jsonschema.validate(json.loads((REPO / "graphs" / name).read_text()), schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"format": "nodeflow.graph", "version": 1, "nodes": [], }, schema)


def test_light_commands_do_not_import_torch():
    code = ("import sys; from nodeflow.cli import main; "
            "[main(a) for a in (['nodes', '--json'], ['validate', sys.argv[1]], ['plugins'])]; "
            "print('torch' in sys.modules)")
    out = subprocess.run([PYTHON, "-c", code, str(REPO / "graphs" / "demo.json")],
                         capture_output=True, text=True, check=True).stdout
    assert out.strip().splitlines()[-1] == "False"
    help_text = subprocess.run([PYTHON, "-m", "nodeflow", "--help"], capture_output=True, text=True)
    assert help_text.returncode == 0 and "run" in help_text.stdout


def test_output_piped_into_a_reader_that_stops_early_ends_without_a_traceback():
    # `nodeflow nodes --json | head -c 600`: the listing is larger than the pipe holds.
    proc = subprocess.Popen([PYTHON, "-m", "nodeflow", "nodes", "--json"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    assert proc.stdout is not None and proc.stderr is not None
    assert proc.stdout.read(600).startswith(b"[")
    proc.stdout.close()
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=60) == 141
    assert "Traceback" not in err and "BrokenPipeError" not in err, err


def test_ctrl_c_cancels_cleanly_with_exit_130(tmp_path):
    plugin = tmp_path / "plugins"
    plugin.mkdir()
    (plugin / "slowpack.py").write_text(
        "import time\n"
        "from nodeflow.node import Input, Node, Output\n"
        "from nodeflow.types import FLOAT\n"
        "class Slow(Node):\n"
        "    id = 'slowpack.Slow'\n"
        "    output_node = True\n"
        "    outputs = (Output('y', FLOAT),)\n"
        "    def run(self, ctx):\n"
        "        for i in range(3000):\n"
        "            time.sleep(0.01)\n"
        "            ctx.progress(i, 3000)\n"
        "        return 1.0\n")
    path = write_graph(tmp_path / "g.json", {"slow": {"type": "slowpack.Slow", "inputs": {}}})
    proc = subprocess.Popen([PYTHON, "-m", "nodeflow", "run", str(path), "--plugins", str(plugin)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=default_signals)
    deadline = time.monotonic() + 30
    line = ""
    while "running" not in line and time.monotonic() < deadline:
        line = proc.stderr.readline()
    time.sleep(0.3)
    proc.send_signal(signal.SIGINT)
    started = time.monotonic()
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 130
    assert time.monotonic() - started < 5
    assert "cancelled" in err and "Traceback" not in err
