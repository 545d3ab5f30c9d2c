"""Helpers shared by the demo training scripts (not part of nodeflow's API)."""

from __future__ import annotations

import argparse
import math
import os
import random
import shutil
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

# The shipped demo models of this checkout (training runs from the source tree, never from an install).
MODELS = Path(__file__).resolve().parent.parent / "nodeflow" / "demo" / "models"
DEFAULT_OUT = MODELS / "checkpoints" / "nodeflow-shapes"


def base_parser(description: str) -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=description)
    ap.add_argument("--out", default=str(DEFAULT_OUT), help="where to write the trained model (default: %(default)s)")
    ap.add_argument("--minutes", type=float, default=10.0, help="wall-clock training budget")
    ap.add_argument("--steps", type=int, default=0, help="if > 0: train exactly this many steps (ignores --minutes; bit-reproducible)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1: leave a core free)")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--save-every", type=float, default=3.0, help="minutes between checkpoints")
    return ap


def setup(args: argparse.Namespace) -> None:
    import numpy as np
    import torch

    torch.set_num_threads(max(1, args.threads))
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:
        pass
    random.seed(args.seed)
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)
    torch.use_deterministic_algorithms(True, warn_only=True)


class Clock:
    """Progress through a run given either a step budget or a time budget."""

    def __init__(self, minutes: float, steps: int):
        self.minutes, self.steps = minutes, steps
        self.t0 = time.time()

    def elapsed(self) -> float:
        return time.time() - self.t0

    def fraction(self, step: int) -> float:
        if self.steps > 0:
            return min(1.0, step / self.steps)
        return min(1.0, self.elapsed() / (60.0 * self.minutes))

    def done(self, step: int) -> bool:
        return self.fraction(step) >= 1.0


def cosine_lr(base: float, frac: float, warmup: float = 0.02, floor: float = 0.1) -> float:
    if frac < warmup:
        return base * max(frac / warmup, 0.01)
    p = (frac - warmup) / max(1e-8, 1 - warmup)
    return base * (floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * min(1.0, p))))


def atomic_dir(final: str | Path, write: Callable[[Path], object]) -> None:
    """Call ``write(tmp_dir)`` then atomically(ish) replace ``final`` with it."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.parent / f".{final.name}.tmp-{uuid.uuid4().hex[:8]}"
    old = final.parent / f".{final.name}.old-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        write(tmp)
        if final.exists():
            os.replace(final, old)
        os.replace(tmp, final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(old, ignore_errors=True)


def atomic_file(final: str | Path, write: Callable[[Path], object]) -> None:
    """Call ``write(tmp_path)`` then atomically replace ``final`` with the file it wrote
    (readable by all, as a shipped file; some writers create files private)."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.parent / f".{final.name}.tmp-{uuid.uuid4().hex[:8]}"
    try:
        write(tmp)
        os.chmod(tmp, 0o644)
        os.replace(tmp, final)
    finally:
        tmp.unlink(missing_ok=True)


def log(*a: object) -> None:
    print(time.strftime("%H:%M:%S"), *a, flush=True)
    sys.stdout.flush()


def n_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
