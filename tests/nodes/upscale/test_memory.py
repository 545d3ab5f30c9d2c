"""Tiled upscaling of a large image needs the image buffers plus one tile, not the whole image."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import save_compact

CHILD = r"""
import json, resource, sys
import numpy as np, torch
torch.set_num_threads(1)
from pathlib import Path
from nodeflow.models import ModelManager
from nodeflow.nodes.upscale import LoadModel, Upscale
from nodeflow.settings import Settings
path, size, tile = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
class Ctx:
    node_id = "n"; settings = Settings(models_dirs=[path.parent.parent]); models = ModelManager()
    def progress(self, *a, **k): pass
    def check_cancelled(self): pass
ctx = Ctx()
model = LoadModel().run(ctx, path.name)["upscale_model"]
image = np.random.default_rng(0).random((1, size, size, 3), dtype=np.float32)
model.descriptor(torch.rand(1, 3, tile, tile))  # one tile's worth of working memory
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
out = Upscale().run(ctx, model, image, tile, 16)
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({"growth_mb": after - before, "shape": list(out.shape)}))
"""


@pytest.mark.slow
def test_peak_memory_is_the_output_buffer_plus_one_tile(tmp_path):
    path = save_compact(tmp_path / "upscale" / "compact-4x.safetensors", feat=8, convs=2)
    size, tile = 1024, 128
    proc = subprocess.run([sys.executable, "-c", CHILD, str(path), str(size), str(tile)],
                          capture_output=True, text=True, check=True, cwd=Path(__file__).parent)
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["shape"] == [1, size * 4, size * 4, 3]
    output_mb = (size * 4) ** 2 * 3 * 4 / 2**20  # 192 MB
    # The peak was already as high as one tile before the run; the run adds the output
    # buffer and per-tile temporaries, never anything the size of the whole image's activations
    # (which for 8 features at 4096×4096 would be over 500 MB per layer).
    assert result["growth_mb"] < output_mb + 64, result
