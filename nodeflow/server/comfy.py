"""The part of ComfyUI's HTTP and websocket API that its clients use, spoken by nodeflow.

Routes (each also under ``/api``): ``POST /prompt``, ``GET /prompt``, ``GET /history``,
``GET /history/{prompt_id}``, ``POST /history``, ``GET /queue``, ``POST /queue``,
``POST /interrupt``, ``GET /view``, ``POST /upload/image``, ``GET /object_info``,
``GET /object_info/{type}``, ``GET /system_stats`` and the ``/ws?clientId=`` websocket.

A prompt becomes a nodeflow graph through the ComfyUI importer (there is no second
execution path) and runs as a job like any other; its events are retold in ComfyUI's
message types (``status``, ``execution_start``, ``execution_cached``, ``executing``,
``progress``, ``executed``, ``execution_success``, ``execution_error``,
``execution_interrupted``) and previews are sent as binary frames in ComfyUI's framing:
a big-endian 32-bit event type (1, a preview picture), a 32-bit picture format (1 JPEG,
2 PNG), then the picture's bytes. Messages about a prompt go to the websocket whose
``clientId`` submitted it, or to every websocket when it gave none.
"""

from __future__ import annotations

import asyncio
import functools
import json
import platform
import struct
import sys
import uuid
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI, Request, UploadFile, WebSocket, WebSocketDisconnect
from fastapi.responses import FileResponse, JSONResponse, Response

from nodeflow import __version__
from nodeflow.errors import GraphInvalid, Problem
from nodeflow.graph import Graph
from nodeflow.server.safety import ApiError, inside
from nodeflow.server.store import CANCELLED, DONE, FINAL_STATES, QUEUED, RUNNING, Job, StoredEvent

if TYPE_CHECKING:
    from nodeflow.server.app import Server

PREVIEW_IMAGE = 1
"""ComfyUI's binary event type of a preview picture."""
JPEG, PNG = 1, 2


# --- prompts to graphs ---------------------------------------------------------------------------

def import_comfy(server: Server, document: Any, name: str, overrides: Any = None) -> Graph:
    """A validated nodeflow graph from a ComfyUI workflow or API prompt (or a nodeflow graph
    sent where ComfyUI clients send prompts). ``graph.meta["comfy_ids"]`` maps each nodeflow
    node back to the ComfyUI node it came from."""
    if isinstance(document, dict) and document.get("format") == "nodeflow.graph":
        return server.build_graph(document, name, overrides)
    try:
        from nodeflow.comfy.convert import convert_workflow
        from nodeflow.comfy.formats import detect, parse_workflow
    except ImportError:
        raise ApiError(400, "ComfyUI prompts need the importer (nodeflow.comfy), which this "
                       "installation does not have; send a nodeflow graph instead",
                       type_="comfy_unsupported") from None
    kind = detect(document)
    if kind not in ("ui", "api"):
        raise ApiError(400, "this is neither a ComfyUI API prompt (node ids mapping to "
                       "'class_type' and 'inputs') nor a ComfyUI workflow", type_="comfy_unsupported")
    wf, problems = parse_workflow(kind, document, name)
    if problems:
        raise _invalid(problems, name)
    # The server's folders (--models, --comfy-models), so a model's family is read from its file.
    imported = convert_workflow(wf, server.registry, server.request_settings())
    if imported.problems:
        raise _invalid(imported.problems, name)
    data = imported.graph.to_json()
    ids = comfy_ids(imported.graph, wf)
    data["meta"] = {**data.get("meta", {}), "comfy_ids": ids}
    try:
        return server.build_graph(data, name, overrides)
    except ApiError as exc:
        exc.body["comfy_ids"] = ids  # so node_errors can name the ComfyUI nodes
        raise


def comfy_ids(graph: Graph, wf: Any) -> dict[str, str]:
    """Each nodeflow node id -> the ComfyUI node id it was made from (the importer names
    nodes ``{type}_{id}``, with a suffix when one ComfyUI node becomes several)."""
    from nodeflow.comfy.convert import node_id_for

    bases = sorted(((node_id_for(n), n.id) for n in wf.nodes.values()), key=lambda b: -len(b[0]))
    ids: dict[str, str] = {}
    for nid in graph.nodes:
        for base, comfy_id in bases:
            if nid == base or nid.startswith(base + "_"):
                ids[nid] = comfy_id
                break
    return ids


