"""A real ``nodeflow serve`` in a subprocess on a free loopback port, and small graph builders."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

PLUGINS = Path(__file__).resolve().parent / "plugins"
REPO_GRAPHS = Path(__file__).resolve().parents[2] / "graphs"
FINAL = ("done", "failed", "cancelled")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class RunningServer:
    """A server process and how to reach it."""

    data: Path
    port: int
    proc: subprocess.Popen[str]
    token: str | None = None
    host: str = "127.0.0.1"
    log: Path = field(default_factory=Path)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    def client(self, **kw: Any) -> httpx.Client:
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=30.0, **kw)

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 60.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        return self.proc.wait(timeout)


def start_server(data: Path, *, token: str | None = None, host: str = "127.0.0.1",
                 extra: tuple[str, ...] = (), port: int | None = None) -> RunningServer:
    port = port or free_port()
    data.mkdir(parents=True, exist_ok=True)
    log = data.parent / f"{data.name}-server-{port}.log"
    cmd = [sys.executable, "-m", "nodeflow.server", "--host", host, "--port", str(port),
           "--data", str(data), "--devices", "cpu", "--plugins", str(PLUGINS), *extra]
    if token:
        cmd += ["--token", token]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
    env.pop("NODEFLOW_TOKEN", None)
    out = log.open("w")
    proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, text=True, env=env)
    server = RunningServer(data, port, proc, token, host, log)
    deadline = time.monotonic() + 90
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the server exited with {proc.returncode}:\n{server.output()}")
        try:
            # 401: up, and asking for the token it generated (the test reads it from the output).
            if httpx.get(f"{server.url}/api/health", headers=headers, timeout=2).status_code in (200, 401):
                return server
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    proc.kill()
    raise RuntimeError(f"the server did not start:\n{server.output()}")


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """One server shared by the tests that need no server of their own (as a team's server
    serves many clients one after another)."""
    running = start_server(tmp_path_factory.mktemp("server") / "data")
    yield running
    running.stop()


@pytest.fixture
def client(server: RunningServer) -> Iterator[httpx.Client]:
    with server.client() as c:
        yield c


def graph(nodes: dict[str, tuple[str, dict[str, Any]]], links: list[tuple[str, str]] = ()) -> dict[str, Any]:
    """A graph document: ``{"id": ("type", {inputs})}`` and ``[("a.out", "b.in")]``."""
    return {"format": "nodeflow.graph", "version": 1,
            "nodes": {k: {"type": t, "inputs": i} for k, (t, i) in nodes.items()},
            "links": [{"from": a, "to": b} for a, b in links]}


def add_graph(a: float, b: float) -> dict[str, Any]:
    return graph({"add": ("math.Add", {"a": a, "b": b})})


def wait_graph(value: float, seconds: float, steps: int = 4) -> dict[str, Any]:
    return graph({"wait": ("servertest.Wait", {"value": value, "seconds": seconds, "steps": steps})})


def submit(client: httpx.Client, doc: dict[str, Any], **extra: Any) -> dict[str, Any]:
    response = client.post("/api/jobs", json={"graph": doc, **extra})
    assert response.status_code in (200, 202), response.text
    return response.json()


def wait_job(client: httpx.Client, job_id: str, timeout: float = 60.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = client.get(f"/api/jobs/{job_id}").json()
        if job["state"] in FINAL:
            return job
        time.sleep(0.02)
    raise AssertionError(f"job {job_id} did not finish in {timeout}s: {job}")


def wait_state(client: httpx.Client, job_id: str, state: str, timeout: float = 30.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = client.get(f"/api/jobs/{job_id}").json()
        if job["state"] == state:
            return job
        time.sleep(0.01)
    raise AssertionError(f"job {job_id} never reached {state}: {job}")
