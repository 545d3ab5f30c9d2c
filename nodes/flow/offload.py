"""Placing a flow model on the compute device: whole, or one transformer block at a time.

Block offload keeps the transformer's small parts (embeddings, final layer) resident and
brings each block to the device just before it runs, through the model manager like any
model: a block is placed with ``use`` when its forward starts and released when it ends, so
the manager offloads the least recently used blocks whenever the next one needs room. On a
GPU smaller than the model this trades speed (each step moves the blocks that do not fit)
for fitting at all: Flux dev in bf16 keeps 0.13 GB of resident parts and plans for two of its
largest blocks (0.68 GB each) besides the activations, where the whole model needs 23.8 GB.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from typing import Any

from nodeflow.api import RunContext
from nodeflow.nodes.flow.types import FlowModel

BLOCK_LISTS = ("transformer_blocks", "single_transformer_blocks")


def blocks_of(transformer: Any) -> list[Any]:
    """The transformer blocks, in the order they run."""
    return [block for name in BLOCK_LISTS for block in getattr(transformer, name, ())]


def resident_parts(transformer: Any) -> list[Any]:
    """The transformer's modules outside its blocks (embeddings, norms, final layer)."""
    return [module for name, module in transformer.named_children() if name not in BLOCK_LISTS]


@contextmanager
def placed(ctx: RunContext, model: FlowModel, others: list[Any]) -> Iterator[Any]:
    """The transformer and ``others`` (ControlNets) on the node's device for the block: the whole
    transformer, or with block offload its resident parts, each block placed while it runs."""
    if model.offload != "blocks":
        with ctx.models.use(model.transformer, *others) as device:
            yield device
        return
    handles = []
    stack = ExitStack()
    pending: dict[int, Any] = {}

    def before(module: Any, _args: Any) -> None:
        cm = ctx.models.use(module)
        cm.__enter__()
        pending[id(module)] = cm

    def after(module: Any, _args: Any, _out: Any) -> None:
        cm = pending.pop(id(module), None)
        if cm is not None:
            cm.__exit__(None, None, None)

    try:
        for block in blocks_of(model.transformer):
            handles.append(block.register_forward_pre_hook(before))
            handles.append(block.register_forward_hook(after))
        device = stack.enter_context(ctx.models.use(*resident_parts(model.transformer), *others))
        yield device
    finally:
        for cm in list(pending.values()):  # a block interrupted by an error or a cancel
            cm.__exit__(None, None, None)
        stack.close()
        for handle in handles:
            handle.remove()
