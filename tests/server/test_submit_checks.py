"""Jobs are checked when they are submitted, not when they start: a graph that fails validation
or whose memory plan cannot fit the server's devices is refused with 400 and located problems,
on the native API and on ComfyUI's ``/prompt``; a queued job is checked again when it starts."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from .conftest import RunningServer, graph, start_server, submit, wait_graph, wait_job, wait_state

WEIGHTS = 16 * 1024
"""Numbers in a test checkpoint: 64 KB of float32."""


def write_weights(path: Path, fill: float, numbers: int = WEIGHTS) -> Path:
    import torch
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({"w": torch.full((numbers,), fill)}, str(path))
    return path


def weights_graph(name: str, value: float = 0.0, seconds: float = 0.0) -> dict:
    return graph({"w": ("servertest.Weights", {"path": name, "value": value, "seconds": seconds})})


@pytest.fixture(scope="module")
def small_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """A server whose one (simulated) device may hold 48 KB of models."""
    root = tmp_path_factory.mktemp("submit-checks")
    models = root / "models"
    write_weights(models / "checkpoints" / "small.safetensors", 1.0, 1024)
    write_weights(models / "checkpoints" / "big.safetensors", 1.0)
    running = start_server(root / "data", extra=("--models", str(models), "--devices", "sim:0",
                                                 "--vram-budget", "48KB"))
    running.models = models  # type: ignore[attr-defined]
    yield running
    running.stop()


def test_a_job_too_big_for_every_device_is_refused_when_submitted(small_server: RunningServer) -> None:
    with small_server.client() as client:
        before = client.get("/api/health").json()["last_event"]
        response = client.post("/api/jobs", json={"graph": weights_graph("big.safetensors"),
                                                  "outputs": ["w"]})
        assert response.status_code == 400, response.text
        error = response.json()["error"]
        assert error["type"] == "model_error"
        [problem] = error["problems"]
        assert (problem["node"], problem["node_type"]) == ("w", "servertest.Weights")
        assert "more than the budget of sim:0, 48.0 KB" in problem["message"]
        assert "--vram-budget" in problem["message"]  # what to try
        # Nothing was queued: no job, no event.
        assert client.get("/api/health").json()["last_event"] == before
        assert client.get("/api/jobs", params={"state": "queue"}).json()["jobs"] == []
        # One that fits is taken and runs.
        ok = wait_job(client, submit(client, weights_graph("small.safetensors"), outputs=["w"])["id"])
        assert ok["state"] == "done" and ok["values"] == {"w": {"value": 1024.0}}


def test_comfyui_clients_get_the_refusal_in_comfyuis_shape(small_server: RunningServer) -> None:
    with small_server.client() as client:
        response = client.post("/prompt", json={"prompt": weights_graph("big.safetensors"),
                                                "client_id": "c1"})
        assert response.status_code == 400, response.text
        body = response.json()
        assert body["error"]["type"] == "model_error", body
        assert "more than the budget of sim:0" in body["error"]["message"]
        [error] = body["node_errors"]["w"]["errors"]
        assert body["node_errors"]["w"]["class_type"] == "servertest.Weights"
        assert "more than the budget of sim:0" in error["message"]
        assert client.get("/queue").json()["queue_pending"] == []


def test_a_missing_model_is_refused_with_the_located_problem_nodeflow_validate_gives(
        small_server: RunningServer, tmp_path: Path) -> None:
    doc = weights_graph("absent.safetensors")
    with small_server.client() as client:
        native = client.post("/api/jobs", json={"graph": doc, "outputs": ["w"]})
        comfy = client.post("/prompt", json={"prompt": doc})
    assert native.status_code == 400 and comfy.status_code == 400
    [problem] = native.json()["error"]["problems"]
    assert (problem["code"], problem["node"], problem["socket"]) == ("missing_file", "w", "path")
    [comfy_error] = comfy.json()["node_errors"]["w"]["errors"]
    assert comfy_error["type"] == "missing_file" and comfy_error["extra_info"]["input_name"] == "path"
    # The same problem, in the same words, as `nodeflow validate` with the same models folder.
    file = tmp_path / "graph.json"
    file.write_text(json.dumps(doc))
    env = {k: v for k, v in os.environ.items() if k != "NODEFLOW_MODELS"}
    out = subprocess.run([sys.executable, "-m", "nodeflow", "validate", str(file), "--json",
                          "--plugins", str(Path(__file__).parent / "plugins"),
                          "--models", str(small_server.models)],  # type: ignore[attr-defined]
                         capture_output=True, text=True, env={**env, "HF_HUB_OFFLINE": "1"})
    [expected] = json.loads(out.stdout)["problems"]
    assert expected["code"] == problem["code"] and expected["socket"] == problem["socket"]
    assert expected["message"] == problem["message"]


def test_a_queued_job_is_checked_again_when_it_starts(small_server: RunningServer) -> None:
    later = write_weights(small_server.models / "checkpoints" / "later.safetensors", 2.0, 1024)  # type: ignore[attr-defined]
    with small_server.client() as client:
        blocker = submit(client, wait_graph(1, 3.0, steps=30), outputs=["wait"])["id"]
        wait_state(client, blocker, "running")
        queued = submit(client, weights_graph("later.safetensors"), outputs=["w"])["id"]
        later.unlink()  # the model goes while the job waits
        job = wait_job(client, queued)
    assert job["state"] == "failed"
    [problem] = job["error"]["problems"]
    assert (problem["code"], problem["node"], problem["socket"]) == ("missing_file", "w", "path")
