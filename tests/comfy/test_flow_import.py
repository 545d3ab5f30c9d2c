"""ComfyUI workflows for SD3.x and Flux: the split-file loaders, the custom sampler (RandomNoise,
KSamplerSelect, BasicScheduler, BasicGuider), FluxGuidance, ModelSampling*, EmptySD3LatentImage and
ConditioningZeroOut become the flow pack's nodes, and give the picture of the same graph written
by hand, on tiny random models kept as split files in a ComfyUI models folder."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from nodeflow.comfy import import_workflow
from nodeflow.graph import Graph
from tests.comfy.conftest import FIXTURES
from tests.nodes.flow import tiny

NAMES = {
    "flux": {"model": "tiny-flux.safetensors", "clip_l": "clip_l.safetensors", "t5": "t5xxl_tiny.safetensors",
             "vae": "ae.safetensors"},
    "sd3": {"model": "tiny-sd3.safetensors", "clip_l": "clip_l.safetensors", "clip_g": "clip_g.safetensors",
            "t5": "t5xxl_tiny.safetensors", "vae": "tiny-sd3-vae.safetensors"},
}
PROMPT = "a red circle on a blue background"


def comfy_models(root: Path, family: str) -> Path:
    """ComfyUI/models with the tiny model's split files in ComfyUI's older folder names (unet/,
    clip/), as many installs have them, and T5's tokenizer in tokenizers/t5."""
    parts = tiny.sd3_components() if family == "sd3" else tiny.flux_components()
    staging = root / "staging"
    tiny.save_split(staging, parts, family, NAMES[family])
    models = root / "ComfyUI" / "models"
    models.mkdir(parents=True)
    for ours, theirs in (("diffusion_models", "unet"), ("text_encoders", "clip"), ("vae", "vae"),
                         ("tokenizers", "tokenizers")):
        shutil.move(str(staging / ours), str(models / theirs))
    return root / "ComfyUI"


