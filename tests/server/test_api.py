"""The native API of a real server: submit, list, get, cancel, outputs, uploads, node types."""

from __future__ import annotations

import io

import httpx
from PIL import Image

from .conftest import add_graph, graph, submit, wait_graph, wait_job, wait_state


def png_bytes(color: tuple[int, int, int], size: tuple[int, int] = (8, 6)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, format="PNG")
    return buffer.getvalue()


def test_submit_returns_at_once_and_the_job_gives_its_value(client: httpx.Client) -> None:
    accepted = submit(client, add_graph(2, 3), outputs=["add"])
    assert accepted["state"] == "queued" and accepted["created"] is True
    job = wait_job(client, accepted["id"])
    assert job["state"] == "done"
    assert job["values"] == {"add": {"sum": 5}}
    assert job["nodes"]["ran"] == ["add"]
    assert job["timings"]["finished"] >= job["timings"]["started"] >= job["timings"]["submitted"]


def test_overrides_as_cli_text_and_as_json(client: httpx.Client) -> None:
    text = wait_job(client, submit(client, add_graph(1, 1), outputs=["add"], set=["add.a=40"])["id"])
    assert text["values"]["add"]["sum"] == 41
    as_json = wait_job(client, submit(client, add_graph(1, 1), outputs=["add"],
                                      set={"add.b": 0.5})["id"])
    assert as_json["values"]["add"]["sum"] == 1.5


def test_idempotency_key_returns_the_same_job(client: httpx.Client) -> None:
    first = submit(client, add_graph(7, 7), outputs=["add"], idempotency_key="same-key")
    again = client.post("/api/jobs", json={"graph": add_graph(7, 7), "outputs": ["add"]},
                        headers={"Idempotency-Key": "same-key"})
    assert again.status_code == 200
    assert again.json()["id"] == first["id"] and again.json()["created"] is False
    wait_job(client, first["id"])
    listed = [j for j in client.get("/api/jobs", params={"limit": 500}).json()["jobs"]
              if j["idempotency_key"] == "same-key"]
    assert len(listed) == 1


def test_saved_pictures_are_named_by_job_and_downloadable(client: httpx.Client) -> None:
    doc = graph({"swatch": ("servertest.Swatch", {"level": 1.0, "width": 5, "height": 4}),
                 "save": ("image.Save", {"prefix": "renders/grey"})},
                [("swatch.image", "save.image")])
    job = wait_job(client, submit(client, doc)["id"])
    assert job["state"] == "done", job
    assert job["files"] == ["renders/grey_00001.png"]
    response = client.get(f"/api/jobs/{job['id']}/files/renders/grey_00001.png")
    assert response.status_code == 200
    picture = Image.open(io.BytesIO(response.content))
    assert picture.size == (5, 4) and picture.getpixel((0, 0))[:3] == (255, 255, 255)
    # A second job with the same prefix writes into its own folder: the same name again.
    second = wait_job(client, submit(client, doc)["id"])
    assert second["files"] == ["renders/grey_00001.png"]
    # Forgetting a job deletes its files.
    assert client.delete(f"/api/jobs/{job['id']}").json() == {"id": job["id"], "deleted": True}
    assert client.get(f"/api/jobs/{job['id']}").status_code == 404
    assert client.get(f"/api/jobs/{job['id']}/files/renders/grey_00001.png").status_code == 404
    assert client.get(f"/api/jobs/{second['id']}/files/renders/grey_00001.png").status_code == 200


def test_requested_pictures_come_back_as_files(client: httpx.Client) -> None:
    doc = graph({"swatch": ("servertest.Swatch", {"level": 0.0, "width": 3, "height": 2})})
    job = wait_job(client, submit(client, doc, outputs=["swatch"])["id"])
    assert job["values"] == {"swatch": {"image": {"images": ["swatch.image.0.png"]}}}
    data = client.get(f"/api/jobs/{job['id']}/files/swatch.image.0.png").content
    assert Image.open(io.BytesIO(data)).size == (3, 2)


