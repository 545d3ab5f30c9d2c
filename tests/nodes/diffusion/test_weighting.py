"""Prompt weighting: the two dialects' parsing, and the encodings against their formulas."""

from __future__ import annotations

import pytest

from nodeflow.nodes.diffusion.weighting import parse_a1111, parse_comfy
from tests.nodes.diffusion import tiny


def _pairs(segments):
    return [(s.text, round(s.weight, 6), s.brk) for s in segments]


@pytest.mark.parametrize(("prompt", "expected"), [
    ("a (red:1.3) circle", [("a ", 1.0), ("red", 1.3), (" circle", 1.0)]),
    ("((red))", [("red", 1.21)]),
    ("(a (b:0.5) c)", [("a ", 1.1), ("b", 0.5), (" c", 1.1)]),  # an explicit weight replaces
    ("\\(not weighted\\) x", [("(not weighted) x", 1.0)]),
    ("[red]", [("[red]", 1.0)]),  # ComfyUI reads square brackets as text
    ("(a:b)", [("a:b", 1.1)]),  # no number after the colon: text, weighted 1.1
    ("(unclosed", [("(unclosed", 1.0)]),
    ("a BREAK b", [("a BREAK b", 1.0)]),
])
def test_comfy_dialect(prompt, expected):
    assert [(t, w) for t, w, _ in _pairs(parse_comfy(prompt))] == expected


@pytest.mark.parametrize(("prompt", "expected"), [
    ("a (red:1.3) circle", [("a ", 1.0, False), ("red", 1.3, False), (" circle", 1.0, False)]),
    ("[red]", [("red", round(1 / 1.1, 6), False)]),
    ("((red:1.5))", [("red", 1.65, False)]),  # A1111 multiplies nested weights
    ("\\(x\\) \\[y\\]", [("(x) [y]", 1.0, False)]),
    ("a BREAK b", [("a", 1.0, False), ("", 1.0, True), ("b", 1.0, False)]),
    ("(open", [("open", 1.1, False)]),  # an unclosed bracket still weights the rest
])
def test_a1111_dialect(prompt, expected):
    assert _pairs(parse_a1111(prompt)) == expected


def _encoded(registry, models_dir, text, weighting, clip_skip=0):
    from nodeflow.executor import Executor
    from nodeflow.graph import Graph
    from nodeflow.settings import Settings

    graph = Graph()
    graph.add_node("diffusion.LoadCheckpoint", "checkpoint", {"path": "tiny-sd"})
    graph.add_node("diffusion.TextEncode", "prompt", {"text": text, "weighting": weighting,
                                                      "clip_skip": clip_skip})
    graph.connect("checkpoint.clip", "prompt.clip")
    result = Executor(registry, Settings(models_dirs=[models_dir])).run(graph, ["prompt", "checkpoint"])
    assert result.ok, {k: str(v) for k, v in result.failed.items()}
    return result.outputs["prompt"]["conditioning"].embeds, result.outputs["checkpoint"]["clip"]


def _plain(clip, text):
    import torch

    ids = clip.tokenizer(text, padding="max_length", max_length=77, return_tensors="pt").input_ids
    with torch.no_grad():
        return clip.text_encoder(ids)[0], ids[0].tolist()


def test_unweighted_prompt_equals_plain_encoding(registry, models_dir, sd_ckpt, torch_threads):
    text = "a red circle on a blue background"
    for weighting in ("comfy", "a1111"):
        weighted, _ = _encoded(registry, models_dir, text, weighting)
        plain, _ = _encoded(registry, models_dir, text, "none")
        assert weighted.numpy().tobytes() == plain.numpy().tobytes()


def test_comfy_weight_moves_tokens_away_from_the_empty_prompt(registry, models_dir, sd_ckpt,
                                                              torch_threads):
    import torch

    embeds, clip = _encoded(registry, models_dir, "a (red:1.3) circle ((blue))", "comfy")
    z, ids = _plain(clip, "a red circle blue")
    z_empty, _ = _plain(clip, "")
    weights = torch.ones(77)
    red = clip.tokenizer("red", add_special_tokens=False).input_ids
    blue = clip.tokenizer("blue", add_special_tokens=False).input_ids
    weights[ids.index(red[0])] = 1.3
    weights[ids.index(blue[0])] = 1.1 * 1.1
    w = weights[None, :, None]
    expected = torch.where(w == 1.0, z, (z - z_empty) * w + z_empty)
    assert torch.allclose(embeds, expected, atol=1e-6)
    assert not torch.allclose(embeds, z, atol=1e-3)  # the weights changed something
    plain, _ = _encoded(registry, models_dir, "a (red:1.3) circle ((blue))", "none")
    assert plain.shape == embeds.shape and not torch.equal(plain, embeds)  # parentheses are text


