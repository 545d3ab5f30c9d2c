"""`nodeflow import`, and `run` / `validate` on ComfyUI files, as a user runs them."""

from __future__ import annotations

import json
import pickle
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from nodeflow.cli import main
from nodeflow.comfy.model_paths import comfy_model_folders, read_extra_model_paths
from nodeflow.graph import Graph

from .conftest import FIXTURES


def test_import_writes_a_graph_that_validates_on_the_comfyui_folder(tmp_path: Path, comfy_root: Path,
                                                                   capsys: Any) -> None:
    out = tmp_path / "graph.json"
    assert main(["import", str(FIXTURES / "img2img_ui.json"), "-o", str(out)]) == 0
    graph = Graph.load(out)
    assert graph.nodes["KSampler_17"].type == "diffusion.KSampler"
    assert "img2img_ui.json: ComfyUI workflow -> " in capsys.readouterr().err
    # Models and the input picture found where ComfyUI keeps them, with one flag.
    assert main(["validate", str(out), "--comfy-models", str(comfy_root)]) == 0
    assert main(["validate", str(FIXTURES / "img2img_api.json"), "--comfy-models", str(comfy_root)]) == 0


def test_import_refuses_unsupported_nodes_and_writes_nothing(tmp_path: Path, capsys: Any) -> None:
    out = tmp_path / "graph.json"
    assert main(["import", str(FIXTURES / "unsupported_ui.json"), "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert "IPAdapterApply (nodes #2 'My IP adapter', #4)" in err and "Traceback" not in err
    assert not out.exists()
    assert main(["import", str(FIXTURES / "unsupported_ui.json"), "-o", str(out), "--partial"]) == 0
    err = capsys.readouterr().err
    assert "IPAdapterApply (nodes #2 'My IP adapter', #4)" in err and "left out of the converted graph" in err
    assert "--partial" not in err  # no advice to do what was just done
    assert list(Graph.load(out).nodes) == ["CheckpointLoaderSimple_1"]


def test_bad_files_exit_2_naming_the_file_without_a_traceback(tmp_path: Path, capsys: Any) -> None:
    bad_json = tmp_path / "broken.json"
    bad_json.write_text('{"nodes": [ {"id": 1,, }')
    plain_png = tmp_path / "photo.png"
    Image.new("RGB", (4, 4)).save(plain_png)
    for path, expect in ((bad_json, "malformed JSON"), (plain_png, "no workflow"),
                         (FIXTURES / "missing_link_api.json", "node 99")):
        for command in (["run", str(path), "--out", str(tmp_path / "out")], ["validate", str(path)],
                        ["import", str(path), "-o", str(tmp_path / "g.json")]):
            assert main(command) == 2, command
            err = capsys.readouterr().err
            assert path.name in err and expect in err, err
    # The same from a shell: the message and exit status, no traceback.
    proc = subprocess.run([sys.executable, "-m", "nodeflow", "run", str(bad_json)], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 2 and "malformed JSON" in proc.stderr and "Traceback" not in proc.stderr


def _pickle_bomb(path: Path, marker: Path) -> None:
    """A pickle that would create ``marker`` if anything unpickled it."""

    class Bomb:
        def __reduce__(self) -> Any:
            return (open, (str(marker), "w"))

    path.write_bytes(pickle.dumps({"state_dict": Bomb()}))


def test_pickle_checkpoints_are_refused_never_unpickled(tmp_path: Path, comfy_root: Path, capsys: Any) -> None:
    marker = tmp_path / "unpickled"
    _pickle_bomb(comfy_root / "models" / "checkpoints" / "old-model.ckpt", marker)
    prompt = json.loads((FIXTURES / "txt2img_api.json").read_text())
    prompt["4"]["inputs"]["ckpt_name"] = "old-model.ckpt"
    path = tmp_path / "old.json"
    path.write_text(json.dumps(prompt))
    code = main(["run", str(path), "--comfy-models", str(comfy_root), "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2, err
    assert "old-model.ckpt" in err and "Convert it to .safetensors" in err and "CheckpointLoaderSimple_4" in err
    assert not marker.exists()


def test_extra_model_paths_yaml_is_read_as_comfyui_reads_it(tmp_path: Path, monkeypatch: Any) -> None:
    monkeypatch.setenv("MODELS_HOME", str(tmp_path / "env"))
    yaml_file = tmp_path / "conf" / "extra_model_paths.yaml"
    yaml_file.parent.mkdir()
    yaml_file.write_text(
        "a111:\n"
        "    base_path: ../webui\n"
        "    is_default: true\n"
        "    checkpoints: models/Stable-diffusion\n"
        "    loras: |\n"
        "         models/Lora\n"
        "         models/LyCORIS\n"
        "    upscale_models: models/ESRGAN\n"
        "    configs: models/Stable-diffusion\n"
        "mine:\n"
        "    checkpoints: $MODELS_HOME/ckpt\n"
        "    vae: relative/vae\n"
        "empty:\n")
    folders = read_extra_model_paths(yaml_file)
    webui = tmp_path / "webui"
    assert folders["checkpoints"] == [webui / "models/Stable-diffusion", tmp_path / "env" / "ckpt"]
    assert folders["loras"] == [webui / "models/Lora", webui / "models/LyCORIS"]
    assert folders["upscale"] == [webui / "models/ESRGAN"]  # ComfyUI's upscale_models
    assert folders["vae"] == [yaml_file.parent / "relative/vae"]  # no base_path: beside the YAML file
    assert "configs" not in folders


def test_comfy_models_flag_takes_the_install_its_models_folder_or_a_yaml(tmp_path: Path, comfy_root: Path,
                                                                        capsys: Any) -> None:
    by_root = comfy_model_folders(comfy_root)
    assert by_root["checkpoints"] == [comfy_root / "models" / "checkpoints"]
    assert by_root["upscale"] == [comfy_root / "models" / "upscale_models"]
    assert by_root["image"] == [comfy_root / "input"]
    assert comfy_model_folders(comfy_root / "models")["loras"] == [comfy_root / "models" / "loras"]
    assert main(["validate", str(FIXTURES / "more_api.json"), "--comfy-models", str(tmp_path / "nowhere")]) == 2
    assert "no such folder" in capsys.readouterr().err


def test_models_folder_of_comfyui_works_with_plain_models_flag(comfy_root: Path) -> None:
    from nodeflow.settings import Settings

    models = comfy_root / "models"
    assert main(["validate", str(FIXTURES / "txt2img_api.json"), "--models", str(models)]) == 0
    # upscale_models/ counts as nodeflow's upscale/.
    found = Settings(models_dirs=[models]).resolve_path("upscale", "4x-demo.pth")
    assert found == models / "upscale_models" / "4x-demo.pth"


@pytest.mark.parametrize("name", ["txt2img_ui.json", "more_api.json"])
def test_run_a_comfyui_workflow_to_a_picture(name: str, tmp_path: Path, comfy_root: Path) -> None:
    out = tmp_path / "out"
    assert main(["run", str(FIXTURES / name), "--comfy-models", str(comfy_root), "--out", str(out), "-q"]) == 0
    pictures = sorted(out.rglob("*.png"))
    assert pictures, "no picture written"
    with Image.open(pictures[0]) as im:
        assert im.size == (64, 64)


def test_comfyui_folders_from_the_environment_reach_every_settings(comfy_root: Path, monkeypatch: Any) -> None:
    from nodeflow.comfy.model_paths import settings_from_env

    monkeypatch.setenv("NODEFLOW_COMFY_MODELS", str(comfy_root))
    settings = settings_from_env()  # as the editor and the ComfyUI importer build theirs
    assert settings.resolve_path("checkpoints", "demo-model.safetensors") is not None
    assert settings.resolve_path("image", "start.png") == comfy_root / "input" / "start.png"
    assert main(["validate", str(FIXTURES / "more_api.json"), "--comfy-models", str(comfy_root)]) == 0


def test_a_comfyui_png_validates_against_the_comfyui_folder(tmp_path: Path, comfy_root: Path) -> None:
    from .test_convert import png_with_text

    png = png_with_text(tmp_path / "ComfyUI_00001_.png", {"prompt": (FIXTURES / "more_api.json").read_text()})
    # A graph from a picture is untrusted: it may read only beside the picture and in the model
    # folders, which include the ComfyUI folder given on the command line (and its input/).
    assert main(["validate", str(png), "--comfy-models", str(comfy_root)]) == 0
    assert main(["validate", str(png)]) == 2


def sd35_workflow(tmp_path: Path) -> tuple[Path, Path]:
    """A ComfyUI folder holding a tiny SD3.5 single-file checkpoint under a name that says nothing
    (and T5's tokenizer), and an API workflow that loads it with CheckpointLoaderSimple."""
    from tests.nodes.flow import tiny

    root = tmp_path / "ComfyUI"
    parts = tiny.sd3_components()
    tiny.save_sd3_bundle(root / "models" / "checkpoints" / "mystery.safetensors", parts)
    parts["tokenizer_3"].save_pretrained(root / "models" / "tokenizers" / "t5")
    doc = json.loads((FIXTURES / "txt2img_api.json").read_text())
    doc["4"]["inputs"]["ckpt_name"] = "mystery.safetensors"
    doc["5"]["inputs"]["batch_size"] = 1
    doc["3"]["inputs"]["steps"] = 2
    workflow = tmp_path / "sd35_api.json"
    workflow.write_text(json.dumps(doc))
    return root, workflow


def test_validate_gives_the_importer_the_comfyui_folders(tmp_path: Path, capsys: Any) -> None:
    """The checkpoint is read as SD3 from its file, found only through --comfy-models, while the
    workflow is converted; without the folder it is not found, stays SD's, and validation says so."""
    root, workflow = sd35_workflow(tmp_path)
    assert main(["validate", str(workflow), "--comfy-models", str(root)]) == 0
    captured = capsys.readouterr()
    assert "valid" in captured.out and "note:" not in captured.err, captured
    assert main(["validate", str(workflow)]) == 2
    assert "mystery.safetensors" in capsys.readouterr().err


def test_run_gives_the_importer_the_comfyui_folders(tmp_path: Path) -> None:
    root, workflow = sd35_workflow(tmp_path)
    out = tmp_path / "out"
    assert main(["run", str(workflow), "--comfy-models", str(root), "--out", str(out), "-q"]) == 0
    pictures = sorted(out.rglob("*.png"))
    assert pictures, "no picture written"
    with Image.open(pictures[0]) as im:
        assert im.size == (64, 64)


def test_run_and_validate_print_what_the_import_assumed(tmp_path: Path, capsys: Any) -> None:
    for command in (["validate", str(FIXTURES / "flux_api.json")],
                    ["run", str(FIXTURES / "flux_api.json"), "--out", str(tmp_path / "out"), "-q"]):
        assert main(command) == 2  # the models are not here
        err = capsys.readouterr().err
        assert "flux_api.json: assumed #12 UNETLoader" in err and "Traceback" not in err, err


def test_the_server_gives_the_importer_its_comfyui_folders(tmp_path: Path) -> None:
    """`nodeflow serve --comfy-models DIR`: a ComfyUI prompt loading a checkpoint whose name says
    nothing is read as SD3 from the file in that folder, so it is accepted, not refused as SD."""
    from tests.server.conftest import start_server

    root, workflow = sd35_workflow(tmp_path)
    server = start_server(tmp_path / "data", extra=("--comfy-models", str(root)))
    try:
        with server.client() as client:
            response = client.post("/prompt", json={"prompt": json.loads(workflow.read_text())})
        assert response.status_code == 200, response.text
    finally:
        server.stop()
