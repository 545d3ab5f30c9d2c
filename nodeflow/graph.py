"""The graph model and its JSON file format (``nodeflow.graph``, version 1).

The file is the single source of truth for the editor and the runner. Loading
and saving round-trips a file byte for byte (stable order, 2-space indent).
"""

from __future__ import annotations

import copy
import dataclasses
import itertools
import json
import os
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nodeflow.errors import GraphFileError, GraphInvalid, Location, Problem, RefusedInput, UsageError
from nodeflow.graph_format import (
    FORMAT,
    NODE_ID_PATTERN,
    NODE_KEYS,
    REF_PATTERN,
    SOCKET_PATTERN,
    TOP_KEYS,
    VERSION,
    ErrorDetails,
    GraphDocument,
    check_document,
    python_pattern,
)

# The file format is declared once, in nodeflow.graph_format; the reader checks files against it.
NODE_ID = python_pattern(NODE_ID_PATTERN)
SOCKET = python_pattern(SOCKET_PATTERN)
_REF = python_pattern(REF_PATTERN)

Migration = Callable[[dict[str, Any]], dict[str, Any]]
MIGRATIONS: dict[int, Migration] = {}
"""File migrations: MIGRATIONS[n] turns a version-n document into version n+1."""


@dataclass
class GraphNode:
    """A node placed in a graph: its id, its type id and its literal input values."""

    id: str
    type: str
    inputs: dict[str, Any] = field(default_factory=dict)
    version: str | None = None
    """The node type's version when the file was saved (absent in hand-written files)."""

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"type": self.type}
        if self.version is not None:
            out["version"] = self.version
        out["inputs"] = self.inputs
        return out


@dataclass(frozen=True)
class Link:
    """A connection from an output socket to an input socket."""

    src: str
    src_socket: str
    dst: str
    dst_socket: str

    @property
    def source(self) -> str:
        return f"{self.src}.{self.src_socket}"

    @property
    def target(self) -> str:
        return f"{self.dst}.{self.dst_socket}"

    def to_json(self) -> dict[str, str]:
        return {"from": self.source, "to": self.target}


def split_ref(ref: str) -> tuple[str, str]:
    """Split ``node.socket``; raise ValueError when it is not that shape."""
    node, dot, socket = ref.partition(".")
    if not dot or not NODE_ID.match(node) or not SOCKET.match(socket):
        raise ValueError(f"{ref!r} is not of the form node.socket")
    return node, socket


GraphListener = Callable[[str, dict[str, Any]], None]

_GRAPH_UIDS = itertools.count(1)


