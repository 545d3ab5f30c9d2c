"""graphs/ar_roundtrip.json and graphs/ar_sample.json run end to end with tiny models."""

from __future__ import annotations

from pathlib import Path

from PIL import Image

from nodeflow.executor import Executor
from nodeflow.graph import Graph
from nodeflow.settings import Settings
from nodeflow.validate import GraphValidator

from .conftest import make_prior, make_vq

GRAPHS = Path(__file__).resolve().parents[3] / "graphs"


def test_ar_graphs_run(torch_threads, registry, tmp_path):
    from nodeflow.nodes.ar.prior import save_prior
    from nodeflow.nodes.ar.tokenizer import load_tokenizer

    models = tmp_path / "models"
    vq_dir = models / "tokenizers" / "nodeflow-shapes-vq"
    make_vq().save_pretrained(str(vq_dir))
    fingerprint = load_tokenizer(vq_dir).fingerprint
    (models / "priors").mkdir(parents=True)
    save_prior(make_prior(tokenizer=fingerprint), models / "priors" / "nodeflow-shapes-prior.safetensors")
    settings = Settings(models_dirs=[models], out_dir=tmp_path / "out", base_dir=GRAPHS)
    executor = Executor(registry, settings)

    graph = Graph.load(GRAPHS / "ar_roundtrip.json")
    assert GraphValidator(registry, settings).validate(graph) == []
    result = executor.run(graph)
    assert result.ok, result.failed
    with Image.open(GRAPHS / "assets" / "pattern.png") as im, Image.open(result.files[0]) as out:
        assert out.size == im.size

    graph = Graph.load(GRAPHS / "ar_sample.json")
    assert GraphValidator(registry, settings).validate(graph) == []
    result = executor.run(graph)
    assert result.ok, result.failed
    assert len(result.files) == 4
    with Image.open(result.files[0]) as out:
        assert out.size == (5 * 2, 4 * 2)  # the tiny prior's 5×4 grid, 2 pixels per token
    assert executor.models.loads == 2  # the tokenizer is loaded once for both graphs
