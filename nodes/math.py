"""Arithmetic on numbers."""

from __future__ import annotations

from typing import Any

from nodeflow.api import FLOAT, Input, Node, Output, RunContext


class Add(Node):
    """Add two numbers: a + b."""

    id = "math.Add"
    constant = True  # computed at validation, so what it passes on is checked
    category = "math"
    inputs = (
        Input("a", FLOAT, "First number.", default=0.0),
        Input("b", FLOAT, "Second number.", default=0.0),
    )
    outputs = (Output("sum", FLOAT, "a + b."),)

    def run(self, ctx: RunContext, a: float, b: float) -> Any:
        return a + b
