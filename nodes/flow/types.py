"""Socket types of the flow-matching pack (SD3.x, Flux) and the values on them.

Latents and autoencoders travel on the diffusion pack's LATENT and VAE sockets, so
its VAEEncode, VAEDecode and image nodes work on these families unchanged; the
model, text encoders, conditioning and ControlNets have types of their own, so a
Flux model can never be wired into an SD 1.x sampler. Values are frozen records: a
node makes a new one rather than changing what it received.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from nodeflow.api import SocketType

FLOW_MODEL = SocketType("FLOW_MODEL", color="#9575cd",
                        description="A flow-matching transformer (SD3.x or Flux) with its noise "
                                    "schedule settings.")
FLOW_CLIP = SocketType("FLOW_CLIP", color="#ffca28",
                       description="The text encoders of SD3.x (CLIP-L, CLIP-G, T5) or Flux "
                                   "(CLIP-L, T5) with their tokenizers.")
FLOW_CONDITIONING = SocketType("FLOW_CONDITIONING", color="#ff9800",
                               description="A prompt encoded for SD3.x or Flux, with its guidance and "
                                           "any ControlNets attached.")
FLOW_CONTROL_NET = SocketType("FLOW_CONTROL_NET", color="#4db6ac",
                              description="An SD3 or Flux ControlNet.")

FAMILIES = ("sd3", "flux")
FAMILY_NAMES = {"sd3": "Stable Diffusion 3.x", "flux": "Flux"}


@dataclass(frozen=True, eq=False)
class Shift:
    """How the noise schedule is shifted: a fixed shift (SD3, Flux schnell), or Flux's
    resolution-dependent shift, from the sampled size or from a size given explicitly."""

    shift: float = 3.0
    dynamic: bool = False
    base_shift: float = 0.5
    max_shift: float = 1.15
    base_seq_len: int = 256
    max_seq_len: int = 4096
    size: tuple[int, int] | None = None
    """(width, height) in pixels the dynamic shift is computed for; None: the latent's own size."""


@dataclass(frozen=True, eq=False)
class FlowModel:
    """A transformer denoiser of a flow-matching family with its noise-schedule settings."""

    transformer: Any
    family: str
    shift: Shift
    scheduler_config: dict[str, Any]
    source: str = ""
    loras: tuple[str, ...] = ()
    adapters: tuple[tuple[str, float], ...] = ()
    """peft adapter names active on ``transformer`` and their weights."""
    offload: str = "none"
    """'none': the whole transformer is resident while it runs; 'blocks': one block at a time."""

    @property
    def config(self) -> Any:
        return self.transformer.config

    @property
    def latent_channels(self) -> int:
        """Channels of the (unpacked) latents the model works on."""
        channels = int(self.config.in_channels)
        return channels // 4 if self.family == "flux" else channels

    @property
    def guidance_embedded(self) -> bool:
        """Flux dev: the guidance scale is an input of the model, not classifier-free guidance."""
        return bool(self.config.get("guidance_embeds", False))


@dataclass(frozen=True, eq=False)
class Encoder:
    """One text encoder with its tokenizer (None when it is missing; see ``missing``)."""

    role: str
    """'clip_l', 'clip_g' or 't5'."""
    model: Any
    tokenizer: Any
    source: str = ""
    adapters: tuple[tuple[str, float], ...] = ()


@dataclass(frozen=True, eq=False)
class FlowTextEncoders:
    """The text encoders of a family: SD3 uses clip_l, clip_g and (optionally) t5; Flux clip_l and t5."""

    family: str
    clip_l: Encoder | None = None
    clip_g: Encoder | None = None
    t5: Encoder | None = None

    def encoders(self) -> list[Encoder]:
        return [e for e in (self.clip_l, self.clip_g, self.t5) if e is not None]

    def modules(self) -> list[Any]:
        return [e.model for e in self.encoders()]


@dataclass(frozen=True, eq=False)
class FlowControlNet:
    """An SD3ControlNetModel or FluxControlNetModel and its family."""

    model: Any
    family: str
    source: str = ""


@dataclass(frozen=True, eq=False)
class FlowHint:
    """A ControlNet with its control image (IMAGE array in [0, 1]), strength and active span."""

    controlnet: FlowControlNet
    image: Any
    strength: float
    start: float
    end: float
    vae: Any = None
    """The Autoencoder that encoded the image (ControlNets that take latents)."""
    dist: Any = None
    """The encoder's latent distribution of the image, sampled by the sampler with its seed."""


@dataclass(frozen=True, eq=False)
class FlowConditioning:
    """An encoded prompt, kept in parts: the sampler assembles them as its model needs.

    SD3: ``clip`` is CLIP-L and CLIP-G side by side (1, 77, 2048), ``t5`` the T5 states
    (1, length, 4096) or None (zeros of ``t5_length`` tokens take its place), ``pooled`` both
    pooled outputs (1, 2048). Flux: ``t5`` is the sequence, ``pooled`` CLIP-L's pooled output.
    """

    family: str
    pooled: Any
    clip: Any = None
    t5: Any = None
    t5_length: int = 256
    guidance: float | None = None
    """Flux dev's embedded guidance (FluxGuidance); None: the sampler's default."""
    hints: tuple[FlowHint, ...] = ()
    extra: dict[str, Any] = field(default_factory=dict)

    def with_hint(self, hint: FlowHint) -> FlowConditioning:
        return replace(self, hints=(*self.hints, hint))
