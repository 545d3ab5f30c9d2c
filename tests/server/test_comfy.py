"""The ComfyUI-compatible API, driven the way ComfyUI's own script examples drive it: a
websocket with a client id, POST /prompt, wait for ``executing`` with ``node: null``, then
/history and /view."""

from __future__ import annotations

import io
import json
import struct
import uuid
from typing import Any

import httpx
from PIL import Image
from websockets.sync.client import connect

from .conftest import RunningServer, graph, wait_job, wait_state
from .test_api import png_bytes


def invert_prompt(image: str, prefix: str = "inverted") -> dict[str, Any]:
    return {
        "1": {"class_type": "LoadImage", "inputs": {"image": image, "upload": "image"}},
        "2": {"class_type": "ImageInvert", "inputs": {"image": ["1", 0]}},
        "3": {"class_type": "SaveImage", "inputs": {"filename_prefix": prefix, "images": ["2", 0]}},
    }


def until_done(ws: Any, prompt_id: str, timeout: float = 30) -> tuple[list[dict[str, Any]], list[bytes]]:
    """Messages about the prompt (and binary frames) until ``executing`` with ``node: null``."""
    messages, frames = [], []
    while True:
        out = ws.recv(timeout=timeout)
        if isinstance(out, bytes):
            frames.append(out)
            continue
        message = json.loads(out)
        if message["data"].get("prompt_id") == prompt_id:
            messages.append(message)
            if message["type"] == "executing" and message["data"]["node"] is None:
                return messages, frames


def upload(client: httpx.Client, name: str, data: bytes, **form: str) -> dict[str, Any]:
    response = client.post("/upload/image", files={"image": (name, data, "image/png")}, data=form)
    assert response.status_code == 200, response.text
    return response.json()


def test_a_comfyui_client_runs_an_api_prompt(server: RunningServer, client: httpx.Client) -> None:
    client_id = str(uuid.uuid4())
    uploaded = upload(client, "green.png", png_bytes((0, 200, 0)))
    assert uploaded == {"name": "green.png", "subfolder": "", "type": "input"}
    with connect(f"{server.ws_url}/ws?clientId={client_id}") as ws:
        hello = json.loads(ws.recv(timeout=10))
        assert hello["type"] == "status" and hello["data"]["sid"] == client_id
        assert "queue_remaining" in hello["data"]["status"]["exec_info"]
        response = client.post("/prompt", json={"prompt": invert_prompt("green.png"),
                                                "client_id": client_id})
        assert response.status_code == 200, response.text
        body = response.json()
        prompt_id = body["prompt_id"]
        assert isinstance(body["number"], int) and body["node_errors"] == {}
        messages, _frames = until_done(ws, prompt_id)
    types = [m["type"] for m in messages]
    assert types[0] == "execution_start" and types[1] == "execution_cached"
    assert [m["data"]["node"] for m in messages if m["type"] == "executing"] == ["1", "2", "3", None]
    assert types[-2:] == ["execution_success", "executing"]
    executed = [m for m in messages if m["type"] == "executed"]
    assert len(executed) == 1 and executed[0]["data"]["node"] == "3"
    image = executed[0]["data"]["output"]["images"][0]
    assert image == {"filename": "inverted_00001.png", "subfolder": prompt_id, "type": "output"}

    history = client.get(f"/history/{prompt_id}").json()[prompt_id]
    assert history["status"]["completed"] is True and history["status"]["status_str"] == "success"
    assert history["prompt"][1] == prompt_id and history["prompt"][2] == invert_prompt("green.png")
    [entry] = history["outputs"]["3"]["images"]
    view = client.get("/view", params={"filename": entry["filename"], "subfolder": entry["subfolder"],
                                       "type": entry["type"]})
    assert view.status_code == 200
    assert Image.open(io.BytesIO(view.content)).getpixel((0, 0))[:3] == (255, 55, 255)
    assert prompt_id in client.get("/history", params={"max_items": 5}).json()
    # The /api prefix works too, as in ComfyUI.
    assert client.get(f"/api/history/{prompt_id}").json()[prompt_id]["outputs"] == history["outputs"]