class Graph:
    """A pipeline: nodes with literal inputs, links between sockets, layout and free meta data.

    Every change goes through a method, bumps ``revision`` and notifies listeners,
    so an editor can be a view onto this model. ``(uid, revision)`` names one state of
    one graph for the life of the process: ``uid`` is never reused (unlike ``id()``) and
    every copy gets a new one, so whatever is remembered per graph state cannot be served
    to another graph.
    """

    def __init__(self, *, source: Path | None = None) -> None:
        self.nodes: dict[str, GraphNode] = {}
        self._links: list[Link] = []
        self._into: dict[tuple[str, str], Link] = {}
        self.editor: dict[str, Any] = {}
        self.meta: dict[str, Any] = {}
        self.source = source
        self.uid = next(_GRAPH_UIDS)
        """Process-unique identity of this graph object; a copy gets its own."""
        self.revision = 0
        self._listeners: list[GraphListener] = []

    # --- queries -----------------------------------------------------------------
    @property
    def links(self) -> tuple[Link, ...]:
        """All links in file order (read-only: change them with connect/disconnect)."""
        return tuple(self._links)

    def link_into(self, node_id: str, socket: str) -> Link | None:
        """The link feeding an input, if any."""
        return self._into.get((node_id, socket))

    def __contains__(self, node_id: object) -> bool:
        return node_id in self.nodes

    def __len__(self) -> int:
        return len(self.nodes)

    def __iter__(self) -> Iterator[GraphNode]:
        return iter(self.nodes.values())

    def node(self, node_id: str) -> GraphNode:
        try:
            return self.nodes[node_id]
        except KeyError:
            raise UsageError(f"the graph has no node '{node_id}'",
                             location=Location(file=self.file_name)) from None

    @property
    def file_name(self) -> str | None:
        return str(self.source) if self.source else None

    def incoming(self) -> dict[str, dict[str, Link]]:
        """Links by target node and input socket (the last one wins if an input has several)."""
        index: dict[str, dict[str, Link]] = {}
        for link in self._links:
            index.setdefault(link.dst, {})[link.dst_socket] = link
        return index

    def _append_link(self, link: Link) -> None:
        self._links.append(link)
        self._into[(link.dst, link.dst_socket)] = link

    def _set_links(self, links: list[Link]) -> None:
        self._links = links
        self._into = {(ln.dst, ln.dst_socket): ln for ln in links}

    def new_id(self, base: str) -> str:
        """A fresh node id derived from ``base``."""
        stem = re.sub(r"[^A-Za-z0-9_-]", "_", base) or "node"
        if stem not in self.nodes:
            return stem
        n = 2
        while f"{stem}{n}" in self.nodes:
            n += 1
        return f"{stem}{n}"

    # --- edits -------------------------------------------------------------------
    def subscribe(self, listener: GraphListener) -> Callable[[], None]:
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener)

    def _changed(self, kind: str, **info: Any) -> None:
        self.revision += 1
        for listener in list(self._listeners):
            listener(kind, info)

    def add_node(self, type_id: str, node_id: str | None = None,
                 inputs: dict[str, Any] | None = None, version: str | None = None) -> GraphNode:
        node_id = node_id or self.new_id(type_id.rsplit(".", 1)[-1].lower())
        if not NODE_ID.match(node_id):
            raise UsageError(f"node id {node_id!r} may contain only letters, digits, '_' and '-'")
        if node_id in self.nodes:
            raise UsageError(f"the graph already has a node '{node_id}'")
        node = GraphNode(node_id, type_id, dict(inputs or {}), version)
        self.nodes[node_id] = node
        self._changed("node_added", node=node_id)
        return node

    def remove_node(self, node_id: str) -> None:
        self.node(node_id)
        del self.nodes[node_id]
        self._set_links([ln for ln in self._links if ln.src != node_id and ln.dst != node_id])
        self.editor.pop(node_id, None)
        self._changed("node_removed", node=node_id)

    def set_input(self, node_id: str, name: str, value: Any) -> None:
        self.node(node_id).inputs[name] = value
        self._changed("input_set", node=node_id, socket=name)

    def clear_input(self, node_id: str, name: str) -> None:
        self.node(node_id).inputs.pop(name, None)
        self._changed("input_cleared", node=node_id, socket=name)

    def connect(self, source: str, target: str) -> Link:
        """Link ``node.output`` to ``node.input``, replacing a link already into that input."""
        src, src_socket = split_ref(source)
        dst, dst_socket = split_ref(target)
        self.node(src)
        self.node(dst)
        if (dst, dst_socket) in self._into:
            self._set_links([ln for ln in self._links if (ln.dst, ln.dst_socket) != (dst, dst_socket)])
        link = Link(src, src_socket, dst, dst_socket)
        self._append_link(link)
        self._changed("linked", link=link)
        return link

    def disconnect(self, target: str) -> None:
        dst, dst_socket = split_ref(target)
        if (dst, dst_socket) in self._into:
            self._set_links([ln for ln in self._links if (ln.dst, ln.dst_socket) != (dst, dst_socket)])
        self._changed("unlinked", target=target)

    def set_layout(self, node_id: str, **layout: Any) -> None:
        self.editor.setdefault(node_id, {}).update(layout)
        self._changed("layout", node=node_id)

    # --- serialisation -----------------------------------------------------------
    def to_json(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "version": VERSION,
            "nodes": {n.id: n.to_json() for n in self.nodes.values()},
            "links": [ln.to_json() for ln in self._links],
            "editor": self.editor,
            "meta": self.meta,
        }

    def dumps(self) -> str:
        return dumps_json(self.to_json())

    def save(self, path: str | Path) -> Path:
        """Write the graph file atomically."""
        from nodeflow.files import atomic_write

        path = Path(path)
        atomic_write(path, self.dumps().encode("utf-8"))
        self.source = path
        return path

    def copy(self) -> Graph:
        """An independent copy with a new ``uid`` (nothing remembered for this graph applies
        to the copy until it is checked again)."""
        other = Graph(source=self.source)
        other.nodes = {k: GraphNode(v.id, v.type, copy.deepcopy(v.inputs), v.version)
                       for k, v in self.nodes.items()}
        other._set_links(list(self._links))
        other.editor = copy.deepcopy(self.editor)
        other.meta = copy.deepcopy(self.meta)
        return other

    @classmethod
    def loads(cls, text: str, file: str | Path | None = None) -> Graph:
        """Parse a graph file's text; raise `GraphInvalid` listing every structural problem."""
        graph, problems = parse_graph_text(text, file)
        if problems or graph is None:
            raise GraphInvalid(problems, file)
        return graph

    @classmethod
    def load(cls, path: str | Path) -> Graph:
        """Load a ``.json`` graph file, or the graph embedded in a PNG written by ``image.Save``."""
        return cls.loads(read_graph_text(Path(path)), path)


