"""The published JSON Schema of graph files (``nodeflow schema``), generated from the format's
declaration in `nodeflow.graph_format`."""

from __future__ import annotations

from typing import Any

from pydantic.json_schema import GenerateJsonSchema, JsonSchemaValue
from pydantic_core import CoreSchema, core_schema

from nodeflow.graph_format import SCHEMA_ID, document_adapter


class _GraphSchema(GenerateJsonSchema):
    """JSON Schema output with the published file's conventions."""

    def field_title_should_be_set(self, schema: Any) -> bool:
        return False  # descriptions say what a field is; generated titles only repeat its name

    def typed_dict_schema(self, schema: core_schema.TypedDictSchema) -> JsonSchemaValue:
        out = super().typed_dict_schema(schema)
        out.pop("title", None)
        return out

    def dict_schema(self, schema: core_schema.DictSchema) -> JsonSchemaValue:
        # A key pattern becomes "patternProperties", which lets keys that do not match through;
        # "propertyNames" refuses them, as the reader does.
        out = super().dict_schema(schema)
        patterns = out.pop("patternProperties", None)
        if patterns:
            ((pattern, values),) = patterns.items()
            out["propertyNames"] = {"pattern": pattern}
            out["additionalProperties"] = values
        return out

    def generate(self, schema: CoreSchema, mode: Any = "validation") -> JsonSchemaValue:
        body = super().generate(schema, mode)
        return {"$schema": "https://json-schema.org/draft/2020-12/schema", "$id": SCHEMA_ID,
                "title": "nodeflow graph file", **body}


def graph_json_schema() -> dict[str, Any]:
    """The JSON Schema of graph files (format version `VERSION`), generated from the declaration."""
    return document_adapter().json_schema(schema_generator=_GraphSchema)
