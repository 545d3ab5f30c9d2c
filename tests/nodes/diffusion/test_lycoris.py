"""LyCORIS files (LoHa, LoKr) draw what peft's own LoHa/LoKr layers draw; SDXL files' original
block names find their layers; unreadable adapter files give a short, located error."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.nodes.diffusion import tiny

PROMPT = "a portrait of a knight"
NEGATIVE = "blurry, low quality"


def adapted_components(config):
    """The tiny-sd checkpoint's components (same seed), with peft's adapter of ``config`` in the
    UNet and text encoder, every factor random so that the adapter changes the picture."""
    import torch
    from peft import inject_adapter_in_model

    components = tiny.sd_components()
    gen = torch.Generator().manual_seed(7)
    for name, targets in (("unet", ["to_q", "to_k", "to_v", "to_out.0", "conv1", "conv2"]),
                          ("text_encoder", ["q_proj", "v_proj"])):
        module = inject_adapter_in_model(config(targets), components[name])
        with torch.no_grad():
            for pname, p in module.named_parameters():
                if "hada_" in pname or "lokr_" in pname:
                    p.copy_(torch.randn(p.shape, generator=gen) * 0.2)
    return components


def kohya_file(path: Path, components, alpha: float) -> Path:
    """The adapters in ``components`` saved as a LyCORIS file (kohya layer names)."""
    import torch
    from safetensors.torch import save_file

    out = {}
    for prefix, name in (("lora_unet_", "unet"), ("lora_te_", "text_encoder")):
        for pname, p in components[name].named_parameters():
            if ".hada_" not in pname and ".lokr_" not in pname:
                continue
            module, factor, _adapter = pname.rsplit(".", 2)
            stem = prefix + module.replace(".", "_")
            out[f"{stem}.{factor}"] = p.detach().contiguous()
            out[f"{stem}.alpha"] = torch.tensor(alpha)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(out, str(path))
    return path


def graph_with(path: str, strength: float = 1.0):
    graph = tiny.load_graph("lora", checkpoint={"path": "tiny-sd"}, positive={"text": PROMPT},
                            negative={"text": NEGATIVE}, latent={"width": 32, "height": 32},
                            lora={"path": path, "strength_model": strength, "strength_clip": strength},
                            lora_detail={"path": path, "strength_model": 0.0, "strength_clip": 0.0},
                            sampler={"steps": 3, "seed": 11, "sampler": "euler"})
    return graph


def reference(components):
    import torch
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline(**components, safety_checker=None, feature_extractor=None,
                                   requires_safety_checker=False)
    return pipe(PROMPT, negative_prompt=NEGATIVE, height=32, width=32, num_inference_steps=3,
                guidance_scale=7.5, generator=torch.Generator("cpu").manual_seed(11),
                output_type="np").images


@pytest.mark.parametrize("kind", ["loha", "lokr"])
def test_lycoris_file_draws_what_peft_layers_draw(kind, registry, models_dir, sd_ckpt, torch_threads):
    from peft import LoHaConfig, LoKrConfig

    def config(targets):
        if kind == "loha":
            return LoHaConfig(r=4, alpha=2, target_modules=targets)
        return LoKrConfig(r=2, alpha=3, target_modules=targets)  # w1 whole, w2 decomposed

    components = adapted_components(config)
    alpha = 2.0 if kind == "loha" else 3.0
    name = f"tiny-{kind}.safetensors"
    kohya_file(models_dir / "loras" / name, components, alpha)

    ours = tiny.run_graph(registry, graph_with(name), models_dir, ["decode"]).outputs["decode"]["image"]
    assert np.abs(ours - reference(components)).max() <= 1e-4

    off = tiny.run_graph(registry, graph_with(name, 0.0), models_dir, ["decode"]).outputs["decode"]["image"]
    assert np.abs(off - ours).max() > 1e-2, "the adapter changed nothing"
    plain = tiny.load_graph("txt2img", checkpoint={"path": "tiny-sd"}, positive={"text": PROMPT},
                            negative={"text": NEGATIVE}, latent={"width": 32, "height": 32},
                            sampler={"steps": 3, "seed": 11, "sampler": "euler"})
    base = tiny.run_graph(registry, plain, models_dir, ["decode"]).outputs["decode"]["image"]
    assert off.tobytes() == base.tobytes(), "strength 0 must leave the model as it was"


def test_lycoris_merge_follows_the_formulas():
    """LoHa: (w1a·w1b)⊙(w2a·w2b)·α/r; LoKr: w1⊗(w2a·w2b)·α/r, whole factors unscaled; LoCon convs."""
    import torch

    from nodeflow.nodes.diffusion.lycoris import Layer, delta_weight

    g = torch.Generator().manual_seed(0)

    def r(*shape):
        return torch.randn(*shape, generator=g)

    a1, b1, a2, b2 = r(6, 2), r(2, 10), r(6, 2), r(2, 10)
    loha = Layer("x", {"hada_w1_a": a1, "hada_w1_b": b1, "hada_w2_a": a2, "hada_w2_b": b2}, 1.0)
    assert torch.allclose(delta_weight(loha, (6, 10)), (a1 @ b1) * (a2 @ b2) * 0.5)

    w1, w2a, w2b = r(2, 2), r(3, 1), r(1, 5)
    lokr = Layer("x", {"lokr_w1": w1, "lokr_w2_a": w2a, "lokr_w2_b": w2b}, 4.0)
    assert torch.allclose(delta_weight(lokr, (6, 10)), torch.kron(w1, w2a @ w2b) * 4.0)
    whole = Layer("x", {"lokr_w1": w1, "lokr_w2": r(3, 5)}, 4.0)
    assert torch.allclose(delta_weight(whole, (6, 10)), torch.kron(w1, whole.factors["lokr_w2"]))

    up, down = r(8, 2, 1, 1), r(2, 4, 3, 3)
    locon = Layer("x", {"lora_up": up, "lora_down": down}, 1.0)
    expected = (up.flatten(1) @ down.flatten(1)).reshape(8, 4, 3, 3) * 0.5
    assert torch.allclose(delta_weight(locon, (8, 4, 3, 3)), expected)


def test_sdxl_original_block_names_find_their_layers():
    """SDXL LoRAs name layers as the original UNet does; every weight layer of the full-size SDXL
    UNet has one such name, and the well-known ones map where SDXL's layout puts them."""
    import json

    import torch
    from diffusers import UNet2DConditionModel

    from nodeflow.nodes.diffusion.lycoris import layer_index
    from nodeflow.nodes.diffusion.single_file import CONFIGS

    config = json.loads((CONFIGS / "sdxl" / "unet" / "config.json").read_text())
    with torch.device("meta"):
        unet = UNet2DConditionModel.from_config(config)
    index = layer_index(unet, unet.config)
    known = {
        "input_blocks_4_1_transformer_blocks_0_attn1_to_k": "down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_k",
        "input_blocks_8_1_transformer_blocks_9_ff_net_2": "down_blocks.2.attentions.1.transformer_blocks.9.ff.net.2",
        "middle_block_1_transformer_blocks_0_attn2_to_q": "mid_block.attentions.0.transformer_blocks.0.attn2.to_q",
        "middle_block_2_out_layers_3": "mid_block.resnets.1.conv2",
        "output_blocks_0_1_proj_in": "up_blocks.0.attentions.0.proj_in",
        "output_blocks_2_2_conv": "up_blocks.0.upsamplers.0.conv",
        "output_blocks_8_0_skip_connection": "up_blocks.2.resnets.2.conv_shortcut",
        "input_blocks_1_0_in_layers_2": "down_blocks.0.resnets.0.conv1",
        "input_blocks_1_0_emb_layers_1": "down_blocks.0.resnets.0.time_emb_proj",
        "input_blocks_3_0_op": "down_blocks.0.downsamplers.0.conv",
        "input_blocks_0_0": "conv_in", "out_2": "conv_out",
        "time_embed_0": "time_embedding.linear_1", "label_emb_0_2": "add_embedding.linear_2",
    }
    for sgm, diffusers_name in known.items():
        assert index.get(sgm) == diffusers_name, sgm
    weighted = [n for n, m in unet.named_modules() if hasattr(m, "weight")]
    original_names = [k for k, v in index.items() if k != v.replace(".", "_")]
    assert len(set(original_names)) == len(weighted)  # one original name per layer, none shared


