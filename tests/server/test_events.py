"""The /api/events websocket: live events, previews, and resuming after a reconnect."""

from __future__ import annotations

import base64
import io
import json
from typing import Any

import httpx
from PIL import Image
from websockets.sync.client import connect

from .conftest import RunningServer, graph, submit, wait_graph, wait_job


def read_until(ws: Any, job_id: str, last: str, timeout: float = 30.0) -> list[dict[str, Any]]:
    events = []
    while True:
        event = json.loads(ws.recv(timeout=timeout))
        if event["job"] == job_id:
            events.append(event)
            if event["type"] == last:
                return events


def test_a_job_reports_every_step_in_order(server: RunningServer, client: httpx.Client) -> None:
    with connect(f"{server.ws_url}/api/events") as ws:
        job_id = submit(client, wait_graph(3, 0.05, steps=3), outputs=["wait"])["id"]
        events = read_until(ws, job_id, "finished")
    types = [e["type"] for e in events]
    assert types == ["queued", "started", "run_started", "node_started", "node_progress",
                     "node_progress", "node_progress", "node_finished", "finished"]
    seqs = [e["seq"] for e in events]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
    assert [e["data"]["done"] for e in events if e["type"] == "node_progress"] == [1, 2, 3]
    assert events[3]["data"] == {"node": "wait", "type": "servertest.Wait"}


def test_previews_arrive_as_small_jpegs(server: RunningServer, client: httpx.Client) -> None:
    doc = graph({"swatch": ("servertest.Swatch", {"level": 1.0, "width": 600, "height": 300})})
    with connect(f"{server.ws_url}/api/events") as ws:
        job_id = submit(client, doc, outputs=["swatch"])["id"]
        events = read_until(ws, job_id, "finished")
    previews = [e for e in events if e["type"] == "preview"]
    assert len(previews) == 1 and previews[0]["seq"] is None
    assert previews[0]["data"]["node"] == "swatch" and previews[0]["data"]["mime"] == "image/jpeg"
    picture = Image.open(io.BytesIO(base64.b64decode(previews[0]["data"]["base64"])))
    assert picture.format == "JPEG" and max(picture.size) == 256
    assert min(picture.getpixel((10, 10))) > 240


def test_reconnecting_with_since_misses_nothing(server: RunningServer, client: httpx.Client) -> None:
    with connect(f"{server.ws_url}/api/events") as ws:
        job_id = submit(client, wait_graph(1, 0.6, steps=6), outputs=["wait"])["id"]
        first = read_until(ws, job_id, "node_started")
    # Disconnected while the job runs; it finishes meanwhile.
    wait_job(client, job_id)
    last_seen = first[-1]["seq"]
    with connect(f"{server.ws_url}/api/events?since={last_seen}&job={job_id}") as ws:
        rest = read_until(ws, job_id, "finished")
    together = first + rest
    assert [e["type"] for e in together].count("node_progress") == 6
    assert [e["seq"] for e in together] == sorted({e["seq"] for e in together})
    # The same events are in the log for clients that poll.
    logged = client.get(f"/api/jobs/{job_id}/events").json()["events"]
    assert [e["seq"] for e in logged] == [e["seq"] for e in together]


def test_since_zero_replays_the_whole_log(server: RunningServer, client: httpx.Client) -> None:
    job_id = submit(client, wait_graph(2, 0.0, steps=1), outputs=["wait"])["id"]
    wait_job(client, job_id)
    with connect(f"{server.ws_url}/api/events?since=0") as ws:
        events = read_until(ws, job_id, "finished")
    assert [e["type"] for e in events][:2] == ["queued", "started"]