def dumps_json(data: Any) -> str:
    return json.dumps(data, indent=2, ensure_ascii=False) + "\n"


MAX_GRAPH_BYTES = 32 * 1024 * 1024
"""The largest graph file read (NODEFLOW_MAX_GRAPH_BYTES overrides it): a graph is text a
person could edit, and an unbounded read of a wrong file (``/dev/zero``) would never end."""


def max_graph_bytes() -> int:
    """The graph file size limit in bytes: NODEFLOW_MAX_GRAPH_BYTES, else `MAX_GRAPH_BYTES`."""
    env = os.environ.get("NODEFLOW_MAX_GRAPH_BYTES", "").strip()
    if env:
        from nodeflow.devices import parse_size

        return parse_size(env)
    return MAX_GRAPH_BYTES


def read_graph_text(path: Path) -> str:
    """The graph file's text, or the graph embedded in a PNG.

    Refuses what is not a regular file (a FIFO would hang) and files over the size limit.
    """
    from nodeflow.files import read_bounded

    where = Location(file=str(path))
    try:
        check_graph_path(path)
        with open(path, "rb") as fh:
            head = fh.read(8)
        if head == b"\x89PNG\r\n\x1a\n":
            from nodeflow.provenance import graph_from_png

            return graph_from_png(path)
        raw = read_bounded(path, max_graph_bytes(), "graph file",
                           hint="A graph file is JSON text; if this one really is that large, "
                                "raise NODEFLOW_MAX_GRAPH_BYTES (e.g. 100MB).")
    except GraphFileError:
        raise
    except RefusedInput as exc:
        raise GraphFileError(exc.message, location=where, hint=exc.hint) from None
    except FileNotFoundError:
        raise GraphFileError("file not found", location=where, hint="Check the path.") from None
    except OSError as exc:
        raise GraphFileError(f"cannot read the file: {exc.strerror or exc}", location=where) from None
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise GraphFileError(f"not a UTF-8 text file (byte {exc.start})", location=where,
                             hint="A graph file is JSON text, or a PNG written by image.Save.") from None


def check_graph_path(path: str | Path) -> None:
    """Raise GraphFileError unless ``path`` is a regular file: missing, a folder, a FIFO (whose
    reading would hang) or a device (``/dev/zero`` never ends) are refused before opening."""
    from nodeflow.files import regular_file_problem

    if os.path.isfile(path):
        return
    where = Location(file=str(path))
    if not os.path.exists(path):
        raise GraphFileError("file not found", location=where, hint="Check the path.")
    if os.path.isdir(path):
        raise GraphFileError(f"{path} is a folder, not a graph file", location=where)
    raise GraphFileError(regular_file_problem(Path(path)) or f"{path} is not a regular file",
                         location=where)


