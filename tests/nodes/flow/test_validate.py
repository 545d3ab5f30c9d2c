"""SD3/Flux graphs are checked before anything runs: missing models, files of the wrong kind or of
an unknown layout, and a missing T5 tokenizer are each reported on the node and socket."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from nodeflow.graph import Graph
from nodeflow.settings import Settings
from nodeflow.validate import GraphValidator
from tests.nodes.diffusion import tiny as sd_tiny
from tests.nodes.flow.conftest import SPLIT_NAMES

GRAPHS = ["sd3_txt2img", "flux_txt2img", "sd3_lora", "flux_lora", "sd3_controlnet", "flux_controlnet"]


def problems(registry, graph: Graph, models: list[Path]) -> list:
    return GraphValidator(registry, Settings(models_dirs=models, base_dir=sd_tiny.REPO / "graphs")).validate(graph)


@pytest.mark.parametrize("name", GRAPHS)
def test_graphs_without_models_report_only_missing_models(registry, tmp_path, name):
    graph = Graph.load(sd_tiny.REPO / "graphs" / f"{name}.json")
    found = problems(registry, graph, [tmp_path])
    assert found, "a graph whose models are absent must not validate"
    assert {p.code for p in found} == {"missing_file"}, [str(p) for p in found]
    assert all("was not found" in p.message and p.location.socket for p in found)


def split_models(tmp_path: Path, flux_parts, *, tokenizer: bool) -> Path:
    """A models folder with the Flux split files (linked) in ComfyUI's older folder names."""
    root = tmp_path / "models"
    for kind, folder in (("model", "unet"), ("clip_l", "clip"), ("t5", "clip"), ("vae", "vae")):
        (root / folder).mkdir(parents=True, exist_ok=True)
        os.symlink(flux_parts["paths"][kind], root / folder / flux_parts["paths"][kind].name)
    if tokenizer:
        os.symlink(flux_parts["models"] / "tokenizers", root / "tokenizers")
    return root


def test_split_files_in_unet_and_clip_folders_validate(registry, tmp_path, flux_parts):
    graph = Graph.load(sd_tiny.REPO / "graphs" / "flux_txt2img.json")
    names = SPLIT_NAMES["flux"]
    graph.set_input("unet", "path", names["model"])
    graph.set_input("clip", "encoder1", names["clip_l"])
    graph.set_input("clip", "encoder2", names["t5"])
    assert problems(registry, graph, [split_models(tmp_path, flux_parts, tokenizer=True)]) == []


def test_missing_t5_tokenizer_is_named(registry, tmp_path, flux_parts):
    graph = Graph.load(sd_tiny.REPO / "graphs" / "flux_txt2img.json")
    names = SPLIT_NAMES["flux"]
    graph.set_input("unet", "path", names["model"])
    graph.set_input("clip", "encoder1", names["clip_l"])
    graph.set_input("clip", "encoder2", names["t5"])
    found = problems(registry, graph, [split_models(tmp_path, flux_parts, tokenizer=False)])
    assert [(p.location.node, p.location.socket) for p in found] == [("clip", "t5_tokenizer")]
    assert "T5's tokenizer" in found[0].message and "tokenizers/t5" in found[0].message


def test_file_of_the_wrong_kind_says_which_loader_to_use(registry, flow_models, flux_parts):
    graph = Graph.load(sd_tiny.REPO / "graphs" / "flux_txt2img.json")
    names = SPLIT_NAMES["flux"]
    graph.set_input("unet", "path", str(flux_parts["paths"]["clip_l"]))  # a text encoder as the model
    graph.set_input("clip", "encoder1", names["clip_l"])
    graph.set_input("clip", "encoder2", names["vae"])  # a VAE as a text encoder
    (flow_models / "text_encoders" / names["vae"]).unlink(missing_ok=True)
    os.symlink(flux_parts["paths"]["vae"], flow_models / "text_encoders" / names["vae"])
    try:
        found = {(p.location.node, p.location.socket): p.message for p in problems(registry, graph, [flow_models])}
    finally:
        (flow_models / "text_encoders" / names["vae"]).unlink()
    assert "CLIP text encoder" in found[("unet", "path")]
    assert "flow.LoadTextEncoders" in found[("unet", "path")]
    assert "holds a VAE" in found[("clip", "encoder2")] and "flow.LoadVAE" in found[("clip", "encoder2")]


def test_unknown_layout_is_a_clear_error(registry, flow_models, tmp_path):
    import torch
    from safetensors.torch import save_file

    odd = tmp_path / "odd.safetensors"
    save_file({"foo.bar.weight": torch.zeros(2, 2)}, str(odd))
    graph = Graph.load(sd_tiny.REPO / "graphs" / "flux_txt2img.json")
    graph.set_input("unet", "path", str(odd))
    found = {(p.location.node, p.location.socket): p.message for p in problems(registry, graph, [flow_models])}
    assert "odd.safetensors is not a layout nodeflow knows" in found[("unet", "path")]
    assert "foo.bar.weight" in found[("unet", "path")]