def _invalid(problems: list[Problem], name: str) -> ApiError:
    exc = GraphInvalid(problems, name)
    return ApiError(400, str(exc), type_="graph_invalid", problems=[p.to_json() for p in problems])


def _node_errors(problems: list[dict[str, Any]], ids: dict[str, str], prompt: Any) -> dict[str, Any]:
    """Problems in ComfyUI's ``node_errors`` shape: by ComfyUI node id, each with its
    ``class_type`` and errors (type, message, details)."""
    out: dict[str, Any] = {}
    for p in problems:
        node = p.get("node")
        if not node:
            continue
        key = ids.get(node, node)
        comfy = prompt.get(key) if isinstance(prompt, dict) else None
        class_type = comfy.get("class_type") if isinstance(comfy, dict) else None
        entry = out.setdefault(key, {"errors": [], "dependent_outputs": [],
                                     "class_type": class_type or p.get("node_type") or ""})
        entry["errors"].append({"type": p.get("code", "error"), "message": p.get("message", ""),
                                "details": p.get("socket") or "",
                                "extra_info": {"input_name": p.get("socket")}})
    return out


# --- the routes ---------------------------------------------------------------------------------------

def install_comfy_routes(app: FastAPI, server: Server) -> None:
    """Add the ComfyUI-compatible endpoints, at ``/x`` and at ``/api/x``."""
    for prefix in ("", "/api"):
        _routes(app, server, prefix)

    @app.websocket("/ws")
    async def comfy_ws(ws: WebSocket) -> None:
        await ws.accept()
        sid = ws.query_params.get("clientId") or uuid.uuid4().hex
        await ComfySocket(server, ws, sid).serve()


