"""Load on `nodeflow serve` over loopback, and the server's overhead over an in-process run.

1. 20 concurrent clients submit 200 small jobs (load a 32×32 picture, invert it, save it):
   all 200 must complete exactly once. Prints jobs/s, submit latency p50/p99 and event
   delivery latency p50/p99 (from the moment the server logs an event to the moment a
   websocket client receives it).
2. The same, with the server killed (SIGKILL) and restarted once mid-run: clients retry
   their submits with the same idempotency key, the event client resumes from the last
   event number; still 200 of 200, each done exactly once.
3. graphs/demo.json run in this process (one long-lived executor) and through the server,
   each with new seeds after a warm-up run: the server's added time in percent.

Usage: python bench/server_load.py [--clients 20] [--jobs 200] [--demo-runs 3] [--skip-demo]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx
from PIL import Image
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

REPO = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    def __init__(self, data: Path, port: int) -> None:
        self.data, self.port = data, port
        self.url = f"http://127.0.0.1:{port}"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        env = {**os.environ, "HF_HUB_OFFLINE": "1"}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "nodeflow.server", "--port", str(self.port), "--data", str(self.data),
             "--devices", "cpu"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{self.url}/api/health", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                time.sleep(0.1)
        raise RuntimeError("the server did not start")

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(60)


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


def job_graph(i: int) -> dict[str, Any]:
    return {"format": "nodeflow.graph", "version": 1,
            "nodes": {"load": {"type": "image.Load", "inputs": {"path": "bench.png"}},
                      "invert": {"type": "image.Invert", "inputs": {}},
                      "save": {"type": "image.Save", "inputs": {"prefix": f"bench{i}"}}},
            "links": [{"from": "load.image", "to": "invert.image"},
                      {"from": "invert.image", "to": "save.image"}]}


class EventClient(threading.Thread):
    """Follows every event; reconnects with since= after the server goes away."""

    def __init__(self, server: Server) -> None:
        super().__init__(daemon=True)
        self.server = server
        self.finished: dict[str, int] = {}
        self.latency: list[float] = []
        self.last = httpx.get(f"{server.url}/api/health").json()["last_event"]
        self.stop = threading.Event()
        self.lock = threading.Lock()

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                ws_url = f"ws://127.0.0.1:{self.server.port}/api/events?since={self.last}"
                with connect(ws_url, open_timeout=5, max_size=None) as ws:
                    while not self.stop.is_set():
                        try:
                            event = json.loads(ws.recv(timeout=0.2))
                        except TimeoutError:
                            continue
                        received = time.time()
                        if event["seq"] is None:
                            continue
                        self.last = event["seq"]
                        with self.lock:
                            self.latency.append(received - event["time"])
                            if event["type"] == "finished":
                                self.finished[event["job"]] = self.finished.get(event["job"], 0) + 1
            except (OSError, ConnectionClosed, TimeoutError):
                time.sleep(0.2)

    def count(self) -> int:
        with self.lock:
            return len(self.finished)


def submit_all(server: Server, clients: int, jobs: int, run: str) -> tuple[list[float], dict[str, str]]:
    """Each client submits its share of the jobs, retrying (same idempotency key) while the
    server is away."""
    latencies: list[float] = []
    ids: dict[str, str] = {}
    lock = threading.Lock()

    def client(c: int) -> None:
        with httpx.Client(base_url=server.url, timeout=30) as http:
            for i in range(c, jobs, clients):
                key = f"{run}-{i}"
                while True:
                    started = time.perf_counter()
                    try:
                        response = http.post("/api/jobs", json={"graph": job_graph(i), "idempotency_key": key})
                    except httpx.HTTPError:
                        time.sleep(0.2)
                        continue
                    if response.status_code in (200, 202):
                        with lock:
                            latencies.append(time.perf_counter() - started)
                            ids[key] = response.json()["id"]
                        break
                    raise RuntimeError(response.text)

    threads = [threading.Thread(target=client, args=(c,)) for c in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return latencies, ids


def load_run(server: Server, clients: int, jobs: int, run: str, kill_at: int | None) -> dict[str, Any]:
    events = EventClient(server)
    events.start()
    started = time.perf_counter()
    result: dict[str, Any] = {}

    def killer() -> None:
        while events.count() < (kill_at or 0):
            time.sleep(0.01)
        server.kill()
        result["killed_after"] = events.count()
        server.start()

    kill_thread = threading.Thread(target=killer) if kill_at else None
    if kill_thread:
        kill_thread.start()
    latencies, ids = submit_all(server, clients, jobs, run)
    if kill_thread:
        kill_thread.join()
    deadline = time.monotonic() + 600
    while len(set(ids.values()) & set(events.finished)) < jobs and time.monotonic() < deadline:
        time.sleep(0.05)
    elapsed = time.perf_counter() - started
    events.stop.set()
    events.join()
    with httpx.Client(base_url=server.url, timeout=30) as http:
        states = [http.get(f"/api/jobs/{job_id}").json() for job_id in ids.values()]
        # Exactly once, from the server's own log.
        finished_once = sum(
            1 for job_id in ids.values()
            if [e["type"] for e in http.get(f"/api/jobs/{job_id}/events").json()["events"]].count("finished") == 1)
    done = sum(1 for s in states if s["state"] == "done" and len(s["files"]) == 1)
    result.update(jobs=jobs, accepted=len(set(ids.values())), done=done, finished_once=finished_once,
                  jobs_per_s=jobs / elapsed, submit_p50=percentile(latencies, 50) * 1000,
                  submit_p99=percentile(latencies, 99) * 1000,
                  event_p50=percentile(events.latency, 50) * 1000,
                  event_p99=percentile(events.latency, 99) * 1000, seconds=elapsed)
    return result


def print_load(title: str, r: dict[str, Any]) -> None:
    extra = f" (killed after {r['killed_after']} finished)" if "killed_after" in r else ""
    print(f"{title}{extra}: {r['done']}/{r['jobs']} done, {r['finished_once']} finished exactly once, "
          f"{r['accepted']} accepted; {r['jobs_per_s']:.1f} jobs/s; submit p50 {r['submit_p50']:.1f} ms, "
          f"p99 {r['submit_p99']:.1f} ms; event p50 {r['event_p50']:.1f} ms, p99 {r['event_p99']:.1f} ms",
          flush=True)


def demo_overhead(server: Server, runs: int) -> None:
    """Runs alternate between this process and the server (the machine's load drifts), each
    with a new seed so the sampler and what follows run again while the loaded models stay."""
    from nodeflow.executor import Executor
    from nodeflow.graph import Graph
    from nodeflow.registry import load_registry
    from nodeflow.settings import Settings

    demo = REPO / "graphs" / "demo.json"
    document = json.loads(demo.read_text())
    registry = load_registry(use_env=False)
    local: list[float] = []
    remote: list[float] = []
    with tempfile.TemporaryDirectory() as out, httpx.Client(base_url=server.url, timeout=60) as http:
        executor = Executor(registry, Settings(out_dir=Path(out)))
        for k in range(runs + 1):  # the first round loads the models: not counted
            graph = Graph.load(demo)
            graph.set_input("sampler", "seed", 1000 + k)
            started = time.perf_counter()
            result = executor.run(graph)
            assert result.ok, result.failed
            if k:
                local.append(time.perf_counter() - started)

            last = http.get("/api/health").json()["last_event"]
            started = time.perf_counter()
            job_id = http.post("/api/jobs", json={"graph": document,
                                                  "set": {"sampler.seed": 2000 + k}}).json()["id"]
            with connect(f"ws://127.0.0.1:{server.port}/api/events?since={last}&job={job_id}") as ws:
                while True:
                    event = json.loads(ws.recv(timeout=600))
                    if event["type"] in ("finished", "failed", "cancelled"):
                        break
            assert event["type"] == "finished", event
            if k:
                remote.append(time.perf_counter() - started)
        executor.close()
    a, b = statistics.median(local), statistics.median(remote)
    print(f"demo.json, median of {runs} warm runs (alternating): in-process {a:.2f} s "
          f"{[round(x, 2) for x in local]}, through the server {b:.2f} s {[round(x, 2) for x in remote]}: "
          f"{(b - a) / a * 100:+.1f}% (target <= 5%)", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--jobs", type=int, default=200)
    parser.add_argument("--demo-runs", type=int, default=3)
    parser.add_argument("--skip-demo", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        server = Server(Path(tmp) / "data", free_port())
        server.start()
        try:
            picture = io.BytesIO()
            Image.new("RGB", (32, 32), (200, 30, 90)).save(picture, format="PNG")
            httpx.post(f"{server.url}/api/uploads", files={"file": ("bench.png", picture.getvalue())})
            print_load(f"{args.clients} clients, {args.jobs} jobs",
                       load_run(server, args.clients, args.jobs, "plain", None))
            print_load(f"{args.clients} clients, {args.jobs} jobs, kill -9 and restart mid-run",
                       load_run(server, args.clients, args.jobs, "killed", args.jobs // 2))
            if not args.skip_demo:
                demo_overhead(server, args.demo_runs)
        finally:
            server.stop()


if __name__ == "__main__":
    main()
