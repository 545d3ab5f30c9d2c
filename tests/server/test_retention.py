"""Retention: finished jobs past ``--keep-outputs`` are forgotten (history row, events and files
together) when the server starts and in the background; queued and running jobs never are."""

from __future__ import annotations

import os
import sqlite3
import time
from pathlib import Path

import pytest

from nodeflow.errors import UsageError
from nodeflow.server.retention import RetentionPolicy, apply_retention, parse_retention
from nodeflow.server.store import DONE, JobStore

from .conftest import graph, start_server, submit, wait_graph, wait_job, wait_state

DAY = 86400.0


def picture_graph(level: float) -> dict:
    return graph({"swatch": ("servertest.Swatch", {"level": level, "width": 8, "height": 8}),
                  "save": ("image.Save", {"prefix": "keep"})}, [("swatch.image", "save.image")])


def age(data: Path, job_ids: list[str], seconds: float) -> None:
    """Move jobs into the past, as if they had been submitted and finished ``seconds`` ago."""
    db = sqlite3.connect(str(data / "jobs.sqlite3"), timeout=30)
    with db:
        for job_id in job_ids:
            db.execute("UPDATE jobs SET submitted = submitted - ?, started = started - ?, "
                       "finished = finished - ? WHERE id = ?", (seconds, seconds, seconds, job_id))
    db.close()


def events_of(data: Path, job_id: str) -> int:
    db = sqlite3.connect(str(data / "jobs.sqlite3"), timeout=30)
    try:
        return int(db.execute("SELECT COUNT(*) FROM events WHERE job_id = ?", (job_id,)).fetchone()[0])
    finally:
        db.close()


def test_at_start_old_finished_jobs_go_and_queued_ones_stay(tmp_path: Path) -> None:
    data = tmp_path / "data"
    server = start_server(data, extra=("--drain-timeout", "0"))
    try:
        with server.client() as client:
            old = [wait_job(client, submit(client, picture_graph(i / 4))["id"]) for i in range(3)]
            new = wait_job(client, submit(client, picture_graph(1.0))["id"])
            assert all(j["state"] == "done" and j["files"] == ["keep_00001.png"] for j in old + [new])
            running = submit(client, wait_graph(1, 30.0, steps=300), outputs=["wait"])["id"]
            wait_state(client, running, "running")
            queued = submit(client, picture_graph(0.5))["id"]
    finally:
        assert server.stop() == 0  # drained: the running job goes back to the queue
    old_ids = [j["id"] for j in old]
    age(data, [*old_ids, running, queued], 3 * DAY)  # the unfinished ones are old too
    assert all((data / "output" / i / "keep_00001.png").is_file() for i in old_ids)

    server = start_server(data, extra=("--keep-outputs", "2d", "--drain-timeout", "0"))
    try:
        assert "finished jobs are kept for 2 days" in server.output()
        with server.client() as client:
            for job_id in old_ids:
                assert client.get(f"/api/jobs/{job_id}").status_code == 404
                assert not (data / "output" / job_id).exists()
                assert events_of(data, job_id) == 0
            kept = client.get(f"/api/jobs/{new['id']}").json()
            assert kept["state"] == "done"
            assert client.get(f"/api/jobs/{new['id']}/files/keep_00001.png").status_code == 200
            # The old unfinished jobs were kept, and run now.
            assert client.get(f"/api/jobs/{running}").json()["state"] in ("queued", "running")
            client.post(f"/api/jobs/{running}/cancel")
            assert wait_job(client, queued)["state"] == "done"
    finally:
        server.stop()


def test_the_server_forgets_in_the_background(tmp_path: Path) -> None:
    data = tmp_path / "data"
    server = start_server(data, extra=("--keep-outputs", "1h", "--keep-check", "0.2"))
    try:
        with server.client() as client:
            jobs = [wait_job(client, submit(client, picture_graph(i / 2))["id"]) for i in range(3)]
            age(data, [jobs[0]["id"], jobs[1]["id"]], 2 * 3600)
            deadline = time.monotonic() + 30
            while client.get(f"/api/jobs/{jobs[1]['id']}").status_code != 404:
                assert time.monotonic() < deadline, "the old jobs were never forgotten"
                time.sleep(0.1)
            assert client.get(f"/api/jobs/{jobs[0]['id']}").status_code == 404
            assert not (data / "output" / jobs[0]["id"]).exists()
            assert not (data / "output" / jobs[1]["id"]).exists()
            assert client.get(f"/api/jobs/{jobs[2]['id']}/files/keep_00001.png").status_code == 200
            history = client.get("/history").json()
            assert list(history) == [jobs[2]["id"]]
    finally:
        server.stop()


