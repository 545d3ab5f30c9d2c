"""Work-arounds for bugs of particular PySide6 releases."""

from __future__ import annotations

import ctypes
import sys

_BIG = 1 << 60


def protect_none() -> bool:
    """Keep PySide6 6.12.0 from crashing CPython 3.11 after enough painting.

    That release drops one reference to ``None`` each time a C++ method returning
    void is called from Python (QPainter.setPen, drawRect, ...). Once ``None``'s
    count reaches zero the interpreter aborts ("deallocating None"). From Python
    3.12 ``None`` is immortal; before that, giving it an unreachably large count
    has the same effect. Returns True when the work-around was applied.
    """
    if sys.version_info >= (3, 12):
        return False
    import PySide6

    if not PySide6.__version__.startswith("6.12.0"):
        return False
    refcount = ctypes.c_ssize_t.from_address(id(None))
    if refcount.value < _BIG:
        refcount.value += _BIG
    return True
