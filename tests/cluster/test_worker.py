"""The worker class on its own (no Ray): a job's pictures travel with it, files come back."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image

from nodeflow.cluster.worker import NodeflowWorker, WorkerConfig
from nodeflow.provenance import graph_from_png

PICTURE = Path(__file__).resolve().parents[2] / "graphs" / "assets" / "pattern.png"


def job(graph_path: str, picture: dict, name: str = "j", attempt: int = 1) -> dict:
    graph = {"format": "nodeflow.graph", "version": 1,
             "nodes": {"load": {"type": "image.Load", "inputs": {"path": graph_path}},
                       "small": {"type": "image.Resize", "inputs": {"width": 24, "height": 16}},
                       "save": {"type": "image.Save", "inputs": {"prefix": "renders/small"}}},
             "links": [{"from": "load.image", "to": "small.image"},
                       {"from": "small.image", "to": "save.image"}]}
    return {"name": name, "graph": json.dumps(graph), "file": "g.json", "outputs": None,
            "pictures": {("load", "path"): picture}, "models": [], "attempt": attempt}


@pytest.fixture
def worker() -> Iterator[NodeflowWorker]:
    made = NodeflowWorker("w9", WorkerConfig(threads=1))
    yield made
    made.close()  # no executor threads outlive the test


def test_a_picture_missing_on_the_worker_travels_with_the_job(worker: NodeflowWorker,
                                                             tmp_path: Path) -> None:
    data = PICTURE.read_bytes()
    # The driver's path does not exist here: the worker writes the bytes it was sent.
    gone = str(tmp_path / "elsewhere" / "pattern.png")
    answer = worker.run_job(job(gone, {"path": gone, "data": data}))
    assert answer["status"] == "ok", answer["error"]
    [(name, png)] = answer["files"]
    assert name == "renders/small_00001.png"
    out = tmp_path / "small.png"
    out.write_bytes(png)
    assert Image.open(out).size == (24, 16)
    assert [e["event"] for e in answer["events"]][:2] == ["run_started", "node_started"]
    # Where the driver's file is present with the same bytes, it is used as it is, so the
    # graph embedded in the output names the same file as a local run's would.
    answer = worker.run_job(job(str(PICTURE), {"path": str(PICTURE), "data": data}, "k"))
    embedded = json.loads(graph_from_png(_png(tmp_path, answer)))
    assert embedded["nodes"]["load"]["inputs"]["path"] == str(PICTURE)


def test_a_failing_job_reports_located_problems(worker: NodeflowWorker) -> None:
    bad = job(str(PICTURE), {"path": str(PICTURE), "data": PICTURE.read_bytes()})
    graph = json.loads(bad["graph"])
    graph["nodes"]["small"] = {"type": "image.Crop", "inputs": {"width": 500, "height": 8}}
    bad["graph"] = json.dumps(graph)
    answer = worker.run_job(bad)
    assert answer["status"] == "failed" and answer["files"] == []
    [problem] = answer["problems"]
    assert (problem["node"], problem["socket"]) == ("small", "width")
    assert "outside the 192×128 image" in problem["message"]


def _png(folder: Path, answer: dict) -> Path:
    [(_name, png)] = answer["files"]
    path = folder / "out.png"
    path.write_bytes(png)
    return path
