"""Safe by default: tokens off loopback, origins, CORS, size limits, and bad input of every kind
answered with located JSON errors, never a traceback."""

from __future__ import annotations

import io
import json
import os
import re
from collections.abc import Iterator

import httpx
import pytest
from PIL import Image
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from .conftest import RunningServer, add_graph, graph, start_server, submit, wait_job
from .test_api import png_bytes

APP = "http://app.example"


@pytest.fixture(scope="module")
def open_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """Bound to every address, so it made a token; small limits; CORS for one origin."""
    running = start_server(tmp_path_factory.mktemp("open") / "data", host="0.0.0.0",
                           extra=("--cors", APP, "--max-request-mb", "0.05", "--max-upload-mb", "0.05",
                                  "--max-input-mb", "0.1"))
    match = re.search(r"token: (\S+)", running.output())
    assert match, running.output()
    running.token = match.group(1)
    yield running
    running.stop()


def test_any_other_address_needs_the_printed_token(open_server: RunningServer) -> None:
    url = open_server.url
    refused = httpx.get(f"{url}/api/jobs")
    assert refused.status_code == 401
    assert "token" in refused.json()["error"]["message"]
    assert httpx.get(f"{url}/api/jobs", headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert httpx.post(f"{url}/prompt", json={}).status_code == 401
    assert httpx.get(f"{url}/docs").status_code == 401
    with open_server.client() as client:
        assert client.get("/api/jobs").status_code == 200
        job = wait_job(client, submit(client, add_graph(1, 1), outputs=["add"])["id"])
        assert job["state"] == "done"
    assert httpx.get(f"{url}/api/health", params={"token": open_server.token}).status_code == 200
    # A browser that opened /docs?token=T keeps the token in a cookie for the page's requests.
    with httpx.Client(base_url=url) as browser:
        assert browser.get("/docs", params={"token": open_server.token}).status_code == 200
        assert browser.get("/openapi.json").status_code == 200


def test_websockets_need_the_token_too(open_server: RunningServer) -> None:
    for path in ("/api/events", "/ws?clientId=abc"):
        with pytest.raises(InvalidStatus):
            with connect(f"{open_server.ws_url}{path}"):
                pass
    with connect(f"{open_server.ws_url}/ws?clientId=abc&token={open_server.token}") as ws:
        assert json.loads(ws.recv(timeout=10))["type"] == "status"
    with connect(f"{open_server.ws_url}/api/events",
                 additional_headers={"Authorization": f"Bearer {open_server.token}"}) as ws:
        ws.ping()


def test_only_the_cors_origin_may_call_from_a_web_page(open_server: RunningServer) -> None:
    with open_server.client() as client:
        allowed = client.get("/api/health", headers={"Origin": APP})
        assert allowed.status_code == 200
        assert allowed.headers["access-control-allow-origin"] == APP
        other = client.get("/api/health", headers={"Origin": "http://evil.example"})
        assert other.status_code == 403
    pre = httpx.options(f"{open_server.url}/api/jobs", headers={
        "Origin": APP, "Access-Control-Request-Method": "POST"})
    assert pre.status_code == 200 and pre.headers["access-control-allow-origin"] == APP


def test_a_page_on_another_site_cannot_use_a_loopback_server(server: RunningServer) -> None:
    forged = httpx.post(f"{server.url}/prompt", json={"prompt": add_graph(1, 1)},
                        headers={"Origin": "http://evil.example"})
    assert forged.status_code == 403
    assert "--cors" in forged.json()["error"]["message"]
    same = httpx.get(f"{server.url}/api/health", headers={"Origin": server.url})
    assert same.status_code == 200 and "access-control-allow-origin" not in same.headers


def test_request_and_upload_sizes_are_limited(open_server: RunningServer) -> None:
    with open_server.client() as client:
        big = add_graph(1, 1)
        big["meta"] = {"padding": "x" * 60_000}
        response = client.post("/api/jobs", json={"graph": big, "outputs": ["add"]})
        assert response.status_code == 413 and response.json()["error"]["type"] == "too_large"
        noise = Image.frombytes("RGB", (160, 160), os.urandom(160 * 160 * 3))
        buffer = io.BytesIO()
        noise.save(buffer, format="PNG")
        assert len(buffer.getvalue()) > 0.06 * 1024 * 1024
        upload = client.post("/api/uploads", files={"file": ("noise.png", buffer.getvalue(), "image/png")})
        assert upload.status_code == 413
        # Sent without a declared length (chunked), the body is still counted.
        chunks = (b"x" * 10_000 for _ in range(10))
        chunked = client.post("/api/jobs", content=chunks, headers={"content-type": "application/json"})
        assert chunked.status_code == 413


BAD_GRAPHS = [
    ({"format": "nodeflow.graph", "version": 1, "nodes": {"x": {"type": "no.Such", "inputs": {}}}},
     "unknown_type", "x"),
    (graph({"load": ("image.Load", {"path": "/etc/passwd"})}), "path", "load"),
    (graph({"load": ("image.Load", {"path": "../../jobs.sqlite3"})}), "path", "load"),
    (graph({"load": ("image.Load", {"path": "never-uploaded.png"})}), "missing_file", "load"),
    (graph({"add": ("math.Add", {"a": "seven"})}), "bad_value", "add"),
    (graph({"save": ("image.Save", {"prefix": "../escape"})}), None, "save"),
    (graph({"s": ("servertest.Swatch", {"width": 4096, "height": 4096}),
            "r": ("image.Resize", {"width": 16384, "height": 16384})}, [("s.image", "r.image")]),
     "too_large", "r"),
    ({"format": "something else"}, "format", None),
]


def test_uploads_cannot_fill_the_disk(open_server: RunningServer) -> None:
    """The input folder holds at most --max-input-mb: past it an upload is refused with a message
    saying what to do, nothing already there is touched, and deleting pictures makes room."""
    def noise_png() -> bytes:
        picture = Image.frombytes("RGB", (110, 110), os.urandom(110 * 110 * 3))
        buffer = io.BytesIO()
        picture.save(buffer, format="PNG")
        return buffer.getvalue()

    inputs = open_server.data / "input"
    kept: dict[str, bytes] = {}
    with open_server.client() as client:
        for i in range(5):
            data = noise_png()
            response = client.post("/api/uploads", files={"file": (f"noise{i}.png", data, "image/png")})
            if response.status_code != 200:
                break
            kept[response.json()["name"]] = data
        assert len(kept) == 2, kept.keys()  # 2 x ~36 KB fit in 0.1 MB, a third does not
        assert response.status_code == 507
        error = response.json()["error"]
        assert "input folder is full" in error["message"] and "--max-input-mb" in error["message"]
        # The same through ComfyUI's route.
        comfy = client.post("/upload/image", files={"image": ("more.png", noise_png(), "image/png")})
        assert comfy.status_code == 507
        assert {p.name: p.read_bytes() for p in inputs.iterdir()} == kept
        # Sending a picture already there again takes no room; deleting one makes room.
        again = client.post("/api/uploads", files={"file": ("noise0.png", kept["noise0.png"], "image/png")})
        assert again.status_code == 200 and again.json()["name"] == "noise0.png"
        (inputs / "noise1.png").unlink()
        assert client.post("/api/uploads", files={"file": ("noise5.png", noise_png(), "image/png")}).status_code == 200


@pytest.mark.parametrize("doc, code, node", BAD_GRAPHS)
def test_bad_graphs_are_refused_with_located_problems(client: httpx.Client, doc: dict, code: str | None,
                                                      node: str | None) -> None:
    response = client.post("/api/jobs", json={"graph": doc, "outputs": list(doc.get("nodes", {}))[:1]
                                              or None})
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["type"] == "graph_invalid"
    assert any((code is None or p["code"] == code) and p["node"] == node for p in error["problems"]), error
    assert "Traceback" not in response.text


def test_validation_messages_match_nodeflow_validate(client: httpx.Client, tmp_path) -> None:
    from nodeflow.cli import main

    doc = graph({"add": ("math.Add", {"a": "seven", "c": 1})})
    path = tmp_path / "graph.json"
    path.write_text(json.dumps(doc))
    error = client.post("/api/jobs", json={"graph": doc, "outputs": ["add"], "name": str(path)}).json()["error"]
    out = io.StringIO()
    import contextlib

    with contextlib.redirect_stdout(out):
        assert main(["validate", "--json", str(path)]) == 2
    expected = json.loads(out.getvalue())["problems"]
    assert error["problems"] == expected


@pytest.mark.parametrize("body, status", [
    (b"{not json", 400),
    (b"[1, 2]", 400),
    (json.dumps({"graph": add_graph(1, 1), "outputs": "add"}).encode(), 400),
    (json.dumps({"graph": add_graph(1, 1), "prompt": {"1": {}}}).encode(), 400),
    (json.dumps({}).encode(), 400),
    (json.dumps({"graph": add_graph(1, 1), "outputs": ["nowhere"]}).encode(), 400),
    (json.dumps({"graph": add_graph(1, 1)}).encode(), 400),  # no output node, none asked for
    (json.dumps({"graph": add_graph(1, 1), "outputs": ["add"], "set": ["add.q=1"]}).encode(), 400),
    (json.dumps({"graph": add_graph(1, 1), "outputs": ["add"], "set": 5}).encode(), 400),
])
def test_malformed_requests_get_json_errors(client: httpx.Client, body: bytes, status: int) -> None:
    response = client.post("/api/jobs", content=body, headers={"content-type": "application/json"})
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["message"] and "Traceback" not in response.text


def test_unknown_jobs_files_and_uploads(client: httpx.Client) -> None:
    assert client.get("/api/jobs/nope").status_code == 404
    assert client.post("/api/jobs/nope/cancel").status_code == 404
    job = wait_job(client, submit(client, add_graph(1, 1), outputs=["add"])["id"])
    assert client.get(f"/api/jobs/{job['id']}/files/..%2F..%2Fjobs.sqlite3").status_code in (400, 404)
    assert client.get(f"/api/jobs/{job['id']}/files/missing.png").status_code == 404
    not_picture = client.post("/api/uploads", files={"file": ("a.png", b"#!/bin/sh\nrm -rf /", "image/png")})
    assert not_picture.status_code == 400 and not_picture.json()["error"]["type"] == "bad_picture"
    gif = io.BytesIO()
    Image.new("RGB", (2, 2)).save(gif, format="GIF")
    assert client.post("/api/uploads", files={"file": ("a.gif", gif.getvalue(), "image/gif")}).status_code == 400
    for name in ("../evil.png", ".hidden.png", "a/b.png"):
        response = client.post("/api/uploads", files={"file": (name, png_bytes((1, 1, 1)), "image/png")})
        assert response.status_code == 400, name
