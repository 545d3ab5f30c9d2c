"""The nodeflow plugin API: everything a node pack may import, and nothing else.

A plugin imports from this module only::

    from nodeflow.api import FLOAT, IMAGE, Input, Node, Output, RunContext

Anything not listed in ``__all__`` is private to nodeflow and may change
between releases. The API follows ``API_VERSION``: a plugin declares the range
it supports as ``NODEFLOW_API = ">=1.0,<2"`` in its pack module, and a plugin
whose range excludes the running nodeflow is skipped with a message.
"""

from __future__ import annotations

from nodeflow.errors import Cancelled, ModelError, NodeflowError, NodeInputError
from nodeflow.imaging import image_size, image_to_pils, mask_to_pils, pil_to_image, pil_to_mask
from nodeflow.models import ModelManager
from nodeflow.node import (
    REQUIRED,
    EstimateContext,
    FingerprintContext,
    Input,
    MemoryEstimate,
    Node,
    Output,
    RunContext,
    ValueEstimate,
)
from nodeflow.registry import API_VERSION
from nodeflow.settings import Settings
from nodeflow.types import (
                            BOOL,
                            FLOAT,
                            IMAGE,
                            INT,
                            MASK,
                            STRING,
                            SocketType,
                            TypeParam,
                            UnionType,
                            is_compatible,
                            socket_type,
)

__all__ = [
    # the plugin API version this nodeflow provides
    "API_VERSION",
    # declaring nodes
    "Node", "Input", "Output", "REQUIRED", "RunContext",
    # declaring a node's memory need (Node.estimate_memory)
    "MemoryEstimate", "ValueEstimate", "EstimateContext",
    # what a node reads from outside the graph, for its cache key (Node.fingerprint)
    "FingerprintContext",
    # socket types
    "SocketType", "UnionType", "TypeParam", "is_compatible", "socket_type",
    "INT", "FLOAT", "BOOL", "STRING", "IMAGE", "MASK",
    # errors a node raises
    "NodeflowError", "NodeInputError", "ModelError", "Cancelled",
    # run-time services
    "ModelManager", "Settings",
    # IMAGE / MASK values and Pillow
    "pil_to_image", "pil_to_mask", "image_to_pils", "mask_to_pils", "image_size",
]
