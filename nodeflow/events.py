"""Events the executor emits while running a graph; the CLI and the editor consume them."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nodeflow.errors import Cancelled

if TYPE_CHECKING:
    from nodeflow.errors import NodeflowError


@dataclass(frozen=True)
class RunStarted:
    to_run: list[str]
    """Node ids that will run, in order."""
    cached: list[str]
    """Node ids whose outputs come from the cache."""
    warnings: list[Any] = field(default_factory=list)
    """`Problem`s in parts of the graph this run does not need (they did not stop it)."""


@dataclass(frozen=True)
class NodeStarted:
    node: str
    type: str


@dataclass(frozen=True)
class NodeProgress:
    node: str
    done: float
    total: float | None
    message: str | None = None


@dataclass(frozen=True)
class NodePreview:
    node: str
    image: Any
    """An IMAGE array (batch, height, width, 3)."""


@dataclass(frozen=True)
class NodeCached:
    node: str
    type: str


@dataclass(frozen=True)
class NodeFinished:
    node: str
    type: str
    seconds: float
    files: list[Path] = field(default_factory=list)


@dataclass(frozen=True)
class NodeFailed:
    node: str
    type: str
    error: NodeflowError
    traceback: str = ""


@dataclass(frozen=True)
class NodeSkipped:
    node: str
    type: str
    reason: str


@dataclass(frozen=True)
class RunFinished:
    result: Any
    """The `RunResult`."""


Event = (RunStarted | NodeStarted | NodeProgress | NodePreview | NodeCached | NodeFinished
         | NodeFailed | NodeSkipped | RunFinished)


class CancelToken:
    """Cooperative cancellation, shared between the caller and the running nodes."""

    def __init__(self) -> None:
        self._event = threading.Event()

    def cancel(self) -> None:
        self._event.set()

    @property
    def cancelled(self) -> bool:
        return self._event.is_set()

    def raise_if_cancelled(self) -> None:
        if self._event.is_set():
            raise Cancelled()
