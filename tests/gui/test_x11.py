"""The editor on a real X server (Xvfb) with real input events: slow, and needs Xvfb and xdotool
(Debian: apt-get install xvfb xdotool libxcb-cursor0 libxcb-icccm4 libxcb-keysyms1)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from nodeflow.gui.startup import missing_xcb_libraries

from .conftest import REPO

pytestmark = pytest.mark.slow


@pytest.fixture
def display(tmp_path):
    if shutil.which("Xvfb") is None or shutil.which("xdotool") is None or missing_xcb_libraries():
        pytest.skip("needs Xvfb, xdotool and the xcb libraries (see the module docstring)")
    number = 90 + os.getpid() % 100
    server = subprocess.Popen(["Xvfb", f":{number}", "-screen", "0", "1600x1000x24"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(1.5)
    yield f":{number}"
    server.terminate()
    server.wait(10)


def test_scripted_session_with_real_input_events(display, tmp_path):
    env = dict(os.environ, DISPLAY=display, QT_QPA_PLATFORM="xcb", NODEFLOW_EDITOR_HOME=str(tmp_path / "home"))
    done = subprocess.run([sys.executable, str(Path(__file__).with_name("x11_session.py")), str(REPO / "graphs"),
                           str(tmp_path)], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    seen = dict(line.split("=", 1) for line in done.stdout.splitlines() if "=" in line)
    assert seen == {"inline": "factor", "edited": "0.8", "ran": "True", "undo": "0.5", "redo_ctrl_y": "0.8",
                    "redo_ctrl_shift_z": "0.8", "saved": "True",
                    "prompt_box": "PromptEditor",
                    "prompt": repr("a small red square in the corner\non a plain green background, seen from "
                                   "above, in soft morning light, with a thin white border around the picture"),
                    "prompt_steps": "1", "prompt_grew": "True",
                    "prompt_undo": repr("a red star on a white background")}, done.stdout
    assert (tmp_path / "run.png").stat().st_size > 10000
