"""Model affinity on the server: a free worker takes the queued jobs whose models it already
holds, so models are loaded once per worker, not once per job."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from .conftest import start_server, submit, wait_graph, wait_job, wait_state
from .test_submit_checks import weights_graph, write_weights


def test_two_devices_alternating_models_load_each_model_once_per_worker(tmp_path: Path) -> None:
    models = tmp_path / "models"
    write_weights(models / "checkpoints" / "a.safetensors", 1.0)
    write_weights(models / "checkpoints" / "b.safetensors", 2.0)
    # Each worker may keep one 64 KB model in RAM: running A then B then A on one worker
    # would read A from disk twice.
    server = start_server(tmp_path / "data", extra=(
        "--models", str(models), "--devices", "sim:0,sim:1", "--vram-budget", "1MB",
        "--ram-budget", "96KB"))
    try:
        with server.client() as client:
            assert client.get("/api/health").json()["workers"] == ["local:sim:0", "local:sim:1"]
            # Both workers busy while the jobs queue up, so each free worker chooses among them.
            blockers = [submit(client, wait_graph(i, 1.5, steps=15), outputs=["wait"])["id"]
                        for i in range(2)]
            for job_id in blockers:
                wait_state(client, job_id, "running")
            # A and B alternate; A's jobs are quick and B's slow, so a worker that took the
            # oldest job would often be given the other model.
            ids = []
            for i in range(4):
                ids.append(("a", submit(client, weights_graph("a.safetensors", i, 0.05))["id"]))
                ids.append(("b", submit(client, weights_graph("b.safetensors", i, 0.6))["id"]))
            jobs = [(model, wait_job(client, job_id)) for model, job_id in ids]
    finally:
        server.stop()
    assert all(job["state"] == "done" for _, job in jobs), jobs
    loads: Counter[tuple[str, str]] = Counter()
    for model, job in jobs:
        loads[(job["worker"], model)] += job["model_loads"]
    assert all(n <= 1 for n in loads.values()), loads  # once per worker, not once per job
    assert sum(loads.values()) <= 3, loads  # each worker keeps to its model (one may help out)
    assert {job["worker"] for _, job in jobs} == {"local:sim:0", "local:sim:1"}


def test_a_job_passed_over_again_and_again_is_not_left_waiting(tmp_path: Path) -> None:
    models = tmp_path / "models"
    write_weights(models / "checkpoints" / "a.safetensors", 1.0)
    write_weights(models / "checkpoints" / "b.safetensors", 2.0)
    server = start_server(tmp_path / "data", extra=(
        "--models", str(models), "--devices", "sim:0,sim:1", "--vram-budget", "1MB"))
    try:
        with server.client() as client:
            long_a = submit(client, weights_graph("a.safetensors", 0, 8.0))["id"]
            wait_state(client, long_a, "running")
            blocker = submit(client, wait_graph(1, 1.0, steps=10), outputs=["wait"])["id"]
            wait_state(client, blocker, "running")
            # The second A job waits for the worker holding A; the other worker prefers the
            # B jobs, but not for ever: after passing it over twice per worker, it takes it.
            second_a = submit(client, weights_graph("a.safetensors", 1, 0.0))["id"]
            bs = [submit(client, weights_graph("b.safetensors", i, 0.05))["id"] for i in range(8)]
            jobs = {job_id: wait_job(client, job_id) for job_id in [long_a, second_a, *bs]}
    finally:
        server.stop()
    a1, a2 = jobs[long_a], jobs[second_a]
    assert a2["worker"] != a1["worker"]
    started = sorted(jobs[b]["timings"]["started"] for b in bs)
    # Taken after the first four B jobs, long before the last B and the long A job end.
    assert started[3] < a2["timings"]["started"] < started[4]
    assert a2["timings"]["finished"] < a1["timings"]["finished"]