@pytest.fixture(scope="module")
def flux_install(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return comfy_models(tmp_path_factory.mktemp("comfy-flux"), "flux")


@pytest.fixture(scope="module")
def sd3_install(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return comfy_models(tmp_path_factory.mktemp("comfy-sd3"), "sd3")


def settings_for(install: Path) -> Any:
    from nodeflow.comfy.model_paths import add_comfy_models
    from nodeflow.settings import Settings

    return add_comfy_models(Settings(), [str(install)])


def pictures(registry: Any, graph: Graph, install: Path) -> Any:
    """The 8-bit pixels the graph's VAEDecode gives, run on the ComfyUI install's models."""
    from nodeflow.executor import Executor

    decode = next(nid for nid, node in graph.nodes.items() if node.type == "diffusion.VAEDecode")
    executor = Executor(registry, settings_for(install))
    try:
        result = executor.run(graph, [decode])
    finally:
        executor.close()
    assert result.ok, {k: str(v) for k, v in result.failed.items()}
    return np.round(np.asarray(result.outputs[decode]["image"]) * 255).astype(np.uint8)


def native(nodes: dict[str, tuple[str, dict[str, Any]]], links: list[tuple[str, str]]) -> Graph:
    from nodeflow.graph import parse_graph_text

    data = {"format": "nodeflow.graph", "version": 1,
            "nodes": {nid: {"type": t, "inputs": inputs} for nid, (t, inputs) in nodes.items()},
            "links": [{"from": a, "to": b} for a, b in links]}
    graph, problems = parse_graph_text(json.dumps(data), "native.json")
    assert graph is not None and not problems, problems
    return graph


def flux_native(**sample: Any) -> Graph:
    """The Flux fixture's workflow as one would write it in nodeflow, by hand."""
    names = NAMES["flux"]
    return native({
        "unet": ("flow.LoadDiffusionModel", {"path": names["model"]}),
        "clip": ("flow.LoadTextEncoders", {"encoder1": names["clip_l"], "encoder2": names["t5"], "type": "flux"}),
        "vae": ("flow.LoadVAE", {"path": names["vae"]}),
        "shift": ("flow.ModelSamplingFlux", {"width": 64, "height": 64}),
        "positive": ("flow.TextEncode", {"text": PROMPT}),
        "guidance": ("flow.FluxGuidance", {"guidance": 5.0}),
        "latent": ("flow.EmptyLatent", {"width": 64, "height": 64}),
        "sampler": ("flow.Sample", {"seed": 7, "steps": 4, "cfg": 1.0, **sample}),
        "decode": ("diffusion.VAEDecode", {}),
    }, [("unet.model", "shift.model"), ("clip.clip", "positive.clip"), ("positive.conditioning",
        "guidance.conditioning"), ("shift.model", "sampler.model"), ("guidance.conditioning", "sampler.positive"),
        ("latent.latent", "sampler.latent"), ("sampler.latent", "decode.latent"), ("vae.vae", "decode.vae")])


def sd3_native(**sample: Any) -> Graph:
    names = NAMES["sd3"]
    return native({
        "unet": ("flow.LoadDiffusionModel", {"path": names["model"]}),
        "clip": ("flow.LoadTextEncoders", {"encoder1": names["t5"], "encoder2": names["clip_g"],
                                           "encoder3": names["clip_l"], "type": "sd3"}),
        "vae": ("flow.LoadVAE", {"path": names["vae"], "family": "sd3"}),
        "positive": ("flow.TextEncode", {"text": PROMPT}),
        "empty": ("flow.TextEncode", {"text": ""}),
        "negative": ("flow.ZeroOut", {}),
        "latent": ("flow.EmptyLatent", {"width": 64, "height": 64}),
        "sampler": ("flow.Sample", {"seed": 7, "steps": 4, "cfg": 4.5, **sample}),
        "decode": ("diffusion.VAEDecode", {}),
    }, [("unet.model", "sampler.model"), ("clip.clip", "positive.clip"), ("clip.clip", "empty.clip"),
        ("empty.conditioning", "negative.conditioning"), ("positive.conditioning", "sampler.positive"),
        ("negative.conditioning", "sampler.negative"), ("latent.latent", "sampler.latent"),
        ("sampler.latent", "decode.latent"), ("vae.vae", "decode.vae")])


def imported(registry: Any, name: str, install: Path | None = None) -> Any:
    result = import_workflow(FIXTURES / name, registry, settings_for(install) if install else None)
    assert result is not None
    assert not result.problems, [str(p) for p in result.problems]
    return result


def types_of(graph: Graph) -> dict[str, str]:
    return {nid: node.type for nid, node in graph.nodes.items()}


@pytest.mark.parametrize("fmt", ["ui", "api"])
def test_flux_workflow_maps_onto_the_flow_pack(registry: Any, fmt: str) -> None:
    result = imported(registry, f"flux_{fmt}.json")
    graph = result.graph
    assert types_of(graph) == {
        "UNETLoader_12": "flow.LoadDiffusionModel", "DualCLIPLoader_11": "flow.LoadTextEncoders",
        "VAELoader_10": "flow.LoadVAE", "CLIPTextEncode_6": "flow.TextEncode", "FluxGuidance_26": "flow.FluxGuidance",
        "ModelSamplingFlux_30": "flow.ModelSamplingFlux", "EmptySD3LatentImage_27": "flow.EmptyLatent",
        "SamplerCustomAdvanced_13": "flow.Sample", "VAEDecode_8": "diffusion.VAEDecode", "SaveImage_9": "image.Save"}
    # the noise, sampler, scheduler and guider nodes are read into the one sampler
    assert graph.nodes["SamplerCustomAdvanced_13"].inputs == {
        "seed": 7, "steps": 4, "cfg": 1.0, "sampler": "euler", "scheduler": "simple", "denoise": 1.0,
        "semantics": "comfyui"}
    assert graph.nodes["DualCLIPLoader_11"].inputs["type"] == "flux"
    assert graph.nodes["VAELoader_10"].inputs["family"] == "flux"
    # without the files, the diffusion model's kind is an assumption, recorded and reported
    assert any("UNETLoader" in a and "taken as an SD3.x or Flux" in a for a in result.assumptions)
    assert graph.meta["comfyui"]["assumptions"] == result.assumptions


def test_flux_import_reads_the_family_from_the_files_without_assuming(registry: Any, flux_install: Path) -> None:
    result = imported(registry, "flux_api.json", flux_install)
    assert result.assumptions == []
    assert "assumptions" not in result.graph.meta["comfyui"]


@pytest.mark.parametrize("fmt", ["ui", "api"])
def test_sd3_workflow_maps_onto_the_flow_pack(registry: Any, fmt: str) -> None:
    graph = imported(registry, f"sd3_{fmt}.json").graph
    assert types_of(graph)["KSampler_3"] == "flow.Sample"
    assert types_of(graph)["ConditioningZeroOut_67"] == "flow.ZeroOut"
    assert types_of(graph)["ModelSamplingSD3_13"] == "flow.ModelSamplingSD3"
    assert graph.nodes["TripleCLIPLoader_11"].inputs["type"] == "sd3"
    assert graph.nodes["VAELoader_10"].inputs["family"] == "sd3"
    assert graph.nodes["KSampler_3"].inputs["semantics"] == "comfyui"


def test_imported_flux_workflow_gives_the_native_graphs_picture(registry: Any, flux_install: Path,
                                                                  torch_threads: Any) -> None:
    ours = pictures(registry, imported(registry, "flux_ui.json", flux_install).graph, flux_install)
    same = pictures(registry, flux_native(scheduler="simple", semantics="comfyui"), flux_install)
    assert ours.tobytes() == same.tobytes()
    # ComfyUI's euler/simple on Flux is the pipeline's schedule: the diffusers-semantics graph agrees
    diffusers = pictures(registry, flux_native(scheduler="normal"), flux_install)
    assert np.abs(ours.astype(int) - diffusers.astype(int)).max() <= 1


def test_imported_sd3_workflow_gives_the_native_graphs_picture(registry: Any, sd3_install: Path,
                                                                 torch_threads: Any) -> None:
    ours = pictures(registry, imported(registry, "sd3_api.json", sd3_install).graph, sd3_install)
    same = pictures(registry, sd3_native(scheduler="sgm_uniform", semantics="comfyui"), sd3_install)
    assert ours.tobytes() == same.tobytes()


def _flux_api() -> dict[str, Any]:
    return json.loads((FIXTURES / "flux_api.json").read_text())


def problems_of(registry: Any, tmp_path: Path, doc: dict[str, Any]) -> list[Any]:
    path = tmp_path / "workflow.json"
    path.write_text(json.dumps(doc))
    result = import_workflow(path, registry)
    assert result is not None
    return result.problems


def test_unknown_values_are_located_problems_not_tracebacks(registry: Any, tmp_path: Path) -> None:
    doc = _flux_api()
    doc["16"]["inputs"]["sampler_name"] = "uni_pc"
    doc["11"]["inputs"]["type"] = "hidream"
    problems = problems_of(registry, tmp_path, doc)
    by_node = {(p.location.node, p.location.socket): p.message for p in problems}
    assert "'hidream'" in by_node[("11", "type")] and "flux" in by_node[("11", "type")]
    # found where the user sets it: on KSamplerSelect, not on the sampler it is folded into
    assert "uni_pc" in by_node[("16", "sampler_name")] and "dpmpp_2m" in by_node[("16", "sampler_name")]


@pytest.mark.parametrize("sampler", ["heun", "dpmpp_2m", "euler_ancestral"])
def test_imported_flux_workflow_runs_comfyuis_other_samplers(registry: Any, flux_install: Path, torch_threads: Any,
                                                             sampler: str) -> None:
    doc = _flux_api()
    doc["16"]["inputs"]["sampler_name"] = sampler
    path = flux_install / f"{sampler}_api.json"
    path.write_text(json.dumps(doc))
    result = import_workflow(path, registry, settings_for(flux_install))
    assert result is not None and not result.problems, [str(p) for p in result.problems]
    ours = pictures(registry, result.graph, flux_install)
    same = pictures(registry, flux_native(scheduler="simple", semantics="comfyui", sampler=sampler), flux_install)
    assert ours.tobytes() == same.tobytes()
    euler = pictures(registry, flux_native(scheduler="simple", semantics="comfyui"), flux_install)
    assert np.abs(ours.astype(int) - euler.astype(int)).max() > 0


def test_custom_sampler_parts_nodeflow_cannot_fold_are_reported(registry: Any, tmp_path: Path) -> None:
    doc = _flux_api()
    doc["40"] = {"class_type": "SplitSigmas", "inputs": {"step": 2, "sigmas": ["17", 0]}}
    doc["13"]["inputs"]["sigmas"] = ["40", 0]
    problems = problems_of(registry, tmp_path, doc)
    located = [p for p in problems if p.location.node == "13" and p.location.socket == "sigmas"]
    assert located and "BasicScheduler" in located[0].message


def test_an_sd_checkpoint_with_a_flux_only_node_is_refused_on_that_node(registry: Any, tmp_path: Path,
                                                                          comfy_root: Path) -> None:
    doc = json.loads((FIXTURES / "txt2img_api.json").read_text())
    doc["50"] = {"class_type": "ModelSamplingFlux", "inputs": {"max_shift": 1.15, "base_shift": 0.5,
                                                              "width": 64, "height": 64, "model": ["4", 0]}}
    doc["3"]["inputs"]["model"] = ["50", 0]
    # without the checkpoint file, the Flux-only node says what the model is
    assert problems_of(registry, tmp_path, doc) == []
    # with it (an SD 1.5 checkpoint), the two disagree: a problem on the Flux-only node
    path = tmp_path / "workflow.json"
    result = import_workflow(path, registry, settings_for(comfy_root))
    assert result is not None
    located = [p for p in result.problems if p.location.node == "50"]
    assert located and "SD 1.x" in located[0].message, [str(p) for p in result.problems]


def test_comfyui_sigmas_follow_its_formulas() -> None:
    """SD3: 'normal' is the pipeline's schedule and 'simple' every 1000/steps-th level; Flux dev:
    'simple' is the pipeline's linspace, shifted by e^mu for ModelSamplingFlux's size."""
    import math

    import torch

    from nodeflow.nodes.flow.schedules import comfy_sigmas
    from nodeflow.nodes.flow.types import FlowModel, Shift

    sd3 = FlowModel(None, "sd3", Shift(shift=3.0), {})
    from diffusers import FlowMatchEulerDiscreteScheduler

    ref = FlowMatchEulerDiscreteScheduler(shift=3.0)
    ref.set_timesteps(6)
    assert torch.allclose(comfy_sigmas(sd3, "normal", "euler", 6, 1.0), ref.sigmas, atol=1e-6)
    simple = comfy_sigmas(sd3, "simple", "euler", 4, 1.0)
    t = torch.tensor([1.0, 0.75, 0.5, 0.25])
    assert torch.allclose(simple[:-1], 3 * t / (1 + 2 * t), atol=1e-6) and simple[-1] == 0
    # denoise 0.5: the last 4 + 1 of an 8-step schedule
    assert torch.allclose(comfy_sigmas(sd3, "simple", "euler", 4, 0.5), comfy_sigmas(sd3, "simple", "euler", 8,
                                                                                      1.0)[-5:])
    flux = FlowModel(None, "flux", Shift(dynamic=True, size=(512, 512)), {})
    mu = 1024 * (1.15 - 0.5) / (4096 - 256) + 0.5 - (1.15 - 0.5) / (4096 - 256) * 256
    got = comfy_sigmas(flux, "simple", "euler", 4, 1.0)
    want = [math.exp(mu) / (math.exp(mu) + 1 / x - 1) for x in (1.0, 0.75, 0.5, 0.25)] + [0.0]
    assert torch.allclose(got, torch.tensor(want), atol=1e-6)
    # without ModelSamplingFlux: ComfyUI's default, the shift at 1024x1024 (mu = max_shift)
    plain = FlowModel(None, "flux", Shift(dynamic=True), {})
    assert abs(float(comfy_sigmas(plain, "simple", "euler", 4, 1.0)[1]) -
               math.exp(1.15) / (math.exp(1.15) + 1 / 0.75 - 1)) < 1e-6


@pytest.mark.parametrize("apply", ["ControlNetApplySD3", "ControlNetApplyAdvanced"])
def test_controlnet_nodes_map_onto_the_flow_controlnet(registry: Any, tmp_path: Path, apply: str) -> None:
    doc = json.loads((FIXTURES / "sd3_api.json").read_text())
    doc["20"] = {"class_type": "ControlNetLoader", "inputs": {"control_net_name": "sd3\\canny.safetensors"}}
    doc["21"] = {"class_type": "LoadImage", "inputs": {"image": "edges.png", "upload": "image"}}
    doc["22"] = {"class_type": apply, "inputs": {
        "strength": 0.8, "start_percent": 0.1, "end_percent": 0.9, "positive": ["6", 0], "negative": ["67", 0],
        "control_net": ["20", 0], "vae": ["10", 0], "image": ["21", 0]}}
    doc["3"]["inputs"]["positive"] = ["22", 0]
    doc["3"]["inputs"]["negative"] = ["22", 1]
    path = tmp_path / "controlnet.json"
    path.write_text(json.dumps(doc))
    result = import_workflow(path, registry)
    assert result is not None and not result.problems, [str(p) for p in result.problems]
    graph = result.graph
    assert graph.nodes["ControlNetLoader_20"].type == "flow.LoadControlNet"
    assert graph.nodes["ControlNetLoader_20"].inputs == {"path": "sd3/canny.safetensors"}
    node = graph.nodes[f"{apply}_22"]
    assert (node.type, node.inputs) == ("flow.ApplyControlNet", {"strength": 0.8, "start": 0.1, "end": 0.9})
    links = {(f"{link.src}.{link.src_socket}", f"{link.dst}.{link.dst_socket}") for link in graph.links}
    for src, dst in (("CLIPTextEncode_6.conditioning", f"{apply}_22.conditioning"),
                     ("VAELoader_10.vae", f"{apply}_22.vae"), ("LoadImage_21.image", f"{apply}_22.image"),
                     ("ControlNetLoader_20.controlnet", f"{apply}_22.controlnet"),
                     (f"{apply}_22.conditioning", "KSampler_3.positive"),
                     # the negative passes through: the sampler applies the positive's ControlNet to both
                     ("ConditioningZeroOut_67.conditioning", "KSampler_3.negative")):
        assert (src, dst) in links, (src, dst, sorted(links))


def test_sampler_custom_and_clip_text_encode_flux(registry: Any, tmp_path: Path) -> None:
    doc = _flux_api()
    doc["6"] = {"class_type": "CLIPTextEncodeFlux", "inputs": {"clip_l": PROMPT, "t5xxl": PROMPT, "guidance": 4.0,
                                                               "clip": ["11", 0]}}
    doc["26"]["inputs"]["conditioning"] = ["6", 0]
    doc["13"] = {"class_type": "SamplerCustom", "inputs": {
        "add_noise": True, "noise_seed": 11, "cfg": 1.0, "model": ["30", 0], "positive": ["26", 0],
        "negative": ["26", 0], "sampler": ["16", 0], "sigmas": ["17", 0], "latent_image": ["27", 0]}}
    del doc["25"], doc["22"]
    path = tmp_path / "custom.json"
    path.write_text(json.dumps(doc))
    result = import_workflow(path, registry)
    assert result is not None and not result.problems, [str(p) for p in result.problems]
    graph = result.graph
    assert graph.nodes["SamplerCustom_13"].inputs == {"seed": 11, "steps": 4, "cfg": 1.0, "sampler": "euler",
                                                       "scheduler": "simple", "denoise": 1.0,
                                                       "semantics": "comfyui"}
    assert types_of(graph)["CLIPTextEncodeFlux_6"] == "flow.TextEncode"
    assert graph.nodes["CLIPTextEncodeFlux_6_guidance"].inputs == {"guidance": 4.0}
    links = {(f"{link.src}.{link.src_socket}", f"{link.dst}.{link.dst_socket}") for link in graph.links}
    assert ("CLIPTextEncodeFlux_6.conditioning", "CLIPTextEncodeFlux_6_guidance.conditioning") in links
    assert ("CLIPTextEncodeFlux_6_guidance.conditioning", "FluxGuidance_26.conditioning") in links
    # two different prompts cannot be one: a problem where the user types them
    doc["6"]["inputs"]["clip_l"] = "something else"
    doc["13"]["inputs"]["add_noise"] = False
    problems = {(p.location.node, p.location.socket) for p in problems_of(registry, tmp_path, doc)}
    assert {("6", "clip_l"), ("13", "add_noise")} <= problems


def test_lora_and_fp8_fast_on_flux(registry: Any, tmp_path: Path) -> None:
    doc = _flux_api()
    doc["12"]["inputs"]["weight_dtype"] = "fp8_e4m3fn_fast"
    doc["40"] = {"class_type": "LoraLoaderModelOnly", "inputs": {"lora_name": "flux\\style.safetensors",
                                                                 "strength_model": 0.7, "model": ["12", 0]}}
    doc["30"]["inputs"]["model"] = ["40", 0]
    path = tmp_path / "lora.json"
    path.write_text(json.dumps(doc))
    result = import_workflow(path, registry)
    assert result is not None and not result.problems, [str(p) for p in result.problems]
    graph = result.graph
    assert (graph.nodes["LoraLoaderModelOnly_40"].type, graph.nodes["LoraLoaderModelOnly_40"].inputs) == \
        ("flow.LoadLoRA", {"path": "flux/style.safetensors", "strength_model": 0.7})
    assert graph.nodes["UNETLoader_12"].inputs["weight_dtype"] == "fp8_e4m3fn"


def test_an_sd35_single_file_checkpoint_is_read_from_its_tensors(registry: Any, tmp_path: Path) -> None:
    """A checkpoint whose name says nothing becomes flow.LoadCheckpoint because its file is an SD3.5
    bundle; the same workflow without the file stays SD's."""
    from nodeflow.settings import Settings

    doc = json.loads((FIXTURES / "txt2img_api.json").read_text())
    doc["4"]["inputs"]["ckpt_name"] = "mystery.safetensors"
    path = tmp_path / "bundle.json"
    path.write_text(json.dumps(doc))
    assert import_workflow(path, registry).graph.nodes["CheckpointLoaderSimple_4"].type == "diffusion.LoadCheckpoint"
    (tmp_path / "models" / "checkpoints").mkdir(parents=True)
    tiny.save_sd3_bundle(tmp_path / "models" / "checkpoints" / "mystery.safetensors", tiny.sd3_components())
    result = import_workflow(path, registry, Settings(models_dirs=[tmp_path / "models"]))
    assert result is not None
    graph = result.graph
    assert graph.nodes["CheckpointLoaderSimple_4"].type == "flow.LoadCheckpoint"
    assert graph.nodes["KSampler_3"].type == "flow.Sample"
    assert graph.nodes["CLIPTextEncode_6"].type == "flow.TextEncode"
    assert result.assumptions == []


def test_nodeflow_import_prints_what_it_assumed(registry: Any, tmp_path: Path) -> None:
    import io

    from nodeflow.comfy.command import run_import

    err = io.StringIO()
    assert run_import(str(FIXTURES / "flux_api.json"), str(tmp_path / "flux.json"), False, registry, err) == 0
    assert "note:" in err.getvalue() and "UNETLoader" in err.getvalue()
    saved = json.loads((tmp_path / "flux.json").read_text())
    assert saved["meta"]["comfyui"]["assumptions"]


def test_imported_sd3_controlnet_workflow_gives_the_native_graphs_picture(registry: Any, sd3_install: Path,
                                                                          torch_threads: Any) -> None:
    """ControlNetLoader (a single file in models/controlnet) and ControlNetApplySD3 with its VAE, run."""
    from tests.nodes.diffusion import tiny as sd_tiny
    from tests.nodes.flow.test_controlnet_files import as_single_file, sd3_controlnet

    folder = sd3_install / "staging-controlnet"
    sd3_controlnet(folder, 5)
    (sd3_install / "models" / "controlnet").mkdir(exist_ok=True)
    as_single_file(folder, sd3_install / "models" / "controlnet" / "sd3_canny.safetensors")
    (sd3_install / "input").mkdir(exist_ok=True)
    sd_tiny.picture(64, 64, seed=11).save(sd3_install / "input" / "edges.png")

    doc = json.loads((FIXTURES / "sd3_api.json").read_text())
    doc["20"] = {"class_type": "ControlNetLoader", "inputs": {"control_net_name": "sd3_canny.safetensors"}}
    doc["21"] = {"class_type": "LoadImage", "inputs": {"image": "edges.png", "upload": "image"}}
    doc["22"] = {"class_type": "ControlNetApplySD3", "inputs": {
        "strength": 0.8, "start_percent": 0.0, "end_percent": 1.0, "positive": ["6", 0], "negative": ["67", 0],
        "control_net": ["20", 0], "vae": ["10", 0], "image": ["21", 0]}}
    doc["3"]["inputs"].update(positive=["22", 0], negative=["22", 1])
    path = sd3_install / "controlnet_api.json"
    path.write_text(json.dumps(doc))
    result = import_workflow(path, registry, settings_for(sd3_install))
    assert result is not None and not result.problems and not result.assumptions, result.problems
    ours = pictures(registry, result.graph, sd3_install)

    graph = sd3_native(scheduler="sgm_uniform", semantics="comfyui")
    graph.add_node("flow.LoadControlNet", "controlnet", {"path": "sd3_canny.safetensors"})
    graph.add_node("image.Load", "picture", {"path": str(sd3_install / "input" / "edges.png")})
    graph.add_node("flow.ApplyControlNet", "apply", {"strength": 0.8})
    graph.disconnect("sampler.positive")
    for source, target in (("positive.conditioning", "apply.conditioning"), ("controlnet.controlnet",
                           "apply.controlnet"), ("vae.vae", "apply.vae"), ("picture.image", "apply.image"),
                           ("apply.conditioning", "sampler.positive")):
        graph.connect(source, target)
    assert ours.tobytes() == pictures(registry, graph, sd3_install).tobytes()
    # and the ControlNet steers the picture
    plain = pictures(registry, sd3_native(scheduler="sgm_uniform", semantics="comfyui"), sd3_install)
    assert np.abs(ours.astype(int) - plain.astype(int)).max() > 3


def test_imported_flux_img2img_follows_comfyuis_start(registry: Any, flux_install: Path, torch_threads: Any) -> None:
    """ComfyUI draws the noise first, on the encoded picture's shape, and starts at σ·noise + (1 − σ)·mean:
    at denoise 1 (σ = 1) an image-to-image workflow gives its text-to-image picture exactly."""
    from tests.nodes.diffusion import tiny as sd_tiny

    (flux_install / "input").mkdir(exist_ok=True)
    sd_tiny.picture(64, 64, seed=3).save(flux_install / "input" / "start.png")
    doc = _flux_api()
    doc["40"] = {"class_type": "LoadImage", "inputs": {"image": "start.png", "upload": "image"}}
    doc["41"] = {"class_type": "VAEEncode", "inputs": {"pixels": ["40", 0], "vae": ["10", 0]}}
    doc["13"]["inputs"]["latent_image"] = ["41", 0]
    path = flux_install / "img2img_api.json"

    def run_with(denoise: float) -> Any:
        doc["17"]["inputs"]["denoise"] = denoise
        path.write_text(json.dumps(doc))
        result = import_workflow(path, registry, settings_for(flux_install))
        assert result is not None and not result.problems, [str(p) for p in result.problems]
        return pictures(registry, result.graph, flux_install)

    txt2img = pictures(registry, imported(registry, "flux_api.json", flux_install).graph, flux_install)
    assert run_with(1.0).tobytes() == txt2img.tobytes()
    half = run_with(0.5)
    assert np.abs(half.astype(int) - txt2img.astype(int)).max() > 3


def test_a_flux_all_in_one_checkpoint_is_read_from_its_tensors(registry: Any, flux_install: Path,
                                                              torch_threads: Any) -> None:
    """CheckpointLoaderSimple naming a Flux all-in-one file whose name says nothing becomes
    flow.LoadCheckpoint, from the file's tensors, and draws the split-file workflow's picture."""
    tiny.save_flux_bundle(flux_install / "models" / "checkpoints" / "all_in_one.safetensors", tiny.flux_components())
    doc = _flux_api()
    for split in ("10", "11", "12"):
        del doc[split]
    doc["4"] = {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "all_in_one.safetensors"}}
    doc["30"]["inputs"]["model"] = ["4", 0]
    doc["6"]["inputs"]["clip"] = ["4", 1]
    doc["8"]["inputs"]["vae"] = ["4", 2]
    path = flux_install / "aio_api.json"
    path.write_text(json.dumps(doc))
    result = import_workflow(path, registry, settings_for(flux_install))
    assert result is not None and not result.problems and not result.assumptions, result.problems
    assert result.graph.nodes["CheckpointLoaderSimple_4"].type == "flow.LoadCheckpoint"
    ours = pictures(registry, result.graph, flux_install)
    split = pictures(registry, imported(registry, "flux_api.json", flux_install).graph, flux_install)
    assert ours.tobytes() == split.tobytes()
