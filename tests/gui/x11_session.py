"""A scripted editor session on a real X display, driven by real input events (xdotool).

Run by tests/gui/test_x11.py in its own process (Qt's platform is chosen once per process):
open a graph, edit a value on its node, run, undo and redo by keyboard, save; then open the demo
and type a new prompt into the prompt box on its node. Prints one line per check as
``name=value`` and writes screenshots into ``sys.argv[2]``."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

os.environ["QT_QPA_PLATFORM"] = "xcb"

from PySide6.QtCore import QPointF  # noqa: E402
from PySide6.QtWidgets import QApplication  # noqa: E402

from nodeflow.gui.app import create_app  # noqa: E402
from nodeflow.gui.window import MainWindow  # noqa: E402
from nodeflow.registry import load_registry  # noqa: E402


def main(graphs: Path, work: Path) -> None:
    create_app()
    shutil.copytree(graphs, work / "graphs")
    w = MainWindow(load_registry(use_env=False), home=work / "home", out_dir=work / "out", interactive=False)
    w.resize(1400, 860)
    w.move(0, 0)
    w.show()

    def pump(seconds: float = 0.3) -> None:
        end = time.time() + seconds
        while time.time() < end:
            QApplication.processEvents()
            time.sleep(0.01)

    def xdo(*args: str) -> None:
        subprocess.run(["xdotool", *args], check=True)
        pump(0.4)

    def factor() -> object:
        return w.doc.graph.nodes["blend"].inputs.get("factor")

    pump(1)
    graph = work / "graphs" / "image_effects.json"
    assert w.open_file(graph)
    pump(1)
    w.view.fit_all()
    pump(0.5)
    item = w.scene.node_items["blend"]
    row = item._row_index[("in", "factor")]
    at = w.view.viewport().mapToGlobal(w.view.mapFromScene(item.mapToScene(QPointF(item.width - 30, row.y))))
    xdo("mousemove", str(at.x()), str(at.y()))
    xdo("click", "--repeat", "2", "--delay", "80", "1")
    print(f"inline={w.scene.inline.name}")
    xdo("key", "ctrl+a")
    xdo("type", "0.8")
    xdo("key", "Return")
    print(f"edited={factor()}")
    w.grab().save(str(work / "edit.png"))
    xdo("key", "ctrl+Return")
    pump(3)
    print(f"ran={w.runner.last_result is not None and w.runner.last_result.ok}")
    xdo("mousemove", "300", "600")
    xdo("click", "1")
    xdo("key", "ctrl+z")
    print(f"undo={factor()}")
    xdo("key", "ctrl+y")
    print(f"redo_ctrl_y={factor()}")
    xdo("key", "ctrl+z")
    xdo("key", "ctrl+shift+z")
    print(f"redo_ctrl_shift_z={factor()}")
    xdo("key", "ctrl+s")
    print(f"saved={not w.doc.dirty and '0.8' in graph.read_text(encoding='utf-8')}")
    w.grab().save(str(work / "run.png"))

    # The demo's prompt, typed on its node: a click opens the box over the field, Enter is a new
    # line, Ctrl+Enter writes it (one undo step), and the node grows with the text.
    assert w.open_file(work / "graphs" / "demo.json")
    pump(1)
    item = w.scene.node_items["positive"]
    w.view.set_zoom(1.0)
    w.view.centerOn(item)
    pump(0.5)
    box = next(f for f in item.fields if f.name == "text")
    height = item.height
    at = w.view.viewport().mapToGlobal(w.view.mapFromScene(item.mapToScene(box.rect.center())))
    xdo("mousemove", str(at.x()), str(at.y()))
    xdo("click", "1")
    print(f"prompt_box={type(w.scene.inline.widget).__name__}")
    steps = w.doc.undo.count()
    xdo("key", "ctrl+a")
    xdo("type", "a small red square in the corner")
    xdo("key", "Return")
    xdo("type", "on a plain green background, seen from above, in soft morning light, with a thin white border around the picture")
    w.grab().save(str(work / "prompt.png"))
    xdo("key", "ctrl+Return")
    text = w.doc.graph.nodes["positive"].inputs["text"]
    print(f"prompt={text!r}")
    print(f"prompt_steps={w.doc.undo.count() - steps}")
    print(f"prompt_grew={item.height > height}")
    w.view.grab().save(str(work / "prompt_done.png"))
    xdo("key", "ctrl+z")
    print(f"prompt_undo={w.doc.graph.nodes['positive'].inputs['text']!r}")
    w.close()


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
