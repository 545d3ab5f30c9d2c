"""Writing files so that a crash or cancel never leaves a half-written one."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def atomic_write(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file and a rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_new_numbered(folder: Path, prefix: str, suffix: str, data: bytes) -> Path:
    """Write ``data`` to ``folder/prefix_NNNNN.suffix`` under the first free number; never overwrite.

    The complete file is linked into place, so the name appears only when the
    content is whole, and two writers never take the same name.
    """
    folder.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{prefix}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        number = _next_number(folder, prefix, suffix)
        while True:
            target = folder / f"{prefix}_{number:05d}{suffix}"
            try:
                os.link(tmp, target)
                return target
            except FileExistsError:
                number += 1
            except OSError:
                # File systems without hard links: reserve the name exclusively, then replace.
                try:
                    os.close(os.open(target, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
                except FileExistsError:
                    number += 1
                    continue
                os.replace(tmp, target)
                return target
    finally:
        Path(tmp).unlink(missing_ok=True)


def _next_number(folder: Path, prefix: str, suffix: str) -> int:
    highest = 0
    start = f"{prefix}_"
    for entry in os.scandir(folder):
        name = entry.name
        if name.startswith(start) and name.endswith(suffix):
            digits = name[len(start):len(name) - len(suffix)]
            if digits.isdigit():
                highest = max(highest, int(digits))
    return highest + 1
