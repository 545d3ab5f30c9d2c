"""The demo graphs run on the shipped demo models and their pictures show what they promise.

Each graph file in graphs/ is loaded as a user would run it (its relative asset paths
resolved against graphs/), with fewer sampling steps to stay fast, and the pictures are
judged with training.evaluate / control_eval.  The models must be present: a missing
file is a failure, not a skip.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from training import assets, control_eval, evaluate, world

REPO = Path(__file__).resolve().parents[2]
GRAPHS = REPO / "graphs"


@pytest.fixture(autouse=True)
def _one_thread(torch_threads):
    yield


def run(registry, name: str, tmp_path: Path, **inputs: dict) -> list[np.ndarray]:
    """Run graphs/<name>.json with some inputs changed; the pictures it saved, as uint8 arrays."""
    from PIL import Image

    from nodeflow.executor import Executor
    from nodeflow.graph import Graph
    from nodeflow.settings import Settings

    data = json.loads((GRAPHS / f"{name}.json").read_text())
    for node, values in inputs.items():
        data["nodes"][node]["inputs"].update(values)
    graph = Graph.loads(json.dumps(data))
    result = Executor(registry, Settings(out_dir=tmp_path, base_dir=GRAPHS)).run(graph)
    assert not result.failed, result.failed
    files = sorted(tmp_path.glob("*.png"))
    assert files
    return [np.asarray(Image.open(f).convert("RGB")) for f in files]


# Shape kind of the demo text-to-image model on the handful of pictures below (3 prompts x 4
# seeds of graphs/demo.json, its star is tested above): 11 of 12 right with the shipped
# model and graph, one yellow circle read as a square (its figure on 512 held-out pictures,
# 94%, is in the README; earlier
# guidance settings got 8 of 12, earlier, shorter-trained models 1 and 5 of 12). The floor
# leaves room for two pictures to differ on another platform.
MIN_SHAPE_KIND = 10 / 12


def _split(tmp_path: Path, prefix: str) -> list[np.ndarray]:
    from PIL import Image

    return [np.asarray(Image.open(f).convert("RGB")) for f in sorted(tmp_path.glob(f"{prefix}_[0-9]*.png"))]


def test_demo_graph_draws_the_prompt_and_upscales_it_4x(registry, tmp_path):
    run(registry, "demo", tmp_path)  # as `make demo` runs it: a red star on white, 4 seeds
    small, large = _split(tmp_path, "demo"), _split(tmp_path, "demo_upscaled")
    assert len(small) == len(large) == 4
    found = [evaluate.analyse(image) for image in small]
    print(found)
    assert all((f.colour, f.background) == ("red", "white") for f in found), found
    assert sum(f.shape == "star" for f in found) >= 3, found
    # cfg 5 only below t = 600 (chosen with bench/sampler_guidance.py): the four seeds place and
    # size the star differently (with cfg 7.5 all the way they were four copies of one centred
    # blob: 0.27 of the world's spread)
    assert evaluate.diversity(small) >= 0.6
    for s, big in zip(small, large):
        assert big.shape == (256, 256, 3)
        # the upscaled picture, averaged back down, is the picture it came from
        down = big.reshape(64, 4, 64, 4, 3).mean(axis=(1, 3))
        assert np.abs(down - s).mean() < 6


def test_demo_model_draws_the_shape_kind_the_prompt_names(registry, tmp_path):
    right, found = 0, []
    for i, (shape, colour, background) in enumerate(
            [("square", "red", "white"), ("triangle", "green", "yellow"), ("circle", "yellow", "blue")]):
        prompt = f"a {colour} {shape} on a {background} background"
        run(registry, "demo", tmp_path / shape, positive={"text": prompt}, sampler={"seed": 100 + i})
        for image in _split(tmp_path / shape, "demo"):
            an = evaluate.analyse(image)
            found.append((shape, an.shape, an.colour, an.background))
            right += an.shape == shape
            assert (an.colour, an.background) == (colour, background), found
    print(found)
    assert right / len(found) >= MIN_SHAPE_KIND, found


def test_img2img_turns_the_red_circle_into_what_the_prompt_says(registry, tmp_path):
    images = run(registry, "img2img", tmp_path, sampler={"steps": 10})
    assert len(images) == 1 and images[0].shape == (64, 64, 3)
    found = evaluate.analyse(images[0])
    assert (found.colour, found.background) == ("yellow", "blue"), found


def test_inpainting_repaints_the_hole_and_keeps_the_rest(registry, tmp_path):
    images = run(registry, "inpaint", tmp_path, sampler={"steps": 10})
    picture = images[0].astype(np.int16)
    original = world.render_array(assets.CIRCLE).astype(np.int16)
    hole = world.grow(world.shape_mask(assets.CIRCLE), 8)  # well outside the hole (the VAE blurs across its edge)
    kept = np.abs(picture - original)[~hole].mean()
    assert kept < 12, kept  # the blue around the hole survives
    found = evaluate.analyse(images[0])
    assert found.colour == "yellow" and found.background == "blue", found


def test_controlnet_draws_the_shape_where_the_edge_map_says(registry, tmp_path):
    images = run(registry, "demo_controlnet", tmp_path, sampler={"steps": 10}, latent={"batch": 2})
    ious = [control_eval.edge_iou(image, assets.STAR) for image in images]
    print("edge IoU", ious)
    assert len(images) == 2 and min(ious) >= 0.6, ious


def test_the_lora_draws_the_shape_as_an_outline(registry, tmp_path):
    base = run(registry, "demo_lora", tmp_path / "0", sampler={"steps": 10}, latent={"batch": 2},
               lora={"strength_model": 0.0, "strength_clip": 0.0})
    lora = run(registry, "demo_lora", tmp_path / "1", sampler={"steps": 10}, latent={"batch": 2})
    assert all(np.abs(a.astype(int) - b.astype(int)).mean() > 5 for a, b in zip(base, lora))
    # The base model never saw the word "outlined" and loses the background; the LoRA knows it.
    found = [evaluate.analyse(image) for image in lora]
    print("with the LoRA", found)
    assert [f.background for f in found] == ["white", "white"], found
    # It draws the square as an outline: most of the shape's hull is background
    # (measured 0.43 and 0.42 with the LoRA, 0.05 and 0.04 without; the world's own
    # outlined squares 0.47, filled ones 0.00).
    without = [control_eval.hollowness(image) for image in base]
    with_lora = [control_eval.hollowness(image) for image in lora]
    print("hollowness without / with the LoRA", without, with_lora)
    assert max(without) < 0.15 and min(with_lora) > 0.3, (without, with_lora)
    assert [f.colour for f in found] == ["blue", "blue"], found
