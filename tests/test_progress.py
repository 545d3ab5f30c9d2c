"""Console progress as a user sees it: plain lines when piped, live lines on a terminal with
one line per running node, JSON never touched."""

import errno
import fcntl
import io
import json
import os
import pty
import re
import struct
import subprocess
import sys
import termios
import time

import pytest
from PIL import Image
from rich.console import Console

from nodeflow.executor import Executor
from nodeflow.live_progress import LiveReporter
from nodeflow.registry import load_registry

PYTHON = sys.executable
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")

# Two nodes that meet at a barrier once both run, then report ten steps each: on a
# display they must be seen side by side.
PACK = '''
import threading, time
from nodeflow.node import Input, Node, Output
from nodeflow.types import FLOAT, INT

BOTH = threading.Barrier(2, timeout=30)

class Steps(Node):
    id = "progresstest.Steps"
    inputs = (Input("steps", INT, default=10, min=1),)
    outputs = (Output("y", FLOAT),)

    def run(self, ctx, steps):
        BOTH.wait()
        for i in range(steps):
            time.sleep(0.08)
            ctx.progress(i + 1, steps, "denoising")
        return float(steps)

class Broken(Node):
    id = "progresstest.Broken"
    outputs = (Output("y", FLOAT),)

    def run(self, ctx):
        raise ValueError("the lamp is out")
'''


@pytest.fixture
def pack(tmp_path):
    folder = tmp_path / "plugins"
    folder.mkdir()
    (folder / "progresstest.py").write_text(PACK)
    return folder


def write_graph(path, nodes, links=()):
    path.write_text(json.dumps({
        "format": "nodeflow.graph", "version": 1, "nodes": nodes,
        "links": [{"from": a, "to": b} for a, b in links], "editor": {}, "meta": {}}))
    return path


def two_nodes(tmp_path):
    return write_graph(tmp_path / "two.json", {
        "a": {"type": "progresstest.Steps", "inputs": {"steps": 10}},
        "b": {"type": "progresstest.Steps", "inputs": {"steps": 10}},
    })


def screen_lines(raw: str) -> list[str]:
    """What was written, escape sequences removed, split at every line feed and carriage
    return (each redraw of a live display starts with one)."""
    return [line.rstrip() for line in re.split(r"[\r\n]+", ANSI.sub("", raw))]


def side_by_side(lines: list[str], first: str, second: str) -> bool:
    """Did one redraw show both nodes, each on its own line, with its step count?"""
    return any(first in a and second in b and "step" in a and "step" in b
               for a, b in zip(lines, lines[1:], strict=False))


