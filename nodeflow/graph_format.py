"""The graph file format (``nodeflow.graph``), declared once.

The typed declarations below are the format. ``nodeflow schema`` publishes the JSON Schema
generated from them (`nodeflow.schema`), and the graph reader (`nodeflow.graph.parse_graph_data`) checks every
file against the same declarations, then words each problem for the user, located by node
and socket. A rule changed here changes both.

Patterns are written as JSON Schema (ECMA-262) regular expressions, where ``$`` is the end
of the text; `python_pattern` gives the same rule for Python's ``re``, where ``$`` would also
match before a final newline.
"""

from __future__ import annotations

import re
from functools import cache
from typing import Annotated, Any, Literal, NotRequired

from pydantic import ConfigDict, Field, TypeAdapter, ValidationError, with_config
from pydantic_core import ErrorDetails
from typing_extensions import TypedDict

FORMAT = "nodeflow.graph"
VERSION = 1
"""The current format version; older files are migrated on load (`nodeflow.graph.MIGRATIONS`)."""
SCHEMA_ID = f"https://nodeflow.dev/schema/graph-v{VERSION}.json"

NODE_ID_PATTERN = r"^[A-Za-z0-9_-]+$"
SOCKET_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]*$"
TYPE_ID_PATTERN = r"^[A-Za-z][A-Za-z0-9_]*(\.[A-Za-z][A-Za-z0-9_]*)+$"
REF_PATTERN = NODE_ID_PATTERN[:-1] + r"\." + SOCKET_PATTERN[1:]
"""``node.socket``: a node id, a dot, a socket name."""


def python_pattern(pattern: str) -> re.Pattern[str]:
    """A declared pattern compiled for Python's ``re`` with the JSON Schema meaning of ``$``."""
    return re.compile(pattern[:-1] + r"\Z" if pattern.endswith("$") else pattern)


_STRICT = ConfigDict(extra="forbid", strict=True)

InputValue = str | int | float | bool | None
"""A literal input value: text, a number, true/false or null (values of other nodes come
through links)."""


@with_config(_STRICT)
class NodeEntry(TypedDict):
    """A node: its type and its literal input values."""

    type: Annotated[str, Field(pattern=TYPE_ID_PATTERN,
                               description="Node type id, 'pack.Name'.")]
    version: NotRequired[Annotated[str, Field(description="Node type version when saved.")]]
    inputs: NotRequired[Annotated[dict[str, InputValue], Field(
        description="Literal input values by input name; links are in 'links'.")]]


LinkEntry = TypedDict("LinkEntry", {  # "from" is a Python keyword: no class syntax
    "from": Annotated[str, Field(pattern=REF_PATTERN, description="node.output")],
    "to": Annotated[str, Field(pattern=REF_PATTERN, description="node.input")],
})
LinkEntry.__doc__ = "A link from an output socket to an input socket (one link per input)."
LinkEntry.__pydantic_config__ = _STRICT  # type: ignore[attr-defined]


@with_config(_STRICT)
class GraphDocument(TypedDict):
    """A nodeflow graph file."""

    format: Literal["nodeflow.graph"]
    version: Annotated[int, Field(ge=1, le=VERSION,
                                  description="Format version; older versions are migrated on load.")]
    nodes: Annotated[dict[Annotated[str, Field(pattern=NODE_ID_PATTERN)], NodeEntry],
                     Field(description="Nodes by id.")]
    links: NotRequired[Annotated[list[LinkEntry], Field(
        description="Links, each from an output socket to an input socket.")]]
    editor: NotRequired[Annotated[dict[str, Any], Field(
        description="Layout for the editor; the runner ignores it. By node id: 'pos' [x, y], "
                    "'sockets' (literal inputs shown as sockets), 'seed_modes'; "
                    "'@frames': the groups drawn behind nodes.")]]
    meta: NotRequired[Annotated[dict[str, Any], Field(
        description="Free information: title, description, ...")]]


TOP_KEYS: tuple[str, ...] = tuple(GraphDocument.__annotations__)
NODE_KEYS: tuple[str, ...] = tuple(NodeEntry.__annotations__)
LINK_KEYS: tuple[str, ...] = tuple(LinkEntry.__annotations__)
assert FORMAT in str(GraphDocument.__annotations__["format"])  # the Literal spells FORMAT out


@cache
def document_adapter() -> TypeAdapter[GraphDocument]:
    """The validator of a whole graph document (built once, on first use)."""
    return TypeAdapter(GraphDocument)


def check_document(data: Any) -> tuple[GraphDocument | None, list[ErrorDetails]]:
    """The document as validated (None when it is not valid) and pydantic's list of errors."""
    try:
        return document_adapter().validate_python(data), []
    except ValidationError as exc:
        return None, exc.errors(include_url=False, include_context=False)