def test_a1111_weights_keep_the_chunk_mean(registry, models_dir, sd_ckpt, torch_threads):
    import torch

    embeds, clip = _encoded(registry, models_dir, "a [red] (circle:1.5)", "a1111")
    z, ids = _plain(clip, "a red circle")
    weights = torch.ones(77)
    weights[ids.index(clip.tokenizer("red", add_special_tokens=False).input_ids[0])] = 1 / 1.1
    weights[ids.index(clip.tokenizer("circle", add_special_tokens=False).input_ids[0])] = 1.5
    scaled = z * weights[None, :, None]
    expected = scaled * (z.mean() / scaled.mean())
    assert torch.allclose(embeds, expected, atol=1e-6)
    assert abs(float(embeds.mean() - z.mean())) < 1e-6


def test_a1111_break_starts_a_new_chunk(registry, models_dir, sd_ckpt, torch_threads):
    import torch

    embeds, clip = _encoded(registry, models_dir, "a red circle BREAK a blue square", "a1111")
    assert embeds.shape == (1, 154, 32)
    first, _ = _plain(clip, "a red circle")
    second, _ = _plain(clip, "a blue square")
    assert torch.allclose(embeds, torch.cat([first, second], dim=1), atol=1e-6)
    comfy, _ = _encoded(registry, models_dir, "a red circle BREAK a blue square", "comfy")
    assert comfy.shape == (1, 77, 32)  # ComfyUI reads BREAK as a word


def test_comfy_keeps_short_words_whole_across_chunks(registry, models_dir, sd_ckpt, torch_threads):
    from nodeflow.nodes.diffusion.weighting import pack_chunks, parse_comfy, token_groups

    _, clip = _encoded(registry, models_dir, "", "comfy")
    tok = clip.tokenizer
    word = "supercalifragilistic"  # several tokens, fewer than 8
    size = len(tok(word, add_special_tokens=False).input_ids)
    assert 1 < size < 8
    text = " ".join(["cat"] * 74) + " " + word
    chunks = pack_chunks(tok, token_groups(tok, parse_comfy(text), lambda name: None))
    assert len(chunks) == 2 and all(len(c) == 77 for c in chunks)
    first_ids = [t for t, _ in chunks[0]]
    assert first_ids[75] == tok.eos_token_id  # the word did not fit: moved whole
    assert [t for t, _ in chunks[1]][1:1 + size] == tok(word, add_special_tokens=False).input_ids


def test_weighting_on_sdxl_weights_both_encoders(registry, models_dir, torch_threads):
    import torch

    from nodeflow.nodes.diffusion.conditioning import encode_sdxl
    from nodeflow.nodes.diffusion.types import TextEncoders
    from tests.nodes.diffusion import tiny

    parts = tiny.sdxl_components()
    clip = TextEncoders("sdxl", parts["tokenizer"], parts["text_encoder"], parts["tokenizer_2"],
                        parts["text_encoder_2"])
    plain = encode_sdxl(clip, "a red circle", 0, "none")
    same = encode_sdxl(clip, "a red circle", 0, "comfy")
    assert torch.equal(plain.embeds, same.embeds) and torch.equal(plain.pooled, same.pooled)
    weighted = encode_sdxl(clip, "a (red:1.4) circle", 0, "comfy")
    assert weighted.embeds.shape == plain.embeds.shape == (1, 77, 64)
    differs = (weighted.embeds - plain.embeds).abs().amax(dim=(0, 1))
    assert differs[:32].max() > 1e-3 and differs[32:].max() > 1e-3  # clip_l and clip_g both weighted
    assert torch.equal(weighted.pooled, plain.pooled)  # the pooled embedding is not weighted



def test_prompt_weighting_graph_on_the_demo_model(registry, tmp_path, torch_threads):
    from training import evaluate

    graph = tiny.load_graph("prompt_weighting", sampler={"steps": 12})
    image = tiny.run_graph(registry, graph, outputs=["decode"], out_dir=tmp_path).outputs["decode"]["image"]
    found = evaluate.analyse((image[0] * 255).round().astype("uint8"))
    assert (found.colour, found.background) == ("yellow", "blue"), found


def test_embedding_of_a_words_own_vector_encodes_like_the_word(registry, tmp_path, torch_threads):
    """On the demo model: an embedding holding the token vector of 'yellow' gives exactly the
    encoding of the prompt with the word."""
    import torch
    from safetensors.torch import save_file

    graph = tiny.load_graph("prompt_weighting", positive={"text": "a yellow star on a blue background"})
    result = tiny.run_graph(registry, graph, outputs=["positive", "checkpoint"], out_dir=tmp_path)
    clip = result.outputs["checkpoint"]["clip"]
    ids = clip.tokenizer("yellow", add_special_tokens=False).input_ids
    vectors = clip.text_encoder.get_input_embeddings().weight[ids].detach().clone()
    (tmp_path / "embeddings").mkdir()
    save_file({"emb_params": vectors}, str(tmp_path / "embeddings" / "demo-yellow.safetensors"))
    graph.set_input("positive", "text", "a embedding:demo-yellow star on a blue background")
    with_embedding = tiny.run_graph(registry, graph, tmp_path, outputs=["positive"], out_dir=tmp_path)
    a = result.outputs["positive"]["conditioning"].embeds
    b = with_embedding.outputs["positive"]["conditioning"].embeds
    assert torch.equal(a, b)
