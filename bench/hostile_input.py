"""What refusing hostile input costs, and what the safety checks add to ordinary work.

Part 1 times how long nodeflow takes to refuse each hostile case (before the fixes some of
these hung, read until MemoryError or tried to allocate tens of GB): ``/dev/zero`` as a
graph, a FIFO as a graph, a 20000×20000 PNG as a picture, a token prior whose config
declares a huge model, a truncated safetensors file. Part 2 compares, side by side in one
run, the safe path with the unchecked one it replaced: opening a picture through the format
allow-list vs plain ``Image.open``, reading a safetensors header with and without checking
the tensor extents, importing a plugin in a guarded thread vs directly.

Usage: python bench/hostile_input.py [--repeats 20]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import statistics
import struct
import tempfile
import time
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from safetensors.numpy import save_file

from nodeflow.errors import NodeflowError
from nodeflow.graph import read_graph_text
from nodeflow.imaging import open_picture
from nodeflow.models import safetensors_header
from nodeflow.nodes.ar.files import prior_config
from nodeflow.registry import _import_guarded
from nodeflow.settings import packaged_models_dir


def median_seconds(fn: Callable[[], Any], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def refusal(fn: Callable[[], Any]) -> tuple[float, str]:
    t = time.perf_counter()
    try:
        fn()
        outcome = "accepted (!)"
    except (NodeflowError, ValueError) as exc:
        outcome = str(exc).splitlines()[0][:70]
    return time.perf_counter() - t, outcome


def huge_png(path: Path, side: int) -> Path:
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0))
                     + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b""))
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="nodeflow-bench-"))

    fifo = tmp / "graph.json"
    os.mkfifo(fifo)
    prior = tmp / "huge.safetensors"
    save_file({"w": np.zeros((16, 8), dtype=np.float32)}, str(prior), metadata={
        "format": "nodeflow.ar_prior", "config": json.dumps(
            {"vocab_size": 65536, "height": 32, "width": 32, "dim": 16384, "layers": 48, "heads": 16})})
    upscaler = (packaged_models_dir() / "upscale" / "nodeflow-shapes-4x.safetensors").read_bytes()
    cut = tmp / "cut.safetensors"
    cut.write_bytes(upscaler[: len(upscaler) // 2])

    print("refusing hostile input (seconds until the located error):")
    for name, fn in (
        ("/dev/zero as a graph file", lambda: read_graph_text(Path("/dev/zero"))),
        ("a FIFO as a graph file", lambda: read_graph_text(fifo)),
        ("20000x20000 PNG as a picture", lambda: open_picture(huge_png(tmp / "big.png", 20000))),
        ("prior declaring 157e9 parameters", lambda: prior_config(prior)),
        ("truncated safetensors", lambda: safetensors_header(cut)),
    ):
        seconds, outcome = refusal(fn)
        print(f"  {name:<32} {seconds:8.4f} s  {outcome}")

    picture = tmp / "in.png"
    Image.new("RGB", (512, 512), (10, 20, 30)).save(picture)

    def plain_open() -> None:
        with Image.open(picture) as im:
            im.load()

    checkpoint = packaged_models_dir() / "checkpoints" / "nodeflow-shapes.safetensors"

    def unchecked_header() -> None:
        with open(checkpoint, "rb") as fh:
            (size,) = struct.unpack("<Q", fh.read(8))
            json.loads(fh.read(size))

    plugin = tmp / "plugin.py"
    plugin.write_text("X = 1\n")

    def import_plain() -> None:
        spec = importlib.util.spec_from_file_location("bench_plugin", plugin)
        assert spec is not None and spec.loader is not None
        spec.loader.exec_module(importlib.util.module_from_spec(spec))

    print(f"\nsafety checks on ordinary work (median of {args.repeats}; checked / unchecked):")
    for name, checked, unchecked in (
        ("open a 512x512 PNG", lambda: open_picture(picture), plain_open),
        ("demo checkpoint header", lambda: safetensors_header(checkpoint), unchecked_header),
        ("import a plugin file", lambda: _import_guarded("bench", import_plain), import_plain),
    ):
        a = median_seconds(checked, args.repeats)
        b = median_seconds(unchecked, args.repeats)
        print(f"  {name:<28} {a * 1000:8.3f} ms / {b * 1000:8.3f} ms  = {a / b:5.2f}x")
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