def finished_job(store: JobStore, out: Path, size: int) -> str:
    job, _ = store.submit(kind="graph", graph="{}")
    store.claim("w")
    store.finish(job.id, DONE, {}, None, {})
    (out / job.id).mkdir(parents=True)
    (out / job.id / "a.png").write_bytes(b"x" * size)
    return job.id


def test_count_and_bytes_bounds_keep_the_newest(tmp_path: Path) -> None:
    store = JobStore(tmp_path / "jobs.sqlite3")
    out = tmp_path / "output"
    ids = [finished_job(store, out, 1000) for _ in range(6)]
    waiting, _ = store.submit(kind="graph", graph="{}")
    report = apply_retention(store, out, RetentionPolicy(max_jobs=4))
    assert (report.jobs, report.folders, report.bytes) == (2, 2, 2000)
    assert [store.get(i) is not None for i in ids] == [False, False, True, True, True, True]
    report = apply_retention(store, out, parse_retention("2500B"))
    assert report.jobs == 2
    assert sorted(p.name for p in out.iterdir()) == sorted(ids[4:])
    assert store.get(waiting.id) is not None and store.get(waiting.id).state == "queued"
    assert apply_retention(store, out, parse_retention("all")).jobs == 0
    store.close()


def test_forgotten_jobs_leave_no_events_and_their_folders_age_out(tmp_path: Path) -> None:
    """ComfyUI's POST /history forgets a job but leaves its pictures for /view; they go once
    older than the age bound (at once under a policy without one), and nothing else does."""
    store = JobStore(tmp_path / "jobs.sqlite3")
    out = tmp_path / "output"
    ids = [finished_job(store, out, 1000) for _ in range(3)]
    assert events_of(tmp_path, ids[0]) > 0
    assert store.delete(ids[0]) and store.delete(ids[1])
    assert events_of(tmp_path, ids[0]) == 0 and events_of(tmp_path, ids[2]) > 0
    three_days_ago = time.time() - 3 * DAY
    os.utime(out / ids[0], (three_days_ago, three_days_ago))
    report = apply_retention(store, out, parse_retention("2d"))
    assert (report.jobs, report.folders, report.bytes) == (0, 1, 1000)
    assert sorted(p.name for p in out.iterdir()) == sorted(ids[1:])
    assert apply_retention(store, out, parse_retention("all")).folders == 0
    report = apply_retention(store, out, parse_retention("5000"))
    assert (report.jobs, report.folders) == (0, 1)
    assert [p.name for p in out.iterdir()] == [ids[2]] and store.get(ids[2]) is not None
    store.close()


@pytest.mark.parametrize(("text", "policy"), [
    ("30d", RetentionPolicy(max_age=30 * DAY)),
    ("12h,5000", RetentionPolicy(max_age=12 * 3600, max_jobs=5000)),
    ("2w, 20GB", RetentionPolicy(max_age=14 * DAY, max_bytes=20 * 1000**3)),
    ("all", RetentionPolicy()),
])
def test_policies_read_as_written(text: str, policy: RetentionPolicy) -> None:
    assert parse_retention(text) == policy


@pytest.mark.parametrize(("text", "said"), [
    ("90d,10000", "finished jobs are kept for 90 days, the newest 10,000"),
    ("5000", "finished jobs are kept: the newest 5,000"),
    ("5000,20GB", "finished jobs are kept: the newest 5,000, up to 20.0 GB of files"),
    ("all", "finished jobs are kept until deleted"),
])
def test_the_policy_printed_at_start_reads_as_a_sentence(text: str, said: str) -> None:
    assert parse_retention(text).describe() == said


def test_a_policy_that_is_not_one_says_how_to_write_it() -> None:
    with pytest.raises(UsageError, match=r"'3x' is not an age \(30d, 12h, 2w\)"):
        parse_retention("30d,3x")