def parse_graph_text(text: str, file: str | Path | None = None) -> tuple[Graph | None, list[Problem]]:
    """Parse graph JSON leniently: the graph (minus broken parts) and every structural problem."""
    fname = str(file) if file is not None else None
    try:
        data, duplicates = decode_graph_json(text, fname)
    except json.JSONDecodeError as exc:
        loc = Location(file=fname, line=exc.lineno, column=exc.colno)
        return None, [Problem("json", f"malformed JSON: {exc.msg}", loc)]
    except RecursionError:
        return None, [Problem("json", "malformed JSON: nested too deeply", Location(file=fname))]
    except ValueError as exc:
        # Python refuses to convert integers of more than 4300 digits (a denial-of-service guard).
        return None, [Problem("json", f"malformed JSON: {json_value_error(exc)}", Location(file=fname))]
    return parse_decoded_graph(text, data, duplicates, fname)


def decode_graph_json(text: str, file: str | None = None) -> tuple[Any, list[Problem]]:
    """The JSON value of a graph file's text, and a problem for every key given twice in one
    object. Raises what ``json.loads`` raises on text that is not JSON."""
    duplicates: list[Problem] = []
    return json.loads(text, object_pairs_hook=_object_without_duplicates(duplicates, file)), duplicates


def parse_decoded_graph(text: str, data: Any, duplicates: list[Problem],
                        file: str | None = None) -> tuple[Graph | None, list[Problem]]:
    """`parse_graph_text` for text already decoded by `decode_graph_json` (``data``,
    ``duplicates``): the file is read once, whoever first needs to look inside it."""
    graph, problems, paths = _read_document(data, file)
    if problems and isinstance(data, dict) and data.get("version") == VERSION:  # not migrated
        problems = _with_lines(text, problems, paths)
    return graph, duplicates + problems