def _routes(app: FastAPI, server: Server, prefix: str) -> None:
    tags: list[str | Enum] = ["comfyui"]
    hide = prefix == "/api"  # one copy in the OpenAPI page is enough

    @app.post(prefix + "/prompt", tags=tags, include_in_schema=not hide)
    async def post_prompt(request: Request) -> Any:
        """Queue an API-format prompt: ``{"prompt": {...}, "client_id": ...}`` ->
        ``{"prompt_id", "number", "node_errors"}``."""
        body = await _json(request)
        prompt = body.get("prompt")
        if not isinstance(prompt, dict) or not prompt:
            return JSONResponse({"error": {"type": "no_prompt", "message": "no prompt", "details": "",
                                           "extra_info": {}}, "node_errors": []}, status_code=400)
        client_id = body.get("client_id")
        extra = body.get("extra_data") if isinstance(body.get("extra_data"), dict) else {}
        if client_id is None and isinstance(extra, dict):
            client_id = extra.get("client_id")
        graph: Graph | None = None
        try:
            graph = await asyncio.to_thread(import_comfy, server, prompt, "prompt", None)
            job, _created = await asyncio.to_thread(functools.partial(
                server.submit, graph, kind="comfy", outputs=None, request=prompt,
                client_id=client_id if isinstance(client_id, str) else None, idempotency_key=None))
        except ApiError as exc:
            # Refused by the importer or the validator (which name the ComfyUI nodes), or at
            # submission (the memory plan), where the converted graph names them.
            ids = exc.body.pop("comfy_ids", None) or (graph.meta.get("comfy_ids", {})
                                                      if graph is not None else {})
            return JSONResponse({"error": {"type": exc.body["type"], "message": exc.body["message"],
                                           "details": exc.body["message"], "extra_info": {}},
                                 "node_errors": _node_errors(exc.body["problems"], ids, prompt)},
                                status_code=400)
        return {"prompt_id": job.id, "number": job.number, "node_errors": {}}

    @app.get(prefix + "/prompt", tags=tags, include_in_schema=not hide)
    async def get_prompt() -> Any:
        return _queue_info(server)

    @app.get(prefix + "/history", tags=tags, include_in_schema=not hide)
    async def get_history(max_items: int | None = None) -> Any:
        """Finished prompts, oldest first (at most ``max_items``, the newest ones)."""
        limit = max_items if max_items is not None and max_items > 0 else 10_000
        jobs = list(reversed(server.store.jobs(FINAL_STATES, limit=limit, newest_first=True)))
        return {job.id: _history_entry(server, job) for job in jobs}

    @app.get(prefix + "/history/{prompt_id}", tags=tags, include_in_schema=not hide)
    async def get_history_one(prompt_id: str) -> Any:
        job = server.store.get(prompt_id)
        if job is None or job.state not in FINAL_STATES:
            return {}
        return {job.id: _history_entry(server, job)}

    @app.post(prefix + "/history", tags=tags, include_in_schema=not hide)
    async def post_history(request: Request) -> Any:
        """``{"clear": true}`` or ``{"delete": [prompt ids]}``: forget finished prompts."""
        body = await _json(request)
        if body.get("clear"):
            for job in server.store.jobs(FINAL_STATES, limit=1_000_000):
                server.store.delete(job.id)
        for job_id in _ids(body.get("delete")):
            server.store.delete(job_id)
        return Response(status_code=200)

    @app.get(prefix + "/queue", tags=tags, include_in_schema=not hide)
    async def get_queue() -> Any:
        running = server.store.jobs((RUNNING,), limit=1000)
        pending = server.store.jobs((QUEUED,), limit=10_000)
        return {"queue_running": [_queue_item(j) for j in running],
                "queue_pending": [_queue_item(j) for j in pending]}

    @app.post(prefix + "/queue", tags=tags, include_in_schema=not hide)
    async def post_queue(request: Request) -> Any:
        """``{"clear": true}`` cancels every waiting prompt; ``{"delete": [ids]}`` those named."""
        body = await _json(request)
        if body.get("clear"):
            for job in server.store.jobs((QUEUED,), limit=1_000_000):
                server.hub.commit(functools.partial(server.store.cancel_queued, job.id))
        for job_id in _ids(body.get("delete")):
            server.hub.commit(functools.partial(server.store.cancel_queued, job_id))
        return Response(status_code=200)

    @app.post(prefix + "/interrupt", tags=tags, include_in_schema=not hide)
    async def interrupt(request: Request) -> Any:
        """Stop the running prompt (``{"prompt_id": ...}`` stops only that one)."""
        body = await _json(request, required=False)
        wanted = body.get("prompt_id") if isinstance(body, dict) else None
        for job_id in server.dispatcher.running_ids():
            if wanted in (None, job_id):
                server.dispatcher.cancel(job_id)
        return Response(status_code=200)

    @app.get(prefix + "/view", tags=tags, include_in_schema=not hide)
    async def view(filename: str, subfolder: str = "", type: str = "output") -> Any:  # noqa: A002
        """A picture: an output of a prompt (``subfolder`` starts with its prompt id) or an
        uploaded input."""
        folders = {"output": server.config.output_dir, "input": server.config.input_dir}
        root = folders.get(type)
        if root is None:
            raise ApiError(400, f"type must be one of {', '.join(folders)}", type_="path")
        name = f"{subfolder.strip('/')}/{filename}" if subfolder else filename
        path = inside(root, name)
        if path is None or "/" in filename:
            raise ApiError(400, f"'{name}' is not a file name inside the {type} folder", type_="path")
        if not path.is_file():
            raise ApiError(404, f"no {type} file '{name}'", type_="not_found")
        return FileResponse(path, headers={"Content-Disposition": f'filename="{path.name}"'})

    @app.post(prefix + "/upload/image", tags=tags, include_in_schema=not hide)
    async def upload_image(request: Request) -> Any:
        """Multipart ``image`` (and ``subfolder``, ``overwrite``) into the input folder."""
        form = await request.form()
        image = form.get("image")
        if not isinstance(image, UploadFile) and not hasattr(image, "read"):
            raise ApiError(400, "send the picture as the multipart field 'image'")
        assert image is not None and not isinstance(image, str)
        data = await image.read()
        subfolder = str(form.get("subfolder") or "")
        overwrite = str(form.get("overwrite") or "").lower() in ("true", "1")
        kind = str(form.get("type") or "input")
        if kind != "input":
            raise ApiError(400, "uploads go to the input folder (type 'input')", type_="path")
        name = await asyncio.to_thread(server.save_upload, data, image.filename or "", subfolder,
                                       overwrite)
        folder, _, base = name.rpartition("/")
        return {"name": base, "subfolder": folder, "type": "input"}

    @app.get(prefix + "/object_info", tags=tags, include_in_schema=not hide)
    async def object_info() -> Any:
        return _object_info(server)

    @app.get(prefix + "/object_info/{node_class}", tags=tags, include_in_schema=not hide)
    async def object_info_one(node_class: str) -> Any:
        info = _object_info(server)
        return {node_class: info[node_class]} if node_class in info else {}

    @app.get(prefix + "/system_stats", tags=tags, include_in_schema=not hide)
    async def system_stats() -> Any:
        return {"system": {"os": sys.platform, "python_version": sys.version,
                           "nodeflow_version": __version__, "comfyui_version": f"nodeflow {__version__}",
                           "embedded_python": False, "machine": platform.machine()},
                "devices": [{"name": w.name, "type": w.name.split(":")[-1], "index": i}
                            for i, w in enumerate(server.dispatcher.workers)]}


