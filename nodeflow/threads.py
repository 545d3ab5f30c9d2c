"""The engine owns torch's CPU threads: how many each computation uses, and how idle ones wait.

``configure_threads`` is called once per process (the CLI's ``--threads N``, the
``NODEFLOW_THREADS`` variable, or every `Executor` with its ``threads`` argument).
Before torch is imported it sets the OpenMP variables torch reads when it loads;
after, it calls ``torch.set_num_threads``. torch itself is never imported here.

Why ``OMP_WAIT_POLICY=PASSIVE`` by default (measured by ``bench/long_lived.py``, 2 cores,
the demo graph): with OpenMP's default policy an idle team keeps spinning for a while
after each parallel region. The executor calls torch from its own thread and from
worker threads, each with its own team, so on a machine that is busy anyway the
spinners take the cores the running node needs. Passive waiting gave the same or
lower wall time per run and less CPU time per run, idle and busy; the figures are in
the bench's docstring. A user's own ``OMP_WAIT_POLICY`` is left as it is.
"""

from __future__ import annotations

import os
import sys
import threading

ENV = "NODEFLOW_THREADS"
"""Environment variable: torch threads per computation (like ``--threads N``)."""

_lock = threading.Lock()
_configured: int | None = None


def available_cores() -> int:
    """CPU cores this process may run on."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def requested_threads(threads: int | None = None) -> int | None:
    """The thread count asked for: ``threads``, else ``NODEFLOW_THREADS``; None when neither.

    Raises ValueError when ``NODEFLOW_THREADS`` is not a positive whole number.
    """
    if threads is not None:
        if threads < 1:
            raise ValueError("the thread count must be at least 1")
        return threads
    text = os.environ.get(ENV, "").strip()
    if not text:
        return None
    try:
        value = int(text)
    except ValueError:
        raise ValueError(f"{ENV}={text!r} is not a whole number") from None
    if value < 1:
        raise ValueError(f"{ENV}={text!r}: the thread count must be at least 1")
    return value


def default_threads() -> int:
    """Threads when nobody asked: the user's ``OMP_NUM_THREADS``, else every available core."""
    text = os.environ.get("OMP_NUM_THREADS", "").strip()
    if text.isdigit() and int(text) > 0:
        return int(text)
    return available_cores()


def configure_threads(threads: int | None = None) -> int:
    """Set torch's threads per computation for this process; returns the count in force.

    An explicit count (``threads`` or ``NODEFLOW_THREADS``) is applied whenever it differs
    from the one in force; without one, the first call sets the default and later calls
    change nothing (a host program that set torch's threads itself keeps them).
    """
    global _configured
    wanted = requested_threads(threads)
    with _lock:
        if wanted is None and _configured is not None:
            return _configured
        count = wanted if wanted is not None else default_threads()
        if count == _configured:
            return count
        if "torch" not in sys.modules:
            # torch (and its OpenMP runtime) read these when they load.
            os.environ["OMP_NUM_THREADS"] = str(count)
            os.environ["MKL_NUM_THREADS"] = str(count)
            os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
        elif wanted is not None:
            import torch

            torch.set_num_threads(count)
        _configured = count
        return count


def configured_threads() -> int | None:
    """The count set by `configure_threads`, or None before the first call."""
    return _configured
