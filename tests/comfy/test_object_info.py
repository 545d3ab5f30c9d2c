"""A ComfyUI client talking to `nodeflow serve` finds the SD3/Flux node types in /object_info, with
the inputs and ComfyUI type names it links by, and the Flux workflow it builds from them runs."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.comfy.conftest import FIXTURES
from tests.comfy.test_flow_import import comfy_models
from tests.server.conftest import start_server, wait_job

FLUX_TYPES = ("UNETLoader", "DualCLIPLoader", "CLIPLoader", "TripleCLIPLoader", "FluxGuidance", "ModelSamplingFlux",
              "ModelSamplingSD3", "CLIPTextEncodeFlux", "ControlNetApplySD3", "RandomNoise", "KSamplerSelect",
              "BasicScheduler", "BasicGuider", "CFGGuider", "SamplerCustomAdvanced", "SamplerCustom",
              "EmptySD3LatentImage")


@pytest.fixture(scope="module")
def flux_server(tmp_path_factory: pytest.TempPathFactory) -> Any:
    install = comfy_models(tmp_path_factory.mktemp("comfy-flux-server"), "flux")
    mp = pytest.MonkeyPatch()
    mp.setenv("NODEFLOW_COMFY_MODELS", str(install))
    try:
        running = start_server(tmp_path_factory.mktemp("server") / "data")
    finally:
        mp.undo()
    yield running
    running.stop()


def test_flux_types_are_listed_with_the_types_a_client_links_by(flux_server: Any) -> None:
    with flux_server.client() as client:
        info = client.get("/object_info").json()
        for name in FLUX_TYPES:
            assert name in info, name
        unet = client.get("/object_info/UNETLoader").json()["UNETLoader"]
        assert unet["input_order"]["required"] == ["unet_name", "weight_dtype"]
        assert "fp8_e4m3fn" in unet["input"]["required"]["weight_dtype"][0] and unet["output"] == ["MODEL"]
        assert info["KSamplerSelect"]["input"]["required"]["sampler_name"][0] == \
            ["euler", "heun", "dpmpp_2m", "euler_ancestral"]
        assert info["RandomNoise"]["input"]["required"]["noise_seed"][1]["control_after_generate"] is True
        # every link of the Flux workflow joins an output and an input of the same ComfyUI type
        prompt = json.loads((FIXTURES / "flux_api.json").read_text())
        for node in prompt.values():
            declared = info[node["class_type"]]["input"]["required"]
            for name, value in node["inputs"].items():
                assert name in declared, (node["class_type"], name)
                if isinstance(value, list):
                    source = info[prompt[value[0]]["class_type"]]["output"][value[1]]
                    assert declared[name][0] == source, (node["class_type"], name, source)


@pytest.mark.slow  # about 20 s: the server's worker loads torch and the models
def test_the_flux_workflow_a_client_builds_from_them_runs(flux_server: Any) -> None:
    prompt = json.loads((FIXTURES / "flux_api.json").read_text())
    prompt["16"]["inputs"]["sampler_name"] = "dpmpp_2m"
    with flux_server.client() as client:
        response = client.post("/prompt", json={"prompt": prompt, "client_id": "flux-client"})
        assert response.status_code == 200, response.text
        prompt_id = response.json()["prompt_id"]
        assert wait_job(client, prompt_id, timeout=180)["state"] == "done", flux_server.output()
        history = client.get(f"/history/{prompt_id}").json()[prompt_id]
        images = history["outputs"]["9"]["images"]
        assert images and images[0]["filename"].endswith(".png")


def test_a_flux_only_type_on_an_sd_model_is_refused_naming_the_node(flux_server: Any) -> None:
    prompt: dict[str, Any] = json.loads((FIXTURES / "txt2img_api.json").read_text())
    prompt["50"] = {"class_type": "FluxGuidance", "inputs": {"guidance": 3.5, "conditioning": ["6", 0]}}
    prompt["3"]["inputs"]["positive"] = ["50", 0]
    with flux_server.client() as client:
        response = client.post("/prompt", json={"prompt": prompt})
    assert response.status_code == 400
    assert response.json()["node_errors"], response.text


def test_listed_only_where_the_importer_maps_them(flux_server: Any) -> None:
    from nodeflow.comfy.mapping import FLOW_MAPS, FOLDED_WIDGETS

    with flux_server.client() as client:
        info = client.get("/object_info").json()
    for name in FLUX_TYPES:
        assert name in FLOW_MAPS or name in FOLDED_WIDGETS or name == "EmptySD3LatentImage"
    assert "SplitSigmas" not in info and "DisableNoise" not in info
