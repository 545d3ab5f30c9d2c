"""What a checkpoint predicts: SD 2.x single files are told apart (768 v-prediction vs 512 base
epsilon) from their weights or metadata, and the loader's override gives diffusers' pixels."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tests.nodes.diffusion import tiny

UNET = "model.diffusion_model."
IN = UNET + "input_blocks.0.0.weight"
XATTN = UNET + "input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight"
PROBE = UNET + "output_blocks.11.1.transformer_blocks.0.norm1.bias"
SD2_CLIP = "cond_stage_model.model.transformer.resblocks.0.attn.in_proj_weight"


def _file(path, channels=4, spread=None, family="sd2", metadata=None, extra=()):
    import torch
    from safetensors.torch import save_file

    tensors = {IN: torch.zeros(320, channels, 3, 3)}
    if family == "sd2":
        tensors.update({XATTN: torch.zeros(320, 1024), SD2_CLIP: torch.zeros(6, 2)})
    else:
        tensors.update({XATTN: torch.zeros(320, 768),
                        "cond_stage_model.transformer.text_model.final_layer_norm.weight": torch.zeros(2)})
    if spread is not None:
        tensors[PROBE] = torch.randn(320, generator=torch.Generator().manual_seed(0)) * spread
    for key in extra:
        tensors[key] = torch.zeros(1)
    save_file(tensors, str(path), metadata=metadata)
    return path


@pytest.mark.parametrize("case,expected", [
    ({"spread": 0.2}, "v_prediction"),                      # SD 2.1 768-v
    ({"spread": 0.01}, "epsilon"),                          # SD 2.1 base 512
    ({"channels": 9, "spread": 0.2}, "epsilon"),            # SD 2 inpainting
    ({"spread": 0.2, "metadata": {"modelspec.prediction_type": "epsilon"}}, "epsilon"),
    ({"family": "sd1", "spread": 0.2}, None),               # SD 1.x: the family's usual
    ({"family": "sd1", "extra": ["v_pred"]}, "v_prediction"),
])
def test_prediction_is_read_from_the_file(tmp_path, case, expected):
    from nodeflow.nodes.diffusion.single_file import checkpoint_info, prediction_type

    path = _file(tmp_path / "model.safetensors", **case)
    kind, why = prediction_type(path, checkpoint_info(path))
    assert kind == expected, why
    assert why


def test_sd2_base_single_file_gets_an_epsilon_scheduler(tmp_path):
    from nodeflow.nodes.diffusion.single_file import _prepare_config, checkpoint_info

    for spread, expected in ((0.01, "epsilon"), (0.2, "v_prediction")):
        path = _file(tmp_path / f"sd21-{spread}.safetensors", spread=spread)
        work = tmp_path / f"work-{spread}"
        work.mkdir()
        folder = _prepare_config(path, checkpoint_info(path), work)
        sched = json.loads((folder / "scheduler" / "scheduler_config.json").read_text())
        assert sched["prediction_type"] == expected
        unet = json.loads((folder / "unet" / "config.json").read_text())
        assert unet["cross_attention_dim"] == 1024


def test_prediction_override_gives_the_pipelines_pixels(registry, models_dir, sd_ckpt, sd_pipe,
                                                        torch_threads):
    import torch
    from diffusers import EulerDiscreteScheduler, StableDiffusionPipeline

    def render(prediction: str):
        graph = tiny.load_graph("txt2img", checkpoint={"path": "tiny-sd", "prediction": prediction},
                                latent={"width": 32, "height": 32}, sampler={"steps": 3, "seed": 4})
        return tiny.run_graph(registry, graph, models_dir, ["decode"]).outputs["decode"]["image"]

    v, auto = render("v_prediction"), render("auto")
    text = tiny.load_graph("txt2img")
    scheduler = EulerDiscreteScheduler.from_config(sd_pipe.scheduler.config, prediction_type="v_prediction")
    pipe = StableDiffusionPipeline(**{**sd_pipe.components, "scheduler": scheduler})
    ref = pipe(text.nodes["positive"].inputs["text"], negative_prompt=text.nodes["negative"].inputs["text"],
               height=32, width=32, num_inference_steps=3,
               guidance_scale=text.nodes["sampler"].inputs["cfg"],
               generator=torch.Generator("cpu").manual_seed(4), output_type="np").images
    assert np.abs(v - ref).max() <= 1e-5
    assert np.abs(v - auto).max() > 1e-2
    assert render("auto").tobytes() == auto.tobytes(), "the override must not change the shared model"
