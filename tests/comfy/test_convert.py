"""Converting ComfyUI workflows: formats, widget order, what ComfyUI removes before running, the mapping."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from nodeflow.comfy import import_workflow, load_graph_any
from nodeflow.comfy.formats import detect
from nodeflow.comfy.mapping import BY_TYPE, widget_values
from nodeflow.errors import GraphFileError, GraphInvalid
from nodeflow.graph import Graph

from .conftest import FIXTURES


def semantics(graph: Graph) -> tuple[dict[str, tuple[str, dict[str, Any]]], set[tuple[str, str]]]:
    """What runs: node types with inputs, and links (layout and meta left out)."""
    return ({n.id: (n.type, n.inputs) for n in graph}, {(ln.source, ln.target) for ln in graph.links})


def test_ui_and_api_formats_of_one_workflow_give_the_same_graph(registry: Any) -> None:
    # The UI file shares its seed through a PrimitiveNode, takes the VAE through a Reroute, has a
    # bypassed LoRA, a muted preview and a note; the API file is what ComfyUI sends after removing those.
    ui = load_graph_any(FIXTURES / "txt2img_ui.json", registry)
    api = load_graph_any(FIXTURES / "txt2img_api.json", registry)
    assert semantics(ui) == semantics(api)
    nodes, links = semantics(ui)
    assert nodes["KSampler_3"][1]["seed"] == 42  # the primitive's value, not the stale widget value
    assert ("CheckpointLoaderSimple_4.model", "KSampler_3.model") in links  # past the bypassed LoRA
    assert ("CheckpointLoaderSimple_4.vae", "VAEDecode_8.vae") in links  # past the reroute
    assert not any(t == "diffusion.LoadLoRA" for t, _ in nodes.values())
    assert "PreviewImage_13" not in nodes  # muted
    # CLIPSetLastLayer -2 is the penultimate layer: nodeflow's clip_skip 1, on every encoder after it.
    assert nodes["CLIPTextEncode_6"][1]["clip_skip"] == 1 and nodes["CLIPTextEncode_7"][1]["clip_skip"] == 1
    # Windows separators in model names become '/'.
    assert nodes["CheckpointLoaderSimple_4"][1]["path"] == "sd15/demo-model.safetensors"


def test_both_formats_of_the_image_workflow_agree_and_use_every_mapped_type(registry: Any) -> None:
    ui = load_graph_any(FIXTURES / "img2img_ui.json", registry)  # object-style links
    api = load_graph_any(FIXTURES / "img2img_api.json", registry)
    assert semantics(ui) == semantics(api)
    nodes, links = semantics(ui)
    assert nodes["Canny_11"] == ("control.Canny", {"low_threshold": 102, "high_threshold": 204})
    assert nodes["ImageScale_7"] == ("image.ImageScale", {"upscale_method": "nearest-exact", "width": 64,
                                                          "height": 64, "crop": "disabled"})
    assert nodes["ImageBlend_10"][1] == {"factor": 0.25, "mode": "multiply"}
    assert nodes["ImageCrop_9"][1] == {"width": 64, "height": 64, "x": 0, "y": 0}
    # The advanced ControlNet attaches the same net and image to both conditionings.
    for side in ("positive", "negative"):
        nid = f"ControlNetApplyAdvanced_13_{side}"
        assert nodes[nid] == ("diffusion.ApplyControlNet", {"strength": 0.9, "start": 0.0, "end": 0.8})
        assert (f"{nid}.conditioning", f"KSampler_17.{side}") in links
        assert ("ControlNetLoader_12.controlnet", f"{nid}.controlnet") in links
    assert ("LoadImage_6.mask", "SetLatentNoiseMask_16.mask") in links
    assert ("UpscaleModelLoader_19.upscale_model", "ImageUpscaleWithModel_20.upscale_model") in links
    assert nodes["KSampler_17"][1]["denoise"] == 0.75
    # A model-only LoRA takes the CLIP beside its model and leaves it unchanged.
    assert nodes["LoraLoaderModelOnly_23"] == ("diffusion.LoadLoRA", {
        "path": "outline-lora.safetensors", "strength_model": 0.6, "strength_clip": 0.0})
    assert ("LoraLoader_3.clip", "LoraLoaderModelOnly_23.clip") in links
    assert ("LoraLoaderModelOnly_23.model", "KSampler_17.model") in links


def test_every_mapped_type_has_fixtures_in_both_formats() -> None:
    used: dict[str, set[str]] = {"ui": set(), "api": set()}
    for path in FIXTURES.glob("*.json"):
        data = json.loads(path.read_text())
        kind = detect(data)
        if kind == "ui":
            used["ui"] |= {n["type"] for n in data["nodes"]}
        elif kind == "api":
            used["api"] |= {n["class_type"] for n in data.values()}
    assert set(BY_TYPE) <= used["ui"] and set(BY_TYPE) <= used["api"]


def test_layout_groups_and_notes_are_kept_for_the_editor(registry: Any) -> None:
    graph = load_graph_any(FIXTURES / "txt2img_ui.json", registry)
    source = json.loads((FIXTURES / "txt2img_ui.json").read_text())
    pos = {str(n["id"]): n["pos"] for n in source["nodes"]}
    assert graph.editor["KSampler_3"]["pos"] == pos["3"]
    frames = graph.editor["@frames"]["frames"]
    assert {"title": "Prompts", "rect": [80.0, 60.0, 560.0, 300.0], "color": "#3f789e"} in frames
    note = next(f for f in frames if "note" in f)
    assert note["title"] == "About" and note["note"].startswith("Seed is shared")
    assert graph.meta["comfyui"] == {"source": "txt2img_ui.json", "format": "ui", "semantics": "comfy"}


@pytest.mark.parametrize("values, expected", [
    ([5, "randomize", 20, 8.0, "euler", "normal", 1.0], 20),   # the control value as a word
    ([5, True, 20, 8.0, "euler", "normal", 1.0], 20),          # old files: a boolean
    ([5, 20, 8.0, "euler", "normal", 1.0], 20),                # no control value at all
])
def test_seed_control_value_is_skipped_in_widget_order(values: list[Any], expected: int) -> None:
    named = widget_values("KSampler", values)
    assert named["seed"] == 5 and named["steps"] == expected and named["sampler_name"] == "euler"
    assert named["denoise"] == 1.0


def test_ksampler_advanced_widget_order_follows_comfyui() -> None:
    named = widget_values("KSamplerAdvanced", ["enable", 7, "fixed", 25, 8, "euler", "normal", 0, 20, "enable"])
    assert named == {"add_noise": "enable", "noise_seed": 7, "steps": 25, "cfg": 8, "sampler_name": "euler",
                     "scheduler": "normal", "start_at_step": 0, "end_at_step": 20,
                     "return_with_leftover_noise": "enable"}


def _ksampler_prompt(sampler: str, scheduler: str = "normal") -> dict[str, Any]:
    return {
        "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "m.safetensors"}},
        "2": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
        "3": {"class_type": "CLIPTextEncode", "inputs": {"text": "x", "clip": ["1", 1]}},
        "4": {"class_type": "KSampler", "inputs": {
            "seed": 1, "steps": 2, "cfg": 5, "sampler_name": sampler, "scheduler": scheduler, "denoise": 1,
            "model": ["1", 0], "positive": ["3", 0], "negative": ["3", 0], "latent_image": ["2", 0]}},
    }


def test_ksampler_keeps_comfyui_semantics_and_names(registry: Any, tmp_path: Path) -> None:
    path = tmp_path / "p.json"
    path.write_text(json.dumps(_ksampler_prompt("dpmpp_sde", "simple")))
    node = load_graph_any(path, registry).nodes["KSampler_4"]
    assert node.type == "diffusion.KSampler"
    assert (node.inputs["sampler_name"], node.inputs["scheduler"]) == ("dpmpp_sde", "simple")


def test_a_sampler_nodeflow_lacks_is_refused_with_the_list_it_has(registry: Any, tmp_path: Path) -> None:
    path = tmp_path / "p.json"
    path.write_text(json.dumps(_ksampler_prompt("no_such_sampler")))
    with pytest.raises(GraphInvalid) as info:
        load_graph_any(path, registry)
    [problem] = info.value.problems
    assert problem.location.node == "4" and problem.location.socket == "sampler_name"
    assert "no_such_sampler" in problem.message and "euler" in problem.message


def test_unsupported_types_are_one_error_listing_each_with_ids_and_titles(registry: Any) -> None:
    with pytest.raises(GraphInvalid) as info:
        load_graph_any(FIXTURES / "unsupported_ui.json", registry)
    first, subgraph, group_node = info.value.problems
    assert first.code == "comfy_unsupported"
    assert group_node.location.node == "6" and "'Sharpen twice'" in group_node.message
    assert "IPAdapterApply (nodes #2 'My IP adapter', #4)" in first.message
    assert "VHS_VideoCombine (node #3)" in first.message and "--partial" in first.message
    assert subgraph.code == "comfy_subgraph" and "'Upscale twice'" in subgraph.message


def test_partial_import_converts_the_rest_and_marks_what_it_left(registry: Any) -> None:
    result = import_workflow(FIXTURES / "unsupported_ui.json", registry)
    assert result is not None
    assert list(result.graph.nodes) == ["CheckpointLoaderSimple_1"]
    titles = [f["title"] for f in result.graph.editor["@frames"]["frames"]]
    assert "Not converted: #2 IPAdapterApply 'My IP adapter'" in titles
    assert {u["type"] for u in result.graph.meta["comfyui"]["unconverted"]} == {
        "IPAdapterApply", "VHS_VideoCombine", "a1b2c3d4-0000-4000-8000-00000000beef", "workflow>Sharpen twice"}


def test_link_to_a_missing_node_names_the_node_and_input(registry: Any) -> None:
    with pytest.raises(GraphInvalid) as info:
        load_graph_any(FIXTURES / "missing_link_api.json", registry)
    [problem] = info.value.problems
    assert problem.location.node == "2" and problem.location.socket == "clip"
    assert "node 99" in problem.message and "missing_link_api.json" in str(problem)


def test_ui_link_id_missing_from_the_links_list_is_reported(registry: Any, tmp_path: Path) -> None:
    data = json.loads((FIXTURES / "txt2img_ui.json").read_text())
    data["links"] = [ln for ln in data["links"] if ln[0] != 13]  # VAEDecode -> SaveImage
    path = tmp_path / "w.json"
    path.write_text(json.dumps(data))
    with pytest.raises(GraphInvalid) as info:
        load_graph_any(path, registry)
    assert any(p.location.node == "9" and "link 13" in p.message for p in info.value.problems)


def png_with_text(path: Path, chunks: dict[str, str]) -> Path:
    """A PNG as ComfyUI's SaveImage writes it: text chunks 'prompt' and 'workflow'."""
    import numpy as np
    from PIL import Image
    from PIL.PngImagePlugin import PngInfo

    info = PngInfo()
    for key, text in chunks.items():
        info.add_text(key, text)
    Image.fromarray(np.zeros((8, 8, 3), dtype=np.uint8)).save(path, pnginfo=info)
    return path


