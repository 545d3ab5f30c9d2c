"""Live progress of a run on a terminal, drawn with `rich.progress`.

One line for the run (nodes finished of those to run, nodes a second, time left) and one
line per running node (its step n/N, steps a second, time left, what it says it is doing).
A node's line goes when it finishes; a finished line is printed above the display instead
(for runs of up to `LiveReporter.MANY` nodes, or a node that took a second or more).
Nodes served from the cache are summarised in one line.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any, TextIO

from rich.console import Console
from rich.progress import BarColumn, Progress, ProgressColumn, Task, TaskID, TextColumn
from rich.text import Text

from nodeflow import events as ev
from nodeflow.progress import ConsoleReporter, no_color


@dataclass
class _Running:
    """A node running now, as its last events told."""

    type: str
    started: float
    done: float = 0.0
    total: float | None = None
    message: str = ""
    task: TaskID | None = None
    """Its line in the display, once drawn."""


class LiveReporter:
    """Live per-node progress on a terminal; honours ``NO_COLOR``.

    Events (from the run's thread) only update a table of running nodes; the display's own
    thread draws from that table a few times a second, so a graph of thousands of short
    nodes costs no drawing per node, and several nodes running at once each get a line.
    """

    MANY = ConsoleReporter.MANY
    REFRESH = 8
    """Redraws a second."""

    def __init__(self, stream: TextIO, *, console: Console | None = None) -> None:
        self.stream = stream
        self.console = console or Console(file=stream, force_terminal=True, no_color=no_color(),
                                          highlight=False)
        self.total = 0
        self.finished = 0
        self._running: dict[str, _Running] = {}
        self._gone: list[TaskID] = []
        self._lock = threading.Lock()
        self._progress: NodeProgress | None = None
        self._overall: TaskID | None = None
        self._started = time.monotonic()

    # --- the reporter interface --------------------------------------------------------
    def message(self, text: str, style: str = "") -> None:
        # Long lines (file paths) are left to the terminal to wrap, whole.
        self.console.print(Text(text, style=style), soft_wrap=True)

    def __call__(self, event: ev.Event) -> None:
        if isinstance(event, ev.NodeProgress):
            with self._lock:
                state = self._running.get(event.node)
                if state is not None:
                    state.done, state.total = event.done, event.total
                    if event.message:
                        state.message = event.message
        elif isinstance(event, ev.NodeStarted):
            with self._lock:
                self._running[event.node] = _Running(event.type, time.monotonic())
        elif isinstance(event, ev.NodeFinished):
            self._end(event.node)
            if self.total <= self.MANY or event.seconds >= 1.0:
                self._line("✓", "green", f"{event.node} ({event.type}) done in {event.seconds:.2f}s")
        elif isinstance(event, ev.NodeFailed):
            self._end(event.node)
            self._line("✗", "red", f"{event.node} ({event.type}) FAILED")
            self.message(f"error: {event.error}", "red")
        elif isinstance(event, ev.NodeSkipped):
            self._end(event.node)
            self._line("-", "yellow", f"{event.node} ({event.type}) skipped: {event.reason}")
        elif isinstance(event, ev.RunStarted):
            self._start(event)
        elif isinstance(event, ev.RunFinished):
            self.close()

    def finish(self, result: Any) -> None:
        self.close()
        for path in result.files:
            print(path, flush=True)
        if result.cancelled:
            self.message("cancelled")
        elif result.failed:
            n = len(result.failed)
            self.message(f"{n} node{'s' if n != 1 else ''} failed")
        else:
            cached = f", {len(result.cached)} from the cache" if result.cached else ""
            n = len(result.ran)
            self.message(f"ran {n} node{'s' if n != 1 else ''}{cached} in "
                         f"{time.monotonic() - self._started:.2f}s")

    def close(self) -> None:
        """Stop the display, leaving the run's line as it last was; safe to call again."""
        progress, self._progress = self._progress, None
        if progress is None:
            return
        with self._lock:
            self._gone.extend(s.task for s in self._running.values() if s.task is not None)
            self._running.clear()
        progress.stop()  # draws once more: the lines of nodes still running go

    # --- the display ---------------------------------------------------------------------
    def _start(self, event: ev.RunStarted) -> None:
        self._started = time.monotonic()
        self.total = len(event.to_run)
        for problem in event.warnings:
            self.message(f"warning: {problem} (not needed by this run)", "yellow")
        if event.cached:
            self.message(f"{len(event.cached)} node(s) from the cache")
        if not event.to_run:
            return
        progress = NodeProgress(self, self.console, self.REFRESH)
        self._overall = progress.add_task("nodes", total=self.total, overall=True,
                                          started=self._started, message="")
        self._progress = progress
        progress.start()

    def _end(self, node: str) -> None:
        with self._lock:
            state = self._running.pop(node, None)
            if state is not None and state.task is not None:
                self._gone.append(state.task)
            self.finished += 1

    def _line(self, mark: str, style: str, text: str) -> None:
        line = Text(mark + " ", style=style)
        line.append(f"[{self.finished}/{self.total}] {text}")
        progress = self._progress
        if progress is not None:
            progress.refresh()  # the display redrawn below the line is today's, not the last
        self.console.print(line, soft_wrap=True)

    def sync(self, progress: Progress) -> None:
        """Bring the display's lines up to date with the running nodes (called by the display's
        thread before each redraw)."""
        with self._lock:
            for task in self._gone:
                progress.remove_task(task)
            self._gone.clear()
            for node, state in self._running.items():
                if state.task is None:
                    state.task = progress.add_task(f"{node} ({state.type})", overall=False,
                                                   started=state.started, message="")
                progress.update(state.task, total=state.total, completed=state.done,
                                message=state.message)
            if self._overall is not None:
                progress.update(self._overall, completed=self.finished)


class Steps(ProgressColumn):
    """``12/40 nodes`` for the run, ``step 7/20`` for a node."""

    def render(self, task: Task) -> Text:
        if task.fields.get("overall"):
            return Text(f"{task.completed:g}/{task.total or 0:g} nodes")
        if task.total:
            return Text(f"step {task.completed:g}/{task.total:g}")
        return Text(f"{task.completed:g}" if task.completed else "running")


class Rate(ProgressColumn):
    """Steps (or nodes) a second, or seconds a step when slower than one a second."""

    def render(self, task: Task) -> Text:
        speed = task.speed
        if not speed:
            return Text("")
        unit = "node" if task.fields.get("overall") else "step"
        if speed >= 1:
            return Text(f"{speed:.1f} {unit}s/s", style="cyan")
        return Text(f"{1 / speed:.1f} s/{unit}", style="cyan")


class Times(ProgressColumn):
    """Time since the node (or the run) started, and the time left when it can be told."""

    def render(self, task: Task) -> Text:
        elapsed = _clock(time.monotonic() - task.fields["started"])
        left = task.time_remaining if task.total and task.completed < task.total else None
        return Text(elapsed if left is None else f"{elapsed} ETA {_clock(left)}", style="dim")


class NodeProgress(Progress):
    """The display: takes its lines from a `LiveReporter` before each redraw."""

    def __init__(self, reporter: LiveReporter, console: Console, refresh: int) -> None:
        self.reporter = reporter  # before the base class draws for the first time
        self._syncing = False
        super().__init__(TextColumn("{task.description}"), BarColumn(bar_width=24), Steps(),
                         Rate(), Times(), TextColumn("{task.fields[message]}", style="dim"),
                         console=console, refresh_per_second=refresh,
                         redirect_stdout=False, redirect_stderr=False)

    def get_renderables(self) -> Any:
        self._syncing = True
        try:
            self.reporter.sync(self)
        finally:
            self._syncing = False
        yield from super().get_renderables()

    def refresh(self) -> None:
        # `add_task` redraws at once; while lines are being added for this redraw, it waits.
        if not self._syncing:
            super().refresh()


def _clock(seconds: float) -> str:
    seconds = max(0, int(seconds))
    minutes, secs = divmod(seconds, 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"
