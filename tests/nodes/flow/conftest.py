"""Fixtures: tiny SD3 and Flux models with random weights, as diffusers folders and as the split
files ComfyUI users keep, in one models folder, built once per session."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.nodes.flow import tiny

SPLIT_NAMES = {
    "sd3": {"model": "tiny-sd3.safetensors", "clip_l": "clip_l.safetensors", "clip_g": "clip_g.safetensors",
            "t5": "t5xxl_tiny.safetensors", "vae": "tiny-sd3-vae.safetensors"},
    "flux": {"model": "tiny-flux.safetensors", "clip_l": "clip_l.safetensors", "t5": "t5xxl_tiny.safetensors",
             "vae": "ae.safetensors"},
}


@pytest.fixture(scope="session")
def flow_models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("flow-models")
    for kind in ("checkpoints", "loras", "controlnet", "vae", "diffusion_models", "text_encoders",
                 "tokenizers"):
        (root / kind).mkdir()
    return root


@pytest.fixture(scope="session")
def sd3_parts(flow_models: Path) -> dict[str, Any]:
    """Components of a tiny SD3 saved as checkpoints/tiny-sd3 and as split files (the split
    CLIP-L file is SD3's, which carries a projection)."""
    parts = tiny.sd3_components()
    folder = tiny.save_sd3_parts(flow_models / "checkpoints" / "tiny-sd3", parts)
    split = flow_models / "split-sd3"
    paths = tiny.save_split(split, parts, "sd3", SPLIT_NAMES["sd3"])
    tiny.save_sd3_bundle(flow_models / "checkpoints" / "tiny-sd3.5.safetensors", parts)
    parts["tokenizer_3"].save_pretrained(flow_models / "tokenizers" / "t5-sd3")
    return {"parts": parts, "paths": paths, "models": split, "folder": folder}


@pytest.fixture(scope="session")
def flux_parts(flow_models: Path) -> dict[str, Any]:
    parts = tiny.flux_components()
    folder = tiny.save_flux_parts(flow_models / "checkpoints" / "tiny-flux", parts)
    paths = tiny.save_split(flow_models, parts, "flux", SPLIT_NAMES["flux"])
    return {"parts": parts, "paths": paths, "models": flow_models, "folder": folder}


@pytest.fixture(scope="session")
def sd3_pipe(sd3_parts: dict[str, Any]) -> Any:
    from diffusers import StableDiffusion3Pipeline

    return StableDiffusion3Pipeline.from_pretrained(sd3_parts["folder"])


@pytest.fixture(scope="session")
def flux_pipe(flux_parts: dict[str, Any]) -> Any:
    from diffusers import FluxPipeline

    return FluxPipeline.from_pretrained(flux_parts["folder"])


@pytest.fixture(scope="session")
def sd3_reference(sd3_pipe: Any) -> Any:
    """The SD3 pipeline's pixels for the tests' prompt, seed 7, 2 steps, guidance 7, negative ''."""
    from tests.nodes.flow.test_txt2img import pipeline_pixels

    return pipeline_pixels(sd3_pipe, guidance_scale=7.0, negative_prompt="")


@pytest.fixture(scope="session")
def flux_reference(flux_pipe: Any) -> Any:
    """The Flux pipeline's pixels for the tests' prompt, seed 7, 2 steps, guidance 3.5."""
    from tests.nodes.flow.test_txt2img import pipeline_pixels

    return pipeline_pixels(flux_pipe, guidance_scale=3.5)


@pytest.fixture(scope="package", autouse=True)
def close_shared_executors() -> Any:
    """The long-lived executors the tests share are closed once this package's tests are done, so
    their worker threads do not outlive them."""
    yield
    from tests.nodes.flow.test_txt2img import _EXECUTORS

    for executor in _EXECUTORS.values():
        executor.close()
    _EXECUTORS.clear()
