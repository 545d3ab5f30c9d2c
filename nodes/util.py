"""Graph utilities."""

from __future__ import annotations

from typing import Any

from nodeflow.api import Input, Node, Output, RunContext, TypeParam

T = TypeParam("T")


class Reroute(Node):
    """Pass a value through unchanged, to tidy long links. Its output has its input's type."""

    id = "util.Reroute"
    constant = True  # computed at validation, so what it passes on is checked
    category = "util"
    inputs = (Input("value", T, "Any value."),)
    outputs = (Output("value", T, "The same value."),)

    def run(self, ctx: RunContext, value: Any) -> Any:
        return value
