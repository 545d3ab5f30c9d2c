"""Single-file checkpoints: family detection from tensor names, the carried configs, and loading
an original-layout file to the same pixels as its diffusers folder."""

from __future__ import annotations

import numpy as np
import pytest

from tests.nodes.diffusion import ldm, tiny


def _fake_checkpoint(path, keys):
    import torch
    from safetensors.torch import save_file

    save_file({k: torch.zeros(shape) for k, shape in keys.items()}, str(path))
    return path


UNET_IN = "model.diffusion_model.input_blocks.0.0.weight"
XATTN = "model.diffusion_model.input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight"


@pytest.mark.parametrize("keys,family,channels", [
    ({UNET_IN: (320, 4, 3, 3), XATTN: (320, 768),
      "cond_stage_model.transformer.text_model.embeddings.token_embedding.weight": (4, 2)}, "sd1", 4),
    ({UNET_IN: (320, 9, 3, 3), XATTN: (320, 1024),
      "cond_stage_model.model.transformer.resblocks.0.attn.in_proj_weight": (6, 2)}, "sd2", 9),
    ({UNET_IN: (320, 4, 3, 3), "conditioner.embedders.0.transformer.text_model.final_layer_norm.weight": (2,),
      "conditioner.embedders.1.model.ln_final.weight": (2,)}, "sdxl", 4),
    ({UNET_IN: (320, 4, 3, 3), XATTN: (320, 2048)}, "sdxl", 4),
])
def test_family_is_read_from_tensor_names(tmp_path, keys, family, channels):
    from nodeflow.nodes.diffusion.single_file import checkpoint_info

    info = checkpoint_info(_fake_checkpoint(tmp_path / "x.safetensors", keys))
    assert (info.family, info.in_channels) == (family, channels)


def test_a_lora_or_a_pickle_given_as_checkpoint_fails_validation(registry, tmp_path):
    from nodeflow.graph import Graph
    from nodeflow.settings import Settings
    from nodeflow.validate import GraphValidator

    (tmp_path / "checkpoints").mkdir()
    _fake_checkpoint(tmp_path / "checkpoints" / "style.safetensors",
                     {"lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight": (4, 8)})
    (tmp_path / "checkpoints" / "old.ckpt").write_bytes(b"PK\x03\x04 not for unpickling")
    graph = Graph()
    graph.add_node("diffusion.LoadCheckpoint", "a", {"path": "style.safetensors"})
    graph.add_node("diffusion.LoadCheckpoint", "b", {"path": "old.ckpt"})
    problems = GraphValidator(registry, Settings(models_dirs=[tmp_path])).validate(graph)
    found = {p.location.node: p for p in problems}
    assert found["a"].location.socket == "path" and "looks like a LoRA" in found["a"].message
    assert found["b"].location.socket == "path" and "never from pickles" in found["b"].message


@pytest.mark.parametrize("family,parts", [
    ("sd15", {"unet": 859_520_964, "vae": 83_653_863, "text_encoder": 123_060_480}),
    ("sd21", {"unet": 865_910_724, "text_encoder": 340_387_840}),
    ("sdxl", {"unet": 2_567_463_684, "text_encoder": 123_060_480, "text_encoder_2": 694_659_840}),
])
def test_carried_configs_describe_the_real_architectures(family, parts):
    import torch
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    from nodeflow.nodes.diffusion.single_file import CONFIGS

    folder = CONFIGS / family
    with torch.device("meta"):
        for part, count in parts.items():
            if part == "unet":
                model = UNet2DConditionModel.from_config(UNet2DConditionModel.load_config(folder / part))
            elif part == "vae":
                model = AutoencoderKL.from_config(AutoencoderKL.load_config(folder / part))
            else:
                config = CLIPTextConfig.from_pretrained(folder / part)
                cls = CLIPTextModelWithProjection if part == "text_encoder_2" else CLIPTextModel
                model = cls(config)
            assert sum(p.numel() for p in model.parameters()) == count, part


def test_single_file_gives_the_same_pixels_as_its_folder(registry, models_dir, sd_ckpt, torch_threads,
                                                        capfd):

    target = models_dir / "checkpoints" / "tiny-single.safetensors"
    ldm.save_sd1_single_file(sd_ckpt, target)
    # The tiny architecture is not a carried one: its config folder goes beside the file.
    ldm.config_beside(models_dir / "checkpoints" / "tiny-single.safetensors", sd_ckpt)

    def render(path: str):
        graph = tiny.load_graph("txt2img", checkpoint={"path": path}, latent={"width": 32, "height": 32},
                                sampler={"steps": 3, "seed": 2, "sampler": "dpmpp_2m"})
        return tiny.run_graph(registry, graph, models_dir, ["decode"]).outputs["decode"]["image"]

    single, folder = render("tiny-single.safetensors"), render("tiny-sd")
    assert np.abs(single - folder).max() <= 1e-6
    # The run's own progress lines say what loads: diffusers' loading bar and notes stay out.
    err = capfd.readouterr().err
    assert "Loading pipeline components" not in err and "kept in float32" not in err, err


def test_a_checkpoint_without_its_vae_says_which_part_is_missing(registry, models_dir, sd_ckpt, torch_threads):
    """A file that holds the UNet and text encoder but no VAE fails with a located nodeflow error
    naming the missing part, not diffusers' advice about its Python API."""

    from safetensors.torch import load_file, save_file

    whole = models_dir / "checkpoints" / "partial-whole.safetensors"
    ldm.save_sd1_single_file(sd_ckpt, whole)
    target = models_dir / "checkpoints" / "partial.safetensors"
    save_file({k: v for k, v in load_file(whole).items() if not k.startswith("first_stage_model.")}, target)
    whole.unlink()
    ldm.config_beside(target, sd_ckpt)
    graph = tiny.load_graph("txt2img", checkpoint={"path": "partial.safetensors"},
                            latent={"width": 32, "height": 32}, sampler={"steps": 2, "seed": 2})
    from nodeflow.executor import Executor
    from nodeflow.settings import Settings

    settings = Settings(models_dirs=[models_dir], base_dir=tiny.REPO / "graphs")
    result = Executor(registry, settings).run(graph, ["decode"])
    message = str(result.failed["checkpoint"])
    assert "node 'checkpoint' (diffusion.LoadCheckpoint), socket 'path'" in message
    assert "partial.safetensors is not a whole SD1 checkpoint" in message and "AutoencoderKL" in message
    assert "from_pretrained" not in message and "Traceback" not in message
