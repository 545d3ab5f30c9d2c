"""Block offload: the plan counts only the transformer's resident parts and two blocks, and
sampling with it gives the same latents while the model manager never holds more than that."""

from __future__ import annotations

from dataclasses import replace

from nodeflow.models import module_size
from nodeflow.node import EstimateContext, ValueEstimate
from nodeflow.settings import Settings
from tests.nodes.flow.conftest import SPLIT_NAMES
from tests.nodes.flow.test_memory import meta_model, sparse_safetensors


def test_flux_dev_plan_with_block_offload_fits_a_12_gb_gpu(tmp_path):
    from nodeflow.nodes.flow.load_nodes import LoadDiffusionModel
    from nodeflow.nodes.flow.offload import blocks_of, resident_parts
    from nodeflow.nodes.flow.sample import OffloadBlocks, Sample

    model = meta_model("FluxTransformer2DModel", {"guidance_embeds": True})
    sparse_safetensors(tmp_path / "diffusion_models" / "flux1-dev.safetensors",
                       {k: tuple(v.shape) for k, v in model.state_dict().items()})
    ctx = EstimateContext(Settings(models_dirs=[tmp_path]), device="cuda:0", dtypes=lambda kind, dev: "bf16")
    loaded = LoadDiffusionModel.estimate_memory({"path": "flux1-dev.safetensors", "weight_dtype": "default"},
                                                {}, ctx)
    assert loaded is not None
    latent = ValueEstimate(info={"width": 1024, "height": 1024, "batch": 1})
    whole = Sample.estimate_memory({"cfg": 1.0}, {"model": loaded.outputs["model"], "latent": latent}, ctx)
    offloaded = OffloadBlocks.estimate_memory({}, {"model": loaded.outputs["model"]}, ctx)
    assert whole is not None and offloaded is not None
    planned = Sample.estimate_memory({"cfg": 1.0}, {"model": offloaded.outputs["model"], "latent": latent}, ctx)
    assert planned is not None
    expected = sum(module_size(m) for m in resident_parts(model)) + \
        2 * max(module_size(b) for b in blocks_of(model))
    assert abs(planned.model_bytes - expected) <= 0.05 * expected
    assert whole.total > 24e9 and planned.total < 12e9  # does not fit 12 GB whole; fits offloaded


def test_block_offload_gives_the_same_latents_within_a_small_budget(flow_models, flux_parts, torch_threads):
    import torch

    from nodeflow.models import ModelManager
    from nodeflow.nodes.diffusion.types import Latent
    from nodeflow.nodes.flow import loaders
    from nodeflow.nodes.flow.encode import encode
    from nodeflow.nodes.flow.offload import blocks_of, placed, resident_parts
    from nodeflow.nodes.flow.sample import denoise_latents
    from tests.helpers import DirectContext

    names = SPLIT_NAMES["flux"]
    model = loaders.load_transformer_file(flow_models / "diffusion_models" / names["model"])
    clip = loaders.load_text_encoders([flux_parts["paths"]["clip_l"], flux_parts["paths"]["t5"]], "flux",
                                      flow_models / "tokenizers" / "t5")
    with torch.no_grad():
        cond = encode(clip, "a red fox", 0)
    results = []
    # room for the resident parts and one block: each block must push the previous one out
    budget = sum(module_size(m) for m in resident_parts(model.transformer)) + \
        max(module_size(b) for b in blocks_of(model.transformer))
    for offload in ("none", "blocks"):
        ctx = DirectContext(Settings(), models=ModelManager(["cpu"], vram_budget=None if offload == "none"
                                                            else budget))
        flow = replace(model, offload=offload)
        with placed(ctx, flow, []) as device:
            results.append(denoise_latents(ctx, flow, cond, None, Latent(64, 64, 1), 3, 2, 1.0, "euler",
                                           "normal", 1.0, device))
        if offload == "blocks":
            assert 0 < ctx.models.peak["cpu"] <= budget < module_size(model.transformer)
    assert torch.equal(results[0], results[1])
