"""Showing a run on a console: live per-node progress on a terminal, plain lines otherwise,
or JSON lines.

The command line picks the console form from where the output goes (`can_redraw`): a terminal
gets `nodeflow.live_progress.LiveReporter` (one line per running node, redrawn, built on this
module), anything else (a pipe, a CI log, a file, ``TERM=dumb``) gets `ConsoleReporter`, a line
per event that scripts can read.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any, TextIO

from nodeflow import events as ev


def can_redraw(stream: TextIO) -> bool:
    """Is ``stream`` a terminal that understands cursor movement (not ``TERM=dumb``)?"""
    if os.environ.get("TERM", "").lower() in ("dumb", "unknown"):
        return False
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # closed or not a real file
        return False


def no_color() -> bool:
    """The user asked for no colour (https://no-color.org: ``NO_COLOR`` set and not empty)."""
    return bool(os.environ.get("NO_COLOR"))


class ConsoleReporter:
    """A line per node started, finished, failed or skipped, and a node's progress at most once
    a second: for pipes, logs and CI, where nothing is redrawn."""

    def __init__(self, stream: TextIO, *, quiet: bool = False) -> None:
        self.stream = stream
        self.quiet = quiet
        self.total = 0
        self.index = 0
        self._last_plain = 0.0
        self._last_node_line = 0.0

    def message(self, text: str) -> None:
        print(text, file=self.stream, flush=True)

    def __call__(self, event: ev.Event) -> None:
        if self.quiet:
            return
        # The two events of every node first: a large graph sends hundreds of thousands.
        if isinstance(event, ev.NodeStarted):
            self.index += 1
            if self.total > self.MANY and self._throttled():
                return
            self.message(f"{self._prefix(event.node, event.type)} running")
        elif isinstance(event, ev.NodeFinished):
            if self.total > self.MANY and self._throttled():
                return
            self.message(f"{self._prefix(event.node, event.type)} done in {event.seconds:.2f}s")
        elif isinstance(event, ev.NodeProgress):
            if time.monotonic() - self._last_plain > 1.0:
                self._last_plain = time.monotonic()
                if event.total:
                    frac = max(0.0, min(1.0, event.done / event.total))
                    text = f"{self._prefix(event.node)} {_bar(frac)} {event.done:g}/{event.total:g}"
                else:
                    text = f"{self._prefix(event.node)} {event.done:g}"
                if event.message:
                    text += f" {event.message}"
                self.message(text)
        elif isinstance(event, ev.RunStarted):
            self.total = len(event.to_run)
            for problem in event.warnings:
                self.message(f"warning: {problem} (not needed by this run)")
            if event.cached:
                self.message(f"{len(event.cached)} node(s) from the cache")
        elif isinstance(event, ev.NodeFailed):
            self.message(f"{self._prefix(event.node, event.type)} FAILED")
            self.message(f"error: {event.error}")
        elif isinstance(event, ev.NodeSkipped):
            self.message(f"{event.node} ({event.type}) skipped: {event.reason}")

    def finish(self, result: Any) -> None:
        for path in result.files:
            print(path, flush=True)
        if self.quiet:
            for error in result.failed.values():
                print(f"error: {error}", file=self.stream)
            return
        if result.cancelled:
            self.message("cancelled")
        elif result.failed:
            n = len(result.failed)
            self.message(f"{n} node{'s' if n != 1 else ''} failed")

    def close(self) -> None:
        """Nothing to tidy up (a live display would stop here)."""

    MANY = 1000
    """Runs of more nodes than this show at most a few node lines a second (a line per node
    of a 100,000-node graph cost more than running it); failures always show."""

    def _throttled(self) -> bool:
        now = time.monotonic()
        if now - self._last_node_line < 0.25 and self.index < self.total:
            return True
        self._last_node_line = now
        return False

    def _prefix(self, node: str, type_id: str | None = None) -> str:
        base = f"[{self.index}/{self.total}] {node}"
        return f"{base} ({type_id})" if type_id else base


def _bar(frac: float, width: int = 24) -> str:
    filled = int(round(frac * width))
    return "█" * filled + "░" * (width - filled)


class JsonReporter:
    """One JSON object per line per event, then the result."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream

    def message(self, text: str) -> None:
        self._emit({"event": "message", "text": text})

    def __call__(self, event: ev.Event) -> None:
        if isinstance(event, ev.NodePreview | ev.RunFinished):
            return
        data: dict[str, Any] = {"event": _snake(type(event).__name__)}
        for key, value in vars(event).items():
            if key == "error":
                data["error"] = str(value)
                data["message"] = value.message
                data["socket"] = value.location.socket
            elif key == "traceback":
                continue
            elif key == "warnings":
                data["warnings"] = [p.to_json() for p in value]
            elif key == "files":
                data["files"] = [str(p) for p in value]
            else:
                data[key] = value
        self._emit(data)

    def finish(self, result: Any) -> None:
        self._emit({"event": "result", **result.to_json()})

    def close(self) -> None:
        """Nothing to tidy up."""

    def _emit(self, data: dict[str, Any]) -> None:
        self.stream.write(json.dumps(data, default=str) + "\n")
        self.stream.flush()


def _snake(name: str) -> str:
    return "".join("_" + c.lower() if c.isupper() else c for c in name).lstrip("_")