def test_comfyui_png_prefers_the_workflow_and_falls_back_to_the_prompt(registry: Any, tmp_path: Path) -> None:
    ui_text = (FIXTURES / "txt2img_ui.json").read_text()
    api_text = (FIXTURES / "txt2img_api.json").read_text()
    both = load_graph_any(png_with_text(tmp_path / "ComfyUI_00001_.png",
                                        {"prompt": api_text, "workflow": ui_text}), registry)
    assert both.meta["comfyui"]["format"] == "ui" and "@frames" in both.editor  # layout kept
    only_prompt = load_graph_any(png_with_text(tmp_path / "b.png", {"prompt": api_text}), registry)
    assert only_prompt.meta["comfyui"]["format"] == "api"
    assert semantics(both) == semantics(only_prompt)


def test_png_without_metadata_is_a_clear_error(registry: Any, tmp_path: Path) -> None:
    path = png_with_text(tmp_path / "plain.png", {})
    with pytest.raises(GraphFileError) as info:
        load_graph_any(path, registry)
    assert "plain.png" in str(info.value) and "no workflow" in str(info.value)


def test_kind_is_told_by_content_not_name(registry: Any, tmp_path: Path) -> None:
    path = tmp_path / "workflow.txt"
    path.write_text((FIXTURES / "txt2img_api.json").read_text())
    assert load_graph_any(path, registry).meta["comfyui"]["format"] == "api"
    wrapped = tmp_path / "request.json"  # a /prompt request body
    wrapped.write_text(json.dumps({"prompt": json.loads(path.read_text()), "client_id": "x"}))
    assert len(load_graph_any(wrapped, registry).nodes) == 7


