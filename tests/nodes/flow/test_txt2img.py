"""SD3 and Flux text-to-image through graphs/sd3_txt2img.json and graphs/flux_txt2img.json give
StableDiffusion3Pipeline's and FluxPipeline's pixels, from diffusers folders and split files."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from tests.nodes.diffusion import tiny as sd_tiny
from tests.nodes.flow.conftest import SPLIT_NAMES

PROMPT = "a red fox in the snow"
SIZE = 64


def pipeline_pixels(pipe: Any, seed: int = 7, steps: int = 2, **kwargs: Any) -> Any:
    import torch

    out = pipe(PROMPT, height=SIZE, width=SIZE, num_inference_steps=steps, output_type="np",
               generator=torch.Generator("cpu").manual_seed(seed), **kwargs)
    return out.images


def close(ours: Any, ref: Any) -> float:
    """Largest difference after rounding both to 8 bits, in 1/255 steps."""
    a = np.round(np.asarray(ours) * 255)
    b = np.round(np.asarray(ref) * 255)
    assert a.shape == b.shape, (a.shape, b.shape)
    return float(np.abs(a - b).max())


def sd3_graph(**inputs: dict[str, Any]) -> Any:
    base = {"checkpoint": {"path": "tiny-sd3"}, "positive": {"text": PROMPT},
            "latent": {"width": SIZE, "height": SIZE},
            "sampler": {"steps": 2, "cfg": 7.0, "seed": 7}}
    for key, values in inputs.items():
        base[key] = {**base.get(key, {}), **values}
    return sd_tiny.load_graph("sd3_txt2img", **base)


def flux_graph(**inputs: dict[str, Any]) -> Any:
    names = SPLIT_NAMES["flux"]
    base = {"unet": {"path": names["model"]},
            "clip": {"encoder1": names["clip_l"], "encoder2": names["t5"]},
            "vae": {"path": names["vae"]}, "positive": {"text": PROMPT},
            "latent": {"width": SIZE, "height": SIZE}, "sampler": {"steps": 2, "seed": 7}}
    for key, values in inputs.items():
        base[key] = {**base.get(key, {}), **values}
    return sd_tiny.load_graph("flux_txt2img", **base)


def as_split_sd3(graph: Any) -> Any:
    """The SD3 graph with its checkpoint replaced by the three split-file loaders."""
    names = SPLIT_NAMES["sd3"]
    graph.remove_node("checkpoint")
    graph.add_node("flow.LoadDiffusionModel", "unet", {"path": names["model"]})
    graph.add_node("flow.LoadTextEncoders", "clip", {"encoder1": names["t5"], "encoder2": names["clip_g"],
                                                     "encoder3": names["clip_l"], "type": "sd3"})
    graph.add_node("flow.LoadVAE", "vae", {"path": names["vae"]})
    for source, target in (("unet.model", "sampler.model"), ("clip.clip", "positive.clip"),
                           ("clip.clip", "negative.clip"), ("vae.vae", "decode.vae")):
        graph.connect(source, target)
    return graph


_EXECUTORS: dict[tuple[Path, ...], Any] = {}


def run(registry: Any, graph: Any, models: Path, *more: Path) -> Any:
    """The decoded pictures of a graph, run by one long-lived executor per models folder (as the
    editor or a server keeps one): models load once, and each graph runs what it changed."""
    from nodeflow.executor import Executor
    from nodeflow.settings import Settings

    key = (models, *more)
    if key not in _EXECUTORS:
        settings = Settings(models_dirs=list(key), base_dir=sd_tiny.REPO / "graphs")
        _EXECUTORS[key] = Executor(registry, settings)
    result = _EXECUTORS[key].run(graph, ["decode"])
    assert result.ok, {k: str(v) for k, v in result.failed.items()}
    return result.outputs["decode"]["image"]


def test_sd3_folder_matches_pipeline(registry, flow_models, sd3_parts, sd3_reference, torch_threads):
    ours = run(registry, sd3_graph(), flow_models)
    assert ours.shape == (1, SIZE, SIZE, 3)
    assert close(ours, sd3_reference) <= 1


def test_sd3_split_files_match_pipeline(registry, flow_models, sd3_parts, sd3_reference, torch_threads):
    ours = run(registry, as_split_sd3(sd3_graph()), sd3_parts["models"])
    assert close(ours, sd3_reference) <= 1


def test_flux_split_files_match_pipeline(registry, flow_models, flux_parts, flux_pipe, torch_threads):
    ours = run(registry, flux_graph(guidance={"guidance": 5.0}), flow_models)
    ref = pipeline_pixels(flux_pipe, guidance_scale=5.0)
    assert close(ours, ref) <= 1


def test_sd3_single_file_bundle_matches_pipeline(registry, flow_models, sd3_parts, sd3_reference,
                                                 torch_threads):
    graph = sd3_graph(checkpoint={"path": "tiny-sd3.5.safetensors", "t5_tokenizer": "t5-sd3"})
    assert close(run(registry, graph, flow_models), sd3_reference) <= 1


def test_sd3_without_t5_matches_pipeline_without_t5(registry, flow_models, sd3_parts, sd3_pipe, torch_threads):
    from diffusers import StableDiffusion3Pipeline

    graph = as_split_sd3(sd3_graph())
    graph.set_input("clip", "encoder1", "")  # CLIP-L and CLIP-G only
    ours = run(registry, graph, sd3_parts["models"])
    pipe = StableDiffusion3Pipeline.from_pipe(sd3_pipe, text_encoder_3=None, tokenizer_3=None)
    assert close(ours, pipeline_pixels(pipe, guidance_scale=7.0, negative_prompt="")) <= 1


def test_flux_folder_matches_pipeline(registry, flow_models, flux_parts, flux_reference, torch_threads):
    graph = flux_graph()
    for node in ("unet", "clip", "vae"):
        graph.remove_node(node)
    graph.add_node("flow.LoadCheckpoint", "checkpoint", {"path": "tiny-flux"})
    for source, target in (("checkpoint.model", "sampler.model"), ("checkpoint.clip", "positive.clip"),
                           ("checkpoint.vae", "decode.vae")):
        graph.connect(source, target)
    assert close(run(registry, graph, flow_models), flux_reference) <= 1


def flux_checkpoint_graph(path: str) -> Any:
    """The Flux graph with its three split-file loaders replaced by one flow.LoadCheckpoint."""
    graph = flux_graph()
    for node in ("unet", "clip", "vae"):
        graph.remove_node(node)
    graph.add_node("flow.LoadCheckpoint", "checkpoint", {"path": path})
    for source, target in (("checkpoint.model", "sampler.model"), ("checkpoint.clip", "positive.clip"),
                           ("checkpoint.vae", "decode.vae")):
        graph.connect(source, target)
    return graph


def test_flux_all_in_one_checkpoint_gives_the_split_files_picture(registry, flow_models, flux_parts,
                                                                   torch_threads):
    """A Flux checkpoint bundling transformer, CLIP-L, T5 and VAE (ComfyUI's all-in-one layout) loads
    offline, T5's tokenizer from models/tokenizers/t5 as for split files, and draws their picture."""
    from nodeflow.nodes.flow.load_nodes import LoadCheckpoint
    from tests.nodes.flow import tiny

    path = tiny.save_flux_bundle(flow_models / "checkpoints" / "tiny-flux-aio.safetensors", flux_parts["parts"])
    assert LoadCheckpoint.model_family(path) == "flux"
    ours = run(registry, flux_checkpoint_graph(path.name), flow_models)
    split = run(registry, flux_graph(), flow_models)
    assert np.asarray(ours).tobytes() == np.asarray(split).tobytes()


def test_a_flux_checkpoint_without_t5_says_what_is_missing(registry, flow_models, flux_parts, torch_threads):
    from safetensors.torch import load_file, save_file

    from nodeflow.executor import Executor
    from nodeflow.settings import Settings
    from tests.nodes.flow import tiny

    full = tiny.save_flux_bundle(flow_models / "checkpoints" / "tiny-flux-aio.safetensors", flux_parts["parts"])
    tensors = {k: v for k, v in load_file(str(full)).items() if not k.startswith("text_encoders.t5xxl.")}
    save_file(tensors, str(flow_models / "checkpoints" / "tiny-flux-no-t5.safetensors"))
    executor = Executor(registry, Settings(models_dirs=[flow_models]))
    try:
        result = executor.run(flux_checkpoint_graph("tiny-flux-no-t5.safetensors"), ["decode"])
    finally:
        executor.close()
    failure = str(result.failed.get("checkpoint"))
    assert "tiny-flux-no-t5.safetensors" in failure and "t5xxl" in failure, result.failed
