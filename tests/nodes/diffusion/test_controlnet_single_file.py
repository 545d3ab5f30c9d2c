"""Single-file ControlNets as users download them (``control_v11p_sd15_canny.safetensors``: the
original layout, with or without the ``control_model.`` prefix) load to the same pixels as the
diffusers folder, and are told apart from other files at validation."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tests.nodes.diffusion import tiny
from training.export_single_file import controlnet_to_ldm


@pytest.fixture(scope="module")
def controlnet_files(models_dir):
    """One tiny ControlNet (the usual 8-layer hint encoder) as a folder and as two single files."""
    import torch
    from diffusers import ControlNetModel
    from safetensors.torch import save_file

    torch.manual_seed(4)
    net = ControlNetModel(block_out_channels=(32, 64), layers_per_block=1, in_channels=4,
                          down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), cross_attention_dim=32,
                          conditioning_embedding_out_channels=(4, 4, 8, 8), norm_num_groups=8)
    with torch.no_grad():
        for name, p in net.named_parameters():
            if name.startswith(("controlnet_down_blocks", "controlnet_mid_block")) or "conv_out" in name:
                p.copy_(torch.randn(p.shape) * 0.1)
    folder = models_dir / "controlnet"
    net.save_pretrained(folder / "tiny-cn-folder")
    tensors = {k: v.contiguous() for k, v in controlnet_to_ldm(net).items()}
    files = {}
    for name, prefix in (("tiny-cn-prefixed", "control_model."), ("tiny-cn-bare", "")):
        path = folder / f"{name}.safetensors"
        save_file({prefix + k: v for k, v in tensors.items()}, str(path))
        # The tiny architecture is not a carried one: its config goes beside the file.
        (folder / f"{name}.config").mkdir()
        shutil.copy(folder / "tiny-cn-folder" / "config.json", folder / f"{name}.config")
        files[name] = path
    files["no-config"] = folder / "tiny-cn-alone.safetensors"
    shutil.copy(files["tiny-cn-bare"], files["no-config"])
    return files


def canny(path: str):
    return tiny.load_graph(
        "controlnet_canny", checkpoint={"path": "tiny-sd"}, positive={"text": "a house by a lake"},
        latent={"width": 32, "height": 32}, resize={"width": 32, "height": 32},
        canny={"low_threshold": 50, "high_threshold": 120, "resolution": 64},
        controlnet={"path": path}, control={"strength": 0.9, "start": 0.0, "end": 1.0},
        sampler={"steps": 3, "seed": 9, "sampler": "euler"})


def test_single_file_controlnets_equal_their_folder(registry, models_dir, controlnet_files, torch_threads):
    """Loaded by LoadControlNet, each file gives the folder's tensors and the folder's residuals."""
    import torch

    from nodeflow.graph import Graph

    graph = Graph()
    names = ("tiny-cn-folder", "tiny-cn-prefixed.safetensors", "tiny-cn-bare.safetensors")
    for i, name in enumerate(names):
        graph.add_node("diffusion.LoadControlNet", f"net{i}", {"path": name})
    outputs = tiny.run_graph(registry, graph, models_dir, [f"net{i}" for i in range(3)]).outputs
    nets = [outputs[f"net{i}"]["controlnet"] for i in range(3)]
    assert {n.family for n in nets} == {"sd1"}
    reference = nets[0].model.state_dict()
    gen = torch.Generator().manual_seed(0)
    sample, hint = torch.randn(1, 4, 8, 8, generator=gen), torch.rand(1, 3, 64, 64, generator=gen)
    text = torch.randn(1, 5, 32, generator=gen)

    def residuals(net):
        with torch.no_grad():
            down, mid = net.model(sample, 10, encoder_hidden_states=text, controlnet_cond=hint,
                                  return_dict=False)
        return [*down, mid]

    expected = residuals(nets[0])
    for name, net in zip(names[1:], nets[1:], strict=True):
        state = net.model.state_dict()
        assert state.keys() == reference.keys(), name
        assert all(torch.equal(state[k], reference[k]) for k in reference), name
        assert all(torch.equal(a, b) for a, b in zip(residuals(net), expected, strict=True)), name


def test_controlnet_files_are_checked_at_validation(registry, models_dir, sd_ckpt, controlnet_files, tmp_path):
    from safetensors.torch import save_file

    from nodeflow.settings import Settings
    from nodeflow.validate import GraphValidator

    lora = models_dir / "controlnet" / "a-lora.safetensors"
    import torch

    save_file({"lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight": torch.zeros(4, 8)}, str(lora))
    validator = GraphValidator(registry, Settings(models_dirs=[models_dir], base_dir=tiny.REPO / "graphs"))
    assert [p for p in validator.validate(canny("tiny-cn-bare.safetensors"))
            if p.location.node == "controlnet"] == []
    for name, expect in (("a-lora.safetensors", "looks like a LoRA"),
                         ("tiny-cn-alone.safetensors", "tiny-cn-alone.config")):
        problems = [p for p in validator.validate(canny(name)) if p.location.node == "controlnet"]
        assert problems and problems[0].location.socket == "path", name
        assert expect in problems[0].message, problems[0].message


@pytest.mark.parametrize("family", ["sd15", "sd21", "sdxl"])
def test_carried_controlnet_configs_are_the_unets_encoder_halves(family):
    """The config a single file gets is what diffusers builds beside the family's full UNet."""
    import torch
    from diffusers import ControlNetModel, UNet2DConditionModel

    from nodeflow.nodes.diffusion.single_file import (
        CONFIGS,
        ControlNetFileInfo,
        _carried_controlnet_config,
    )

    short = {"sd15": "sd1", "sd21": "sd2", "sdxl": "sdxl"}[family]
    config = _carried_controlnet_config(ControlNetFileInfo(short, "", 3))
    unet_config = json.loads((Path(CONFIGS) / family / "unet" / "config.json").read_text())
    with torch.device("meta"):
        ours = ControlNetModel.from_config(config)
        theirs = ControlNetModel.from_unet(UNet2DConditionModel.from_config(unet_config),
                                           load_weights_from_unet=False)
    shapes = {k: tuple(v.shape) for k, v in ours.state_dict().items()}
    assert shapes == {k: tuple(v.shape) for k, v in theirs.state_dict().items()}
