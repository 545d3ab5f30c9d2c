"""A ComfyUI text-to-image prompt on a tiny random Stable Diffusion model, through /prompt and /ws:
sampler progress and previews arrive, and the picture equals the same graph run in-process."""

from __future__ import annotations

import io
import json
import struct
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image
from websockets.sync.client import connect

from .conftest import start_server
from .test_comfy import until_done

pytest.importorskip("diffusers")


def txt2img_prompt(seed: int) -> dict[str, Any]:
    return {
        "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "tiny-sd"}},
        "5": {"class_type": "EmptyLatentImage", "inputs": {"width": 32, "height": 32, "batch_size": 1}},
        "6": {"class_type": "CLIPTextEncode", "inputs": {"text": "a red circle", "clip": ["4", 1]}},
        "7": {"class_type": "CLIPTextEncode", "inputs": {"text": "", "clip": ["4", 1]}},
        "3": {"class_type": "KSampler", "inputs": {
            "seed": seed, "steps": 3, "cfg": 7.0, "sampler_name": "euler", "scheduler": "normal",
            "denoise": 1.0, "model": ["4", 0], "positive": ["6", 0], "negative": ["7", 0],
            "latent_image": ["5", 0]}},
        "8": {"class_type": "VAEDecode", "inputs": {"samples": ["3", 0], "vae": ["4", 2]}},
        "9": {"class_type": "SaveImage", "inputs": {"filename_prefix": "tiny", "images": ["8", 0]}},
    }


@pytest.mark.slow  # loads torch and diffusers in two processes: minutes on a busy 2-core machine
def test_comfyui_txt2img_on_a_tiny_model(tmp_path: Path) -> None:
    from nodeflow.comfy.convert import convert_workflow
    from nodeflow.comfy.formats import parse_workflow
    from nodeflow.executor import Executor
    from nodeflow.registry import load_registry
    from nodeflow.settings import Settings
    from tests.nodes.diffusion import tiny

    models = tmp_path / "models"
    tiny.save_sd(models / "checkpoints" / "tiny-sd")
    prompt = txt2img_prompt(seed=11)

    # The reference: the converted graph run in this process.
    registry = load_registry(use_env=False)
    wf, problems = parse_workflow("api", prompt, "prompt")
    assert not problems
    imported = convert_workflow(wf, registry)
    assert not imported.problems
    result = Executor(registry, Settings(models_dirs=[models], out_dir=tmp_path / "local")).run(imported.graph)
    assert result.ok, result.failed
    expected = np.asarray(Image.open(result.files[0]))

    server = start_server(tmp_path / "data", extra=("--models", str(models)))
    try:
        client_id = uuid.uuid4().hex
        with server.client() as client, connect(f"{server.ws_url}/ws?clientId={client_id}") as ws:
            ws.recv(timeout=10)
            response = client.post("/prompt", json={"prompt": prompt, "client_id": client_id})
            assert response.status_code == 200, response.text
            prompt_id = response.json()["prompt_id"]
            messages, frames = until_done(ws, prompt_id, timeout=600)
            types = [m["type"] for m in messages]
            assert "execution_success" in types, messages
            steps = [m["data"]["value"] for m in messages if m["type"] == "progress" and m["data"]["node"] == "3"]
            assert steps == [1, 2, 3]
            assert frames and all(struct.unpack(">I", f[:4])[0] == 1 for f in frames)
            Image.open(io.BytesIO(frames[0][8:])).verify()
            [image] = json.loads(json.dumps(
                [m for m in messages if m["type"] == "executed"][0]["data"]["output"]["images"]))
            data = client.get("/view", params=image).content
        assert np.array_equal(np.asarray(Image.open(io.BytesIO(data))), expected)
    finally:
        server.stop()
