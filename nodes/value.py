"""Constant values: numbers, text and seeds to feed other nodes' inputs."""

from __future__ import annotations

from typing import Any

from nodeflow.api import FLOAT, INT, STRING, Input, Node, Output, RunContext

SEED_MAX = 2**64 - 1


class Int(Node):
    """An integer constant."""

    id = "value.Int"
    constant = True  # computed at validation, so what it passes on is checked
    category = "value"
    inputs = (Input("value", INT, "The integer.", default=0),)
    outputs = (Output("value", INT, "The integer."),)

    def run(self, ctx: RunContext, value: int) -> Any:
        return value


class Float(Node):
    """A floating-point constant."""

    id = "value.Float"
    constant = True  # computed at validation, so what it passes on is checked
    category = "value"
    inputs = (Input("value", FLOAT, "The number.", default=0.0),)
    outputs = (Output("value", FLOAT, "The number."),)

    def run(self, ctx: RunContext, value: float) -> Any:
        return float(value)


class String(Node):
    """A text constant, such as a prompt shared by several nodes."""

    id = "value.String"
    constant = True  # computed at validation, so what it passes on is checked
    category = "value"
    inputs = (Input("value", STRING, "The text.", default="", multiline=True),)
    outputs = (Output("value", STRING, "The text."),)

    def run(self, ctx: RunContext, value: str) -> Any:
        return value


class Seed(Node):
    """A random seed. The editor offers randomize, fixed and increment; the file holds the number."""

    id = "value.Seed"
    constant = True  # computed at validation, so what it passes on is checked
    category = "value"
    inputs = (Input("seed", INT, "The seed.", default=0, min=0, max=SEED_MAX, seed=True),)
    outputs = (Output("seed", INT, "The seed."),)

    def run(self, ctx: RunContext, seed: int) -> Any:
        return seed
