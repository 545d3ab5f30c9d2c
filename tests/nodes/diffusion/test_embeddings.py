"""Textual-inversion embeddings in prompts equal diffusers' load_textual_inversion."""

from __future__ import annotations

import numpy as np
import pytest

from tests.nodes.diffusion import tiny


@pytest.fixture(scope="module")
def embeddings(models_dir):
    """Random embeddings in the A1111 layouts: safetensors emb_params, .pt string_to_param,
    SDXL clip_l/clip_g, one of the wrong width, and a pickle that needs more than tensors."""
    import torch
    from safetensors.torch import save_file

    folder = models_dir / "embeddings"
    folder.mkdir(exist_ok=True)
    gen = torch.Generator().manual_seed(5)
    vectors = torch.randn(2, 32, generator=gen)
    save_file({"emb_params": vectors}, str(folder / "tiny-style.safetensors"))
    torch.save({"string_to_param": {"*": vectors}, "name": "tiny-style", "step": 10},
               folder / "tiny-style-pt.pt")
    save_file({"clip_l": torch.randn(3, 32, generator=gen), "clip_g": torch.randn(3, 32, generator=gen)},
              str(folder / "tiny-xl.safetensors"))
    save_file({"emb_params": torch.randn(1, 64, generator=gen)}, str(folder / "too-wide.safetensors"))
    torch.save({"string_to_param": {"*": vectors}, "extra": _Custom()}, folder / "pickled.pt")
    return {"vectors": vectors, "folder": folder}


class _Custom:
    """An object only full unpickling could restore."""


def _txt2img(text, **sampler):
    return tiny.load_graph("txt2img", checkpoint={"path": "tiny-sd"}, positive={"text": text},
                           latent={"width": 32, "height": 32},
                           sampler={"steps": 3, "seed": 4, **sampler})


def test_embedding_matches_load_textual_inversion(registry, models_dir, sd_ckpt, embeddings,
                                                  torch_threads):
    import torch
    from diffusers import StableDiffusionPipeline

    graph = _txt2img("a picture of embedding:tiny-style in a garden")
    ours = tiny.run_graph(registry, graph, models_dir, ["decode"]).outputs["decode"]["image"]
    pipe = StableDiffusionPipeline.from_pretrained(sd_ckpt, safety_checker=None,
                                                   requires_safety_checker=False)
    pipe.load_textual_inversion({"<tiny-style>": embeddings["vectors"]}, token="<tiny-style>")
    negative = graph.node("negative").inputs["text"]
    ref = pipe("a picture of <tiny-style> in a garden", negative_prompt=negative, height=32, width=32,
               num_inference_steps=3, guidance_scale=7.5,
               generator=torch.Generator("cpu").manual_seed(4), output_type="np").images
    assert np.abs(ours - ref).max() <= 1e-5
    plain = tiny.run_graph(registry, _txt2img("a picture of in a garden"), models_dir,
                           ["decode"]).outputs["decode"]["image"]
    assert np.abs(ours - plain).max() > 1e-3  # the embedding made a difference


def test_pt_embedding_loads_with_weights_only_and_equals_safetensors(registry, models_dir, sd_ckpt,
                                                                    embeddings, torch_threads):
    def encode(text):
        graph = _txt2img(text)
        return tiny.run_graph(registry, graph, models_dir, ["positive"]).outputs["positive"][
            "conditioning"].embeds

    a = encode("embedding:tiny-style a cat")
    b = encode("embedding:tiny-style-pt a cat")
    assert a.numpy().tobytes() == b.numpy().tobytes()
    weighted = encode("embedding:tiny-style:1.3 a cat")
    assert weighted.shape == a.shape and not np.allclose(weighted.numpy(), a.numpy())


def _failure(registry, models_dir, text):
    from nodeflow.executor import Executor
    from nodeflow.settings import Settings

    graph = _txt2img(text)
    result = Executor(registry, Settings(models_dirs=[models_dir], base_dir=tiny.REPO / "graphs")).run(
        graph, ["positive"])
    assert not result.ok
    return result.failed["positive"]


def test_pickle_needing_code_is_refused(registry, models_dir, sd_ckpt, embeddings, torch_threads):
    error = _failure(registry, models_dir, "embedding:pickled a cat")
    assert error.location.socket == "text"
    assert "only reads plain tensors" in str(error) and "safetensors" in str(error)


