"""fp8 storage (LoadDiffusionModel weight_dtype): the transformer's block weights take one byte per
number, each layer is cast up to the compute dtype while it runs, and the picture stays close."""

from __future__ import annotations

from nodeflow.models import module_size
from tests.nodes.flow.conftest import SPLIT_NAMES
from tests.nodes.flow.test_txt2img import close, flux_graph, run


def test_fp8_storage_halves_block_weights_and_keeps_the_picture(registry, flow_models, flux_parts,
                                                                 torch_threads):
    import torch

    from nodeflow.nodes.flow import loaders

    path = flow_models / "diffusion_models" / SPLIT_NAMES["flux"]["model"]
    full = loaders.load_transformer_file(path)
    small = loaders.load_transformer_file(path, weight_dtype="fp8_e4m3fn")
    stored = {p.dtype for name, p in small.transformer.named_parameters() if "transformer_blocks" in name
              and name.endswith("to_q.weight")}
    assert stored == {torch.float8_e4m3fn}
    assert module_size(small.transformer) < 0.6 * module_size(full.transformer)

    ours = run(registry, flux_graph(unet={"weight_dtype": "fp8_e4m3fn"}), flow_models)
    reference = run(registry, flux_graph(), flow_models)
    assert 0 < close(ours, reference) <= 40  # rounded weights: close, not equal
