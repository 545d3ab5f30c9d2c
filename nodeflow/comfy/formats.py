"""Reading ComfyUI files: the UI workflow, the API prompt and the PNGs ComfyUI's SaveImage writes.

Every format is read into one neutral form, `Workflow`: nodes with their ComfyUI type,
widget values, incoming links by input name, mode and layout. The kind of file is told
by its content, never by its name.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from nodeflow.errors import GraphFileError, Location, Problem

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

MODE_ALWAYS, MODE_MUTED, MODE_BYPASS = 0, 2, 4
"""ComfyUI's node modes: run, never (muted: left out of the prompt), bypass (inputs pass through)."""

Kind = Literal["nodeflow", "ui", "api"]


@dataclass
class ComfyNode:
    """One ComfyUI node, whichever format it came from."""

    id: str
    type: str
    title: str | None = None
    mode: int = MODE_ALWAYS
    widgets: list[Any] | dict[str, Any] = field(default_factory=list)
    """UI format: ``widgets_values`` in widget order; API format: literal inputs by name."""
    links: dict[str, tuple[str, int]] = field(default_factory=dict)
    """Connected inputs: input name -> (source node id, source output slot)."""
    input_types: dict[str, str] = field(default_factory=dict)
    """UI format: the ComfyUI type of each input socket (for bypass), in slot order."""
    output_types: list[str] = field(default_factory=list)
    pos: tuple[float, float] | None = None
    size: tuple[float, float] | None = None
    color: str | None = None

    def location(self, file: str, socket: str | None = None) -> Location:
        """Where the node is, as ComfyUI shows it: its id, with its type and title."""
        kind = f"ComfyUI {self.type}" + (f" '{self.title}'" if self.title and self.title != self.type else "")
        return Location(file, self.id, kind, socket)

    @property
    def label(self) -> str:
        """How a user finds the node in ComfyUI: its id, type and title."""
        text = f"#{self.id} {self.type}"
        return f"{text} '{self.title}'" if self.title and self.title != self.type else text


@dataclass
class Workflow:
    """A ComfyUI workflow in neutral form, with what is editor-only (groups) kept apart."""

    kind: Kind
    file: str
    nodes: dict[str, ComfyNode] = field(default_factory=dict)
    groups: list[dict[str, Any]] = field(default_factory=list)
    subgraphs: dict[str, str] = field(default_factory=dict)
    """Subgraph definition id -> its name (nodes whose type is such an id are subgraphs)."""


def detect(data: Any) -> Kind | None:
    """Which kind of document ``data`` (parsed JSON) is, or None if none nodeflow reads."""
    if not isinstance(data, dict):
        return None
    if data.get("format") == "nodeflow.graph":
        return "nodeflow"
    if isinstance(data.get("nodes"), list) and ("links" in data or "last_node_id" in data):
        return "ui"
    if _api_prompt(data) is not None:
        return "api"
    return None


def _api_prompt(data: dict[str, Any]) -> dict[str, Any] | None:
    # A /prompt request body wraps the prompt: {"prompt": {...}, "client_id": ...}.
    if isinstance(data.get("prompt"), dict) and data["prompt"] and _api_prompt(data["prompt"]) is not None:
        return data["prompt"]
    # Any node with a class_type makes it a prompt; parse_api reports entries that are broken.
    if "format" not in data and any(isinstance(v, dict) and "class_type" in v for v in data.values()):
        return data
    return None


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def read_document(path: Path) -> tuple[Kind, Any, str]:
    """Read a file and tell what it holds: (kind, parsed JSON, text).

    A PNG yields its nodeflow graph if it has one, else ComfyUI's ``workflow`` (UI format,
    which keeps the layout), else its ``prompt`` (API format). Text that is not JSON, or JSON
    that is none of the three, is returned as kind "nodeflow" so the graph reader reports it
    exactly as for any graph file. Files are read with the graph reader's limits.
    """
    kind, data, text, _duplicates = read_document_once(path)
    return kind, data, text


def read_document_once(path: Path) -> tuple[Kind, Any, str, list[Problem] | None]:
    """`read_document`, and the keys given twice in one object, found by the same decoding
    (`nodeflow.graph.decode_graph_json`), so a nodeflow graph is not decoded a second time
    (`nodeflow.graph.parse_decoded_graph` takes it from here). None instead of that list when
    the text was not decoded that way (not JSON, or a PNG's text): parse the text then."""
    from nodeflow.graph import decode_graph_json, read_graph_text

    if _is_png(path):
        return (*_read_png(path), None)
    text = read_graph_text(path)
    try:
        data, duplicates = decode_graph_json(text, str(path))
    except (ValueError, RecursionError):  # also numbers too long to read: the graph reader says where
        return "nodeflow", None, text, None
    return detect(data) or "nodeflow", data, text, duplicates


