"""Node types the server tests run: slow steps, a node that raises, a picture with previews,
a model file loaded through the model manager."""

from __future__ import annotations

import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from nodeflow.api import (
    FLOAT,
    IMAGE,
    INT,
    STRING,
    EstimateContext,
    Input,
    MemoryEstimate,
    Node,
    Output,
    RunContext,
    ValueEstimate,
)


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


class Weights(Node):
    """Load a ``.safetensors`` file from the models' ``checkpoints`` folder through the model
    manager, compute with it on the device, wait ``seconds``, and give the sum of its numbers
    plus ``value``. Its memory estimate is the file's size, so the memory plan knows it."""

    id = "servertest.Weights"
    category = "test"
    uses_accelerator = True
    output_node = True  # runs by default (as ComfyUI prompts ask)
    inputs = (Input("path", STRING, "A .safetensors file in the checkpoints folder.",
                    path_kind="checkpoints"),
              Input("value", FLOAT, "Added to the sum.", default=0.0),
              Input("seconds", FLOAT, "How long to wait once loaded.", default=0.0, min=0.0, max=60.0))
    outputs = (Output("value", FLOAT, "The sum."),)

    @classmethod
    def estimate_memory(cls, values: Mapping[str, Any], upstream: Mapping[str, ValueEstimate],
                        ctx: EstimateContext) -> MemoryEstimate | None:
        found = ctx.settings.resolve_path("checkpoints", values.get("path", ""))
        return MemoryEstimate({found.name: found.stat().st_size}) if found is not None else None

    def run(self, ctx: RunContext, path: str, value: float, seconds: float) -> Any:
        found = ctx.settings.resolve_path("checkpoints", path)
        assert found is not None  # validation found it

        def load(file: Path) -> Any:
            import torch
            from safetensors.torch import load_file

            return torch.nn.ParameterDict({k.replace(".", "_"): torch.nn.Parameter(v, requires_grad=False)
                                           for k, v in load_file(str(file)).items()})

        model = ctx.models.load(found, load, kind="checkpoint")
        with ctx.models.use(model):
            total = float(sum(float(p.sum()) for p in model.values()))
        time.sleep(seconds)
        return total + value
