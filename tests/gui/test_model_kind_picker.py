"""The editor's file picker lists the files of a plugin's own model kind."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from nodeflow.registry import load_registry

PLUGINS = Path(__file__).resolve().parents[1] / "kinds_plugin"


def test_file_picker_lists_a_plugins_model_kind(qtbot: Any, editor_home: Path, tmp_path: Path) -> None:
    from nodeflow.gui.window import MainWindow

    models = tmp_path / "models"
    for folder, name in (("styles", "warm.json"), ("palettes", "cold.json"), ("styles", "notes.txt")):
        (models / folder).mkdir(parents=True, exist_ok=True)
        (models / folder / name).write_text(json.dumps({"colour": [0.5, 0.5, 0.5]}))
    registry = load_registry([PLUGINS], use_env=False)
    assert "styles.Fill" in registry
    window = MainWindow(registry, models=[models], home=editor_home, out_dir=tmp_path / "out",
                        interactive=False)
    qtbot.addWidget(window)
    window.show()
    window.scene.add_node("styles.Fill", window.view.mapToScene(100, 100))
    [node_id] = list(window.doc.graph.nodes)
    window.scene.select_nodes([node_id])
    combo = window.properties.editors["style"].combo
    choices = [combo.itemText(i) for i in range(combo.count())]
    # Both of the kind's folders, only its suffixes.
    assert choices == ["warm.json", "cold.json"]
    combo.setCurrentText("cold.json")
    combo.activated.emit(1)
    assert window.doc.graph.nodes[node_id].inputs["style"] == "cold.json"
