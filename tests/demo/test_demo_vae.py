"""The shipped demo VAE decodes what inpainting hands it, and its decoder fine-tune runs.

Inpainting with a regular (4-channel) checkpoint keeps the encoded picture's latents
outside the hole and puts the sampler's inside.  The latents outside still carry what the
encoder saw in the hole, so a decoder that only ever decoded whole encoded pictures can
turn such a mix into coloured noise over the whole picture.
"""

from __future__ import annotations

import numpy as np
import pytest

from training import assets, world


@pytest.fixture(autouse=True)
def _one_thread(torch_threads):
    yield


def _vae(path=None):
    from diffusers import AutoencoderKL

    from training import common as C

    return AutoencoderKL.from_pretrained(path or C.DEFAULT_OUT / "vae").eval()


def _latents(vae, pixels: np.ndarray):
    import torch

    from training.train_vae import to_tensor

    with torch.no_grad():
        return vae.encode(to_tensor(pixels[None])).latent_dist.mode()


def _decode(vae, z) -> np.ndarray:
    import torch

    with torch.no_grad():
        x = vae.decode(z).sample[0].clamp(-1, 1)
    return ((x.permute(1, 2, 0).numpy() + 1) * 127.5).round().astype(np.int16)


def _hole(scene, grow: int) -> np.ndarray:
    """The scene's shape mask in 16x16 latent cells, grown by ``grow`` cells."""
    return world.grow(world.shape_mask(scene).reshape(16, 4, 16, 4).any(axis=(1, 3)), grow)


def test_a_shape_painted_out_in_latent_space_decodes_to_plain_background():
    import torch

    vae = _vae()
    picture = world.render_array(assets.CIRCLE)  # a red circle on blue
    plain = np.empty_like(picture)
    plain[:] = world.PALETTE[assets.CIRCLE.background]
    hole = torch.from_numpy(_hole(assets.CIRCLE, 1).astype(np.float32))
    z = _latents(vae, picture) * (1 - hole) + _latents(vae, plain) * hole
    decoded = _decode(vae, z)
    error = np.abs(decoded - plain.astype(np.int16)).mean()
    assert error < 12, f"mean error {error:.1f} against plain blue"
    # and a picture that is plain background all over decodes to it too
    flat = np.abs(_decode(vae, _latents(vae, plain)) - plain.astype(np.int16)).mean()
    assert flat < 4, flat