def test_list_queue_and_history_pages(client: httpx.Client) -> None:
    ids = [submit(client, add_graph(i, 0), outputs=["add"])["id"] for i in range(5)]
    for job_id in ids:
        wait_job(client, job_id)
    page = client.get("/api/jobs", params={"state": "history", "limit": 2}).json()
    assert len(page["jobs"]) == 2 and page["next"] is not None
    assert [j["id"] for j in page["jobs"]] == ids[::-1][:2]  # newest first
    rest = client.get("/api/jobs", params={"state": "history", "limit": 2,
                                           "before": page["next"]}).json()
    assert [j["id"] for j in rest["jobs"]] == ids[::-1][2:4]
    assert client.get("/api/jobs", params={"state": "queue"}).json()["jobs"] == []


def test_cancel_a_queued_and_a_running_job(client: httpx.Client) -> None:
    running = submit(client, wait_graph(1, 20.0, steps=400), outputs=["wait"])["id"]
    queued = submit(client, add_graph(1, 2), outputs=["add"])["id"]
    wait_state(client, running, "running")
    assert client.post(f"/api/jobs/{queued}/cancel").json()["state"] == "cancelled"
    client.post(f"/api/jobs/{running}/cancel")
    job = wait_job(client, running, timeout=10)
    assert job["state"] == "cancelled"
    assert job["timings"]["seconds"] < 10
    # The server carries on.
    assert wait_job(client, submit(client, add_graph(1, 2), outputs=["add"])["id"])["values"] == \
        {"add": {"sum": 3}}


def test_a_node_that_raises_fails_its_job_only(client: httpx.Client) -> None:
    doc = graph({"bad": ("servertest.Raise", {}), "add": ("math.Add", {"a": 1, "b": 1})})
    job = wait_job(client, submit(client, doc, outputs=["bad", "add"])["id"])
    assert job["state"] == "failed"
    problem = job["error"]["problems"][0]
    assert problem["node"] == "bad" and problem["node_type"] == "servertest.Raise"
    assert "RuntimeError: this node always fails" in problem["message"]
    assert job["values"] == {"add": {"sum": 2}}  # the independent branch still finished
    assert "Traceback" not in str(job)
    assert wait_job(client, submit(client, add_graph(2, 2), outputs=["add"])["id"])["state"] == "done"


def test_upload_then_use_the_picture(client: httpx.Client) -> None:
    response = client.post("/api/uploads", files={"file": ("red.png", png_bytes((255, 0, 0)), "image/png")})
    assert response.status_code == 200, response.text
    name = response.json()["name"]
    assert name == "red.png"
    # The same name with other content does not overwrite the first upload.
    other = client.post("/api/uploads", files={"file": ("red.png", png_bytes((0, 0, 255)), "image/png")})
    assert other.json()["name"] == "red (1).png"
    doc = graph({"load": ("image.Load", {"path": name}), "invert": ("image.Invert", {})},
                [("load.image", "invert.image")])
    job = wait_job(client, submit(client, doc, outputs=["invert"])["id"])
    assert job["state"] == "done", job
    data = client.get(f"/api/jobs/{job['id']}/files/invert.image.0.png").content
    assert Image.open(io.BytesIO(data)).getpixel((0, 0))[:3] == (0, 255, 255)


def test_node_types_with_schemas(client: httpx.Client) -> None:
    types = {t["id"]: t for t in client.get("/api/nodes").json()}
    assert "math.Add" in types and "image.Save" in types
    add = client.get("/api/nodes/math.Add").json()
    assert [i["name"] for i in add["inputs"]] == ["a", "b"]
    assert client.get("/api/nodes/no.Such").status_code == 404


def test_openapi_is_served(client: httpx.Client) -> None:
    spec = client.get("/openapi.json").json()
    assert "/api/jobs" in spec["paths"] and "/prompt" in spec["paths"]
    assert client.get("/docs").status_code == 200