def test_previews_come_as_binary_frames_in_comfyui_framing(server: RunningServer,
                                                           client: httpx.Client) -> None:
    client_id = uuid.uuid4().hex
    doc = graph({"swatch": ("servertest.Swatch", {"level": 0.0, "width": 32, "height": 32}),
                 "save": ("image.Save", {"prefix": "black"})}, [("swatch.image", "save.image")])
    with connect(f"{server.ws_url}/ws?clientId={client_id}") as ws:
        ws.recv(timeout=10)
        prompt_id = client.post("/prompt", json={"prompt": doc, "client_id": client_id}).json()["prompt_id"]
        messages, frames = until_done(ws, prompt_id)
    assert len(frames) == 1
    event_type, image_type = struct.unpack(">II", frames[0][:8])
    assert (event_type, image_type) == (1, 1)  # a preview picture, JPEG
    assert Image.open(io.BytesIO(frames[0][8:])).size == (32, 32)
    progress = [m for m in messages if m["type"] == "progress"]
    assert progress[0]["data"] == {"value": 1, "max": 1, "prompt_id": prompt_id, "node": "swatch"}


def test_other_clients_only_hear_the_queue_status(server: RunningServer, client: httpx.Client) -> None:
    mine, theirs = uuid.uuid4().hex, uuid.uuid4().hex
    with connect(f"{server.ws_url}/ws?clientId={theirs}") as other, \
            connect(f"{server.ws_url}/ws?clientId={mine}") as ws:
        other.recv(timeout=10)
        ws.recv(timeout=10)
        upload(client, "blue.png", png_bytes((0, 0, 255)))
        prompt_id = client.post("/prompt", json={"prompt": invert_prompt("blue.png"),
                                                 "client_id": mine}).json()["prompt_id"]
        until_done(ws, prompt_id)
        seen = []
        try:
            while True:
                seen.append(json.loads(other.recv(timeout=0.5)))
        except TimeoutError:
            pass
    assert seen and all(m["type"] == "status" for m in seen)


def test_a_failing_prompt_reports_execution_error(server: RunningServer, client: httpx.Client) -> None:
    client_id = uuid.uuid4().hex
    doc = graph({"bad": ("servertest.Raise", {}), "swatch": ("servertest.Swatch", {}),
                 "save": ("image.Save", {})}, [("bad.value", "swatch.level"), ("swatch.image", "save.image")])
    with connect(f"{server.ws_url}/ws?clientId={client_id}") as ws:
        ws.recv(timeout=10)
        prompt_id = client.post("/prompt", json={"prompt": doc, "client_id": client_id}).json()["prompt_id"]
        messages, _ = until_done(ws, prompt_id)
    errors = [m for m in messages if m["type"] == "execution_error"]
    assert len(errors) == 1 and errors[0]["data"]["node_id"] == "bad"
    assert "this node always fails" in errors[0]["data"]["exception_message"]
    assert "execution_success" not in [m["type"] for m in messages]
    history = client.get(f"/history/{prompt_id}").json()[prompt_id]
    assert history["status"]["status_str"] == "error" and history["status"]["completed"] is False


def test_bad_prompts_are_refused_with_node_errors(client: httpx.Client) -> None:
    assert client.post("/prompt", json={"client_id": "x"}).status_code == 400
    unknown = client.post("/prompt", json={"prompt": {"1": {"class_type": "NoSuchNode", "inputs": {}}}})
    assert unknown.status_code == 400
    assert "error" in unknown.json() and "node_errors" in unknown.json()
    assert "NoSuchNode" in json.dumps(unknown.json())
    missing = client.post("/prompt", json={"prompt": invert_prompt("not-uploaded.png")})
    assert missing.status_code == 400
    errors = missing.json()["node_errors"]
    assert errors["1"]["class_type"] == "LoadImage"
    assert errors["1"]["errors"][0]["message"].startswith("'not-uploaded.png' is not in")
    escape = client.post("/prompt", json={"prompt": invert_prompt("../../etc/passwd")})
    assert escape.status_code == 400 and "'..'" in escape.json()["error"]["message"]


