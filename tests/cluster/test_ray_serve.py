"""``nodeflow serve --ray ADDRESS``: a real server process whose jobs run on the test's Ray."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from PIL import Image

from tests.server.conftest import graph, start_server, submit, wait_job


@pytest.mark.slow  # a server process and a Ray actor beside the module's cluster: ~30 s
def test_server_jobs_run_on_ray_workers_with_files_and_located_errors(
        ray_cluster, tmp_path: Path) -> None:
    address = ray_cluster.get_runtime_context().gcs_address
    server = start_server(tmp_path / "data", extra=("--ray", address, "--ray-workers", "1"))
    try:
        with server.client() as client:
            assert client.get("/api/health").json()["workers"] == ["ray:w0"]
            doc = graph({"swatch": ("servertest.Swatch", {"level": 1.0, "width": 5, "height": 4}),
                         "save": ("image.Save", {"prefix": "renders/grey"})},
                        [("swatch.image", "save.image")])
            job = wait_job(client, submit(client, doc)["id"], timeout=120)
            assert job["state"] == "done", job
            assert job["files"] == ["renders/grey_00001.png"]
            picture = Image.open(io.BytesIO(
                client.get(f"/api/jobs/{job['id']}/files/renders/grey_00001.png").content))
            assert picture.size == (5, 4) and picture.getpixel((0, 0))[:3] == (255, 255, 255)

            # A job failing on its own fails once, with its location.
            bad = graph({"swatch": ("servertest.Swatch", {"level": 0.5, "width": 5, "height": 4}),
                         "crop": ("image.Crop", {"width": 64, "height": 4}),
                         "save": ("image.Save", {"prefix": "crop"})},
                        [("swatch.image", "crop.image"), ("crop.image", "save.image")])
            failed = wait_job(client, submit(client, bad)["id"], timeout=120)
            assert failed["state"] == "failed", failed
            problem = failed["error"]["problems"][0]
            assert (problem["node"], problem["socket"]) == ("crop", "width")
            assert "outside the 5×4 image" in problem["message"]
    finally:
        assert server.stop() == 0, server.output()



@pytest.mark.slow  # a server process and two Ray actors: ~40 s
def test_server_jobs_on_ray_workers_keep_to_the_models_they_hold(ray_cluster, tmp_path: Path) -> None:
    from collections import Counter

    from tests.server.test_submit_checks import weights_graph, write_weights

    models = tmp_path / "models"
    write_weights(models / "checkpoints" / "a.safetensors", 1.0)
    write_weights(models / "checkpoints" / "b.safetensors", 2.0)
    address = ray_cluster.get_runtime_context().gcs_address
    # Room for one 64 KB model per actor: a worker given A, B, A reads A twice.
    server = start_server(tmp_path / "data", extra=(
        "--ray", address, "--ray-workers", "2", "--models", str(models), "--ram-budget", "96KB"))
    try:
        with server.client() as client:
            ids = []
            for i in range(3):
                ids.append(("a", submit(client, weights_graph("a.safetensors", i, 0.05))["id"]))
                ids.append(("b", submit(client, weights_graph("b.safetensors", i, 0.5))["id"]))
            jobs = [(model, wait_job(client, job_id, timeout=180)) for model, job_id in ids]
    finally:
        assert server.stop() == 0, server.output()
    assert all(job["state"] == "done" for _, job in jobs), jobs
    loads: Counter[tuple[str, str]] = Counter()
    for model, job in jobs:
        loads[(job["worker"], model)] += job["model_loads"]
    assert all(n <= 1 for n in loads.values()), loads
