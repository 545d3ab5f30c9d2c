"""The shape checker behind the demo quality figures, checked on ground truth: world renders, world
renders through the demo VAE, and the near-miss shapes the model draws (rounded squares,
triangles with concave sides) that area ratios used to misname."""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

from training import common as C
from training import evaluate, world

CHECKPOINT = str(C.DEFAULT_OUT)


def per_shape(scenes, images) -> dict[str, float]:
    return evaluate.score(scenes, images)["accuracy"]["per_shape"]


def test_world_renders_are_named_right():
    scenes = evaluate.prompts(80, 31)
    assert per_shape(scenes, [world.render(s) for s in scenes]) == {s: 1.0 for s in world.SHAPES}


def test_world_renders_through_the_demo_vae_are_named_right(torch_threads):
    scenes = evaluate.prompts(80, 31)
    images = evaluate.vae_round_trip(CHECKPOINT, [world.render_array(s) for s in scenes])
    accuracy = per_shape(scenes, images)
    assert all(v >= 0.95 for v in accuracy.values()), accuracy


def _picture(draw) -> np.ndarray:
    image = Image.new("RGB", (256, 256), world.PALETTE["blue"])
    draw(ImageDraw.Draw(image))
    return np.asarray(image.resize((64, 64), Image.Resampling.BOX))


def test_rounded_squares_and_concave_triangles_keep_their_kind():
    """What area ratios got wrong: squares whose corners come out rounded (fill under 0.89) were
    called circles, triangles with slightly concave sides (solidity 0.72-0.77) stars."""
    yellow = world.PALETTE["yellow"]
    for radius in (45, 50, 55):  # corner radius up to 0.4 of the side
        found = evaluate.analyse(_picture(lambda d, r=radius: d.rounded_rectangle(
            (60, 60, 196, 196), radius=r, fill=yellow)))
        assert found.fill < 0.92 and found.shape == "square", (radius, found)
    for pull in (0.15, 0.2, 0.25):
        apex, right, left = (128.0, 50.0), (208.0, 200.0), (48.0, 200.0)
        centre = ((apex[0] + right[0] + left[0]) / 3, (apex[1] + right[1] + left[1]) / 3)
        points = []
        for a, b in ((apex, right), (right, left), (left, apex)):
            mid = ((a[0] + b[0]) / 2, (a[1] + b[1]) / 2)
            points += [a, (mid[0] + pull * (centre[0] - mid[0]), mid[1] + pull * (centre[1] - mid[1]))]
        found = evaluate.analyse(_picture(lambda d, p=points: d.polygon(p, fill=yellow)))
        assert found.solidity < 0.95 and found.shape == "triangle", (pull, found)
    circle = evaluate.analyse(_picture(lambda d: d.ellipse((60, 60, 196, 196), fill=yellow)))
    assert circle.shape == "circle"


def test_diversity_is_one_for_the_world_and_zero_for_copies():
    rng = np.random.default_rng(3)
    scenes = [world.sample_scene(rng, shape="circle", colour="red", background="blue") for _ in range(200)]
    varied = [world.render(s) for s in scenes]
    assert 0.85 <= evaluate.diversity(varied) <= 1.15
    assert evaluate.diversity([varied[0]] * 20) == 0.0
