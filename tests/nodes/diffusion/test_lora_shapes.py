"""A LoRA (or LyCORIS file) whose layers do not fit the model is refused from its header, before
anything is read or patched: a located error naming the file, the first layer that does not fit
and both shapes; the model stays as it was."""

from __future__ import annotations

import re

import pytest

from tests.nodes.diffusion import tiny
from tests.nodes.diffusion.test_lora import lora_graph

SHAPES = re.compile(r"changes a (\d+(?:×\d+)+) weight, but the model's weight there is (\d+(?:×\d+)+)")


@pytest.fixture(scope="module")
def bad_loras(models_dir):
    import torch
    from safetensors.torch import load_file, save_file

    folder = models_dir / "loras"
    files = {"xl_kohya": tiny.make_lora(folder / "xl-kohya.safetensors", tiny.sdxl_components(), seed=3,
                                        kohya=True)}
    style = tiny.make_lora(folder / "shapes-style.safetensors", tiny.sd_components(), seed=1)
    tensors = load_file(str(style))
    key = next(k for k in sorted(tensors) if k.startswith("unet.") and "attn1.to_q.lora_B" in k)
    tensors[key] = torch.zeros(48, tensors[key].shape[1])  # one layer made for a wider model
    save_file(tensors, str(folder / "wrong-rank.safetensors"))
    files["wrong_rank"] = folder / "wrong-rank.safetensors"
    stem = "lora_unet_down_blocks_1_attentions_0_transformer_blocks_0_attn1_to_q"
    loha = {f"{stem}.hada_w1_a": torch.ones(64, 2), f"{stem}.hada_w1_b": torch.ones(2, 32),
            f"{stem}.hada_w2_a": torch.ones(64, 2), f"{stem}.hada_w2_b": torch.ones(2, 32),
            f"{stem}.alpha": torch.tensor(2.0)}
    save_file(loha, str(folder / "narrow-loha.safetensors"))
    files["loha"] = folder / "narrow-loha.safetensors"
    return files, key


@pytest.mark.parametrize("which,layer,change,weight", [
    ("xl_kohya", "attn2_to_k", None, None),
    ("wrong_rank", "attn1.to_q", "48×64", "64×64"),
    ("loha", "lora_unet_down_blocks_1_attentions_0_transformer_blocks_0_attn1_to_q", "64×32", "64×64"),
])
def test_a_lora_that_does_not_fit_is_refused_and_the_model_is_unchanged(
        registry, models_dir, sd_ckpt, bad_loras, torch_threads, which, layer, change, weight):
    from nodeflow.errors import NodeflowError
    from nodeflow.executor import Executor
    from nodeflow.settings import Settings

    files, _ = bad_loras
    path = files[which]
    executor = Executor(registry, Settings(models_dirs=[models_dir]))
    plain = tiny.load_graph("txt2img", checkpoint={"path": "tiny-sd"}, latent={"width": 32, "height": 32},
                            sampler={"steps": 3, "seed": 5})
    before = tiny.run_graph(registry, plain, executor=executor, outputs=["decode"])
    loads = executor.models.loads

    graph = lora_graph()
    graph.set_input("lora", "path", path.name)
    graph.set_input("lora_detail", "path", path.name)
    result = executor.run(graph, ["decode"])
    error = result.failed["lora"]
    assert isinstance(error, NodeflowError)
    assert error.location.node == "lora" and error.location.socket == "path"
    text = str(error)
    assert path.name in text and "Stable Diffusion 1.x" in text and layer in text, text
    assert "Use a LoRA made for" in text and len(text) < 900
    shapes = SHAPES.search(text)
    assert shapes is not None, text
    if change is not None:
        assert shapes.groups() == (change, weight)
    else:
        assert shapes.group(1) != shapes.group(2)
    # only the header was read: the file never went through the model manager
    assert executor.models.loads == loads

    executor.cache.clear()  # run the plain graph again for real on the same loaded checkpoint
    after = tiny.run_graph(registry, plain, executor=executor, outputs=["decode"])
    assert after.outputs["decode"]["image"].tobytes() == before.outputs["decode"]["image"].tobytes()


def test_layer_shapes_follow_the_merge_formulas():
    from nodeflow.nodes.diffusion.lora_shapes import delta_shape

    assert delta_shape({"down": (4, 320), "up": (640, 4)}) == (640, 320)
    assert delta_shape({"down": (4, 320, 3, 3), "up": (640, 4, 1, 1)}) == (640, 320, 3, 3)
    assert delta_shape({"hada_w1_a": (64, 2), "hada_w1_b": (2, 32), "hada_w2_a": (64, 2),
                        "hada_w2_b": (2, 32)}) == (64, 32)
    assert delta_shape({"hada_w1_a": (2, 64), "hada_w1_b": (2, 32), "hada_t1": (2, 2, 3, 3),
                        "hada_w2_a": (2, 64), "hada_w2_b": (2, 32), "hada_t2": (2, 2, 3, 3)}) == (64, 32, 3, 3)
    assert delta_shape({"lokr_w1": (4, 8), "lokr_w2_a": (16, 2), "lokr_w2_b": (2, 40)}) == (64, 320)
    assert delta_shape({"lokr_w1": (4, 8), "lokr_w2": (16, 40, 3, 3)}) == (64, 320, 3, 3)
