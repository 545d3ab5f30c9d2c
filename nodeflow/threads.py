"""The engine owns torch's CPU threads: how many each computation uses, set once per process.

``configure_threads`` is called once per process (the CLI's ``--threads N``, the
``NODEFLOW_THREADS`` variable, or every `Executor` with its ``threads`` argument).
Before torch is imported it sets the OpenMP variables torch reads when it loads;
after, it calls ``torch.set_num_threads``. torch itself is never imported here.

Why nodeflow leaves ``OMP_WAIT_POLICY`` alone (measured with ``bench/long_lived.py``,
12 runs of the demo graph in one process, 2 cores shared with other work, with and
without a CPU-bound process beside it): runs grew slower because every run made a new
worker pool, and each new thread that called torch started its own OpenMP team, whose
idle members spun on the shared cores. With one pool for the executor's life the last
run stayed within 1.07x of the median in all four cases, and the median CPU
seconds per run were 3.57 unset against 3.26 PASSIVE on the quieter machine, 3.04
against 3.21 with the extra process: no difference beyond the noise. OpenMP already
stops spinning early when there are more threads than cores, and passive waiting
adds a wake-up delay to every parallel region on an idle machine, so the policy is
the user's to set.
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
        elif wanted is not None:
            import torch

            torch.set_num_threads(count)
        _configured = count
        return count


def configured_threads() -> int | None:
    """The count set by `configure_threads`, or None before the first call."""
    return _configured
