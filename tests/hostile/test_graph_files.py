"""Graph files: duplicate and control-character ids, huge numbers, FIFOs, devices, size limits,
and saving that keeps modes and symlinks."""

from __future__ import annotations

import json
import os
import stat

import pytest

from nodeflow.graph import Graph

from .util import assert_clean_error, cli, cli_process, write_graph

HEADER = '{"format": "nodeflow.graph", "version": 1, '


def test_duplicate_node_id_is_rejected(tmp_path, capsys):
    path = tmp_path / "dup.json"
    path.write_text(HEADER + '"nodes": {'
                    '"a": {"type": "value.Int", "inputs": {"value": 1}},'
                    '"a": {"type": "value.Float", "inputs": {"value": 2.0}}}}')
    code, _out, err = cli(capsys, "validate", str(path))
    assert code == 2
    assert "node 'a'" in err and "appears twice" in err
    assert_clean_error(err)


def test_duplicate_key_inside_inputs_is_rejected(tmp_path, capsys):
    path = tmp_path / "dup.json"
    path.write_text(HEADER + '"nodes": {"a": {"type": "value.Int", '
                    '"inputs": {"value": 1, "value": 2}}}}')
    code, _out, err = cli(capsys, "validate", str(path))
    assert code == 2 and "key 'value' appears twice" in err


def test_run_reports_every_repeat_and_locates_other_problems(tmp_path, capsys):
    # `nodeflow run` decodes the file once (to tell a ComfyUI workflow from a graph) and the
    # graph reader takes that decoding: repeats and located problems are all still reported.
    path = tmp_path / "dup.json"
    path.write_text(HEADER + '\n "nodes": {"a": {"type": "math.Add", '
                    '"inputs": {"b": 1.0, "b": 2.0, "b": 3.0}},\n  "c": {"type": "math.Add"}},\n'
                    ' "links": [{"from": "a.sum", "to": "c"}]}\n')
    code, _out, err = cli(capsys, "run", str(path), "--output", "c", "-q")
    assert code == 2
    assert err.count("key 'b' appears twice") == 2  # the second and the third 'b'
    assert "dup.json:4:12: link #1: 'c' is not of the form node.socket" in err
    assert_clean_error(err)


@pytest.mark.parametrize("bad_id", ["evil\n", "a\nb", "esc\x1b[31m", "nul\x00", "tab\t", "sp ace"])
def test_node_ids_with_control_characters_are_rejected(tmp_path, capsys, bad_id):
    path = write_graph(tmp_path / "g.json", {bad_id: {"type": "value.Int", "inputs": {"value": 1}}})
    code, _out, err = cli(capsys, "validate", str(path))
    assert code == 2
    assert "bad node id" in err
    assert "\x1b" not in err  # printed escaped, never as raw terminal control
    assert_clean_error(err)


def test_link_reference_with_newline_is_rejected(tmp_path, capsys):
    path = write_graph(tmp_path / "g.json", {
        "a": {"type": "value.Int", "inputs": {"value": 1}},
        "b": {"type": "value.Int", "inputs": {}},
    }, (("a.value\n", "b.value"),))
    code, _out, err = cli(capsys, "validate", str(path))
    assert code == 2 and "link #1" in err


def test_graph_api_refuses_an_id_ending_in_newline():
    from nodeflow.errors import UsageError

    with pytest.raises(UsageError):
        Graph().add_node("value.Int", "evil\n")


def test_integer_literal_of_thousands_of_digits(tmp_path, capsys):
    path = tmp_path / "big.json"
    path.write_text(HEADER + '"nodes": {"a": {"type": "value.Int", "inputs": {"value": '
                    + "9" * 5000 + "}}}}")
    for command in ("validate", "run"):
        code, _out, err = cli(capsys, command, str(path), *(["--out", str(tmp_path / "o")]
                                                          if command == "run" else []))
        assert code == 2
        assert "more than 4300 digits" in err
        assert_clean_error(err)


def test_set_with_thousands_of_digits_is_a_usage_error(tmp_path, capsys):
    path = write_graph(tmp_path / "g.json", {"a": {"type": "value.Int", "inputs": {"value": 1}}})
    code, _out, err = cli(capsys, "run", str(path), "--set", "a.value=" + "9" * 5000,
                          "--out", str(tmp_path / "o"))
    assert code == 2
    assert_clean_error(err)