def test_embedding_of_another_width_is_a_located_error(registry, models_dir, sd_ckpt, embeddings,
                                                       torch_threads):
    error = _failure(registry, models_dir, "embedding:too-wide a cat")
    assert error.location.socket == "text" and "width 64" in str(error) and "32 wide" in str(error)


def test_missing_embedding_fails_validation(registry, models_dir, sd_ckpt, embeddings):
    from nodeflow.settings import Settings
    from nodeflow.validate import GraphValidator

    validator = GraphValidator(registry, Settings(models_dirs=[models_dir]))
    problems = validator.validate(_txt2img("a cat, embedding:nowhere-to-be-found"))
    located = [p for p in problems if p.location.node == "positive" and p.location.socket == "text"]
    assert located and "nowhere-to-be-found" in located[0].message
    problems = validator.validate(_txt2img("embedding:../checkpoints/tiny-sd/unet/config"))
    assert any(p.location.node == "positive" and "not a plain name" in p.message for p in problems)


def test_sdxl_embedding_gives_each_encoder_its_vectors(embeddings, torch_threads):
    import torch
    from diffusers import StableDiffusionXLPipeline
    from safetensors.torch import load_file

    from nodeflow.nodes.diffusion.conditioning import encode_sdxl
    from nodeflow.nodes.diffusion.embeddings import load_embedding, vectors_for
    from nodeflow.nodes.diffusion.types import TextEncoders

    path = embeddings["folder"] / "tiny-xl.safetensors"
    loaded = load_embedding(path)
    parts = tiny.sdxl_components()
    clip = TextEncoders("sdxl", parts["tokenizer"], parts["text_encoder"], parts["tokenizer_2"],
                        parts["text_encoder_2"])
    ours = encode_sdxl(clip, "a photo of embedding:tiny-xl", 0, "comfy",
                       lambda name, width, key: vectors_for(loaded, name, width, key))
    pipe = StableDiffusionXLPipeline(**tiny.sdxl_components(), add_watermarker=False)
    state = load_file(str(path))
    pipe.load_textual_inversion(state["clip_l"], token="<xl>", text_encoder=pipe.text_encoder,
                                tokenizer=pipe.tokenizer)
    pipe.load_textual_inversion(state["clip_g"], token="<xl>", text_encoder=pipe.text_encoder_2,
                                tokenizer=pipe.tokenizer_2)
    with torch.no_grad():
        embeds, _, pooled, _ = pipe.encode_prompt("a photo of <xl>", do_classifier_free_guidance=False)
    assert torch.allclose(ours.embeds, embeds, atol=1e-5)
    assert torch.allclose(ours.pooled, pooled, atol=1e-5)


def test_an_edited_embedding_file_encodes_the_prompt_again(registry, models_dir, sd_ckpt, tmp_path,
                                                           torch_threads):
    """One long-lived executor: rewriting the embedding file a prompt names gives the new vectors,
    never the encoding cached from the old file."""
    import torch
    from safetensors.torch import save_file

    from nodeflow.executor import Executor
    from nodeflow.graph import Graph
    from nodeflow.settings import Settings

    path = models_dir / "embeddings" / "changing.safetensors"
    graph = Graph()
    graph.add_node("diffusion.LoadCheckpoint", "checkpoint", {"path": "tiny-sd"})
    graph.add_node("diffusion.TextEncode", "positive", {"text": "a house, embedding:changing"})
    graph.connect("checkpoint.clip", "positive.clip")
    executor = Executor(registry, Settings(models_dirs=[models_dir]))
    encodings = []
    for seed in (1, 2, 2):
        save_file({"emb_params": torch.randn(2, 32, generator=torch.Generator().manual_seed(seed))}, str(path))
        result = executor.run(graph.copy(), ["positive"])
        assert result.ok, {k: str(v) for k, v in result.failed.items()}
        encodings.append(result.outputs["positive"]["conditioning"].embeds.clone())
    assert not torch.equal(encodings[0], encodings[1])   # the file changed: encoded again
    assert torch.equal(encodings[1], encodings[2])       # same vectors rewritten: same encoding