def test_queue_interrupt_and_delete(server: RunningServer, client: httpx.Client) -> None:
    slow = graph({"wait": ("servertest.Wait", {"value": 1, "seconds": 20, "steps": 400}),
                  "swatch": ("servertest.Swatch", {}), "save": ("image.Save", {})},
                 [("wait.value", "swatch.level"), ("swatch.image", "save.image")])
    client_id = uuid.uuid4().hex
    with connect(f"{server.ws_url}/ws?clientId={client_id}") as ws:
        ws.recv(timeout=10)
        running = client.post("/prompt", json={"prompt": slow, "client_id": client_id}).json()["prompt_id"]
        waiting = client.post("/prompt", json={"prompt": slow, "client_id": client_id}).json()["prompt_id"]
        wait_state(client, running, "running")
        queue = client.get("/queue").json()
        assert [item[1] for item in queue["queue_running"]] == [running]
        assert [item[1] for item in queue["queue_pending"]] == [waiting]
        assert client.post("/queue", json={"delete": [waiting]}).status_code == 200
        assert client.post("/interrupt", json={}).status_code == 200
        messages, _ = until_done(ws, running)
    assert "execution_interrupted" in [m["type"] for m in messages]
    assert wait_job(client, running)["state"] == "cancelled"
    assert wait_job(client, waiting)["state"] == "cancelled"
    assert client.get("/queue").json() == {"queue_running": [], "queue_pending": []}
    assert client.get("/prompt").json() == {"exec_info": {"queue_remaining": 0}}


def test_object_info_lists_mapped_and_native_types(client: httpx.Client) -> None:
    info = client.get("/object_info").json()
    assert info["SaveImage"]["output_node"] is True
    assert info["math.Add"]["input"]["required"]["a"][0] == "FLOAT"
    ksampler = client.get("/object_info/KSampler").json()["KSampler"]
    assert ksampler["name"] == "KSampler"
    # ComfyUI's inputs in its order, typed as the nodeflow inputs they feed; no hidden seed control
    assert ksampler["input_order"]["required"] == ["model", "positive", "negative", "latent_image", "seed",
                                                   "steps", "cfg", "sampler_name", "scheduler", "denoise"]
    required = ksampler["input"]["required"]
    assert required["model"][0] == "MODEL" and required["steps"][0] == "INT"
    assert "euler" in required["sampler_name"][0] and "karras" in required["scheduler"][0]
    assert ksampler["output"] == ["LATENT"]


def test_view_refuses_paths_outside_its_folders(client: httpx.Client) -> None:
    for params in ({"filename": "../jobs.sqlite3", "type": "output"},
                   {"filename": "passwd", "subfolder": "../../../../etc", "type": "output"},
                   {"filename": "x.png", "type": "temp"},
                   {"filename": "/etc/passwd", "type": "input"}):
        response = client.get("/view", params=params)
        assert response.status_code == 400, (params, response.text)
        assert set(response.json()["error"]) == {"type", "message", "problems"}
    upload_escape = client.post("/upload/image", files={"image": ("a.png", png_bytes((1, 2, 3)), "image/png")},
                                data={"subfolder": "../../outside"})
    assert upload_escape.status_code == 400


def test_a_ui_format_workflow_through_the_native_api(client: httpx.Client) -> None:
    from .conftest import wait_job

    upload(client, "grey.png", png_bytes((100, 100, 100)))
    workflow = {
        "nodes": [
            {"id": 1, "type": "LoadImage", "mode": 0, "widgets_values": ["grey.png", "image"],
             "inputs": [], "outputs": [{"name": "IMAGE", "type": "IMAGE", "links": [1]},
                                       {"name": "MASK", "type": "MASK", "links": []}]},
            {"id": 2, "type": "ImageInvert", "mode": 0, "widgets_values": [],
             "inputs": [{"name": "image", "type": "IMAGE", "link": 1}],
             "outputs": [{"name": "IMAGE", "type": "IMAGE", "links": [2]}]},
            {"id": 3, "type": "SaveImage", "mode": 0, "widgets_values": ["ui"],
             "inputs": [{"name": "images", "type": "IMAGE", "link": 2}], "outputs": []},
        ],
        "links": [[1, 1, 0, 2, 0, "IMAGE"], [2, 2, 0, 3, 0, "IMAGE"]],
        "version": 0.4,
    }
    response = client.post("/api/jobs", json={"workflow": workflow})
    assert response.status_code == 202, response.text
    job = wait_job(client, response.json()["id"])
    assert job["state"] == "done" and job["kind"] == "comfy" and job["files"] == ["ui_00001.png"]
    data = client.get(f"/api/jobs/{job['id']}/files/ui_00001.png").content
    assert Image.open(io.BytesIO(data)).getpixel((0, 0))[:3] == (155, 155, 155)
