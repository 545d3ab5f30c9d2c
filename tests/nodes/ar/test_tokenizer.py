"""ar.LoadTokenizer / Tokenize / Detokenize against diffusers' VQModel on the same tiny model."""

from __future__ import annotations

import numpy as np
import pytest

from nodeflow.errors import NodeInputError
from nodeflow.graph import Graph
from nodeflow.nodes.ar import Detokenize, LoadTokenizer, Tokenize
from nodeflow.validate import GraphValidator

from .conftest import picture


def diffusers_reference(vq, image):
    """Token ids by VQModel.encode + quantize, and the image VQ-Diffusion decodes from them."""
    import torch

    x = torch.from_numpy(image.transpose(0, 3, 1, 2).copy()) * 2 - 1
    with torch.no_grad():
        latents = vq.encode(x).latents
        _q, _loss, (_p, _e, ids) = vq.quantize(latents)
        b, _c, h, w = latents.shape
        ids = ids.reshape(b, h, w)
        quant = vq.quantize.get_codebook_entry(ids.reshape(-1), (b, h, w, latents.shape[1]))
        decoded = vq.decode(quant, force_not_quantize=True).sample
        forward = vq(x).sample
    to_image = lambda t: (t / 2 + 0.5).clamp(0, 1).numpy().transpose(0, 2, 3, 1)  # noqa: E731
    return ids.numpy(), to_image(decoded), to_image(forward)


@pytest.mark.parametrize("name", ["vq", "vq.safetensors"])
def test_roundtrip_equals_diffusers(torch_threads, ctx, ar_models, name):
    from diffusers import VQModel

    image = picture(16, 12, batch=2)
    loaded = LoadTokenizer().run(ctx, name)
    assert (loaded["codebook_size"], loaded["downscale"]) == (32, 2)
    tokens = Tokenize().run(ctx, loaded["tokenizer"], image)
    assert tokens.shape == (2, 8, 6) and tokens.codebook_size == 32
    assert tokens.ids.dtype == np.int64
    vq = VQModel.from_pretrained(str(ar_models / "tokenizers" / "vq")).eval()
    ids, decoded, forward = diffusers_reference(vq, image)
    np.testing.assert_array_equal(tokens.ids, ids)
    assert len(np.unique(ids)) >= 3
    out = Detokenize().run(ctx, loaded["tokenizer"], tokens)
    assert out.shape == image.shape and out.dtype == np.float32
    np.testing.assert_array_equal(out, decoded)
    np.testing.assert_allclose(out, forward, atol=1e-5)  # VQModel's own forward pass


def test_tokens_from_another_codebook_are_refused(torch_threads, ctx):
    image = picture(8, 8)
    vq = LoadTokenizer().run(ctx, "vq.safetensors")["tokenizer"]
    tokens = Tokenize().run(ctx, vq, image)
    for other, words in (("vq-64.safetensors", "codebook of 32 entries but this tokenizer has 64"),
                         ("vq-other.safetensors", "different codebook")):
        with pytest.raises(NodeInputError) as info:
            Detokenize().run(ctx, LoadTokenizer().run(ctx, other)["tokenizer"], tokens)
        assert info.value.socket == "tokens" and words in info.value.message
    # The same codebook loaded from the folder is the same tokenizer.
    same = LoadTokenizer().run(ctx, "vq")["tokenizer"]
    Detokenize().run(ctx, same, tokens)


def test_image_size_must_fit_the_token_grid(torch_threads, ctx):
    vq = LoadTokenizer().run(ctx, "vq")["tokenizer"]
    with pytest.raises(NodeInputError) as info:
        Tokenize().run(ctx, vq, picture(9, 8))
    assert info.value.socket == "image" and "multiples of 2" in info.value.message


def test_files_of_the_wrong_kind_are_caught_at_validation(registry, settings, ar_models):
    import json

    vae = ar_models / "tokenizers" / "a-vae"
    vae.mkdir(exist_ok=True)
    (vae / "config.json").write_text(json.dumps({"_class_name": "AutoencoderKL"}))
    graph = Graph()
    graph.add_node("ar.LoadTokenizer", "vae", {"path": "a-vae"})
    graph.add_node("ar.LoadTokenizer", "prior_as_tok", {"path": "../priors/prior.safetensors"})
    graph.add_node("ar.LoadPrior", "tok_as_prior", {"path": "../tokenizers/vq.safetensors"})
    graph.add_node("ar.LoadPrior", "ok", {"path": "prior-folder"})
    problems = {(p.location.node, p.location.socket): p.message
                for p in GraphValidator(registry, settings).validate(graph)}
    assert set(problems) == {("vae", "path"), ("prior_as_tok", "path"), ("tok_as_prior", "path")}
    assert "is a VAE" in problems[("vae", "path")]
    assert "not 'nodeflow.vq_tokenizer'" in problems[("prior_as_tok", "path")]
    assert "not 'nodeflow.ar_prior'" in problems[("tok_as_prior", "path")]
