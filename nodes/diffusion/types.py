"""Socket types of the diffusion pack and the values that travel on them.

Values are small frozen records around torch modules and tensors; a node never
mutates one it received, it makes a new record (e.g. a LoRA gives a new model).
Nothing here imports torch at module import time.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from nodeflow.api import SocketType

MODEL = SocketType("MODEL", color="#b39ddb",
                   description="A denoising UNet with its scheduler configuration and model family.")
CLIP = SocketType("CLIP", color="#ffd54f",
                  description="The text encoder(s) and tokenizer(s) of a checkpoint.")
VAE = SocketType("VAE", color="#ef5350",
                 description="The autoencoder that turns latents into pixels and back.")
CONDITIONING = SocketType("CONDITIONING", color="#ffa726",
                          description="Encoded prompt embeddings, with any attached ControlNet hints.")
LATENT = SocketType("LATENT", color="#f48fb1",
                    description="A batch of latents (or an empty latent of a size), with an optional "
                                "inpainting mask.")
CONTROL_NET = SocketType("CONTROL_NET", color="#80cbc4", description="A ControlNet model.")

FAMILIES = ("sd1", "sd2", "sdxl")
FAMILY_NAMES = {"sd1": "Stable Diffusion 1.x", "sd2": "Stable Diffusion 2.x", "sdxl": "SDXL"}


@dataclass(frozen=True, eq=False)
class DiffusionModel:
    """A UNet, the scheduler configuration it was trained with, and its family."""

    unet: Any
    scheduler_config: dict[str, Any]
    family: str
    latent_scale: int = 8
    """Pixels per latent cell of the checkpoint's autoencoder."""
    source: str = ""
    loras: tuple[str, ...] = ()
    """Names of the LoRAs applied, in order (for messages)."""
    adapters: tuple[tuple[str, float], ...] = ()
    """peft adapter names active on ``unet`` and their weights."""

    @property
    def in_channels(self) -> int:
        return int(self.unet.config.in_channels)

    @property
    def is_inpaint(self) -> bool:
        return self.in_channels == 9


@dataclass(frozen=True, eq=False)
class TextEncoders:
    """Tokenizer(s) and text encoder(s): one pair for SD 1.x/2.x, two for SDXL."""

    family: str
    tokenizer: Any
    text_encoder: Any
    tokenizer_2: Any = None
    text_encoder_2: Any = None
    adapters: tuple[tuple[str, float], ...] = ()
    adapters_2: tuple[tuple[str, float], ...] = ()

    def pairs(self) -> list[tuple[Any, Any]]:
        pairs = [(self.tokenizer, self.text_encoder)]
        if self.text_encoder_2 is not None:
            pairs.append((self.tokenizer_2, self.text_encoder_2))
        return pairs


@dataclass(frozen=True, eq=False)
class Autoencoder:
    """An AutoencoderKL and the family it belongs to ('' when unknown)."""

    vae: Any
    family: str = ""

    @property
    def scale_factor(self) -> int:
        return 2 ** (len(self.vae.config.block_out_channels) - 1)


@dataclass(frozen=True, eq=False)
class ControlNet:
    """A ControlNetModel (or a T2I-Adapter) and its family."""

    model: Any
    family: str
    source: str = ""
    kind: str = "controlnet"
    """'controlnet', or 't2i_adapter' for a T2IAdapter (features added inside the UNet's blocks)."""


@dataclass(frozen=True, eq=False)
class ControlHint:
    """A ControlNet with its control image, strength and active fraction of the steps."""

    controlnet: ControlNet
    image: Any
    """IMAGE array (batch, height, width, 3) in [0, 1]."""
    strength: float
    start: float
    end: float


