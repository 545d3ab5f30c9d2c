"""ar.LoadPrior and ar.Sample: determinism, greedy decoding, prefixes, the key/value cache."""

from __future__ import annotations

import numpy as np
import pytest

from nodeflow.errors import Cancelled, NodeInputError
from nodeflow.nodes.ar import LoadPrior, LoadTokenizer, Sample, Tokenize, Tokens

from .conftest import PRIOR_CONFIG, DirectContext, picture

DEFAULTS = {"tokens": None, "keep_rows": 0, "label": None, "batch": 2, "seed": 0,
            "temperature": 1.0, "top_k": 0, "top_p": 1.0}


def sample(ctx, prior, **kwargs):
    return Sample().run(ctx, prior, **{**DEFAULTS, **kwargs})


@pytest.fixture
def prior(ctx):
    return LoadPrior().run(ctx, "prior.safetensors")["prior"]


def test_load_prior_reports_codebook_and_classes(torch_threads, ctx):
    for name in ("prior.safetensors", "prior-folder"):
        loaded = LoadPrior().run(ctx, name)
        assert loaded["codebook_size"] == 32
        assert loaded["classes"].splitlines() == PRIOR_CONFIG["class_names"]


def test_same_seed_same_tokens_other_seed_other_tokens(torch_threads, ctx, prior):
    a = sample(ctx, prior, seed=7, label=1)
    b = sample(ctx, prior, seed=7, label=1)
    c = sample(ctx, prior, seed=8, label=1)
    assert a.shape == (2, 4, 5) and a.codebook_size == 32
    np.testing.assert_array_equal(a.ids, b.ids)
    assert (a.ids != c.ids).any()
    assert (a.ids[0] != a.ids[1]).any()  # the batch's grids differ from one another
    assert a.ids.min() >= 0 and a.ids.max() < 32


def greedy_reference(prior, label, batch, prefix=None):
    """Greedy decoding by re-running the whole sequence for every token (no cache)."""
    import torch

    height, width = prior.grid
    ids = torch.zeros(batch, height * width, dtype=torch.long)
    known = 0 if prefix is None else prefix.shape[1]
    if prefix is not None:
        ids[:, :known] = prefix
    labels = prior.labels_for(label, batch, "cpu")
    with torch.no_grad():
        for i in range(known, height * width):
            ids[:, i] = prior(labels, ids[:, :i])[:, -1].argmax(-1)
    return ids.numpy().reshape(batch, height, width)


def test_top_k_1_and_zero_temperature_are_greedy(torch_threads, ctx, prior):
    expected = greedy_reference(prior, 2, 2)
    for kwargs in ({"top_k": 1, "seed": 1}, {"top_k": 1, "seed": 2}, {"temperature": 0.0}):
        np.testing.assert_array_equal(sample(ctx, prior, label=2, **kwargs).ids, expected)
    # Unconditional generation is different from class 2.
    assert (sample(ctx, prior, top_k=1).ids != expected).any()


def test_nucleus_and_top_k_only_draw_likely_tokens(torch_threads):
    import torch

    from nodeflow.nodes.ar.prior import choose, filter_logits

    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]]))
    kept = filter_logits(logits, 1.0, 0, 0.7).isfinite()[0].tolist()
    assert kept == [True, True, False, False]
    assert filter_logits(logits, 1.0, 3, 1.0).isfinite()[0].tolist() == [True, True, True, False]
    g = torch.Generator().manual_seed(0)
    draws = {int(choose(logits, 1.0, 0, 0.7, g)) for _ in range(200)}
    assert draws == {0, 1}


def test_a_prefix_is_kept_and_completion_continues_after_it(torch_threads, ctx, prior):
    grid = np.random.default_rng(0).integers(0, 32, (2, 4, 5))
    tokens = Tokens(grid, 32, None)
    out = sample(ctx, prior, tokens=tokens, keep_rows=2, seed=3)
    np.testing.assert_array_equal(out.ids[:, :2], grid[:, :2])
    assert (out.ids[:, 2:] != grid[:, 2:]).any()
    greedy = sample(ctx, prior, tokens=tokens, keep_rows=2, top_k=1)
    import torch
    prefix = torch.from_numpy(grid[:, :2].reshape(2, -1))
    np.testing.assert_array_equal(greedy.ids, greedy_reference(prior, None, 2, prefix))
    # Keeping every row generates nothing.
    np.testing.assert_array_equal(sample(ctx, prior, tokens=tokens, keep_rows=4).ids, grid)


