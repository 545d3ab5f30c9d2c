"""A folder plugin with its own kind of model file: colour styles, one JSON file each, in the
models folders' styles/ (or palettes/) subfolder. Used by the model-kind tests."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from nodeflow.api import IMAGE, INT, STRING, Input, ModelKind, Node, NodeInputError, Output, RunContext

NODEFLOW_API = ">=1.1,<2"

MODEL_KINDS = [ModelKind("styles", "Colour styles: a JSON file with a 'colour' [r, g, b].",
                         suffixes=(".json",), folders=("styles", "palettes"))]


def read_style(path: Path) -> list[float]:
    return [float(c) for c in json.loads(path.read_text())["colour"]]


class Fill(Node):
    """A square picture filled with a style's colour."""

    id = "styles.Fill"
    category = "styles"
    inputs = (Input("style", STRING, "The style file.", path_kind="styles"),
              Input("size", INT, "Side in pixels.", default=8, min=1, max=64))
    outputs = (Output("image", IMAGE, "The filled picture."),)

    def run(self, ctx: RunContext, style: str, size: int) -> Any:
        import numpy as np

        found = ctx.settings.resolve_path("styles", style)
        if found is None:
            raise NodeInputError("style", ctx.settings.describe_search("styles", style))
        colour = ctx.models.load(found, read_style, kind="styles")
        return np.full((1, size, size, 3), colour, dtype=np.float32)