@dataclass(frozen=True, eq=False)
class Conditioning:
    """Prompt embeddings (1, tokens, dim), SDXL's pooled embedding, and ControlNet hints.

    Regional prompting (as ComfyUI applies it in the sampler): ``area`` limits where the
    prompt acts to a box of the picture, ``mask`` to the parts of a mask, each weighted
    by its strength; ``percent_range`` limits it to a stretch of the sampling. A
    conditioning combined with others carries them in ``others``: the sampler averages the
    predictions of every entry, weighted by area and strength. `entries` lists them all.
    """

    embeds: Any
    family: str
    pooled: Any = None
    hints: tuple[ControlHint, ...] = ()
    area: tuple[int, int, int, int] | None = None
    """(x, y, width, height) in pixels of the picture; None: all of it."""
    area_fraction: tuple[float, float, float, float] | None = None
    """(x, y, width, height) as fractions of the picture's size (used when ``area`` is None)."""
    strength: float = 1.0
    """Weight of this entry's prediction where its area (or mask) overlaps others."""
    mask: Any = None
    """Float tensor (batch or 1, height, width) in [0, 1] of any size (resized to the latent)."""
    mask_strength: float = 1.0
    mask_bounds: bool = False
    """Run the model only on the mask's bounding box (ComfyUI's set_cond_area 'mask bounds')."""
    percent_range: tuple[float, float] = (0.0, 1.0)
    """The fractions of the sampling (0: the start) between which this entry acts."""
    others: tuple[Conditioning, ...] = ()
    """Further entries combined with this one (ConditioningCombine)."""
    original_size: tuple[int, int] | None = None
    """SDXL size conditioning, (width, height) the picture should look as if it had; None: its size."""
    crop: tuple[int, int] | None = None
    """SDXL crop conditioning, (left, top) of the crop it should look cut from; None: (0, 0)."""
    target_size: tuple[int, int] | None = None
    """SDXL target size (width, height); None: the picture's size."""
    aesthetic_score: float | None = None
    """The SDXL refiner's aesthetic score; None: 6 for a prompt, 2.5 for a negative one."""

    def with_hint(self, hint: ControlHint) -> Conditioning:
        """Attach a ControlNet hint to every entry."""
        return replace(self, hints=(*self.hints, hint),
                       others=tuple(o.with_hint(hint) for o in self.others))

    def entries(self) -> tuple[Conditioning, ...]:
        """Every entry: this one (without its ``others``), then the combined ones."""
        if not self.others:
            return (self,)
        return (replace(self, others=()), *self.others)

    @staticmethod
    def of_entries(entries: tuple[Conditioning, ...]) -> Conditioning:
        """One conditioning made of these entries (each without ``others``)."""
        return replace(entries[0], others=tuple(entries[1:]))

    def map_entries(self, change: Any) -> Conditioning:
        """A new conditioning with ``change(entry)`` applied to every entry."""
        return Conditioning.of_entries(tuple(change(e) for e in self.entries()))

    @property
    def is_regional(self) -> bool:
        """True when combined, or limited to an area, a mask or part of the sampling."""
        return any(e.area is not None or e.area_fraction is not None or e.mask is not None or e.percent_range != (0.0, 1.0)
                   or e.others for e in (self, *self.others))


@dataclass(frozen=True, eq=False)
class EncodedImage:
    """What VAEEncode saw: the pixels in [-1, 1] and the encoder's latent distribution.

    The distribution is sampled by the sampler with its own seed, in the order the
    diffusers pipelines draw their random numbers, so img2img and inpainting match them.
    """

    pixels: Any
    dist: Any
    vae: Autoencoder
    tiled: bool = False


@dataclass(frozen=True, eq=False)
class Latent:
    """Latents (batch, channels, height/8, width/8), or an empty latent of a size.

    ``samples`` is None for an empty latent (the sampler starts from noise).
    ``mask`` (batch, 1, height, width) in pixels marks with 1 where inpainting may change.
    """

    width: int
    height: int
    batch: int
    samples: Any = None
    encoded: EncodedImage | None = None
    mask: Any = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def is_empty(self) -> bool:
        return self.samples is None