def _is_png(path: Path) -> bool:
    # A file that cannot be read, or is not a regular file, is not sniffed (a FIFO would block):
    # the graph reader then says why it cannot be read.
    from nodeflow.files import read_head

    return read_head(path, 8) == PNG_SIGNATURE


def _loads(text: str, file: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise GraphFileError(f"malformed JSON: {exc.msg}",
                             location=Location(file=file, line=exc.lineno, column=exc.colno)) from None
    except RecursionError:
        raise GraphFileError("malformed JSON: nested too deeply", location=Location(file=file)) from None
    except ValueError as exc:  # e.g. a number of thousands of digits
        raise GraphFileError(f"malformed JSON: {exc}", location=Location(file=file)) from None


def _read_png(path: Path) -> tuple[Kind, Any, str]:
    from nodeflow.files import read_bounded
    from nodeflow.provenance import GRAPH_KEY, png_text

    file = str(path)
    where = Location(file=file)
    try:
        data = read_bounded(path, 1024**3, "PNG")
    except GraphFileError:
        raise
    except OSError as exc:
        message = getattr(exc, "message", None) or exc.strerror or str(exc)
        raise GraphFileError(f"cannot read the PNG: {message}", location=where) from None
    for key, want in ((GRAPH_KEY, "nodeflow"), ("workflow", "ui"), ("prompt", "api")):
        try:
            text = png_text(data, key)
        except ValueError as exc:
            raise GraphFileError(f"cannot read the PNG: {exc}", location=where) from None
        if not text:
            continue
        if want == "nodeflow":
            return "nodeflow", None, text
        parsed = _loads(text, f"{file} (PNG text '{key}')")
        if detect(parsed) == want:
            return want, parsed, text
    raise GraphFileError("this PNG carries no workflow: no nodeflow graph and no ComfyUI 'workflow' or "
                         "'prompt' metadata", location=where,
                         hint="Only PNGs saved by nodeflow's image.Save or ComfyUI's SaveImage embed "
                              "the graph that made them (image hosts often strip it).")


# --- UI format ----------------------------------------------------------------------------


def _node_id(value: Any) -> str:
    return str(value)


def _pair(value: Any) -> tuple[float, float] | None:
    # Old files store pos/size as {"0": x, "1": y}.
    if isinstance(value, dict):
        value = [value.get("0"), value.get("1")]
    if isinstance(value, list | tuple) and len(value) >= 2 \
            and all(isinstance(v, int | float) and not isinstance(v, bool) for v in value[:2]):
        return float(value[0]), float(value[1])
    return None


def _link_table(data: dict[str, Any], file: str, problems: list[Problem]) -> dict[int, tuple[str, int, str, int]]:
    """Link id -> (origin node, origin slot, target node, target slot), from either link style."""
    table: dict[int, tuple[str, int, str, int]] = {}
    raw = data.get("links") if data.get("links") is not None else []
    if not isinstance(raw, list):
        problems.append(Problem("comfy_format", "'links' must be a list", Location(file)))
        return table
    for entry in raw:
        if isinstance(entry, list) and len(entry) >= 5:
            link_id, origin, origin_slot, target, target_slot = entry[:5]
        elif isinstance(entry, dict):  # newer object-style links
            link_id, origin, origin_slot = entry.get("id"), entry.get("origin_id"), entry.get("origin_slot")
            target, target_slot = entry.get("target_id"), entry.get("target_slot")
        else:
            problems.append(Problem("comfy_format", f"a link must be [id, from, slot, to, slot, type] "
                                    f"or an object, got {str(entry)[:60]}", Location(file)))
            continue
        if not isinstance(link_id, int) or not isinstance(origin_slot, int) or not isinstance(target_slot, int):
            problems.append(Problem("comfy_format", f"link {link_id!r} has no whole-number id or slots",
                                    Location(file)))
            continue
        table[link_id] = (_node_id(origin), origin_slot, _node_id(target), target_slot)
    return table


def parse_ui(data: dict[str, Any], file: str) -> tuple[Workflow, list[Problem]]:
    """A UI-format workflow ("Save" in ComfyUI) in neutral form, and its structural problems."""
    problems: list[Problem] = []
    wf = Workflow("ui", file)
    for sub in _list(_dict(data.get("definitions")).get("subgraphs")):
        if isinstance(sub, dict) and isinstance(sub.get("id"), str):
            wf.subgraphs[sub["id"]] = str(sub.get("name") or sub["id"])
    links = _link_table(data, file, problems)
    raw_nodes = [n for n in data["nodes"] if isinstance(n, dict)]
    if len(raw_nodes) != len(data["nodes"]):
        problems.append(Problem("comfy_format", "every entry of 'nodes' must be an object", Location(file)))
    for entry in raw_nodes:
        node_id = _node_id(entry.get("id"))
        type_name = entry.get("type")
        if not isinstance(type_name, str) or not type_name:
            problems.append(Problem("comfy_format", "the node has no 'type'", Location(file, node_id)))
            continue
        if node_id in wf.nodes:
            problems.append(Problem("comfy_format", f"two nodes have the id {node_id}", Location(file, node_id)))
            continue
        widgets = entry.get("widgets_values")
        mode = entry.get("mode", MODE_ALWAYS)
        node = ComfyNode(
            id=node_id, type=type_name,
            title=entry.get("title") if isinstance(entry.get("title"), str) else None,
            mode=mode if isinstance(mode, int) else MODE_ALWAYS,
            widgets=widgets if isinstance(widgets, list | dict) else [],
            pos=_pair(entry.get("pos")), size=_pair(entry.get("size")),
            color=entry.get("bgcolor") or entry.get("color"))
        for slot, inp in enumerate(_list(entry.get("inputs"))):
            if not isinstance(inp, dict):
                continue
            widget = inp.get("widget")
            name = widget.get("name") if isinstance(widget, dict) and widget.get("name") else inp.get("name")
            name = str(name if name is not None else slot)
            node.input_types[name] = str(inp.get("type", ""))
            link_id = inp.get("link")
            if link_id is None:
                continue
            link = links.get(link_id) if isinstance(link_id, int) else None
            if link is None:
                problems.append(Problem("comfy_link", f"input '{name}' refers to link {link_id}, which is "
                                        "not in the workflow's links", node.location(file, name)))
                continue
            node.links[name] = (link[0], link[1])
        node.output_types = [str(o.get("type", "")) if isinstance(o, dict) else "" for o in _list(entry.get("outputs"))]
        wf.nodes[node_id] = node
    for node in wf.nodes.values():
        for name, (src, _slot) in list(node.links.items()):
            if src not in wf.nodes:
                problems.append(Problem("comfy_link", f"input '{name}' is linked from node {src}, which is "
                                        "not in the workflow", node.location(file, name)))
                del node.links[name]
    for group in _list(data.get("groups")):
        if isinstance(group, dict):
            box = group.get("bounding")
            if isinstance(box, list) and len(box) >= 4 \
                    and all(isinstance(v, int | float) and not isinstance(v, bool) for v in box[:4]):
                wf.groups.append({"title": str(group.get("title") or "Group"),
                                  "rect": [float(v) for v in box[:4]],
                                  **({"color": group["color"]} if isinstance(group.get("color"), str) else {})})
    return wf, problems


# --- API format ---------------------------------------------------------------------------


def parse_api(data: dict[str, Any], file: str) -> tuple[Workflow, list[Problem]]:
    """An API-format prompt ("Export (API)", or a /prompt request body) in neutral form."""
    problems: list[Problem] = []
    prompt = _api_prompt(data) or {}
    wf = Workflow("api", file)
    for raw_id, entry in prompt.items():
        node_id = _node_id(raw_id)
        if not isinstance(entry, dict) or not isinstance(entry.get("class_type"), str) or not entry["class_type"]:
            problems.append(Problem("comfy_format", "a prompt entry must be an object with a 'class_type' "
                                    "(the node type) and 'inputs'", Location(file, node_id)))
            continue
        meta = entry.get("_meta")
        title = meta.get("title") if isinstance(meta, dict) and isinstance(meta.get("title"), str) else None
        node = ComfyNode(id=node_id, type=entry["class_type"], title=title, widgets={})
        inputs = entry.get("inputs") or {}
        if not isinstance(inputs, dict):
            problems.append(Problem("comfy_format", "'inputs' must be an object", node.location(file)))
            inputs = {}
        for name, value in inputs.items():
            # A link is [source id, output slot]; anything else is a literal value.
            if isinstance(value, list) and len(value) == 2 and isinstance(value[0], str | int) \
                    and not isinstance(value[0], bool) and isinstance(value[1], int) and not isinstance(value[1], bool):
                node.links[name] = (_node_id(value[0]), value[1])
            else:
                assert isinstance(node.widgets, dict)
                node.widgets[name] = value
        wf.nodes[node_id] = node
    for node in wf.nodes.values():
        for name, (src, _slot) in list(node.links.items()):
            if src not in wf.nodes:
                problems.append(Problem("comfy_link", f"input '{name}' is linked from node {src}, which is "
                                        "not in the prompt", node.location(file, name)))
                del node.links[name]
    return wf, problems


def parse_workflow(kind: Kind, data: Any, file: str) -> tuple[Workflow, list[Problem]]:
    """The neutral form of a UI workflow or API prompt."""
    if kind == "ui":
        return parse_ui(data, file)
    return parse_api(data, file)
