"""Sweeps on one machine: ``nodeflow run --sweep`` as a user runs it, and the runner behind it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from nodeflow.cli import main
from nodeflow.events import CancelToken
from nodeflow.executor import Executor
from nodeflow.graph import Graph
from nodeflow.settings import Settings
from nodeflow.sweeps.runner import SweepEvent, run_local
from nodeflow.sweeps.spec import parse_sweeps
from nodeflow.sweeps.store import MANIFEST, STAGING
from tests.child_signals import default_signals

REPO = Path(__file__).resolve().parent.parent
RESIZE = str(REPO / "graphs" / "resize.json")
TXT2IMG = str(REPO / "graphs" / "txt2img.json")


def manifest(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / MANIFEST).read_text().splitlines()]


def pngs(out: Path) -> list[str]:
    return sorted(p.name for p in out.glob("*.png"))


def events(capsys: pytest.CaptureFixture[str]) -> list[dict]:
    return [json.loads(line) for line in capsys.readouterr().out.splitlines()]


def problems(capsys: pytest.CaptureFixture[str]) -> list[dict]:
    report = json.loads(capsys.readouterr().out)  # `--json` prints one report of every problem
    assert report["valid"] is False
    return report["problems"]


def test_grid_sweep_names_outputs_by_job_and_writes_a_manifest(tmp_path: Path) -> None:
    out = tmp_path / "out"
    code = main(["run", RESIZE, "--out", str(out), "--quiet",
                 "--sweep", "small.width=64..80..8", "--sweep", "small.method=lanczos,bicubic"])
    assert code == 0
    assert pngs(out) == [f"width-{w}_method-{m}_resized_00001.png"
                         for w in (64, 72, 80) for m in ("bicubic", "lanczos")]
    for w in (64, 72, 80):
        assert Image.open(out / f"width-{w}_method-bicubic_resized_00001.png").size == (w, 64)
    records = manifest(out)
    assert [r["job"] for r in records] == [f"width-{w}_method-{m}" for w in (64, 72, 80)
                                           for m in ("lanczos", "bicubic")]
    assert records[3]["overrides"] == {"small.width": 72, "small.method": "bicubic"}
    assert records[3]["files"] == ["width-72_method-bicubic_resized_00001.png"]
    assert not (out / STAGING).exists()


def test_zip_pairs_values_and_a_prompts_file_gives_one_job_per_line(tmp_path: Path) -> None:
    prefixes = tmp_path / "prefixes.txt"
    prefixes.write_text("first pass\n\nsecond\nthird one\n")  # a blank line is not a value
    out = tmp_path / "out"
    code = main(["run", RESIZE, "--out", str(out), "--quiet", "--zip",
                 "--sweep", f"save.prefix=@{prefixes}", "--sweep", "small.width=[16, 24, 32]"])
    assert code == 0
    records = manifest(out)
    assert [r["overrides"] for r in records] == [
        {"save.prefix": "first pass", "small.width": 16},
        {"save.prefix": "second", "small.width": 24},
        {"save.prefix": "third one", "small.width": 32}]
    # Text values are labelled by their line in the file.
    assert [r["job"] for r in records] == ["prefix-1_width-16", "prefix-3_width-24",
                                           "prefix-4_width-32"]
    assert records[1]["files"] == ["prefix-3_width-24_second_00001.png"]
    assert Image.open(out / records[2]["files"][0]).size == (32, 64)


def test_rerun_skips_complete_jobs_and_redoes_only_what_is_missing(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    args = ["run", RESIZE, "--out", str(out), "--json", "--sweep", "small.width=16..48..16"]
    assert main(args) == 0
    first = {p: (out / p).read_bytes() for p in pngs(out)}
    capsys.readouterr()
    # A crash left: one output deleted, a staging folder, a manifest line cut short.
    (out / "width-32_resized_00001.png").unlink()
    (out / STAGING / "width-48").mkdir(parents=True)
    (out / STAGING / "width-48" / "resized_00001.png").write_bytes(b"half a png")
    with open(out / MANIFEST, "a") as f:
        f.write('{"job": "width-48", "fingerp')
    assert main(args) == 0
    lines = events(capsys)
    assert [e["job"] for e in lines if e["event"] == "job_skipped"] == ["width-16", "width-48"]
    assert [e["job"] for e in lines if e["event"] == "job_finished"] == ["width-32"]
    # Nothing duplicated, the redone job's bytes are the same, the staging area is gone.
    assert {p: (out / p).read_bytes() for p in pngs(out)} == first
    assert not (out / STAGING).exists()

    # Another value set is another sweep: the new job runs, the old ones stay complete.
    assert main(args[:-1] + ["small.width=16..64..16"]) == 0
    lines = events(capsys)
    assert [e["job"] for e in lines if e["event"] == "job_finished"] == ["width-64"]


def test_rerun_with_a_changed_graph_runs_the_jobs_again(tmp_path: Path,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    args = ["run", RESIZE, "--out", str(out), "--json", "--sweep", "small.width=16,32"]
    assert main(args) == 0
    capsys.readouterr()
    assert main(args + ["--set", "small.height=32"]) == 0
    lines = events(capsys)
    assert [e["job"] for e in lines if e["event"] == "job_finished"] == ["width-16", "width-32"]
    assert Image.open(out / "width-16_resized_00001.png").size == (16, 32)
    assert pngs(out) == ["width-16_resized_00001.png", "width-32_resized_00001.png"]


def test_cancelled_sweep_keeps_finished_jobs_and_resumes(registry, tmp_path: Path) -> None:
    out = tmp_path / "out"
    graph = Graph.load(RESIZE)
    jobs = parse_sweeps(graph, registry, ["small.width=8..40..8"])
    cancel = CancelToken()

    def on_event(event: SweepEvent) -> None:
        if event.kind == "job_finished" and event.job == "width-16":
            cancel.cancel()  # as Ctrl-C does, between two jobs' nodes

    settings = Settings(out_dir=out, base_dir=REPO / "graphs")
    with Executor(registry, settings) as executor:
        result = run_local(executor, graph, jobs, out, on_event=on_event, cancel=cancel)
    assert result.cancelled and result.done == ["width-8", "width-16"]
    assert [r["job"] for r in manifest(out)] == ["width-8", "width-16"]
    assert pngs(out) == ["width-16_resized_00001.png", "width-8_resized_00001.png"]

    with Executor(registry, settings) as executor:
        result = run_local(executor, graph, jobs, out)
    assert result.ok and result.skipped == ["width-8", "width-16"]
    assert result.done == ["width-24", "width-32", "width-40"]
    assert len(pngs(out)) == 5


def test_a_bad_value_in_one_job_is_caught_before_any_job_runs(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    code = main(["run", RESIZE, "--out", str(out), "--json",
                 "--sweep", "save.prefix=[\"good\", \"sub/../bad\", \"fine\"]"])
    # A prefix leaving the output folder is caught before anything runs, located.
    assert code == 2 and not out.exists()
    problem = problems(capsys)[0]
    assert (problem["node"], problem["socket"]) == ("save", "prefix")
    assert "sub/../bad" in problem["message"]


def crop_graph(folder: Path) -> str:
    """Load the pattern picture (192×128), crop it, save it: a crop too wide fails at run time."""
    graph = {"format": "nodeflow.graph", "version": 1,
             "nodes": {"load": {"type": "image.Load",
                                "inputs": {"path": str(REPO / "graphs" / "assets" / "pattern.png")}},
                       "crop": {"type": "image.Crop", "inputs": {"width": 64, "height": 64}},
                       "save": {"type": "image.Save", "inputs": {"prefix": "crop"}}},
             "links": [{"from": "load.image", "to": "crop.image"},
                       {"from": "crop.image", "to": "save.image"}]}
    path = folder / "crop.json"
    path.write_text(json.dumps(graph))
    return str(path)


def test_a_job_failing_at_run_time_fails_once_located_and_the_others_finish(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    args = ["run", crop_graph(tmp_path), "--out", str(out), "--json",
            "--sweep", "crop.width=64,300,96"]
    assert main(args) == 1
    lines = events(capsys)
    failed = [e for e in lines if e["event"] == "job_failed"]
    assert [e["job"] for e in failed] == ["width-300"]
    assert "node 'crop' (image.Crop), socket 'width'" in failed[0]["error"]
    assert "outside the 192×128 image" in failed[0]["error"]
    node_failed = [e for e in lines if e["event"] == "node_failed"]
    assert [(e["job"], e["worker"], e["node"]) for e in node_failed] == [("width-300", "local", "crop")]
    result = lines[-1]
    assert result["event"] == "result" and result["status"] == "failed"
    assert result["done"] == ["width-64", "width-96"]
    assert pngs(out) == ["width-64_crop_00001.png", "width-96_crop_00001.png"]
    # A re-run tries the failed job again (once), not the finished ones.
    assert main(args) == 1
    lines = events(capsys)
    assert [e["job"] for e in lines if e["event"] == "job_failed"] == ["width-300"]
    assert [e["job"] for e in lines if e["event"] == "job_skipped"] == ["width-64", "width-96"]


@pytest.mark.parametrize("spec, node, socket, words", [
    ("nosuch.seed=1..4", "nosuch", None, "has no node 'nosuch'"),
    ("small.colour=1..4", "small", "colour", "no input 'colour'"),
    ("small.width=10..1", "small", "width", "is empty"),
    ("small.width=1..x", "small", "width", "not a range"),
    ("small.width=8..64..0", "small", "width", "step must not be 0"),
    ("small.width=1.5..4", "small", "width", "takes integers"),
    ("small.width=0..16..8", "small", "width", "below the minimum"),
    ("save.prefix=@no-such-prompts.txt", "save", "prefix", "does not exist"),
    ("small.image=1..2", "small", "image", "takes a link"),
    ("small.method=lanczos,cubic-ish", "small", "method", "not one of the choices"),
    ("width=1..2", None, None, "not of the form node.socket"),
])
def test_bad_sweep_specs_are_located_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                            spec: str, node: str | None, socket: str | None,
                                            words: str) -> None:
    out = tmp_path / "out"
    code = main(["run", RESIZE, "--out", str(out), "--json", "--sweep", spec])
    assert code == 2
    found = problems(capsys)
    assert any(words in p["message"] and p["node"] == node and p["socket"] == socket
               and p["file"] == RESIZE for p in found), found
    assert not out.exists()


def test_zip_of_unequal_lengths_and_misused_flags_are_usage_errors(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    code = main(["run", RESIZE, "--out", str(out), "--zip", "--sweep", "small.width=8..24..8",
                 "--sweep", "small.height=8,16"])
    assert code == 2
    assert "small.width has 3, small.height has 2" in capsys.readouterr().err
    assert main(["run", RESIZE, "--out", str(out), "--zip"]) == 2
    assert "--zip needs at least one --sweep" in capsys.readouterr().err
    assert main(["run", RESIZE, "--out", str(out), "--ray-workers", "2"]) == 2
    assert "--ray-workers needs --ray" in capsys.readouterr().err
    assert not out.exists()


def test_sweep_shares_one_executor_and_matches_single_runs(
        registry, tmp_path: Path, torch_threads: None) -> None:
    """The checkpoint loads once, a prompt is encoded once for all its seeds, and each job's
    picture is byte for byte what a plain ``nodeflow run`` with the same values writes."""
    graph = Graph.load(TXT2IMG)
    for node, key, value in (("sampler", "steps", 2), ("latent", "width", 32),
                             ("latent", "height", 32)):
        graph.set_input(node, key, value)
    # Seeds first, as the usual command line has it: the jobs still run prompt by prompt.
    jobs = parse_sweeps(graph, registry, ["sampler.seed=1..2", "positive.text=[\"a red circle\", "
                                          "\"a blue star\", \"a green square\"]"])
    assert [j.name for j in jobs] == ["seed-1_text-1", "seed-1_text-2", "seed-1_text-3",
                                      "seed-2_text-1", "seed-2_text-2", "seed-2_text-3"]
    out = tmp_path / "sweep"
    seen: list[SweepEvent] = []
    with Executor(registry, Settings(out_dir=out)) as executor:
        result = run_local(executor, graph, jobs, out, on_event=seen.append)
    assert result.ok and len(result.files) == 6
    assert executor.models.loads == 1 and result.workers["local"].loads == 1
    encoded = [(e.job) for e in seen if e.kind == "node" and e.data["event"] == "node_finished"
               and e.data["node"] == "positive"]
    # Each prompt is encoded once; its other seed takes the encoding from the cache.
    assert encoded == ["seed-1_text-1", "seed-1_text-2", "seed-1_text-3"]
    assert [r["job"] for r in manifest(out)] == ["seed-1_text-1", "seed-2_text-1", "seed-1_text-2",
                                                 "seed-2_text-2", "seed-1_text-3", "seed-2_text-3"]

    single = tmp_path / "single"
    code = main(["run", TXT2IMG, "--out", str(single), "--quiet", "--set", "sampler.steps=2",
                 "--set", "latent.width=32", "--set", "latent.height=32",
                 "--set", "positive.text=a blue star", "--set", "sampler.seed=1"])
    assert code == 0
    assert (single / "txt2img_00001.png").read_bytes() == \
        (out / "seed-1_text-2_txt2img_00001.png").read_bytes()


def test_run_without_ray_never_imports_ray(tmp_path: Path) -> None:
    code = (
        "import sys\n"
        "from nodeflow.cli import main\n"
        f"rc = main(['run', {RESIZE!r}, '--out', {str(tmp_path)!r}, '--quiet',"
        " '--sweep', 'small.width=16,24'])\n"
        f"rc2 = main(['run', {RESIZE!r}, '--out', {str(tmp_path / 'one')!r}, '--quiet'])\n"
        "assert rc == 0 and rc2 == 0, (rc, rc2)\n"
        "loaded = sorted(m for m in sys.modules if m == 'ray' or m.startswith('ray.'))\n"
        "assert not loaded, loaded\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert len(list(tmp_path.glob("width-*_resized_00001.png"))) == 2


def test_console_shows_jobs_done_of_the_total_and_a_summary_per_worker(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    assert main(["run", RESIZE, "--out", str(out), "--sweep", "small.width=16,24,32"]) == 0
    captured = capsys.readouterr()
    assert captured.out.split() == [str(out / f"width-{w}_resized_00001.png") for w in (16, 24, 32)]
    lines = captured.err.splitlines()
    assert [line.split(" in ")[0] for line in lines if " done on " in line] == [
        "[1/3] width-16 done on local", "[2/3] width-24 done on local", "[3/3] width-32 done on local"]
    assert "3 jobs: 3 done" in lines
    assert "  worker local on this machine: 3 jobs, 0 model loads" in lines
    assert main(["run", RESIZE, "--out", str(out), "--sweep", "small.width=16,24,32"]) == 0
    err = capsys.readouterr().err
    assert "3 of 3 jobs already complete (from an earlier run): skipped" in err
    assert "3 jobs: 0 done, 3 already complete" in err


@pytest.mark.parametrize("how", ["ctrl-c", "kill -9"])
def test_a_sweep_stopped_mid_job_resumes_with_every_job_once(tmp_path: Path, how: str) -> None:
    """Ctrl-C cancels between steps (exit 130); kill -9 stops at once. Either way the jobs
    finished are kept, no half-written file counts, and the same command finishes the rest."""
    import signal

    from tests.cluster.conftest import SLOW_PLUGIN

    plugins = tmp_path / "plugins"
    plugins.mkdir()
    (plugins / "slowtest.py").write_text(SLOW_PLUGIN)
    graph = {"format": "nodeflow.graph", "version": 1,
             "nodes": {"load": {"type": "image.Load",
                                "inputs": {"path": str(REPO / "graphs" / "assets" / "pattern.png")}},
                       "pause": {"type": "slowtest.Pause", "inputs": {"steps": 20}},
                       "save": {"type": "image.Save", "inputs": {"prefix": "p"}}},
             "links": [{"from": "load.image", "to": "pause.image"},
                       {"from": "pause.image", "to": "save.image"}]}
    path = tmp_path / "slow.json"
    path.write_text(json.dumps(graph))
    out = tmp_path / "out"
    command = [sys.executable, "-m", "nodeflow", "run", str(path), "--out", str(out), "--json",
               "--plugins", str(plugins), "--sweep", "pause.steps=20..24"]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=default_signals)
    assert proc.stdout is not None
    finished = 0
    for line in proc.stdout:
        event = json.loads(line)
        finished += event["event"] == "job_finished"
        if finished >= 1 and event["event"] == "node_progress" and event["node"] == "pause":
            proc.send_signal(signal.SIGINT if how == "ctrl-c" else signal.SIGKILL)
            break
    rest = proc.communicate(timeout=120)[0]
    assert proc.returncode == (130 if how == "ctrl-c" else -signal.SIGKILL)
    if how == "ctrl-c":
        result = json.loads(rest.splitlines()[-1])
        assert result["status"] == "cancelled" and result["done"] == ["steps-20"]
        assert not (out / STAGING).exists()
    assert [r["job"] for r in manifest(out)] == ["steps-20"]
    assert pngs(out) == ["steps-20_p_00001.png"]

    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    lines = [json.loads(x) for x in done.stdout.splitlines()]
    assert [e["job"] for e in lines if e["event"] == "job_skipped"] == ["steps-20"]
    assert [e["job"] for e in lines if e["event"] == "job_finished"] == [
        "steps-21", "steps-22", "steps-23", "steps-24"]
    assert sorted(r["job"] for r in manifest(out)) == [f"steps-{n}" for n in range(20, 25)]
    assert pngs(out) == [f"steps-{n}_p_00001.png" for n in range(20, 25)]
    assert not (out / STAGING).exists()
