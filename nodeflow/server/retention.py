"""How long the server keeps finished jobs: their history rows, events and output files.

A policy (``--keep-outputs``) bounds the finished jobs kept by age, by count and by the
bytes of their files; a finished job past any bound is forgotten, its row, its events and
its output folder together. Queued and running jobs are never touched. Output folders whose
job was forgotten by ComfyUI's ``POST /history`` go once they are older than the age bound.
The server applies the policy when it starts and then every few minutes (`RetentionSweeper`).
"""

from __future__ import annotations

import logging
import re
import shutil
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from nodeflow.devices import format_size, parse_size
from nodeflow.errors import UsageError
from nodeflow.server.store import JobStore

log = logging.getLogger("nodeflow.server")

DEFAULT_POLICY = "90d,10000"
"""Generous: three months, and the newest ten thousand finished jobs."""
DEFAULT_INTERVAL = 600.0
"""Seconds between two applications of the policy while the server runs."""

_AGE = re.compile(r"^(\d+(?:\.\d+)?)\s*(s|min|h|d|w)$", re.IGNORECASE)
_AGE_SECONDS = {"s": 1, "min": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


@dataclass(frozen=True)
class RetentionPolicy:
    """Bounds on the finished jobs kept; None: no bound of that kind."""

    max_age: float | None = None
    """Seconds since a job finished."""
    max_jobs: int | None = None
    """The newest finished jobs kept."""
    max_bytes: int | None = None
    """Bytes of output files kept, the newest jobs' first."""

    @property
    def keeps_everything(self) -> bool:
        return self.max_age is None and self.max_jobs is None and self.max_bytes is None

    def describe(self) -> str:
        if self.keeps_everything:
            return "finished jobs are kept until deleted"
        parts = []
        if self.max_age is not None:
            parts.append(f"for {_age_text(self.max_age)}")
        if self.max_jobs is not None:
            parts.append(f"the newest {self.max_jobs:,}")
        if self.max_bytes is not None:
            parts.append(f"up to {format_size(self.max_bytes)} of files")
        # "kept for 90 days, the newest 10,000"; without an age, "kept: the newest 5,000"
        return "finished jobs are kept" + (" " if self.max_age is not None else ": ") + ", ".join(parts)


def _age_text(seconds: float) -> str:
    for unit, size in (("weeks", 7 * 86400), ("days", 86400), ("hours", 3600), ("minutes", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds / size:g} {unit}"
    return f"{seconds:g} seconds"


def parse_retention(text: str) -> RetentionPolicy:
    """``30d``, ``5000``, ``20GB``, or several joined by commas (``30d,5000,20GB``); ``all``
    keeps everything. Ages take s, min, h, d or w; sizes end in B (KB, MB, GB, GiB…); a bare
    number counts jobs."""
    text = text.strip()
    if text.lower() in ("all", "forever", "none"):
        return RetentionPolicy()
    age: float | None = None
    jobs: int | None = None
    size: int | None = None
    for part in (p.strip() for p in text.split(",")):
        match = _AGE.match(part)
        try:
            if match:
                age = float(match.group(1)) * _AGE_SECONDS[match.group(2).lower()]
            elif part.isdigit():
                jobs = int(part)
            elif part.lower().endswith("b"):
                size = parse_size(part)
            else:
                raise ValueError
        except (ValueError, UsageError):
            raise UsageError(f"--keep-outputs {text!r}: {part!r} is not an age (30d, 12h, 2w), a "
                             "number of jobs (5000) or a size (20GB)",
                             hint="Join several with commas, e.g. --keep-outputs 30d,5000,20GB, or "
                                  "give 'all' to keep everything.") from None
    return RetentionPolicy(age, jobs, size)


@dataclass
class RetentionReport:
    """What one application of the policy removed."""

    jobs: int = 0
    folders: int = 0
    bytes: int = 0


def folder_bytes(folder: Path) -> int:
    total = 0
    for path in folder.rglob("*"):
        try:
            if path.is_file() and not path.is_symlink():
                total += path.stat().st_size
        except OSError:
            pass
    return total


def apply_retention(store: JobStore, output_dir: Path, policy: RetentionPolicy,
                    now: float | None = None) -> RetentionReport:
    """Forget the finished jobs past the policy: their files first, then their rows and events
    (a crash between the two leaves a row that the next application forgets)."""
    report = RetentionReport()
    if policy.keeps_everything:
        return report
    now = time.time() if now is None else now
    before = now - policy.max_age if policy.max_age is not None else None
    expired = set(store.expired(finished_before=before, keep_newest=policy.max_jobs))
    if policy.max_bytes is not None:
        kept = 0
        for job_id in store.finished_ids(newest_first=True):
            if job_id in expired:
                continue
            kept += folder_bytes(output_dir / job_id)
            if kept > policy.max_bytes:
                expired.add(job_id)

    def remove(folder: Path) -> None:
        report.bytes += folder_bytes(folder)
        shutil.rmtree(folder, ignore_errors=True)
        report.folders += 1

    for job_id in sorted(expired):
        if (output_dir / job_id).is_dir():
            remove(output_dir / job_id)
    report.jobs = len(store.forget(sorted(expired)))
    # Folders whose job is no longer known (a client cleared ComfyUI's history, which leaves
    # the pictures for /view as ComfyUI does): kept while the age bound allows, counted from
    # their last change; under a policy without an age, gone at once.
    # Listed before the known jobs are read: a job's row is written before its folder, so a
    # folder listed here whose job is unknown afterwards was really forgotten.
    folders = sorted(output_dir.iterdir()) if output_dir.is_dir() else []
    known = store.job_ids()
    for folder in folders:
        try:
            if folder.name in known or not folder.is_dir() or folder.is_symlink():
                continue
            if before is not None and folder.stat().st_mtime >= before:
                continue
        except OSError:
            continue
        remove(folder)
    return report


class RetentionSweeper:
    """Applies the policy now and then every ``interval`` seconds, on its own thread."""

    def __init__(self, store: JobStore, output_dir: Path, policy: RetentionPolicy,
                 interval: float = DEFAULT_INTERVAL) -> None:
        self.store = store
        self.output_dir = output_dir
        self.policy = policy
        self.interval = interval
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def sweep(self) -> RetentionReport:
        report = apply_retention(self.store, self.output_dir, self.policy)
        if report.jobs or report.folders:
            log.info("retention: forgot %d finished job(s), removed %d folder(s), %s",
                     report.jobs, report.folders, format_size(report.bytes))
        return report

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, daemon=True, name="nodeflow-retention")
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(30.0)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.sweep()
            except Exception:  # noqa: BLE001 - a failed sweep is retried at the next interval
                log.exception("retention: could not apply the policy")
