"""The palette marks experimental node types and hides deprecated ones until searched for."""

from __future__ import annotations

from typing import Any

import pytest
from PySide6.QtCore import QPoint, Qt
from PySide6.QtTest import QTest

from nodeflow.gui.palette import NodePalette
from nodeflow.node import Input, Node, Output, RunContext
from nodeflow.registry import NodeRegistry, load_registry
from nodeflow.types import FLOAT, IMAGE


class OldInvert(Node):
    """Invert images (the first version)."""

    id = "flagged.OldInvert"
    category = "flagged"
    deprecated = "use image.Invert instead"
    inputs = (Input("image", IMAGE, "The images."),)
    outputs = (Output("image", IMAGE, "Inverted."),)

    def run(self, ctx: RunContext, image: Any) -> Any:
        return 1.0 - image


class Dim(Node):
    """Darken images by a factor."""

    id = "flagged.Dim"
    category = "flagged"
    experimental = True
    inputs = (Input("image", IMAGE, "The images."),
              Input("factor", FLOAT, "Brightness kept.", default=0.5, min=0.0, max=1.0))
    outputs = (Output("image", IMAGE, "Darker."),)

    def run(self, ctx: RunContext, image: Any, factor: float) -> Any:
        return image * factor


@pytest.fixture(scope="module")
def flagged_registry() -> NodeRegistry:
    registry = load_registry(use_env=False)
    info = registry.register_module("flagged", [OldInvert, Dim], "tests/gui/test_palette_flags.py")
    assert info.status == "loaded", info.error
    return registry


def _items(palette: NodePalette) -> dict[str, Any]:
    return {palette.list.item(i).data(Qt.ItemDataRole.UserRole): palette.list.item(i)
            for i in range(palette.list.count())}


def test_browsing_hides_deprecated_and_marks_experimental(qtbot: Any, flagged_registry: NodeRegistry,
                                                          tmp_path: Any) -> None:
    palette = NodePalette(flagged_registry, usage_file=tmp_path / "usage.json")
    qtbot.addWidget(palette)
    palette.open_at(QPoint(0, 0))
    items = _items(palette)
    assert "flagged.OldInvert" not in items
    assert "image.Invert" in items
    dim = items["flagged.Dim"]
    assert dim.text().startswith("Dim  [experimental]")
    assert dim.toolTip().endswith("Experimental: its inputs and results may change")
    assert "[" not in items["image.Invert"].text()


def test_searching_finds_a_deprecated_type_last_with_what_to_use(qtbot: Any, tmp_path: Any,
                                                                 flagged_registry: NodeRegistry) -> None:
    palette = NodePalette(flagged_registry, usage_file=tmp_path / "usage.json")
    qtbot.addWidget(palette)
    palette.open_at(QPoint(0, 0))
    QTest.keyClicks(palette.search, "invert")
    ids = palette.visible_ids()
    assert ids[0] == "image.Invert" and ids[-1] == "flagged.OldInvert"
    old = _items(palette)["flagged.OldInvert"]
    assert old.text().startswith("Old Invert  [deprecated]")
    assert old.toolTip().splitlines()[-1] == "Deprecated: use image.Invert instead"
    assert old.foreground().color().name() != _items(palette)["image.Invert"].foreground().color().name()
    # It can still be picked: an old graph's node type stays usable.
    chosen: list[str] = []
    palette.chosen.connect(chosen.append)
    palette.list.setCurrentRow(len(ids) - 1)
    QTest.keyClick(palette.search, Qt.Key.Key_Return)
    assert chosen == ["flagged.OldInvert"]
