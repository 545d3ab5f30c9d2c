"""Showing a sweep: one combined progress display, or JSON lines tagged with job and worker."""

from __future__ import annotations

import json
import time
from typing import Any, TextIO

from nodeflow.sweeps.runner import SweepEvent, SweepResult


class SweepConsoleReporter:
    """Jobs done out of the total and each worker's current job, node and step.

    On a terminal one status line is redrawn; otherwise a line per finished, failed or
    retried job, and each worker's state at most every few seconds.
    """

    def __init__(self, stream: TextIO, *, quiet: bool = False) -> None:
        self.stream = stream
        self.quiet = quiet
        self.tty = stream.isatty()
        self.total = 0
        self.finished = 0
        self.failed = 0
        self.current: dict[str, str] = {}
        self._bar_open = False
        self._last_status = 0.0

    def message(self, text: str) -> None:
        self._end_bar()
        print(text, file=self.stream, flush=True)

    def __call__(self, event: SweepEvent) -> None:
        if self.quiet:
            return
        kind, job, worker = event.kind, event.job, event.worker or ""
        if kind == "sweep_started":
            self.total = event.data["jobs"]
            self.finished = event.data["complete"]
            if event.data["complete"]:
                self.message(f"{event.data['complete']} of {self.total} jobs already complete "
                             "(from an earlier run): skipped")
        elif kind == "worker_ready":
            self.message(f"worker {worker} ready on {event.data.get('node', '?')}")
        elif kind == "job_started":
            self.current[worker] = f"{job}"
        elif kind == "node":
            data = event.data
            if data["event"] == "node_started":
                self.current[worker] = f"{job} {data['node']}"
            elif data["event"] == "node_progress" and data.get("total"):
                self.current[worker] = f"{job} {data['node']} {data['done']:g}/{data['total']:g}"
        elif kind == "job_finished":
            self.finished += 1
            self.current.pop(worker, None)
            self._line(f"[{self.finished}/{self.total}] {job} done on {worker} "
                       f"in {event.data.get('seconds', 0):.2f}s")
        elif kind == "job_failed":
            self.failed += 1
            self.current.pop(worker, None)
            self._line(f"[{self.finished}/{self.total}] {job} FAILED on {worker}: "
                       f"{event.data.get('error')}")
        elif kind == "job_retried":
            self.current.pop(worker, None)
            self._line(f"{job}: worker {worker} was lost ({event.data.get('reason')}); "
                       "the job runs again on another worker")
        elif kind == "message":
            self.message(event.data.get("text", ""))
        self._status()

    def _status(self) -> None:
        if not self.total:
            return
        workers = " | ".join(f"{w}: {what}" for w, what in sorted(self.current.items()))
        text = f"[{self.finished}/{self.total} jobs{f', {self.failed} failed' if self.failed else ''}]"
        if workers:
            text += f" {workers}"
        if self.tty:
            self.stream.write("\r\x1b[2K" + text[:200])
            self.stream.flush()
            self._bar_open = True
        elif workers and time.monotonic() - self._last_status > 5.0:
            self._last_status = time.monotonic()
            print(text, file=self.stream, flush=True)

    def finish(self, result: SweepResult) -> None:
        self._end_bar()
        for path in result.files:
            print(path, flush=True)
        parts = [f"{len(result.done)} done"]
        if result.skipped:
            parts.append(f"{len(result.skipped)} already complete")
        if result.failed:
            parts.append(f"{len(result.failed)} failed")
        if result.retried:
            parts.append(f"{len(result.retried)} re-run after a lost worker")
        print(f"{result.total} jobs: {', '.join(parts)}" + (" (cancelled)" if result.cancelled else ""),
              file=self.stream, flush=True)
        if self.quiet:
            for job, error in result.failed.items():
                print(f"error: {job}: {error}", file=self.stream)
        for stats in result.workers.values():
            where = f" on {stats.node}" if stats.node else ""
            lost = " (lost)" if stats.lost else ""
            print(f"  worker {stats.name}{where}{lost}: {stats.jobs} jobs, "
                  f"{stats.loads} model load{'s' if stats.loads != 1 else ''}",
                  file=self.stream, flush=True)

    def _line(self, text: str) -> None:
        self._end_bar()
        print(text, file=self.stream, flush=True)

    def _end_bar(self) -> None:
        if self._bar_open:
            self.stream.write("\r\x1b[2K")
            self._bar_open = False


class SweepJsonReporter:
    """One JSON object per line: sweep events, and node events tagged with job and worker."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream

    def message(self, text: str) -> None:
        self._emit({"event": "message", "text": text})

    def __call__(self, event: SweepEvent) -> None:
        if event.kind == "node":
            data: dict[str, Any] = {"event": event.data["event"], "job": event.job,
                                    "worker": event.worker}
            data.update((k, v) for k, v in event.data.items() if k != "event")
        else:
            data = {"event": event.kind, "job": event.job, "worker": event.worker, **event.data}
        self._emit(data)

    def finish(self, result: SweepResult) -> None:
        self._emit({"event": "result", **result.to_json()})

    def _emit(self, data: dict[str, Any]) -> None:
        self.stream.write(json.dumps(data, default=str) + "\n")
        self.stream.flush()
