"""SD3 and Flux ControlNets kept as one .safetensors file load offline, configured from their
tensors, and give the pixels of the same weights loaded from a diffusers folder."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest

from nodeflow.nodes.flow.control import LoadControlNet
from tests.nodes.diffusion import tiny as sd_tiny
from tests.nodes.flow import tiny
from tests.nodes.flow.conftest import SPLIT_NAMES
from tests.nodes.flow.test_txt2img import PROMPT, SIZE, close, run


def sd3_controlnet(folder: Path, seed: int) -> Any:
    """A tiny SD3 ControlNet with qk-norm (whose weights tell the head width), non-zero outputs."""
    import torch
    from diffusers import SD3ControlNetModel

    torch.manual_seed(seed)
    net = SD3ControlNetModel(sample_size=8, patch_size=2, in_channels=16, num_layers=1, attention_head_dim=16,
                             num_attention_heads=2, joint_attention_dim=256, caption_projection_dim=32,
                             pooled_projection_dim=192, out_channels=16, pos_embed_max_size=16,
                             qk_norm="rms_norm")
    with torch.no_grad():
        for name, p in net.named_parameters():
            if "controlnet_" in name:
                p.copy_(torch.randn(p.shape) * 0.1)
    net.save_pretrained(folder)
    return net


def as_single_file(folder: Path, target: Path) -> Path:
    shutil.copy(folder / "diffusion_pytorch_model.safetensors", target)
    return target


@pytest.fixture(scope="module")
def control(flow_models: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    picture = tmp_path_factory.mktemp("control-files") / "edges.png"
    sd_tiny.picture(SIZE, SIZE, seed=11).save(picture)
    root = flow_models / "controlnet"
    sd3_controlnet(root / "qk-sd3-controlnet", 5)
    tiny.save_controlnet(root / "plain-flux-controlnet", "flux", 6)
    return {"picture": picture,
            "sd3": as_single_file(root / "qk-sd3-controlnet", root / "qk-sd3-controlnet.safetensors"),
            "flux": as_single_file(root / "plain-flux-controlnet", root / "plain-flux-controlnet.safetensors")}


def same_pixels(a: Any, b: Any) -> bool:
    """Equal weights, equal pictures: within 1e-5 before rounding (the file's tensors and the
    folder's sit differently in memory, which can change float sums in the last bit), and at most
    one level apart after 8-bit rounding."""
    import numpy as np

    return bool(np.abs(a - b).max() < 1e-5) and close(a, b) <= 1


def _settings(flow_models: Path) -> Any:
    from nodeflow.settings import Settings

    return Settings(models_dirs=[flow_models])


def test_single_files_are_configured_from_their_tensors(control: dict[str, Path]) -> None:
    import diffusers

    from nodeflow.nodes.flow.control_files import load_controlnet_file

    for family, cls in (("sd3", "SD3ControlNetModel"), ("flux", "FluxControlNetModel")):
        net, found = load_controlnet_file(control[family])
        original = getattr(diffusers, cls).from_pretrained(control[family].with_suffix(""))
        assert found == family
        for key, value in original.config.items():
            if not key.startswith("_") and key != "sample_size":
                got = net.config[key]
                assert (list(got) if isinstance(got, tuple) else got) == \
                    (list(value) if isinstance(value, tuple) else value), (family, key)


def test_flux_union_controlnet_file_keeps_its_modes(tmp_path: Path) -> None:
    import torch
    from diffusers import FluxControlNetModel

    from nodeflow.nodes.flow.control_files import load_controlnet_file

    torch.manual_seed(0)
    FluxControlNetModel(patch_size=1, in_channels=64, num_layers=1, num_single_layers=1, attention_head_dim=32,
                        num_attention_heads=2, joint_attention_dim=256, pooled_projection_dim=64,
                        guidance_embeds=True, axes_dims_rope=(4, 14, 14), num_mode=7).save_pretrained(tmp_path / "u")
    net, _ = load_controlnet_file(as_single_file(tmp_path / "u", tmp_path / "union.safetensors"))
    assert net.config.num_mode == 7


def test_sd3_controlnet_file_gives_the_folders_pixels(registry, flow_models, sd3_parts, control, torch_threads):
    def graph(path: str) -> Any:
        return sd_tiny.load_graph(
            "sd3_controlnet", checkpoint={"path": "tiny-sd3"}, positive={"text": PROMPT},
            latent={"width": SIZE, "height": SIZE}, sampler={"steps": 2, "cfg": 7.0, "seed": 7},
            control_image={"path": str(control["picture"])}, controlnet={"path": path}, apply={"strength": 0.8})

    from_file = run(registry, graph("qk-sd3-controlnet.safetensors"), flow_models)
    from_folder = run(registry, graph("qk-sd3-controlnet"), flow_models)
    assert same_pixels(from_file, from_folder)


def test_flux_controlnet_file_gives_the_folders_pixels(registry, flow_models, flux_parts, control, torch_threads):
    names = SPLIT_NAMES["flux"]

    def graph(path: str) -> Any:
        return sd_tiny.load_graph(
            "flux_controlnet", unet={"path": names["model"]},
            clip={"encoder1": names["clip_l"], "encoder2": names["t5"]}, vae={"path": names["vae"]},
            positive={"text": PROMPT}, latent={"width": SIZE, "height": SIZE}, sampler={"steps": 2, "seed": 7},
            control_image={"path": str(control["picture"])}, controlnet={"path": path}, apply={"strength": 0.8})

    from_file = run(registry, graph("plain-flux-controlnet.safetensors"), flow_models)
    from_folder = run(registry, graph("plain-flux-controlnet"), flow_models)
    assert same_pixels(from_file, from_folder)


@pytest.mark.parametrize(("keys", "said"), [
    (["double_blocks.0.img_attn.qkv.weight", "controlnet_blocks.0.weight", "input_hint_block.0.weight"], "XLabs"),
    (["joint_blocks.0.x_block.attn.qkv.weight", "controlnet_blocks.0.weight"], "Stability's original layout"),
    (["control_model.input_blocks.0.0.weight", "control_model.zero_convs.0.0.weight"], "diffusion.LoadControlNet"),
    (["lora_unet_down.weight"], "not an SD3 or Flux ControlNet layout"),
])
def test_unknown_layouts_are_named_on_the_path(tmp_path: Path, keys: list[str], said: str) -> None:
    import torch
    from safetensors.torch import save_file

    save_file({k: torch.zeros(1) for k in keys}, str(tmp_path / "net.safetensors"))
    problems = list(LoadControlNet.check({"path": str(tmp_path / "net.safetensors")}, _settings(tmp_path)))
    assert len(problems) == 1 and problems[0][0] == "path" and said in problems[0][1], problems