async def _json(request: Request, *, required: bool = True) -> dict[str, Any]:
    raw = await request.body()
    if not raw and not required:
        return {}
    try:
        data = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ApiError(400, f"the request body is not JSON ({exc})") from None
    if not isinstance(data, dict):
        raise ApiError(400, "the request body must be a JSON object")
    return data


def _ids(value: Any) -> list[str]:
    return [v for v in value if isinstance(v, str)] if isinstance(value, list) else []


def _queue_info(server: Server) -> dict[str, Any]:
    counts = server.queue_counts()
    return {"exec_info": {"queue_remaining": counts["queued"] + counts["running"]}}


def _queue_item(job: Job) -> list[Any]:
    prompt = job.request if job.request is not None else json.loads(job.graph)
    return [job.number, job.id, prompt, {"client_id": job.client_id}, []]


def _ids_of(job: Job) -> dict[str, str]:
    try:
        meta = json.loads(job.graph).get("meta", {})
    except json.JSONDecodeError:
        return {}
    ids = meta.get("comfy_ids", {})
    return ids if isinstance(ids, dict) else {}


def _image_entries(job_id: str, files: list[str]) -> list[dict[str, str]]:
    images = []
    for name in files:
        if Path(name).suffix.lower() not in (".png", ".jpg", ".jpeg", ".webp"):
            continue
        folder, _, base = name.rpartition("/")
        images.append({"filename": base, "subfolder": f"{job_id}/{folder}" if folder else job_id,
                       "type": "output"})
    return images


def _history_entry(server: Server, job: Job) -> dict[str, Any]:
    ids = _ids_of(job)
    outputs: dict[str, Any] = {}
    messages: list[list[Any]] = []
    for event in server.store.events_since(0, job_id=job.id, limit=100_000):
        if event.type == "node_finished" and event.data.get("files"):
            images = _image_entries(job.id, event.data["files"])
            if images:
                outputs.setdefault(ids.get(event.data["node"], event.data["node"]), {"images": []})[
                    "images"].extend(images)
        elif event.type == "started":
            outputs.clear()  # a job that ran again after a restart: its last run counts
            messages = [["execution_start", {"prompt_id": job.id, "timestamp": int(event.time * 1000)}]]
        elif event.type in ("finished", "failed", "cancelled"):
            kind = {"finished": "execution_success", "failed": "execution_error",
                    "cancelled": "execution_interrupted"}[event.type]
            messages.append([kind, {"prompt_id": job.id, "timestamp": int(event.time * 1000)}])
    status = {DONE: "success", CANCELLED: "error"}.get(job.state, "error")
    return {"prompt": _queue_item(job), "outputs": outputs,
            "status": {"status_str": status, "completed": job.state == DONE, "messages": messages},
            "meta": {ids.get(n, n): {"node_id": ids.get(n, n), "display_node": ids.get(n, n)}
                     for n in outputs}}


_TYPE_NAMES = {"INT": "INT", "FLOAT": "FLOAT", "STRING": "STRING", "BOOL": "BOOLEAN"}


def _input_entry(spec: Any) -> list[Any]:
    """One input in ComfyUI's ``[type or choices, options]`` form."""
    type_name = str(getattr(spec.type, "name", spec.type))
    options: dict[str, Any] = {"tooltip": spec.description}
    if spec.has_default:
        options["default"] = spec.default
    for key in ("min", "max", "step"):
        if getattr(spec, key) is not None:
            options[key] = getattr(spec, key)
    if spec.multiline:
        options["multiline"] = True
    return [list(spec.choices) if spec.choices is not None else _TYPE_NAMES.get(type_name, type_name), options]


