"""The nodeflow plugin API: everything a node pack may import, and nothing else.

A plugin imports from this module only::

    from nodeflow.api import FLOAT, IMAGE, Input, Node, Output, RunContext

nodeflow's own packs (``nodeflow.nodes``) follow the same rule, and a test enforces it.
Anything not listed in ``__all__`` is private to nodeflow and may change between releases.
The API follows ``API_VERSION``: a plugin declares the range it supports as
``NODEFLOW_API = ">=1.0,<2"`` in its pack module, and a plugin whose range excludes the
running nodeflow is skipped with a message. Additions raise the minor version (1.1: the
model service protocol, model kinds, and the file, picture and safetensors helpers; 1.2: the
``Node.model_family`` hook of loaders).
"""

from __future__ import annotations

from nodeflow.cache import file_fingerprint
from nodeflow.errors import Cancelled, ModelError, NodeflowError, NodeInputError, RefusedInput
from nodeflow.files import save_prefix_problem, write_new_numbered
from nodeflow.imaging import (
    image_size,
    image_to_pils,
    mask_to_pils,
    open_picture,
    pil_to_image,
    pil_to_mask,
)
from nodeflow.models import estimate_file_bytes, safetensors_header, tensor_bytes, weight_files
from nodeflow.node import (
    DTYPE_BYTES,
    REQUIRED,
    EstimateContext,
    FingerprintContext,
    Input,
    MemoryEstimate,
    ModelService,
    Node,
    Output,
    RunContext,
    ValueEstimate,
)
from nodeflow.provenance import png_text_chunks
from nodeflow.registry import API_VERSION
from nodeflow.settings import ModelKind, Settings
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
    "MemoryEstimate", "ValueEstimate", "EstimateContext", "DTYPE_BYTES",
    # what a node reads from outside the graph, for its cache key (Node.fingerprint)
    "FingerprintContext", "file_fingerprint",
    # socket types
    "SocketType", "UnionType", "TypeParam", "is_compatible", "socket_type",
    "INT", "FLOAT", "BOOL", "STRING", "IMAGE", "MASK",
    # errors a node raises
    "NodeflowError", "NodeInputError", "ModelError", "RefusedInput", "Cancelled",
    # run-time services: models (RunContext.models), the kinds of model files a pack reads
    # (its MODEL_KINDS), settings
    "ModelService", "ModelKind", "Settings",
    # model files, read without loading them (for estimates and for telling files apart)
    "safetensors_header", "tensor_bytes", "estimate_file_bytes", "weight_files",
    # IMAGE / MASK values and Pillow; opening pictures of the allowed formats only
    "pil_to_image", "pil_to_mask", "image_to_pils", "mask_to_pils", "image_size", "open_picture",
    # writing output files: whole files under new numbered names, with provenance
    "write_new_numbered", "save_prefix_problem", "png_text_chunks",
]
