"""The shipped demo upsampler and VQ tokenizer load with their libraries and do their job.

Both are checked on held-out scenes of the procedural world (a seed that no training
run uses).  The weights must be present: a missing file is a failure, not a skip.
"""

from __future__ import annotations

import numpy as np
import pytest

from training import common as C
from training import world

MODELS = C.MODELS
UPSCALER = MODELS / "upscale" / "nodeflow-shapes-4x.safetensors"
VQ_DIR = MODELS / "tokenizers" / "nodeflow-shapes-vq"
TEST_SEED = 20_250_704  # held out: training streams use small seeds, evaluation 424242/515151

# The shipped upsampler measured 38.3 dB against bicubic's 32.8 dB (+5.5 dB) over 32
# held-out pairs (bench/demo_quality.py); the target is at least +2 dB over bicubic, and
# the check here (4 other pairs) asks for that.
# The shipped VQ
# round trip measured 16.9 dB over 256 held-out scenes and 14.8 dB on these 4; the
# threshold leaves a margin of about 1.8 dB below the latter.
MIN_GAIN_OVER_BICUBIC_DB = 2.0
# On pictures that went through the demo VAE it measured +2.2 dB over 32 held-out pairs (the
# upscaler trained on clean renders alone: +0.0 dB).
MIN_GAIN_THROUGH_VAE_DB = 1.0
MIN_VQ_PSNR_DB = 13.0


def _scenes(n: int):
    rng = np.random.default_rng(TEST_SEED)
    return [(world.sample_scene(rng), bool(rng.random() < 0.3)) for _ in range(n)]


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float(10 * np.log10(255.0**2 / max(mse, 1e-10)))


@pytest.fixture(autouse=True)
def _one_thread(torch_threads):
    yield


def test_upscaler_is_a_4x_real_esrgan_that_beats_bicubic_by_2_db():
    import spandrel
    import torch
    from PIL import Image

    assert UPSCALER.is_file(), f"missing shipped weights {UPSCALER}"
    assert UPSCALER.stat().st_size <= 5 * 1024 * 1024
    desc = spandrel.ModelLoader().load_from_file(str(UPSCALER)).eval()
    assert desc.architecture.id == "Compact"  # Real-ESRGAN's compact network
    assert desc.scale == 4
    assert (desc.input_channels, desc.output_channels) == (3, 3)

    pairs = [world.sr_pair(s, outlined=o) for s, o in _scenes(4)]
    lows = np.stack([np.asarray(lo) for lo, _ in pairs])
    highs = np.stack([np.asarray(hi) for _, hi in pairs])
    x = torch.from_numpy(lows).permute(0, 3, 1, 2).float() / 255.0
    with torch.no_grad():
        y = desc(x)
    assert y.shape == (4, 3, 256, 256)
    model = (y.clamp(0, 1) * 255).round().byte().permute(0, 2, 3, 1).numpy()
    bicubic = np.stack([np.asarray(Image.fromarray(a).resize((256, 256), Image.BICUBIC)) for a in lows])

    p_model = np.mean([_psnr(m, h) for m, h in zip(model, highs)])
    p_bicubic = np.mean([_psnr(b, h) for b, h in zip(bicubic, highs)])
    print(f"upscaler {p_model:.2f} dB, bicubic {p_bicubic:.2f} dB")
    assert p_model - p_bicubic >= MIN_GAIN_OVER_BICUBIC_DB, (p_model, p_bicubic)


def test_upscaler_sharpens_the_pictures_the_demo_vae_hands_it():
    """In graphs/demo.json the upscaler gets what the demo VAE decodes (softer edges, faint
    marks), not clean renders; it was trained on both and must still beat bicubic there."""
    import spandrel

    from training import train_upscaler

    net = spandrel.ModelLoader().load_from_file(str(UPSCALER)).model.float().eval()
    degrade = train_upscaler.VaeRoundTrip(MODELS / "checkpoints" / "nodeflow-shapes" / "vae")
    rng = np.random.default_rng(TEST_SEED + 1)
    pairs = [world.sr_pair(world.sample_scene(rng)) for _ in range(8)]
    lows = degrade(np.stack([np.asarray(lo) for lo, _ in pairs]))
    highs = np.stack([np.asarray(hi) for _, hi in pairs])
    model = train_upscaler.upscale(net, lows)
    bicubic = train_upscaler.bicubic(lows)
    p_model = np.mean([_psnr(m, h) for m, h in zip(model, highs)])
    p_bicubic = np.mean([_psnr(b, h) for b, h in zip(bicubic, highs)])
    print(f"through the VAE: upscaler {p_model:.2f} dB, bicubic {p_bicubic:.2f} dB")
    assert p_model - p_bicubic >= MIN_GAIN_THROUGH_VAE_DB, (p_model, p_bicubic)


def test_vq_tokenizer_round_trip():
    import torch
    from diffusers import VQModel

    assert (VQ_DIR / "config.json").is_file(), f"missing shipped tokenizer {VQ_DIR}"
    size = sum(f.stat().st_size for f in VQ_DIR.rglob("*") if f.is_file())
    assert size <= 5 * 1024 * 1024
    vq = VQModel.from_pretrained(str(VQ_DIR), local_files_only=True).eval()

    images = np.stack([world.render_array(s, 64, o) for s, o in _scenes(4)])
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 127.5 - 1.0
    with torch.no_grad():
        latents = vq.encode(x).latents
        _q, _loss, (_p, _e, ids) = vq.quantize(latents)
        b, c, h, w = latents.shape
        assert (h, w) == (16, 16)
        assert int(ids.max()) < vq.config.num_vq_embeddings
        quant = vq.quantize.get_codebook_entry(ids.reshape(-1), (b, h, w, c))
        rec = vq.decode(quant, force_not_quantize=True).sample
    rec = ((rec.clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).numpy()

    p = np.mean([_psnr(r, i) for r, i in zip(rec, images)])
    assert p >= MIN_VQ_PSNR_DB, p