def _object_info(server: Server) -> dict[str, Any]:
    """Node types in ComfyUI's ``object_info`` shape: the ComfyUI types the importer maps (under
    their ComfyUI names), and every nodeflow type under its own id."""
    info: dict[str, Any] = {}
    for cls in server.registry.types():
        required: dict[str, Any] = {}
        optional: dict[str, Any] = {}
        for spec in cls.inputs:
            (optional if spec.optional else required)[spec.name] = _input_entry(spec)
        info[cls.id] = {
            "input": {"required": required, "optional": optional},
            "input_order": {"required": list(required), "optional": list(optional)},
            "output": [str(getattr(o.type, "name", o.type)) for o in cls.outputs],
            "output_is_list": [False] * len(cls.outputs),
            "output_name": [o.name for o in cls.outputs],
            "name": cls.id, "display_name": cls.title or cls.id, "description": cls.description,
            "python_module": "nodeflow", "category": cls.category or "nodeflow",
            "output_node": bool(cls.output_node),
            "deprecated": bool(cls.deprecated), "experimental": bool(cls.experimental),
        }
    info.update(_mapped_types(server))
    try:  # the SD3/Flux types a client may submit (see nodeflow.comfy.object_info)
        from nodeflow.comfy.object_info import flow_object_info
    except ImportError:
        return info
    for name, entry in flow_object_info(server.registry, _input_entry).items():
        info.setdefault(name, entry)
    return info


def _mapped_types(server: Server) -> dict[str, Any]:
    """The ComfyUI node types the importer maps: their linked inputs and widgets, in ComfyUI's
    order, typed and bounded as the nodeflow inputs they become."""
    try:
        from nodeflow.comfy.mapping import BY_TYPE, SEED_CONTROL
    except ImportError:
        return {}
    out: dict[str, Any] = {}
    for comfy_type, nmap in BY_TYPE.items():
        found = {key: server.registry.get(p.type) for key, p in nmap.parts.items()}
        classes = {key: cls for key, cls in found.items() if cls is not None}
        if len(classes) != len(found):
            continue
        specs: dict[str, Any] = {}  # ComfyUI input name -> the nodeflow input it feeds
        for key, part in nmap.parts.items():
            inputs = classes[key].input_map
            for socket, comfy_name in part.links.items():  # nodeflow socket <- ComfyUI input
                specs.setdefault(comfy_name, inputs.get(socket))
            for socket, widget in part.values.items():
                specs.setdefault(widget.name, inputs.get(socket))
        required: dict[str, Any] = {}
        for name in (*[n for p in nmap.parts.values() for n in p.links.values()], *nmap.widgets):
            if name == SEED_CONTROL or name in required or name.startswith("@"):
                continue
            spec = specs.get(name)
            required[name] = _input_entry(spec) if spec is not None else ["*", {}]
        outputs = list(nmap.outputs)
        output_types = []
        for key, socket in outputs:
            out_spec = classes[key].output_map.get(socket)
            output_types.append(str(getattr(out_spec.type, "name", out_spec.type)) if out_spec else "*")
        out[comfy_type] = {
            "input": {"required": required, "optional": {}},
            "input_order": {"required": list(required), "optional": []},
            "output": output_types, "output_is_list": [False] * len(outputs),
            "output_name": [socket for _part, socket in outputs],
            "name": comfy_type, "display_name": comfy_type,
            "description": f"Runs as nodeflow {', '.join(p.type for p in nmap.parts.values())}.",
            "python_module": "nodeflow.comfy", "category": "comfyui",
            "output_node": any(getattr(cls, "output_node", False) for cls in classes.values()),
        }
    return out


# --- the websocket ----------------------------------------------------------------------------------

