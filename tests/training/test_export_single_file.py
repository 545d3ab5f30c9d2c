"""The single-file converters write what diffusers' own single-file loader reads back exactly."""

from __future__ import annotations

import torch


def test_open_clip_names_read_back_by_diffusers_to_the_same_tensors() -> None:
    from diffusers.loaders.single_file_utils import convert_open_clip_checkpoint
    from transformers import CLIPTextConfig, CLIPTextModelWithProjection

    from training.export_single_file import open_clip_to_ldm

    torch.manual_seed(0)
    config = CLIPTextConfig(hidden_size=32, intermediate_size=37, num_attention_heads=4, num_hidden_layers=2,
                            projection_dim=16, vocab_size=99, max_position_embeddings=77,
                            bos_token_id=0, eos_token_id=1, pad_token_id=1)
    model = CLIPTextModelWithProjection(config)
    state = model.state_dict()
    prefix = "conditioner.embedders.1.model."  # where an SDXL file keeps its big text encoder
    ldm = {prefix + k: v for k, v in open_clip_to_ldm(state).items()}
    assert prefix + "transformer.resblocks.1.attn.in_proj_weight" in ldm
    assert prefix + "positional_embedding" in ldm  # the key diffusers detects an SDXL file by
    back = convert_open_clip_checkpoint(model, ldm, prefix=prefix)
    assert set(back) == set(state)
    for key, tensor in state.items():
        assert torch.equal(back[key], tensor), key
