"""Placing a flow model on the compute device for a sampler run."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from nodeflow.node import RunContext
from nodeflow.nodes.flow.types import FlowModel


@contextmanager
def placed(ctx: RunContext, model: FlowModel, others: list[Any]) -> Iterator[Any]:
    """The transformer and ``others`` (ControlNets) resident on the node's device for the block."""
    with ctx.models.use(model.transformer, *others) as device:
        yield device