def test_unsupported_and_mismatched_adapters_are_short_located_errors(registry, models_dir, sd_ckpt,
                                                                      torch_threads):
    import torch
    from safetensors.torch import save_file

    from nodeflow.executor import Executor
    from nodeflow.settings import Settings

    folder = models_dir / "loras"
    dora = {"lora_unet_down_blocks_1_attentions_0_proj_in.hada_w1_a": torch.ones(2, 2),
            "lora_unet_down_blocks_1_attentions_0_proj_in.dora_scale": torch.ones(2)}
    save_file(dora, str(folder / "dora.safetensors"))
    wrong = {f"lora_unet_output_blocks_{i}_1_transformer_blocks_{j}_attn1_to_q.hada_w1_a": torch.ones(2, 2)
             for i in range(4, 9) for j in range(10)}
    save_file(wrong, str(folder / "xl-names.safetensors"))
    garbage = {f"model.layer_{i}.some_very_long_tensor_name.weight": torch.ones(1) for i in range(2000)}
    save_file(garbage, str(folder / "garbage.safetensors"))

    executor = Executor(registry, Settings(models_dirs=[models_dir]))
    for name, expect in (("dora.safetensors", "DoRA"), ("xl-names.safetensors", "50 layers"),
                         ("garbage.safetensors", "garbage.safetensors")):
        result = executor.run(graph_with(name), ["decode"])
        error = result.failed["lora"]
        assert error.location.node == "lora" and error.location.socket == "path"
        assert expect in str(error) and name in str(error)
        assert len(str(error)) < 900, f"{name}: a {len(str(error))}-character message"
