"""Autosave of the graph being edited, and recovery of what a crashed editor was working on.

Each editor window writes its unsaved graph to its own file in the autosave folder,
next to a lock file held while the window lives. A file whose lock is free at
start-up belongs to an editor that ended without cleaning up: a crash.
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from PySide6.QtCore import QLockFile

from nodeflow.files import atomic_write


@dataclass
class Recovered:
    file: Path
    origin: str | None
    saved: float
    graph_text: str


class AutosaveSession:
    """The autosave file of one window."""

    def __init__(self, folder: Path) -> None:
        self.id = uuid.uuid4().hex[:12]
        self.path = folder / f"{self.id}.json"
        self.lock = QLockFile(str(folder / f"{self.id}.lock"))
        self.lock.setStaleLockTime(0)
        self.lock.tryLock(0)

    def write(self, graph_text: str, origin: str | None) -> None:
        data = {"origin": origin, "saved": time.time(), "graph": graph_text}
        atomic_write(self.path, json.dumps(data).encode("utf-8"))

    def discard(self) -> None:
        self.path.unlink(missing_ok=True)

    def close(self) -> None:
        self.discard()
        self.lock.unlock()


class AutosaveStore:
    def __init__(self, folder: Path) -> None:
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)

    def session(self) -> AutosaveSession:
        return AutosaveSession(self.folder)

    def orphans(self) -> list[Recovered]:
        """Autosaves left by editors that did not close normally, newest first."""
        found = []
        for file in self.folder.glob("*.json"):
            lock = QLockFile(str(file.with_suffix(".lock")))
            lock.setStaleLockTime(0)
            if not lock.tryLock(0):
                continue  # a running editor owns it
            lock.unlock()
            try:
                data = json.loads(file.read_text(encoding="utf-8"))
                found.append(Recovered(file, data.get("origin"), float(data.get("saved", 0)), data["graph"]))
            except (OSError, ValueError, KeyError, TypeError):
                continue
        return sorted(found, key=lambda r: -r.saved)

    def forget(self, recovered: Recovered) -> None:
        recovered.file.unlink(missing_ok=True)
        recovered.file.with_suffix(".lock").unlink(missing_ok=True)