@pytest.mark.parametrize("name", ["graph.json", "render.png"])
def test_fifo_as_graph_is_refused_without_hanging(tmp_path, name):
    fifo = tmp_path / name  # a .png name is sniffed for a picture first: that must not block either
    os.mkfifo(fifo)
    for command in ("validate", "run"):
        proc = cli_process(command, str(fifo), timeout=60)
        assert proc.returncode == 2
        assert "FIFO" in proc.stderr
        assert_clean_error(proc.stderr)


def test_dev_zero_is_refused_at_once(capsys):
    code, _out, err = cli(capsys, "validate", "/dev/zero")
    assert code == 2
    assert "/dev/zero is a device" in err


def test_a_folder_as_graph(tmp_path, capsys):
    code, _out, err = cli(capsys, "validate", str(tmp_path))
    assert code == 2 and "is a folder" in err


def test_graph_file_size_is_bounded_and_configurable(tmp_path, capsys, monkeypatch):
    path = write_graph(tmp_path / "g.json", {"a": {"type": "value.Int", "inputs": {"value": 1}}})
    path.write_text(path.read_text() + " " * 5000)
    monkeypatch.setenv("NODEFLOW_MAX_GRAPH_BYTES", "4KB")
    code, _out, err = cli(capsys, "validate", str(path))
    assert code == 2
    assert "larger than 4,000 bytes" in err and "NODEFLOW_MAX_GRAPH_BYTES" in err
    monkeypatch.setenv("NODEFLOW_MAX_GRAPH_BYTES", "1MB")
    code, _out, err = cli(capsys, "validate", str(path))
    assert code == 0, err


def test_default_graph_size_limit_refuses_a_huge_file(tmp_path, capsys):
    from nodeflow.graph import MAX_GRAPH_BYTES

    path = tmp_path / "huge.json"
    with open(path, "wb") as fh:
        fh.truncate(MAX_GRAPH_BYTES + 1)  # sparse: no disk used
    code, _out, err = cli(capsys, "validate", str(path))
    assert code == 2 and "larger than" in err


@pytest.mark.parametrize("mode", [0o644, 0o664, 0o600])
def test_save_keeps_the_mode_of_an_existing_graph_file(tmp_path, mode):
    path = write_graph(tmp_path / "g.json", {"a": {"type": "value.Int", "inputs": {"value": 1}}})
    path.chmod(mode)
    graph = Graph.load(path)
    graph.set_input("a", "value", 2)
    graph.save(path)
    assert stat.S_IMODE(path.stat().st_mode) == mode
    assert json.loads(path.read_text())["nodes"]["a"]["inputs"]["value"] == 2


def test_save_of_a_new_file_follows_the_umask(tmp_path):
    old = os.umask(0o027)
    try:
        Graph().save(tmp_path / "new.json")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "new.json").stat().st_mode) == 0o640


def test_save_writes_through_a_symlink(tmp_path):
    real_dir = tmp_path / "real"
    real_dir.mkdir()
    target = write_graph(real_dir / "g.json", {"a": {"type": "value.Int", "inputs": {"value": 1}}})
    target.chmod(0o644)
    link = tmp_path / "link.json"
    link.symlink_to(target)
    graph = Graph.load(link)
    graph.set_input("a", "value", 7)
    graph.save(link)
    assert link.is_symlink() and os.readlink(link) == str(target)
    assert json.loads(target.read_text())["nodes"]["a"]["inputs"]["value"] == 7
    assert stat.S_IMODE(target.stat().st_mode) == 0o644
    assert [p.name for p in real_dir.iterdir()] == ["g.json"]  # no temporary file left


def test_plugin_name_with_a_newline_is_refused(tmp_path, capsys):
    code, _out, err = cli(capsys, "plugin", "new", "evil\n", "--dir", str(tmp_path))
    assert code == 2
    assert "plugin name" in err
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("name", ["graph.json", "dropped.png"])
def test_fifo_given_to_the_editor_is_refused_without_hanging(tmp_path, name):
    fifo = tmp_path / name
    os.mkfifo(fifo)
    proc = cli_process("edit", str(fifo), "--screenshot", str(tmp_path / "shot.png"), timeout=60,
                       env={"QT_QPA_PLATFORM": "offscreen", "NODEFLOW_EDITOR_HOME": str(tmp_path / "home")})
    assert proc.returncode == 2
    assert "FIFO" in proc.stderr
    assert_clean_error(proc.stderr)


def test_control_characters_in_a_node_type_never_reach_the_terminal(tmp_path, capsys):
    path = write_graph(tmp_path / "g.json", {"a": {"type": "x\x1b[2J\x07", "inputs": {}}})
    code, out, err = cli(capsys, "validate", str(path))
    assert code == 2
    assert "unknown node type" in err
    assert "\x1b" not in err + out and "\x07" not in err + out
