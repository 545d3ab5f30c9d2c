"""The published JSON Schema of graph files (``nodeflow schema``)."""

from __future__ import annotations

from typing import Any

from nodeflow.graph import FORMAT, VERSION

REF = r"^[A-Za-z0-9_-]+\.[A-Za-z_][A-Za-z0-9_]*$"


def graph_json_schema() -> dict[str, Any]:
    literal = {"type": ["string", "number", "integer", "boolean", "null"]}
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": f"https://nodeflow.dev/schema/graph-v{VERSION}.json",
        "title": "nodeflow graph file",
        "type": "object",
        "required": ["format", "version", "nodes"],
        "additionalProperties": False,
        "properties": {
            "format": {"const": FORMAT},
            "version": {"type": "integer", "minimum": 1, "maximum": VERSION,
                        "description": "Format version; older versions are migrated on load."},
            "nodes": {
                "type": "object",
                "description": "Nodes by id.",
                "propertyNames": {"pattern": "^[A-Za-z0-9_-]+$"},
                "additionalProperties": {
                    "type": "object",
                    "required": ["type"],
                    "additionalProperties": False,
                    "properties": {
                        "type": {"type": "string", "pattern": r"^[A-Za-z][A-Za-z0-9_]*(\.[A-Za-z][A-Za-z0-9_]*)+$",
                                 "description": "Node type id, 'pack.Name'."},
                        "version": {"type": "string", "description": "Node type version when saved."},
                        "inputs": {"type": "object", "additionalProperties": literal,
                                   "description": "Literal input values; links are in 'links'."},
                    },
                },
            },
            "links": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["from", "to"],
                    "additionalProperties": False,
                    "properties": {
                        "from": {"type": "string", "pattern": REF, "description": "node.output"},
                        "to": {"type": "string", "pattern": REF, "description": "node.input"},
                    },
                },
            },
            "editor": {"type": "object", "description": "Layout for the editor; the runner ignores it."},
            "meta": {"type": "object", "description": "Free information: title, description, ..."},
        },
    }
