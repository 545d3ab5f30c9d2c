"""Shared pieces of the hostile-input tests: graph files, crafted files, the CLI as run."""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
import zlib
from pathlib import Path
from typing import Any

import pytest

from nodeflow.cli import main

PYTHON = sys.executable


def write_graph(path: Path, nodes: dict[str, Any], links: tuple[tuple[str, str], ...] = ()) -> Path:
    doc = {"format": "nodeflow.graph", "version": 1, "nodes": nodes,
           "links": [{"from": a, "to": b} for a, b in links]}
    path.write_text(json.dumps(doc, indent=2))
    return path


def copy_graph(path: Path, load: str, prefix: str = "out") -> Path:
    """load picture -> save: the smallest graph that reads a file and writes one."""
    return write_graph(path, {
        "load": {"type": "image.Load", "inputs": {"path": load}},
        "save": {"type": "image.Save", "inputs": {"prefix": prefix}},
    }, (("load.image", "save.image"),))


def cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """Run ``nodeflow ARGS`` in this process: (exit code, stdout, stderr)."""
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def cli_process(*args: str, cwd: Path | None = None, env: dict[str, str] | None = None,
                timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run ``python -m nodeflow ARGS`` as a user would, in a fresh process."""
    full_env = {**os.environ, **(env or {})}
    return subprocess.run([PYTHON, "-m", "nodeflow", *args], cwd=cwd, env=full_env,
                          capture_output=True, text=True, timeout=timeout)


def png_chunk(kind: bytes, body: bytes) -> bytes:
    return (struct.pack(">I", len(body)) + kind + body
            + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF))


def huge_png(width: int, height: int, text: dict[str, str] | None = None) -> bytes:
    """A PNG header declaring ``width``×``height`` pixels with a tiny (incomplete) image body:
    what a decompression bomb looks like to a reader, without the test making one."""
    data = b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
    for key, value in (text or {}).items():
        data += png_chunk(b"iTXt", key.encode() + b"\0\0\0\0\0" + value.encode())
    data += png_chunk(b"IDAT", zlib.compress(b"\0" * 1024)) + png_chunk(b"IEND", b"")
    return data


def assert_clean_error(text: str) -> None:
    """A user-facing failure: no Python traceback."""
    assert "Traceback" not in text, text
