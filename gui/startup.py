"""Before Qt starts on X11: find the system libraries its xcb platform plugin needs and are missing,
and name the packages that provide them (Qt itself only says the plugin could not be loaded)."""

from __future__ import annotations

import ctypes.util
import os
import re
import shutil
import subprocess
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class SystemLibrary:
    """A shared library the xcb plugin loads, and the package that installs it."""

    name: str
    """As ``ctypes.util.find_library`` takes it: ``xcb-cursor`` for ``libxcb-cursor.so.0``."""
    soname: str
    debian: str
    fedora: str


XCB_LIBRARIES = (
    SystemLibrary("xcb-cursor", "libxcb-cursor.so.0", "libxcb-cursor0", "xcb-util-cursor"),
    SystemLibrary("xcb-icccm", "libxcb-icccm.so.4", "libxcb-icccm4", "xcb-util-wm"),
    SystemLibrary("xcb-keysyms", "libxcb-keysyms.so.1", "libxcb-keysyms1", "xcb-util-keysyms"),
    SystemLibrary("xcb-image", "libxcb-image.so.0", "libxcb-image0", "xcb-util-image"),
    SystemLibrary("xcb-render-util", "libxcb-render-util.so.0", "libxcb-render-util0", "xcb-util-renderutil"),
    SystemLibrary("xcb-util", "libxcb-util.so.1", "libxcb-util1", "xcb-util"),
    SystemLibrary("xkbcommon-x11", "libxkbcommon-x11.so.0", "libxkbcommon-x11-0", "libxkbcommon-x11"),
    SystemLibrary("xkbcommon", "libxkbcommon.so.0", "libxkbcommon0", "libxkbcommon"),
    SystemLibrary("xcb-randr", "libxcb-randr.so.0", "libxcb-randr0", "libxcb"),
    SystemLibrary("xcb-shape", "libxcb-shape.so.0", "libxcb-shape0", "libxcb"),
    SystemLibrary("xcb-shm", "libxcb-shm.so.0", "libxcb-shm0", "libxcb"),
    SystemLibrary("xcb-sync", "libxcb-sync.so.1", "libxcb-sync1", "libxcb"),
    SystemLibrary("xcb-xfixes", "libxcb-xfixes.so.0", "libxcb-xfixes0", "libxcb"),
    SystemLibrary("xcb-render", "libxcb-render.so.0", "libxcb-render0", "libxcb"),
    SystemLibrary("xcb-xkb", "libxcb-xkb.so.1", "libxcb-xkb1", "libxcb"),
    SystemLibrary("xcb", "libxcb.so.1", "libxcb1", "libxcb"),
    SystemLibrary("X11-xcb", "libX11-xcb.so.1", "libx11-xcb1", "libX11-xcb"),
)
_BY_SONAME = {lib.soname: lib for lib in XCB_LIBRARIES}
_NOT_FOUND = re.compile(r"^\s*(\S+)\s*=>\s*not found", re.MULTILINE)


def xcb_plugin() -> Path | None:
    """Qt's xcb platform plugin of the installed PySide6, if it has one."""
    try:
        import PySide6
    except ImportError:
        return None
    path = Path(PySide6.__file__).parent / "Qt" / "plugins" / "platforms" / "libqxcb.so"
    return path if path.is_file() else None


def not_found_in_ldd(output: str) -> list[SystemLibrary]:
    """The known libraries ``ldd`` reports as ``not found`` (each once, in the table's order)."""
    missing = set(_NOT_FOUND.findall(output))
    known = [lib for lib in XCB_LIBRARIES if lib.soname in missing]
    unknown = sorted(missing - set(_BY_SONAME))
    # A library outside the table still gets named: its soname is the best advice we have.
    return known + [SystemLibrary(s, s, s, s) for s in unknown]


def missing_xcb_libraries(plugin: Path | None = None,
                          find: Callable[[str], str | None] = ctypes.util.find_library) -> list[SystemLibrary]:
    """The libraries the xcb plugin needs that the system lacks.

    ``ldd`` on the plugin is exact; without it (or the plugin), each known library is looked up
    with ``find`` (``ctypes.util.find_library``, which reads ``ldconfig -p``).
    """
    found = _ldd_missing(plugin if plugin is not None else xcb_plugin())
    if found is not None:
        return found
    return [lib for lib in XCB_LIBRARIES if find(lib.name) is None]


def _ldd_missing(plugin: Path | None) -> list[SystemLibrary] | None:
    """What ``ldd`` says the plugin lacks; None when ``ldd`` cannot tell."""
    ldd = shutil.which("ldd")
    if plugin is None or ldd is None or not plugin.is_file():
        return None
    try:
        done = subprocess.run([ldd, str(plugin)], capture_output=True, text=True, timeout=20, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return not_found_in_ldd(done.stdout) if done.returncode == 0 else None


def install_hint(missing: Iterable[SystemLibrary]) -> str:
    """What to tell the user: the missing libraries and the commands that install them."""
    missing = list(missing)
    debian = list(dict.fromkeys(lib.debian for lib in missing))
    fedora = list(dict.fromkeys(lib.fedora for lib in missing))
    names = ", ".join(lib.soname for lib in missing)
    return (f"The editor cannot open a window on X11: Qt's xcb platform plugin needs {names}, "
            "which this system does not have. Install them:\n"
            f"  Debian/Ubuntu:  sudo apt-get install -y {' '.join(debian)}\n"
            f"  Fedora:         sudo dnf install -y {' '.join(fedora)}\n"
            "(or run without a display: QT_QPA_PLATFORM=offscreen nodeflow edit --screenshot out.png)")


def uses_xcb(env: dict[str, str] | os._Environ[str] = os.environ) -> bool:
    """Whether Qt will pick its xcb (X11) platform: asked for, or an X display and no Wayland."""
    platform = env.get("QT_QPA_PLATFORM", "")
    if platform:
        return platform.split(":", 1)[0] == "xcb"
    return bool(env.get("DISPLAY")) and not env.get("WAYLAND_DISPLAY")


def check_xcb() -> tuple[str | None, bool]:
    """The install hint when Qt would start on X11 and lacks libraries (None when it can, or is not
    on X11), and whether that is certain (``ldd`` said so) rather than a guess from library lookup."""
    if not uses_xcb():
        return None, False
    exact = _ldd_missing(xcb_plugin())
    missing = exact if exact is not None else missing_xcb_libraries()
    return (install_hint(missing) if missing else None), exact is not None