def _object_without_duplicates(found: list[Problem], file: str | None) -> Callable[[list[tuple[str, Any]]], dict[str, Any]]:
    """A json object_pairs_hook recording every key given twice in one object: JSON allows it
    and keeps the last, which would silently drop a node. Called for every object of the
    file, so the usual case (no key twice) is one dict() and a length comparison."""

    def hook(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        out = dict(pairs)  # keeps the last value of a key, at its first place, as json does
        if len(out) != len(pairs):
            _record_duplicates(pairs, found, file)
        return out

    return hook


def _record_duplicates(pairs: list[tuple[str, Any]], found: list[Problem], file: str | None) -> None:
    seen: set[str] = set()
    for key, value in pairs:
        if key in seen:
            looks_like_node = isinstance(value, dict) and "type" in value
            what = f"node id '{key}'" if looks_like_node else f"key '{key}'"
            found.append(Problem(
                "duplicate_key", f"{what} appears twice in one JSON object; JSON readers "
                f"would silently keep only the second. Rename or remove one",
                Location(file=file, node=key if looks_like_node else None)))
        seen.add(key)


def json_value_error(exc: ValueError) -> str:
    """What a ValueError from ``json.loads`` (other than a syntax error) means for a user."""
    if "digits" in str(exc):  # Python's guard against converting huge integers
        return "a number in the file has more than 4300 digits; no input takes a number that long"
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


def parse_graph_data(data: Any, file: str | None = None) -> tuple[Graph | None, list[Problem]]:
    """Check a graph document against the file format's declaration (`nodeflow.graph_format`)
    and build its graph: the graph (minus broken parts) and every problem, each located."""
    graph, problems, _paths = _read_document(data, file)
    return graph, problems


Path_ = tuple[str | int, ...]
"""Where a problem is inside the document: keys and list indexes from the top."""


def _read_document(data: Any, file: str | None) -> tuple[Graph | None, list[Problem], list[Path_]]:
    """`parse_graph_data`, and the place in the document of each problem."""
    problems: list[Problem] = []
    paths: list[Path_] = []

    def problem(code: str, message: str, node: str | None = None, socket: str | None = None,
                at: Path_ = ()) -> None:
        problems.append(Problem(code, message, Location(file=file, node=node, socket=socket)))
        paths.append(at)

    if not isinstance(data, dict):
        problem("format", f"a graph file holds a JSON object, not {_kind(data)}")
        return None, problems, paths
    if data.get("format") != FORMAT:
        problem("format", f"'format' must be \"{FORMAT}\" (got {_short(data.get('format'))}); "
                "this is not a nodeflow graph file", at=("format",) if "format" in data else ())
        return None, problems, paths
    version = data.get("version")
    if isinstance(version, float) and version.is_integer():
        version = int(version)  # JSON has one kind of number: 1.0 is the integer 1
        data = {**data, "version": version}
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        problem("version", f"'version' must be a whole number from 1 (got {_short(version)})",
                at=("version",) if "version" in data else ())
        return None, problems, paths
    if version > VERSION:
        problem("version", f"the file has format version {version}, newer than this nodeflow "
                f"reads ({VERSION}); update nodeflow to open it", at=("version",))
        return None, problems, paths
    try:
        data = migrate(data)
    except Exception as exc:  # noqa: BLE001 - a migration bug must still be a located problem
        problem("version", f"could not migrate the file from version {version}: {exc}")
        return None, problems, paths

    doc, errors = check_document(data)
    if doc is not None:  # the usual case: the declaration's validator checked everything
        return _graph_from_valid(doc, file), problems, paths
    broken = _word_errors(data, errors, problem)
    return _graph_from(data, file, broken), problems, paths


def _graph_from_valid(doc: GraphDocument, file: str | None) -> Graph:
    """The graph of a document the declaration accepted (its dicts are the validator's copies)."""
    graph = Graph(source=Path(file) if file else None)
    graph.nodes = {node_id: GraphNode(node_id, entry["type"], entry.get("inputs", {}), entry.get("version"))
                   for node_id, entry in doc["nodes"].items()}
    links = []
    for entry in doc.get("links", ()):
        src, _, src_socket = entry["from"].partition(".")
        dst, _, dst_socket = entry["to"].partition(".")
        links.append(Link(src, src_socket, dst, dst_socket))
    graph._set_links(links)
    graph.editor = doc.get("editor", {})
    graph.meta = doc.get("meta", {})
    return graph


@dataclass
class _Broken:
    """The parts of a document its problems leave out of the graph."""

    parts: set[str] = field(default_factory=set)  # top-level keys whose value is unusable
    nodes: set[str] = field(default_factory=set)
    inputs: set[str] = field(default_factory=set)  # nodes whose whole 'inputs' is unusable
    values: set[tuple[str, str]] = field(default_factory=set)  # (node, input)
    versions: set[str] = field(default_factory=set)
    links: set[int] = field(default_factory=set)


def _graph_from(data: Any, file: str | None, broken: _Broken) -> Graph:
    """The graph of a document with problems, leaving out the parts ``broken`` names."""
    graph = Graph(source=Path(file) if file else None)
    nodes = data.get("nodes") if "nodes" not in broken.parts else None
    for node_id, entry in (nodes or {}).items():
        if node_id in broken.nodes:
            continue
        inputs = entry.get("inputs", {}) if node_id not in broken.inputs else {}
        if broken.values:
            inputs = {k: v for k, v in inputs.items() if (node_id, k) not in broken.values}
        version = entry.get("version") if node_id not in broken.versions else None
        graph.nodes[node_id] = GraphNode(node_id, entry["type"], dict(inputs), version)
    links = data.get("links", ()) if "links" not in broken.parts else ()
    for i, entry in enumerate(links):
        if i not in broken.links:
            src, _, src_socket = entry["from"].partition(".")
            dst, _, dst_socket = entry["to"].partition(".")
            graph._append_link(Link(src, src_socket, dst, dst_socket))
    for key in ("editor", "meta"):
        setattr(graph, key, data.get(key, {}) if key not in broken.parts else {})
    return graph


def _word_errors(data: dict[str, Any], errors: list[ErrorDetails],
                 problem: Callable[..., None]) -> _Broken:
    """Report the declaration's errors as located problems a user can act on; say what they break."""
    broken = _Broken()
    bad_ids = {str(e["loc"][1]) for e in errors if e["loc"][0] == "nodes" and len(e["loc"]) == 3
               and e["loc"][2] == "[key]" and e["type"] == "string_pattern_mismatch"}
    for e in errors:
        loc, kind = e["loc"], e["type"]
        part = str(loc[0])  # a top-level key: links are numbered one level down
        if part in ("format", "version"):
            continue  # checked before migrating, against the current VERSION
        if len(loc) == 1:
            if kind == "extra_forbidden":
                problem("format", f"unknown top-level key '{part}' (allowed: {', '.join(TOP_KEYS)})",
                        at=(part,))
                continue
            broken.parts.add(part)
            value = data.get(part)
            at: Path_ = (part,) if part in data else ()
            if part == "nodes" and kind == "missing":
                problem("format", "the file has no 'nodes': add \"nodes\": {}, an object mapping "
                        "node ids to nodes")
            elif part == "nodes":
                problem("format", f"'nodes' must be an object mapping node ids to nodes, not {_kind(value)}",
                        at=at)
            elif part == "links":
                problem("format", f"'links' must be a list of {{\"from\": ..., \"to\": ...}}, not {_kind(value)}",
                        at=at)
            else:
                problem("format", f"'{part}' must be an object, not {_kind(value)}", at=at)
        elif part == "nodes":
            _word_node_error(data["nodes"], str(loc[1]), loc[2:], kind, bad_ids, broken, problem)
        elif part == "links" and int(loc[1]) not in broken.links:
            i = int(loc[1])
            broken.links.add(i)
            entry = data["links"][i]
            if not isinstance(entry, dict) or set(entry) != {"from", "to"} \
                    or not isinstance(entry["from"], str) or not isinstance(entry["to"], str):
                problem("link", f"link #{i + 1} must be {{\"from\": \"node.output\", "
                        f"\"to\": \"node.input\"}}, got {_short(entry)}", at=("links", i))
                continue
            bad = next((ref for ref in (entry["from"], entry["to"]) if not _REF.match(ref)), entry["from"])
            problem("link", f"link #{i + 1}: {bad!r} is not of the form node.socket", at=("links", i))
        elif part != "links":
            problem("format", f"{'.'.join(str(p) for p in loc)}: {e['msg']}", at=tuple(loc))
    return broken


def _word_node_error(nodes: dict[str, Any], node_id: str, where: tuple[Any, ...], kind: str,
                     bad_ids: set[str], broken: _Broken, problem: Callable[..., None]) -> None:
    """One declaration error inside node ``node_id``, worded and located on that node."""
    at: Path_ = ("nodes", node_id)
    if node_id in bad_ids:
        if where == ("[key]",):
            broken.nodes.add(node_id)
            problem("node_id", f"bad node id {node_id!r}: use only letters, digits, '_' and '-'",
                    node=node_id, at=at)
        return  # the rest of a node whose id is unusable is not worth reporting
    entry = nodes[node_id]
    if not where:
        broken.nodes.add(node_id)
        problem("format", f"a node must be an object with 'type' and 'inputs', not {_kind(entry)}",
                node=node_id, at=at)
    elif where[0] == "type":
        broken.nodes.add(node_id)
        type_id = entry.get("type")
        if not isinstance(type_id, str) or not type_id:
            problem("format", "the node has no 'type' (a node type id such as \"image.Load\")",
                    node=node_id, at=(*at, "type") if "type" in entry else at)
        else:
            problem("unknown_type", f"unknown node type {_short(type_id)}: a node type id has the "
                    "form 'pack.Name', such as \"image.Load\"", node=node_id, at=(*at, "type"))
    elif where[0] == "version" and len(where) == 1:
        broken.versions.add(node_id)
        problem("format", f"'version' of a node must be a string like \"1.0.0\", "
                f"not {_short(entry['version'])}", node=node_id, at=(*at, "version"))
    elif where[0] == "inputs" and len(where) == 1:
        broken.inputs.add(node_id)
        problem("format", f"'inputs' must be an object of literal values, not {_kind(entry['inputs'])}",
                node=node_id, at=(*at, "inputs"))
    elif where[0] == "inputs" and (node_id, where[1]) not in broken.values:
        name = where[1]
        broken.values.add((node_id, name))  # one problem per input, not one per allowed kind
        problem("format", f"the input holds {_kind(entry['inputs'][name])}; an input in the file "
                "holds one value (text, a number, true/false or null), and values of other nodes "
                "come through 'links'", node=node_id, socket=name, at=(*at, "inputs", name))
    elif kind == "extra_forbidden" and len(where) == 1:
        problem("format", f"unknown key '{where[0]}' in the node (allowed: {', '.join(NODE_KEYS)})",
                node=node_id, at=(*at, where[0]))


_SPACE = re.compile(r"[ \t\n\r]*")


def _after_space(text: str, pos: int) -> int:
    match = _SPACE.match(text, pos)
    return match.end() if match else pos


def _with_lines(text: str, problems: list[Problem], paths: list[Path_]) -> list[Problem]:
    """``problems`` with the line and column in ``text`` where each one's place starts."""
    try:
        found = _places_in_text(text, {at for at in paths if at})
    except Exception:  # noqa: BLE001 - a problem without a line is still a located problem
        return problems
    out = []
    for p, at in zip(problems, paths, strict=True):
        where = found.get(at)
        if where is not None:
            p = dataclasses.replace(p, location=dataclasses.replace(p.location, line=where[0],
                                                                   column=where[1]))
        out.append(p)
    return out


def _places_in_text(text: str, wanted: set[Path_]) -> dict[Path_, tuple[int, int]]:
    """Line and column (from 1) where each wanted member's key, or list item, starts in the
    JSON ``text``. One pass that walks only down the wanted paths (the first of duplicate
    keys counts) and lets the JSON decoder step over everything else."""
    prefixes = {at[:i] for at in wanted for i in range(1, len(at))}
    decoder = json.JSONDecoder()
    found: dict[Path_, int] = {}

    def value_at(pos: int, prefix: Path_) -> int:
        """Walk the value starting at ``pos``; return where it ends."""
        opening = text[pos]
        if (prefix and prefix not in prefixes) or opening not in "{[":
            return decoder.raw_decode(text, pos)[1]
        closing = "}" if opening == "{" else "]"
        pos = _after_space(text, pos + 1)
        i = 0
        while text[pos] != closing:
            start = pos
            if opening == "{":
                key, pos = decoder.raw_decode(text, pos)
                pos = _after_space(text, _after_space(text, pos) + 1)  # past the ':'
                at: Path_ = (*prefix, key)
            else:
                at = (*prefix, i)
            if at in wanted:
                found.setdefault(at, start)
            pos = _after_space(text, value_at(pos, at))
            if text[pos] == ",":
                pos = _after_space(text, pos + 1)
            i += 1
        return pos + 1

    value_at(_after_space(text, 0), ())
    return {at: (text.count("\n", 0, pos) + 1, pos - text.rfind("\n", 0, pos)) for at, pos in found.items()}


def migrate(data: dict[str, Any]) -> dict[str, Any]:
    """Bring an older graph document up to the current format version."""
    version = data["version"]
    while version < VERSION:
        step = MIGRATIONS.get(version)
        if step is None:
            raise GraphFileError(f"no migration from format version {version}")
        data = step(dict(data))
        version += 1
        data["version"] = version
    return data


def _kind(value: Any) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean",
            int: "a number", float: "a number", type(None): "null"}.get(type(value), type(value).__name__)


def _short(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=False) if _jsonable(value) else repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _jsonable(value: Any) -> bool:
    try:
        json.dumps(value)
        return True
    except (TypeError, ValueError, RecursionError):
        return False
