"""Nothing lost: kill -9 and restart, Ctrl-C/SIGTERM drains, and job 300 as right as job 1."""

from __future__ import annotations

import io
import signal
import sqlite3
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image

from .conftest import RunningServer, add_graph, graph, start_server, submit, wait_job, wait_state


def level_graph(i: int, seconds: float) -> dict[str, Any]:
    """Waits, then saves a picture whose grey level says which job made it."""
    return graph({"wait": ("servertest.Wait", {"value": i / 40, "seconds": seconds, "steps": 3}),
                  "swatch": ("servertest.Swatch", {"width": 4, "height": 4}),
                  "save": ("image.Save", {"prefix": f"job{i}"})},
                 [("wait.value", "swatch.level"), ("swatch.image", "save.image")])


def finished_events(data: Path) -> dict[str, int]:
    with sqlite3.connect(data / "jobs.sqlite3") as db:
        rows = db.execute("SELECT job_id, COUNT(*) FROM events WHERE type = 'finished' GROUP BY job_id")
        return dict(rows.fetchall())


def check_outputs(client: httpx.Client, data: Path, jobs: dict[int, str]) -> None:
    """Every job finished once, with exactly its one picture, whole, of the right level."""
    done = {job_id: wait_job(client, job_id, timeout=120) for job_id in jobs.values()}
    once = finished_events(data)
    for i, job_id in jobs.items():
        job = done[job_id]
        assert job["state"] == "done", job
        assert job["files"] == [f"job{i}_00001.png"]
        assert once.get(job_id) == 1
        folder = data / "output" / job_id
        assert sorted(p.name for p in folder.iterdir()) == [f"job{i}_00001.png"]
        picture = Image.open(io.BytesIO(client.get(f"/api/jobs/{job_id}/files/job{i}_00001.png").content))
        assert picture.getpixel((0, 0))[0] == round(i / 40 * 255)


def test_kill_9_at_any_moment_then_restart_loses_nothing(tmp_path: Path) -> None:
    data = tmp_path / "data"
    server = start_server(data)
    jobs: dict[int, str] = {}
    try:
        with server.client() as client:
            for i in range(8):
                # Job 2 is long enough to be surely running when the server is killed.
                jobs[i] = submit(client, level_graph(i, 1.5 if i == 2 else 0.2))["id"]
            wait_job(client, jobs[1])
            wait_state(client, jobs[2], "running")
            time.sleep(0.1)  # inside job 2's wait
        server.stop(signal.SIGKILL)

        # Restart; kill again at once, while it is taking up the re-queued job.
        server = start_server(data)
        with server.client() as client:
            for i in range(8, 12):
                jobs[i] = submit(client, level_graph(i, 0.05))["id"]
        server.stop(signal.SIGKILL)

        server = start_server(data)
        with pytest.raises(RuntimeError, match="another nodeflow server is using"):
            start_server(data)  # one queue, one server: a second would run its jobs twice
        with server.client() as client:
            check_outputs(client, data, jobs)
            events = client.get(f"/api/jobs/{jobs[2]}/events").json()["events"]
            types = [e["type"] for e in events]
            assert "requeued" in types
            assert types.count("started") >= 2 and types.count("finished") == 1
            assert client.get(f"/api/jobs/{jobs[2]}").json()["attempts"] >= 2
            history = client.get("/api/jobs", params={"state": "history", "limit": 500}).json()["jobs"]
            assert sorted(j["id"] for j in history) == sorted(jobs.values())
        assert not list((data / "output").rglob("*.tmp"))
    finally:
        server.stop(signal.SIGKILL)


def test_sigterm_and_ctrl_c_drain_and_keep_the_queue(tmp_path: Path) -> None:
    data = tmp_path / "data"
    server = start_server(data, extra=("--drain-timeout", "60"))
    with server.client() as client:
        short = submit(client, level_graph(1, 0.6))["id"]
        long = submit(client, level_graph(2, 2.0))["id"]
        wait_state(client, short, "running")
    assert server.stop(signal.SIGTERM) == 0  # the running job finishes; the queue stays
    assert "stopped" in server.output()

    server = start_server(data, extra=("--drain-timeout", "0.2"))
    with server.client() as client:
        job = client.get(f"/api/jobs/{short}").json()
        assert job["state"] == "done" and job["attempts"] == 1
        wait_state(client, long, "running")
    started = time.monotonic()
    assert server.stop(signal.SIGINT) == 0  # outlasts the drain: stopped and put back
    assert time.monotonic() - started < 10

    server = start_server(data)
    try:
        with server.client() as client:
            check_outputs(client, data, {1: short, 2: long})
            assert client.get(f"/api/jobs/{long}").json()["attempts"] == 2
            types = [e["type"] for e in client.get(f"/api/jobs/{long}/events").json()["events"]]
            assert types.count("requeued") == 1 and types.count("finished") == 1
    finally:
        server.stop()


@pytest.mark.parametrize("count", [300])
def test_job_300_is_as_right_as_job_1(server: RunningServer, client: httpx.Client, count: int) -> None:
    ids = {}
    for i in range(count):
        # Every tenth job repeats an earlier one: served from the cache, still right.
        a = i if i % 10 else i // 10
        ids[i] = (a, submit(client, add_graph(a, 0.25), outputs=["add"])["id"])
    for i, (a, job_id) in ids.items():
        job = wait_job(client, job_id)
        assert job["state"] == "done" and job["values"] == {"add": {"sum": a + 0.25}}, (i, job)
    picture = graph({"swatch": ("servertest.Swatch", {"level": 0.5, "width": 3, "height": 3}),
                     "save": ("image.Save", {"prefix": "last"})}, [("swatch.image", "save.image")])
    last = wait_job(client, submit(client, picture)["id"])
    assert last["files"] == ["last_00001.png"]
