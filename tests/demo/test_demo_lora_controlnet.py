"""The demo LoRA / ControlNet: their metrics on ground-truth renders.

The smoke runs of their training scripts are in tests/training/test_train_adapters.py.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from training import control_eval, evaluate, world

TEST_SEED = 20_250_801  # held out from every training stream


@pytest.fixture(autouse=True)
def _one_thread(torch_threads):
    yield


def _scenes(n: int = 12):
    return evaluate.prompts(n, TEST_SEED)


# --------------------------------------------------------------------------- metrics


def test_outlined_fraction_separates_outlined_from_filled_renders():
    scenes = _scenes()
    for locate in (True, False):
        outlined = [control_eval.outlined_fraction(world.render(s, outlined=True), s, locate=locate) for s in scenes]
        filled = [control_eval.outlined_fraction(world.render_array(s), s, locate=locate) for s in scenes]
        measured = [x for x in outlined if not math.isnan(x)]
        assert len(measured) >= len(scenes) - 2, outlined  # only tiny stars/triangles are unmeasurable
        assert min(measured) > 0.8, outlined
        assert np.nanmax(filled) < 0.2, filled
    # a plain background has no shape: undefined, not "outlined"
    blank = np.zeros((64, 64, 3), np.uint8) + 128
    assert math.isnan(control_eval.outlined_fraction(blank, scenes[0]))


def test_hollowness_separates_outlined_from_filled_circles_squares_and_triangles():
    scenes = [s for s in _scenes() if s.shape != "star"]  # a star's hull is hollow either way
    outlined = [control_eval.hollowness(world.render(s, outlined=True)) for s in scenes]
    filled = [control_eval.hollowness(world.render(s)) for s in scenes]
    assert max(filled) < 0.1, filled
    assert np.mean(outlined) > 0.3 and np.mean(outlined) > 3 * np.mean(filled) + 0.2, outlined
    # an outline broken open still counts, unlike outlined_fraction (which needs an interior)
    ring = world.render_array(scenes[0], outlined=True).copy()
    mask = world.coverage(scenes[0], outlined=True) > 0
    rows = np.nonzero(mask.any(axis=1))[0]
    ring[rows[0] : rows[0] + 4] = ring[0, 0]  # erase the top of the outline
    assert control_eval.hollowness(ring) > 0.3
    blank = np.zeros((64, 64, 3), np.uint8) + 128
    assert math.isnan(control_eval.hollowness(blank))


def test_edge_iou_of_ground_truth_renders():
    scenes = _scenes()
    own = [control_eval.edge_iou(world.render(s), s) for s in scenes]
    assert np.mean(own) > 0.9 and min(own) > 0.85, own
    assert control_eval.edge_iou(world.render_array(scenes[0]), scenes[0]) == own[0]  # arrays too
    other = [control_eval.edge_iou(world.render(s), scenes[(i + 1) % len(scenes)]) for i, s in enumerate(scenes)]
    assert np.mean(other) < 0.4, other
    left = world.Scene("circle", "red", "blue", 0.25, 0.25, 0.15)
    right = world.Scene("circle", "red", "blue", 0.75, 0.75, 0.15)
    assert control_eval.edge_iou(world.render(left), right) == 0.0
    assert control_eval.edge_iou(np.zeros((64, 64, 3), np.uint8), left) == 0.0