def test_more_types_agree_in_both_formats(registry: Any) -> None:
    ui = load_graph_any(FIXTURES / "more_ui.json", registry)
    api = load_graph_any(FIXTURES / "more_api.json", registry)
    assert semantics(ui) == semantics(api)
    nodes, links = semantics(ui)
    assert nodes["ControlNetApply_6"] == ("diffusion.ApplyControlNet", {"strength": 0.7})
    assert ("ControlNetApply_6.conditioning", "KSampler_8.positive") in links


def test_regional_prompts_step_ranges_and_latent_ops_agree_in_both_formats(registry: Any) -> None:
    ui = load_graph_any(FIXTURES / "regional_ui.json", registry)
    api = load_graph_any(FIXTURES / "regional_api.json", registry)
    assert semantics(ui) == semantics(api)
    nodes, links = semantics(ui)
    base, refiner = nodes["KSamplerAdvanced_16"], nodes["KSamplerAdvanced_17"]
    assert base[0] == "diffusion.KSamplerAdvanced"
    assert (base[1]["add_noise"], base[1]["return_with_leftover_noise"]) == (True, True)  # "enable"
    assert (refiner[1]["add_noise"], refiner[1]["start_at_step"]) == (False, 2)
    assert ("KSamplerAdvanced_16.latent", "KSamplerAdvanced_17.latent_image") in links
    assert ("LatentUpscale_20.latent", "LatentComposite_21.source") in links
    assert ("ImagePadForOutpaint_24.mask", "VAEEncodeForInpaint_25.mask") in links
    assert nodes["PreviewImage_23"][0] == "image.PreviewImage"
    # Widgets fed by ComfyUI's Primitive* nodes stay linked.
    assert ("PrimitiveInt_31.value", "KSampler_26.seed") in links
    assert ("PrimitiveStringMultiline_33.value", "CLIPTextEncode_4.text") in links
    assert nodes["LoadImageMask_35"] == ("image.Load", {"path": "start.png"})  # without " [input]"
    assert ("LoadImageMask_35.mask", "ConditioningSetMask_36.mask") in links