class ComfySocket:
    """One ``/ws`` connection: retells the server's events as ComfyUI messages."""

    def __init__(self, server: Server, ws: WebSocket, sid: str) -> None:
        self.server = server
        self.ws = ws
        self.sid = sid
        self.executed: dict[str, list[str]] = {}
        self.types: dict[str, dict[str, str]] = {}
        self.failed: set[str] = set()

    async def send(self, type_: str, data: dict[str, Any]) -> None:
        await self.ws.send_text(json.dumps({"type": type_, "data": data}))

    async def status(self, with_sid: bool = False) -> None:
        data: dict[str, Any] = {"status": _queue_info(self.server)}
        if with_sid:
            data["sid"] = self.sid
        await self.send("status", data)

    async def serve(self) -> None:
        listener = self.server.hub.subscribe()
        try:
            await self.status(with_sid=True)
            watcher = asyncio.create_task(listener.watch(self.ws))
            try:
                while True:
                    event = await listener.get()
                    if event is None:
                        if listener.overflowed:
                            await self.ws.close(code=1013)
                        return
                    await self.relay(event)
            finally:
                watcher.cancel()
        except (WebSocketDisconnect, RuntimeError):
            pass
        finally:
            listener.close()

    def _mine(self, job_id: str | None) -> bool:
        if job_id is None:
            return False
        client = self.server.hub.client_of(job_id)
        return client is None or client == self.sid

    async def relay(self, event: StoredEvent) -> None:
        job_id = event.job_id
        t, d = event.type, event.data
        if t in ("queued", "requeued", "cancelled") and not self._mine(job_id):
            await self.status()
            return
        if not self._mine(job_id):
            return
        assert job_id is not None
        pid = job_id
        stamp = int(event.time * 1000)
        job_ids = self._job_ids(job_id)

        def cid(node: str) -> str:
            return job_ids.get(node, node)

        if t == "queued":
            await self.status()
        elif t == "started":
            self.executed[pid] = []
            self.failed.discard(pid)
            await self.status()
            await self.send("execution_start", {"prompt_id": pid, "timestamp": stamp})
        elif t == "run_started":
            await self.send("execution_cached", {"nodes": [cid(n) for n in d.get("cached", [])],
                                                 "prompt_id": pid, "timestamp": stamp})
        elif t == "node_started":
            self.types.setdefault(pid, {})[d["node"]] = d.get("type", "")
            await self.send("executing", {"node": cid(d["node"]), "display_node": cid(d["node"]),
                                          "prompt_id": pid})
        elif t == "node_progress" and d.get("total"):
            await self.send("progress", {"value": d["done"], "max": d["total"], "prompt_id": pid,
                                         "node": cid(d["node"])})
        elif t == "preview":
            header = struct.pack(">II", PREVIEW_IMAGE, JPEG if d.get("mime") == "image/jpeg" else PNG)
            await self.ws.send_bytes(header + d["bytes"])
        elif t == "node_finished":
            self.executed.setdefault(pid, []).append(cid(d["node"]))
            images = _image_entries(pid, d.get("files", []))
            if images:
                await self.send("executed", {"node": cid(d["node"]), "display_node": cid(d["node"]),
                                             "output": {"images": images}, "prompt_id": pid})
        elif t == "node_failed":
            self.failed.add(pid)
            error = d.get("error", {})
            await self.send("execution_error", {
                "prompt_id": pid, "node_id": cid(d["node"]), "node_type": d.get("type", ""),
                "executed": self.executed.get(pid, []), "exception_message": error.get("message", ""),
                "exception_type": "nodeflow.NodeFailed", "traceback": [], "current_inputs": {},
                "current_outputs": {}, "timestamp": stamp})
        elif t in ("finished", "failed", "cancelled"):
            if t == "finished":
                await self.send("execution_success", {"prompt_id": pid, "timestamp": stamp})
            elif t == "failed" and pid not in self.failed:
                error = d.get("error", {})
                first = (error.get("problems") or [{}])[0]
                await self.send("execution_error", {
                    "prompt_id": pid, "node_id": cid(first["node"]) if first.get("node") else None,
                    "node_type": first.get("node_type"), "executed": self.executed.get(pid, []),
                    "exception_message": error.get("message", ""),
                    "exception_type": f"nodeflow.{error.get('type', 'error')}", "traceback": [],
                    "current_inputs": {}, "current_outputs": {}, "timestamp": stamp})
            elif t == "cancelled":
                await self.send("execution_interrupted", {
                    "prompt_id": pid, "node_id": None, "node_type": None,
                    "executed": self.executed.get(pid, []), "timestamp": stamp})
            if t != "cancelled" or d.get("while") != "queued":
                await self.send("executing", {"node": None, "prompt_id": pid})
            self.executed.pop(pid, None)
            self.types.pop(pid, None)
            self.failed.discard(pid)
            await self.status()

    def _job_ids(self, job_id: str) -> dict[str, str]:
        cached = _IDS_CACHE.get(job_id)
        if cached is None:
            job = self.server.store.get(job_id)
            cached = _ids_of(job) if job is not None else {}
            if len(_IDS_CACHE) > 1000:
                _IDS_CACHE.clear()
            _IDS_CACHE[job_id] = cached
        return cached


_IDS_CACHE: dict[str, dict[str, str]] = {}
"""ComfyUI node ids of recent jobs (their graphs do not change)."""


