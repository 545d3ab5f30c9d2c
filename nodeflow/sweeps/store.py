"""Where a sweep's outputs go, and how a re-run knows which jobs are done.

A job writes into its own staging folder (``OUT/.sweep-partial/JOB/``). Only when it
has finished are its files moved into the output folder, renamed ``JOB_<name>``
(``seed-17_demo_00001.png``), and a line appended to the manifest ``OUT/sweep.jsonl``:
job → overrides → files. A job counts as complete when the manifest has its line, for
the same graph and overrides (a fingerprint), and all its files exist; a crash or a
Ctrl-C in between leaves at most a staging folder, which the next run clears.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import threading
from pathlib import Path
from typing import Any

from nodeflow.files import atomic_write
from nodeflow.graph import Graph

MANIFEST = "sweep.jsonl"
STAGING = ".sweep-partial"


def job_fingerprint(job_graph: Graph, outputs: list[str] | None) -> str:
    """What a job computes: its graph's nodes and links and the outputs asked for."""
    data = job_graph.to_json()
    text = json.dumps({"nodes": data["nodes"], "links": data["links"],
                       "outputs": sorted(outputs) if outputs is not None else None},
                      sort_keys=True, separators=(",", ":"), default=repr)
    return hashlib.blake2b(text.encode(), digest_size=16).hexdigest()


class SweepStore:
    """The output folder of a sweep: staging folders, final file names and the manifest."""

    def __init__(self, out_dir: Path) -> None:
        self.out_dir = Path(out_dir)
        self.manifest = self.out_dir / MANIFEST
        self._lock = threading.Lock()

    def staging(self, job: str) -> Path:
        """An empty staging folder for ``job`` (whatever an interrupted run left is removed)."""
        folder = self.out_dir / STAGING / job
        if folder.exists():
            shutil.rmtree(folder)
        folder.mkdir(parents=True)
        return folder

    def completed(self) -> dict[str, dict[str, Any]]:
        """Manifest records by job name whose files all still exist (the last record wins)."""
        records: dict[str, dict[str, Any]] = {}
        try:
            text = self.manifest.read_text(encoding="utf-8")
        except FileNotFoundError:
            return records
        for line in text.splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line cut short by a crash: that job is simply not complete
            if isinstance(record, dict) and isinstance(record.get("job"), str):
                records[record["job"]] = record
        return {name: r for name, r in records.items()
                if all((self.out_dir / f).is_file() for f in r.get("files", []))}

    def is_complete(self, record: dict[str, Any] | None, fingerprint: str) -> bool:
        return record is not None and record.get("fingerprint") == fingerprint

    def write_staged(self, job: str, files: list[tuple[str, bytes]]) -> Path:
        """Put files received from elsewhere (a Ray worker) into the job's staging folder."""
        folder = self.staging(job)
        for rel, data in files:
            target = (folder / rel).resolve()
            if not target.is_relative_to(folder.resolve()):
                raise ValueError(f"output file name {rel!r} leaves the output folder")
            atomic_write(target, data)
        return folder

    def commit(self, job: str, index: int, overrides: dict[str, Any], fingerprint: str,
               staged: Path, **extra: Any) -> list[Path]:
        """Move a finished job's staged files to their final names, then record the job."""
        moved: list[Path] = []
        for path in sorted(p for p in staged.rglob("*") if p.is_file()):
            rel = path.relative_to(staged)
            target = self.out_dir / rel.parent / f"{job}_{rel.name}"
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(path, target)  # atomic: the final name only ever holds a whole file
            moved.append(target)
        shutil.rmtree(staged, ignore_errors=True)
        record = {"job": job, "index": index, "overrides": overrides, "fingerprint": fingerprint,
                  "files": [p.relative_to(self.out_dir).as_posix() for p in moved], **extra}
        line = json.dumps(record, default=str, ensure_ascii=False) + "\n"
        with self._lock, open(self.manifest, "a", encoding="utf-8") as f:
            f.write(line)
            f.flush()
            os.fsync(f.fileno())
        return moved

    def clear_staging(self) -> None:
        """Remove whatever an interrupted run left half-written: none of it counts."""
        shutil.rmtree(self.out_dir / STAGING, ignore_errors=True)

    def discard(self, job: str) -> None:
        """Forget a job's staged files (it failed or was cancelled)."""
        shutil.rmtree(self.out_dir / STAGING / job, ignore_errors=True)

    def tidy(self) -> None:
        """Remove the staging area once nothing is in it."""
        try:
            (self.out_dir / STAGING).rmdir()
        except OSError:
            pass