def test_kv_cache_gives_the_same_logits_as_the_full_sequence(torch_threads):
    import torch

    from nodeflow.nodes.ar.prior import KVCache

    from .conftest import make_prior

    prior = make_prior(seed=5)
    ids = torch.randint(0, 32, (3, 20), generator=torch.Generator().manual_seed(0))
    labels = torch.tensor([0, 1, 3])
    with torch.no_grad():
        full = prior(labels, ids[:, :19])
        cache = KVCache(prior, 3)
        parts = [prior(labels, ids[:, :6], cache, 0)]  # a prefix, then one token at a time
        for i in range(6, 19):
            parts.append(prior(labels, ids[:, i:i + 1], cache, i + 1))
    torch.testing.assert_close(torch.cat(parts, dim=1), full, rtol=1e-5, atol=1e-5)


def test_progress_per_row_and_cancel(torch_threads, settings, prior):
    ctx = DirectContext(settings)
    sample(ctx, prior)
    assert [e[:2] for e in ctx.events] == [(1, 4), (2, 4), (3, 4), (4, 4)]
    grid = Tokens(np.zeros((1, 4, 5), np.int64), 32, None)
    ctx = DirectContext(settings)
    sample(ctx, prior, tokens=grid, keep_rows=1)
    assert [e[:2] for e in ctx.events] == [(1, 3), (2, 3), (3, 3)]
    stopping = DirectContext(settings, models=ctx.models, cancel_after=2)
    with pytest.raises(Cancelled):
        sample(stopping, prior)
    assert len(stopping.events) == 2


def test_bad_inputs_name_their_socket(torch_threads, ctx, prior):
    cases = [
        ({"label": 3}, "label", "labels 0 to 2"),
        ({"tokens": Tokens(np.zeros((1, 4, 5), np.int64), 64, None)}, "tokens", "64 entries"),
        ({"tokens": Tokens(np.zeros((1, 5, 5), np.int64), 32, None)}, "tokens", "5×5 grid"),
        ({"tokens": Tokens(np.zeros((1, 4, 5), np.int64), 32, None), "keep_rows": 5},
         "keep_rows", "more than the 4 rows"),
    ]
    for kwargs, socket, words in cases:
        with pytest.raises(NodeInputError) as info:
            sample(ctx, prior, **kwargs)
        assert info.value.socket == socket and words in info.value.message, info.value


def test_tokens_of_a_real_tokenizer_continue_and_keep_its_identity(torch_threads, ctx, prior):
    vq = LoadTokenizer().run(ctx, "vq")["tokenizer"]
    tokens = Tokenize().run(ctx, vq, picture(8, 10))
    out = sample(ctx, prior, tokens=tokens, keep_rows=3)
    assert out.tokenizer == vq.fingerprint
    np.testing.assert_array_equal(out.ids[:, :3], tokens.ids[:, :3])


def test_classifier_free_guidance_follows_the_guided_logits(torch_threads, ctx, prior):
    """cfg 1 is exactly the unguided sampler; greedy cfg > 1 picks argmax(u + cfg * (c - u))."""
    import torch

    plain = sample(ctx, prior, seed=3, label=2)
    np.testing.assert_array_equal(sample(ctx, prior, seed=3, label=2, cfg=1.0).ids, plain.ids)
    guided = sample(ctx, prior, seed=3, label=2, cfg=4.0)
    np.testing.assert_array_equal(sample(ctx, prior, seed=3, label=2, cfg=4.0).ids, guided.ids)

    cfg = 4.0
    greedy = sample(ctx, prior, seed=0, label=2, cfg=cfg, top_k=1).ids
    height, width = prior.grid
    ids = torch.zeros(2, height * width, dtype=torch.long)
    cond, uncond = prior.labels_for(2, 2, "cpu"), prior.labels_for(None, 2, "cpu")
    with torch.no_grad():
        for i in range(height * width):
            c, u = prior(cond, ids[:, :i])[:, -1], prior(uncond, ids[:, :i])[:, -1]
            ids[:, i] = (u + cfg * (c - u)).argmax(-1)
    np.testing.assert_array_equal(greedy, ids.numpy().reshape(2, height, width))
    assert (greedy != sample(ctx, prior, seed=0, label=2, top_k=1).ids).any()
