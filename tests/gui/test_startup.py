"""Start-up on a plain X11 desktop: the missing xcb libraries are found and their packages named."""

from __future__ import annotations

import ctypes.util
import subprocess
import sys
from pathlib import Path

from nodeflow.gui.startup import (
    XCB_LIBRARIES,
    install_hint,
    missing_xcb_libraries,
    not_found_in_ldd,
    uses_xcb,
    xcb_plugin,
)

LDD_OUTPUT = """\
\tlinux-vdso.so.1 (0x00007ffd)
\tlibxkbcommon-x11.so.0 => /lib/x86_64-linux-gnu/libxkbcommon-x11.so.0 (0x00007f59)
\tlibxcb-cursor.so.0 => not found
\tlibxcb-icccm.so.4 => not found
\tlibxcb-image.so.0 => /lib/x86_64-linux-gnu/libxcb-image.so.0 (0x00007f59)
\tlibxcb-keysyms.so.1 => not found
\tlibxcb-icccm.so.4 => not found
\tlibfancy-new.so.2 => not found
"""


def test_ldd_output_names_each_missing_library_once():
    missing = not_found_in_ldd(LDD_OUTPUT)
    assert [lib.soname for lib in missing] == ["libxcb-cursor.so.0", "libxcb-icccm.so.4", "libxcb-keysyms.so.1",
                                               "libfancy-new.so.2"]
    assert [lib.debian for lib in missing[:3]] == ["libxcb-cursor0", "libxcb-icccm4", "libxcb-keysyms1"]


def test_hint_gives_the_exact_install_commands():
    hint = install_hint(not_found_in_ldd(LDD_OUTPUT)[:3])
    assert "sudo apt-get install -y libxcb-cursor0 libxcb-icccm4 libxcb-keysyms1" in hint
    assert "sudo dnf install -y xcb-util-cursor xcb-util-wm xcb-util-keysyms" in hint
    assert "libxcb-cursor.so.0" in hint


def test_lookup_without_ldd_uses_the_library_search():
    have = {"xcb-cursor"}  # a system with only libxcb-cursor among the known ones
    missing = missing_xcb_libraries(Path("/nonexistent/libqxcb.so"),
                                    find=lambda name: f"lib{name}.so" if name in have else None)
    assert "libxcb-cursor0" not in [lib.debian for lib in missing]
    assert {"libxcb-icccm4", "libxcb-keysyms1"} <= {lib.debian for lib in missing}


def test_this_system_agrees_with_the_library_search():
    """On this machine, ldd on PySide6's real plugin and ldconfig's list tell the same story."""
    plugin = xcb_plugin()
    assert plugin is not None, "PySide6 has no xcb platform plugin"
    by_ldd = {lib.soname for lib in missing_xcb_libraries(plugin)}
    by_search = {lib.soname for lib in missing_xcb_libraries(Path("/nonexistent"), find=ctypes.util.find_library)}
    known = {lib.soname for lib in XCB_LIBRARIES}
    assert by_ldd & known <= by_search


def test_which_platform_qt_picks():
    assert uses_xcb({"DISPLAY": ":0"})
    assert not uses_xcb({"DISPLAY": ":0", "WAYLAND_DISPLAY": "wayland-0"})
    assert uses_xcb({"QT_QPA_PLATFORM": "xcb"})
    assert not uses_xcb({"QT_QPA_PLATFORM": "offscreen", "DISPLAY": ":0"})
    assert not uses_xcb({})


def test_editor_start_names_the_packages_or_starts(tmp_path):
    """`nodeflow-gui` with an X display: without the libraries it stops with the package names,
    with them it gets past the check (it then fails only because no X server listens)."""
    plugin = xcb_plugin()
    missing = missing_xcb_libraries(plugin)
    env = {"DISPLAY": ":987", "PATH": "/usr/bin:/bin", "NODEFLOW_EDITOR_HOME": str(tmp_path),
           "HF_HUB_OFFLINE": "1", "HOME": str(tmp_path)}
    done = subprocess.run([sys.executable, "-m", "nodeflow.gui.app", "--screenshot", str(tmp_path / "s.png")],
                          env=env, capture_output=True, text=True, timeout=120)
    if missing:
        assert done.returncode == 1
        assert "sudo apt-get install -y" in done.stderr
        assert all(lib.debian in done.stderr for lib in missing)
        assert "Traceback" not in done.stderr
    else:
        assert "sudo apt-get install" not in done.stderr
