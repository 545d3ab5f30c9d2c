"""Reading and writing files safely.

Writes never leave a half-written file (a temporary file and a rename), give new files the
mode the umask asks for, keep an existing file's mode, write through a symlink to its target,
and never follow a symlink out of the output folder. Reads refuse what is not a regular file
(a FIFO would hang, ``/dev/zero`` never ends) and are bounded in size.
"""

from __future__ import annotations

import os
import stat
import tempfile
import unicodedata
from collections.abc import Iterable
from pathlib import Path

from nodeflow.errors import Location, RefusedInput

MAX_PREFIX_PART = 200
"""Bytes in one part of a save prefix: file names may have 255, and the number, suffix and
temporary-file decoration need the rest."""
MAX_PREFIX = 1000
"""Bytes in a whole save prefix (subfolders included)."""


def umask_mode(base: int = 0o666) -> int:
    """``base`` with the process umask applied: the mode a plain ``open()`` would create."""
    mask = _current_umask()
    return base & ~mask


def _current_umask() -> int:
    # /proc tells the umask without changing it; os.umask() must set it to read it, which is
    # not safe while other threads create files.
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file and a rename.

    A symlink is written through: its target is replaced and the link stays. An existing
    file keeps its mode; a new one gets the umask's.
    """
    path = Path(os.path.realpath(path)) if os.path.islink(path) else Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        mode = stat.S_IMODE(os.stat(path).st_mode)
    except OSError:
        mode = umask_mode()
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), mode)
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def is_inside(path: Path | str, roots: Iterable[Path | str]) -> bool:
    """Whether ``path``, symlinks resolved, is one of ``roots`` or inside one of them."""
    real = os.path.realpath(path)
    for root in roots:
        top = os.path.realpath(root)
        if real == top or real.startswith(top.rstrip(os.sep) + os.sep):
            return True
    return False


def write_new_numbered(folder: Path, prefix: str, suffix: str, data: bytes, *,
                       inside: Path | None = None) -> Path:
    """Write ``data`` to ``folder/prefix_NNNNN.suffix`` under the first free number; never overwrite.

    The complete file is linked into place, so the name appears only when the content is
    whole, and two writers never take the same name. With ``inside`` (the output folder),
    ``folder`` must stay inside it once symlinks are resolved, or RefusedInput is raised
    before anything is created.
    """
    if inside is not None and not is_inside(folder, [inside]):
        raise RefusedInput(f"the subfolder {folder} leads outside the output folder {inside} "
                           "(through a symlink); nodeflow does not write there",
                           hint="Use a prefix without that subfolder, or replace the symlink "
                                "with a real folder.")
    folder.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{prefix}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), umask_mode())
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


def has_control_characters(text: str) -> bool:
    """Whether ``text`` holds a NUL, newline, escape or other control or format character."""
    return any(unicodedata.category(ch) in ("Cc", "Cf", "Zl", "Zp") for ch in text)


def save_prefix_problem(prefix: str) -> str | None:
    """Why ``prefix`` cannot name output files inside the output folder, or None."""
    parts = prefix.split("/")
    if not prefix or prefix.startswith("/") or "\\" in prefix or any(p in ("", ".", "..") for p in parts):
        return (f"prefix {prefix!r} must be a plain name, optionally with subfolders "
                "('renders/cat'), inside the output folder")
    if has_control_characters(prefix):
        return (f"prefix {prefix!r} holds control characters (such as NUL, a newline or ESC), "
                "which make file names that break shells; use letters, digits, '_', '-' and '/'")
    if len(prefix.encode("utf-8", "surrogatepass")) > MAX_PREFIX or any(
            len(p.encode("utf-8", "surrogatepass")) > MAX_PREFIX_PART for p in parts):
        return (f"prefix {prefix[:40]!r}... is too long: at most {MAX_PREFIX_PART} bytes per "
                f"name and {MAX_PREFIX} in all")
    return None


def regular_file_problem(path: Path) -> str | None:
    """Why ``path`` (which exists) must not be read as a file, or None for a regular file or a
    folder. FIFOs, sockets and devices are refused: reading them can hang or never end."""
    try:
        mode = os.stat(path).st_mode
    except OSError as exc:
        return f"{path} cannot be read: {exc.strerror or exc}"
    if stat.S_ISREG(mode) or stat.S_ISDIR(mode):
        return None
    kind = ("a FIFO (named pipe)" if stat.S_ISFIFO(mode) else "a socket" if stat.S_ISSOCK(mode)
            else "a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) else "not a regular file")
    return f"{path} is {kind}, not a regular file; nodeflow reads only regular files"


def read_bounded(path: Path, limit: int, what: str = "file", hint: str | None = None) -> bytes:
    """The bytes of a regular file of at most ``limit`` bytes, or RefusedInput saying why not.

    Raises OSError (FileNotFoundError...) when the file cannot be opened.
    """
    problem = regular_file_problem(path)
    if problem is None and os.path.isdir(path):
        problem = f"{path} is a folder, not a {what}"
    if problem:
        raise RefusedInput(problem, location=Location(file=str(path)))
    # O_NONBLOCK: a FIFO swapped in after the check must not hang the open.
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    with os.fdopen(fd, "rb") as fh:
        if not stat.S_ISREG(os.fstat(fh.fileno()).st_mode):
            raise RefusedInput(f"{path} is not a regular file; nodeflow reads only regular files",
                               location=Location(file=str(path)))
        data = fh.read(limit + 1)
    if len(data) > limit:
        raise RefusedInput(f"the {what} is larger than {limit:,} bytes, the most nodeflow reads",
                           location=Location(file=str(path)), hint=hint)
    return data


def read_head(path: Path, size: int) -> bytes:
    """The first ``size`` bytes of ``path`` if it is a regular file, else b"" (also when it
    cannot be opened). Used to sniff a file's kind: a FIFO, socket or device is never opened
    in a way that can block, so sniffing cannot hang."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except OSError:
        return b""
    with os.fdopen(fd, "rb") as fh:
        if not stat.S_ISREG(os.fstat(fh.fileno()).st_mode):
            return b""
        return fh.read(size)


ALLOW_DIR_HINT = "If you trust it, allow the folder with --allow-dir DIR"


def path_refusal(path: Path, allowed: Iterable[Path] | None, hint: str = "") -> str | None:
    """Why an input file (which exists) must not be read, or None.

    It must be a regular file or a folder, and with ``allowed`` (the folders a graph from a
    PNG or a request may read) it must lie inside one of them once symlinks are resolved.
    """
    problem = regular_file_problem(path)
    if problem:
        return problem
    if allowed is not None:
        roots = list(allowed)
        if not is_inside(path, roots):
            return (f"{path} is outside the folders this graph may read "
                    f"({', '.join(str(r) for r in roots) or 'none'}); a graph taken from a "
                    "picture reads only files beside that picture and in the models folders. "
                    f"{hint or ALLOW_DIR_HINT}")
    return None
