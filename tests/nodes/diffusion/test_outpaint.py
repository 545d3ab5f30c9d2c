"""ImagePadForOutpaint and VAEEncodeForInpaint.

Pixel reference: a 9-channel inpainting checkpoint at denoise 1 equals diffusers'
StableDiffusionInpaintPipeline. Formula tests: the feathered mask, the grown mask, the greyed
picture. Picture test: graphs/outpaint.json on the demo model draws the new border in the
picture's background colour and keeps the old picture.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from tests.nodes.diffusion import tiny
from tests.nodes.diffusion.test_resize_latent import _run


def test_pad_for_outpaint_greys_the_new_room_and_feathers_the_seam(registry):
    image = np.random.default_rng(0).random((1, 10, 12, 3), dtype=np.float32)
    out = _run(registry, "diffusion.ImagePadForOutpaint", {"image": image},
               {"left": 4, "top": 0, "right": 0, "bottom": 2, "feathering": 3})
    padded, mask = out["image"], out["mask"]
    assert padded.shape == (1, 12, 16, 3) and mask.shape == (1, 12, 16)
    assert np.array_equal(padded[:, :10, 4:], image)
    assert np.all(padded[:, :, :4] == 0.5) and np.all(padded[:, 10:] == 0.5)
    assert np.all(mask[0, :, :4] == 1) and np.all(mask[0, 10:] == 1)
    # inside: ((3 - d) / 3)² within 3 pixels of the padded left and bottom sides, else 0
    row = mask[0, 4, 4:]
    assert np.allclose(row[:4], [1.0, 4 / 9, 1 / 9, 0.0]) and np.all(row[3:] == 0)
    column = mask[0, :10, 10]
    assert np.allclose(column[-3:], [0.0, 1 / 9, 4 / 9]) and np.all(column[:7] == 0)
    assert np.all(mask[0, 0, 8:] == 0)  # the top was not padded: no seam there


def test_grow_mask_boxes_each_pixel(registry):
    import torch

    from nodeflow.nodes.diffusion.outpaint import grow_mask

    mask = torch.zeros(1, 1, 24, 24)
    mask[0, 0, 10, 10] = 1
    grown = grow_mask(mask, 6)[0, 0]
    rows, cols = torch.nonzero(grown, as_tuple=True)
    assert (rows.min(), rows.max(), cols.min(), cols.max()) == (8, 13, 8, 13)  # a 6×6 box
    assert grown.shape == (24, 24) and int(grown.sum()) == 36
    assert torch.equal(grow_mask(mask, 0), mask)


def test_nothing_to_outpaint_fails_validation(registry):
    from nodeflow.graph import Graph
    from nodeflow.validate import GraphValidator

    graph = Graph()
    graph.add_node("image.Load", "image", {"path": "assets/shape_red_circle.png"})
    graph.add_node("diffusion.ImagePadForOutpaint", "pad", {"left": 0, "top": 0, "right": 0,
                                                           "bottom": 0, "feathering": 8})
    graph.connect("image.image", "pad.image")
    problems = GraphValidator(registry).validate(graph)
    assert any(p.location.node == "pad" and "nothing to outpaint" in p.message for p in problems)


def _inpaint_graph(ckpt, pictures, grow):
    graph = tiny.load_graph("outpaint", checkpoint={"path": ckpt},
                            positive={"text": "a green triangle on a white background"},
                            image={"path": str(pictures["picture"])}, encode={"grow_mask_by": grow},
                            sampler={"steps": 4, "seed": 5})
    for node in ("shrink", "pad"):
        graph.remove_node(node)
    graph.add_node("image.Load", "mask_image", {"path": str(pictures["mask_rgba"])})
    graph.connect("image.image", "encode.image")
    graph.connect("mask_image.mask", "encode.mask")
    return graph


def test_inpaint_checkpoint_matches_the_diffusers_pipeline(registry, models_dir, inpaint_ckpt, pictures,
                                                          torch_threads):
    import torch
    from diffusers import EulerDiscreteScheduler, StableDiffusionInpaintPipeline

    graph = _inpaint_graph("tiny-sd-inpaint", pictures, grow=0)
    ours = tiny.run_graph(registry, graph, models_dir, ["decode"]).outputs["decode"]["image"]
    pipe = StableDiffusionInpaintPipeline.from_pretrained(inpaint_ckpt, safety_checker=None,
                                                          requires_safety_checker=False)
    pipe.scheduler = EulerDiscreteScheduler.from_config(pipe.scheduler.config)
    ref = pipe("a green triangle on a white background", image=Image.open(pictures["picture"]),
               mask_image=Image.open(pictures["mask_l"]), height=32, width=32, strength=1.0,
               num_inference_steps=4, guidance_scale=7.5, negative_prompt="",
               generator=torch.Generator("cpu").manual_seed(5), output_type="np").images
    assert np.abs(ours - ref).max() <= 1e-5


def test_encode_for_inpaint_greys_the_area_and_grows_the_mask(registry, models_dir, sd_ckpt, pictures,
                                                             torch_threads):
    graph = _inpaint_graph("tiny-sd", pictures, grow=4)
    result = tiny.run_graph(registry, graph, models_dir, ["encode", "image", "mask_image"])
    latent = result.outputs["encode"]["latent"]
    original = result.outputs["image"]["image"]
    mask = result.outputs["mask_image"]["mask"]
    pixels = (latent.encoded.pixels.numpy().transpose(0, 2, 3, 1) + 1) / 2
    assert np.allclose(pixels[mask > 0.5], 0.5) and np.allclose(pixels[mask < 0.5], original[mask < 0.5])
    assert latent.mask.sum() > mask.sum() and np.all(latent.mask[mask > 0.5] == 1)  # grown
    image = tiny.run_graph(registry, graph, models_dir, ["decode"]).outputs["decode"]["image"]
    assert image.shape == (1, 32, 32, 3)


def test_outpaint_graph_draws_the_border_and_keeps_the_picture(registry, tmp_path, torch_threads):
    graph = tiny.load_graph("outpaint", sampler={"steps": 12})
    result = tiny.run_graph(registry, graph, outputs=["decode", "pad"], out_dir=tmp_path)
    image = result.outputs["decode"]["image"][0]
    padded = result.outputs["pad"]["image"][0]
    border = np.concatenate([image[:6].reshape(-1, 3), image[-6:].reshape(-1, 3),
                             image[:, :6].reshape(-1, 3), image[:, -6:].reshape(-1, 3)])
    r, g, b = border.mean(axis=0)
    assert b > 0.6 and b > r + 0.3  # the grey border became the blue background
    assert np.all(np.abs(padded[:6] - 0.5) < 1e-6)  # (it was grey)
    centre = image[24:40, 24:40].mean(axis=(0, 1))
    assert centre[0] > centre[2] + 0.3  # the red circle is still there
