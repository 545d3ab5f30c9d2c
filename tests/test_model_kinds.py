"""Model kinds are declared by packs: a plugin's own kind of model file is found in the models
folders (under any of its subfolder names) and a models folder holding only it is accepted."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from nodeflow.cli import main
from nodeflow.graph import Graph
from nodeflow.registry import load_registry
from nodeflow.settings import ModelKind, Settings, model_kind

PLUGINS = Path(__file__).resolve().parent / "kinds_plugin"


def style_graph(style: str) -> Graph:
    graph = Graph()
    graph.add_node("styles.Fill", "fill", {"style": style, "size": 4})
    graph.add_node("image.Save", "save", {"prefix": "styled"})
    graph.connect("fill.image", "save.image")
    return graph


def test_a_plugins_model_kind_is_found_under_models(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # A models folder with nothing but the plugin's kind, under its second folder name.
    models = tmp_path / "models"
    (models / "palettes").mkdir(parents=True)
    (models / "palettes" / "warm.json").write_text(json.dumps({"colour": [1.0, 0.5, 0.0]}))
    graph = style_graph("warm.json").save(tmp_path / "styled.json")
    out = tmp_path / "out"
    code = main(["run", str(graph), "--plugins", str(PLUGINS), "--models", str(models), "--out", str(out)])
    assert code == 0, capsys.readouterr().err
    [picture] = out.glob("styled_*.png")
    pixels = np.asarray(Image.open(picture).convert("RGB"))
    assert pixels.shape == (4, 4, 3) and (pixels == [255, 128, 0]).all()


def test_a_missing_file_of_a_plugin_kind_names_its_folder(tmp_path: Path,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    models = tmp_path / "models"
    (models / "styles").mkdir(parents=True)
    graph = style_graph("cold.json").save(tmp_path / "styled.json")
    assert main(["validate", str(graph), "--plugins", str(PLUGINS), "--models", str(models)]) != 0
    err = capsys.readouterr()
    text = err.out + err.err
    assert "cold.json" in text and str(models / "styles") in text and str(models / "palettes") in text
    assert "'styles' folder of a models folder" in text


def test_plugins_command_lists_model_kinds(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["plugins", "--plugins", str(PLUGINS)]) == 0
    out = capsys.readouterr().out
    kinds = out[out.index("model kinds"):]
    line = next(line for line in kinds.splitlines() if line.strip().startswith("styles "))
    assert "styles/, palettes/" in line and "Colour styles" in line
    # The built-in packs declare theirs the same way.
    assert any(line.strip().startswith("diffusion_models ") and "unet/" in line for line in kinds.splitlines())


def test_built_in_kinds_keep_their_other_folder_names() -> None:
    load_registry(use_env=False)
    assert model_kind("diffusion_models") is not None
    settings = Settings(models_dirs=[Path("/m")])
    dirs = settings.search_dirs("text_encoders")
    assert dirs[:2] == [Path("/m/text_encoders"), Path("/m/clip")]


def test_a_conflicting_kind_is_reported_with_its_pack(tmp_path: Path) -> None:
    (tmp_path / "clash.py").write_text(
        "from nodeflow.api import ModelKind, Node, Output, INT\n"
        "MODEL_KINDS = [ModelKind('loras', 'Other LoRAs.', folders=('my_loras',)), 'styles']\n"
        "class One(Node):\n    id = 'clash.One'\n    outputs = (Output('v', INT),)\n"
        "    def run(self, ctx):\n        return 1\n")
    registry = load_registry([tmp_path], use_env=False)
    pack = next(p for p in registry.packs if p.name == "clash")
    assert pack.status == "partial" and pack.nodes == ["clash.One"]
    assert "model kind 'loras' is already declared with folders loras" in (pack.error or "")
    assert "MODEL_KINDS holds 'styles', not a ModelKind" in (pack.error or "")
    assert model_kind("loras").folders == ("loras",)  # type: ignore[union-attr]


@pytest.mark.parametrize("bad", [dict(name="Styles"), dict(name="image"), dict(name="s", folders=("../x",)),
                                 dict(name="s", suffixes=("json",))])
def test_a_malformed_kind_is_refused_when_declared(bad: dict[str, object]) -> None:
    with pytest.raises(ValueError, match="model kind"):
        ModelKind(**bad)  # type: ignore[arg-type]