def test_every_comfyui_sampler_name_in_a_workflow_keeps_comfyui_semantics(registry: Any) -> None:
    graph = load_graph_any(FIXTURES / "regional_api.json", registry)
    node = graph.nodes["KSampler_26"]
    assert (node.type, node.inputs["sampler_name"]) == ("diffusion.KSampler", "uni_pc_bh2")


def test_the_docs_table_lists_every_mapped_type() -> None:
    doc = (Path(__file__).resolve().parents[2] / "docs" / "comfyui.md").read_text()
    table = doc[doc.index("## Node mapping"):doc.index("## Samplers and schedulers")]
    missing = [t for t in BY_TYPE if t not in table]
    assert not missing, f"docs/comfyui.md does not list {missing}"


def _broken(doc: dict[str, Any], how: str) -> dict[str, Any]:
    doc = json.loads(json.dumps(doc))
    node = next(n for n in doc.get("nodes", []) if n["type"] == "KSampler") if "nodes" in doc else None
    if how == "inputs not a list":
        node["inputs"] = 7
    elif how == "link id a list":
        node["inputs"][0]["link"] = [1, 2]
    elif how == "group box of words":
        doc["groups"][0]["bounding"] = ["a", "b", "c", "d"]
    elif how == "control value an object":
        node["widgets_values"][1] = {"x": 1}
    elif how == "subgraphs not a list":
        doc["definitions"] = {"subgraphs": 3}
    elif how == "entry without class_type":
        doc["3"] = {"inputs": {}}
    elif how == "inputs of a prompt a list":
        doc["3"]["inputs"] = [1, 2]
    return doc


@pytest.mark.parametrize("how", ["inputs not a list", "link id a list", "group box of words",
                                 "control value an object", "subgraphs not a list", "entry without class_type",
                                 "inputs of a prompt a list"])
def test_malformed_workflows_are_reported_never_raised(how: str, registry: Any, tmp_path: Path) -> None:
    from nodeflow.errors import NodeflowError

    source = "txt2img_api.json" if "prompt" in how or "class_type" in how else "txt2img_ui.json"
    path = tmp_path / "w.json"
    path.write_text(json.dumps(_broken(json.loads((FIXTURES / source).read_text()), how)))
    try:
        graph = load_graph_any(path, registry)
    except NodeflowError as exc:
        assert "w.json" in str(exc)
    else:
        assert graph.nodes  # read what makes sense; the validator reports the rest


def test_import_is_deterministic(registry: Any) -> None:
    first = load_graph_any(FIXTURES / "regional_ui.json", registry).dumps()
    assert load_graph_any(FIXTURES / "regional_ui.json", registry).dumps() == first


def test_a_number_too_long_to_read_is_a_located_error(registry: Any, tmp_path: Path) -> None:
    from nodeflow.errors import NodeflowError

    path = tmp_path / "huge.json"
    path.write_text('{"1": {"class_type": "KSampler", "inputs": {"seed": ' + "9" * 5000 + "}}}")
    with pytest.raises(NodeflowError) as info:
        load_graph_any(path, registry)  # the editor's open path too: never a bare ValueError
    assert "huge.json" in str(info.value)
