"""Node types the server tests run: slow steps, a node that raises, a picture with previews."""

from __future__ import annotations

import time
from typing import Any

from nodeflow.api import FLOAT, IMAGE, INT, Input, Node, Output, RunContext


class Wait(Node):
    """Wait ``seconds`` in ``steps`` steps (each a progress report and a cancellation point),
    then give ``value`` back."""

    id = "servertest.Wait"
    category = "test"
    inputs = (Input("value", FLOAT, "Returned as is.", default=0.0),
              Input("seconds", FLOAT, "How long to wait.", default=0.1, min=0.0, max=60.0),
              Input("steps", INT, "Progress reports.", default=4, min=1, max=1000))
    outputs = (Output("value", FLOAT, "The value."),)

    def run(self, ctx: RunContext, value: float, seconds: float, steps: int) -> Any:
        for i in range(steps):
            time.sleep(seconds / steps)
            ctx.progress(i + 1, steps)
        return value


class Raise(Node):
    """Always raises a plain Python error (a bug in a node)."""

    id = "servertest.Raise"
    category = "test"
    inputs = (Input("value", FLOAT, "Ignored.", default=0.0),)
    outputs = (Output("value", FLOAT, "Never."),)

    def run(self, ctx: RunContext, value: float) -> Any:
        raise RuntimeError("this node always fails")


class Swatch(Node):
    """A picture of one grey level, with a preview of it on the way."""

    id = "servertest.Swatch"
    category = "test"
    inputs = (Input("level", FLOAT, "Grey level, 0 to 1.", default=0.5, min=0.0, max=1.0),
              Input("width", INT, "Width.", default=16, min=1, max=4096),
              Input("height", INT, "Height.", default=16, min=1, max=4096))
    outputs = (Output("image", IMAGE, "The picture."),)

    def run(self, ctx: RunContext, level: float, width: int, height: int) -> Any:
        import numpy as np

        image = np.full((1, height, width, 3), level, dtype=np.float32)
        ctx.preview(image)
        ctx.progress(1, 1)
        return image