def run_on_pty(args, env_extra, cwd, timeout=60):
    """Run the real CLI with its stderr on a pseudo-terminal (120 columns), stdout on a pipe;
    returns (exit code, stdout, everything the terminal got)."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
    env = {**os.environ, "TERM": "xterm-256color", **env_extra}
    env.pop("NO_COLOR", None) if "NO_COLOR" not in env_extra else None
    proc = subprocess.Popen([PYTHON, "-m", "nodeflow", *args], stdout=subprocess.PIPE,
                            stderr=slave, stdin=subprocess.DEVNULL, env=env, cwd=cwd)
    os.close(slave)
    chunks = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            data = os.read(master, 65536)
        except OSError as exc:  # EIO: the child closed its end
            if exc.errno != errno.EIO:
                raise
            break
        if not data:
            break
        chunks.append(data)
    os.close(master)
    out = proc.stdout.read().decode()
    proc.stdout.close()
    return proc.wait(timeout=30), out, b"".join(chunks).decode("utf-8", "replace")


# --- plain lines: pipes, logs, CI ---------------------------------------------------------

def test_piped_run_prints_one_plain_line_per_event(tmp_path):
    Image.new("RGB", (40, 30), (200, 40, 10)).save(tmp_path / "in.png")
    graph = write_graph(tmp_path / "g.json", {
        "load": {"type": "image.Load", "inputs": {"path": "in.png"}},
        "small": {"type": "image.Resize", "inputs": {"width": 20, "height": 10}},
        "save": {"type": "image.Save", "inputs": {"prefix": "out"}},
    }, [("load.image", "small.image"), ("small.image", "save.image")])
    done = subprocess.run([PYTHON, "-m", "nodeflow", "run", str(graph), "--out", str(tmp_path / "out")],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == str(tmp_path / "out" / "out_00001.png")
    lines = done.stderr.splitlines()
    assert "\x1b" not in done.stderr and "\r" not in done.stderr
    # Node lines, and a node's progress at most once a second ("[3/3] save ███░░ 1/2").
    pattern = re.compile(r"\[(\d)/3\] (\w+) \((image\.\w+)\) (running|done in \d+\.\d\ds)")
    steps = re.compile(r"\[\d/3\] \w+ [█░]{24} \d+/\d+( .*)?")
    assert all(pattern.fullmatch(line) or steps.fullmatch(line) for line in lines), lines
    parsed = [m for m in map(pattern.fullmatch, lines) if m]
    assert [(m[1], m[2], m[4].split()[0]) for m in parsed] == [
        ("1", "load", "running"), ("1", "load", "done"), ("2", "small", "running"),
        ("2", "small", "done"), ("3", "save", "running"), ("3", "save", "done")]


def test_dumb_terminal_gets_plain_lines(tmp_path, pack):
    code, out, screen = run_on_pty(
        ["run", str(two_nodes(tmp_path)), "--plugins", str(pack), "--output", "a",
         "--output", "b", "--workers", "2"], {"TERM": "dumb"}, tmp_path)
    assert code == 0, screen
    assert "\x1b[" not in screen  # no cursor movement, no colour
    lines = [line for line in screen.replace("\r", "").splitlines() if line]
    assert sorted(line for line in lines if line.endswith("running")) == [
        "[1/2] a (progresstest.Steps) running", "[2/2] b (progresstest.Steps) running"]
    assert sum(" done in " in line for line in lines) == 2


# --- live lines on a terminal -------------------------------------------------------------

def test_live_display_shows_two_running_nodes_on_two_lines(tmp_path, pack):
    registry = load_registry([pack], use_env=False)
    buffer = io.StringIO()
    console = Console(file=buffer, force_terminal=True, width=120, color_system="standard")
    reporter = LiveReporter(buffer, console=console)
    graph = two_nodes(tmp_path)
    from nodeflow.cli import load_graph_file

    with Executor(registry, workers=2) as executor:
        result = executor.run(load_graph_file(str(graph), registry), ["a", "b"], on_event=reporter)
    reporter.finish(result)
    assert result.ok and result.outputs == {"a": {"y": 10.0}, "b": {"y": 10.0}}
    raw = buffer.getvalue()
    assert "\x1b[" in raw  # redrawn in place
    lines = screen_lines(raw)
    assert (side_by_side(lines, "a (progresstest.Steps)", "b (progresstest.Steps)")
            or side_by_side(lines, "b (progresstest.Steps)", "a (progresstest.Steps)")), lines
    assert any("step 10/10" in line or "denoising" in line for line in lines)
    assert any(re.search(r"\d+/2 nodes", line) for line in lines)  # the run's own line
    # Each node's line is finalised when it ends; the run ends with a summary.
    done = [line for line in lines if re.fullmatch(r"✓ \[\d/2\] [ab] \(progresstest\.Steps\) "
                                                   r"done in \d+\.\d\ds", line)]
    assert len(done) == 2
    assert re.fullmatch(r"ran 2 nodes in \d+\.\d\ds", lines[-2] if not lines[-1] else lines[-1])
    # After the last redraw no running node is left on the screen.
    last_frame = raw.rsplit("\x1b[2K", 1)[-1]
    assert "progresstest.Steps" not in ANSI.sub("", last_frame).split("ran 2 nodes")[0]


def test_live_display_reports_failure_and_cached_summary(tmp_path, pack):
    registry = load_registry([pack], use_env=False)
    graph = write_graph(tmp_path / "g.json", {
        "ok": {"type": "math.Add", "inputs": {"a": 1.0, "b": 2.0}},
        "bad": {"type": "progresstest.Broken", "inputs": {}},
    })
    from nodeflow.cli import load_graph_file

    with Executor(registry, workers=1) as executor:
        loaded = load_graph_file(str(graph), registry)
        executor.run(loaded, ["ok"])  # now cached
        buffer = io.StringIO()
        reporter = LiveReporter(buffer, console=Console(file=buffer, force_terminal=True, width=100))
        result = executor.run(loaded, ["ok", "bad"], on_event=reporter)
        reporter.finish(result)
    lines = screen_lines(buffer.getvalue())
    assert "1 node(s) from the cache" in lines
    assert any(re.fullmatch(r"✗ \[1/1\] bad \(progresstest\.Broken\) FAILED", line) for line in lines)
    assert any(line.startswith("error: ") and "the lamp is out" in line for line in lines)
    assert "1 node failed" in lines


def test_cli_on_a_terminal_draws_live_lines_and_keeps_stdout_clean(tmp_path, pack):
    code, out, screen = run_on_pty(
        ["run", str(two_nodes(tmp_path)), "--plugins", str(pack), "--output", "a",
         "--output", "b", "--workers", "2"], {}, tmp_path)
    assert code == 0, screen
    assert out == ""  # no files written; nothing of the display leaks to stdout
    lines = screen_lines(screen)
    assert (side_by_side(lines, "a (progresstest.Steps)", "b (progresstest.Steps)")
            or side_by_side(lines, "b (progresstest.Steps)", "a (progresstest.Steps)")), lines
    assert re.search(r"\x1b\[3\dm|\x1b\[38;", screen)  # coloured
    assert any(re.fullmatch(r"ran 2 nodes in \d+\.\d\ds", line) for line in lines)


def test_no_color_keeps_the_live_lines_without_colour(tmp_path, pack):
    code, _out, screen = run_on_pty(
        ["run", str(two_nodes(tmp_path)), "--plugins", str(pack), "--output", "a",
         "--output", "b", "--workers", "2"], {"NO_COLOR": "1"}, tmp_path)
    assert code == 0, screen
    assert "\x1b[" in screen  # still redrawn in place
    assert not re.search(r"\x1b\[[0-9;]*(3\d|38;5;\d+|38;2;[\d;]+)m", screen)
    assert any("done in" in line for line in screen_lines(screen))
