"""SD3 and Flux ControlNets: loading, attaching a control image, and the residuals each step.

These ControlNets read the control image as VAE latents (InstantX and Stability's SD3/Flux
ControlNets), or as pixels through an input hint block (XLabs' Flux ControlNets).
``ApplyControlNet`` encodes the image once; the sampler draws from the encoder's distribution
with its seed, as the pipelines draw: Flux with the sampler's generator before the starting
noise, SD3 with a second generator seeded like the first (the SD3 pipeline draws these
numbers from torch's global generator, which tests seed to the same value).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from nodeflow.api import (
    FLOAT,
    IMAGE,
    STRING,
    EstimateContext,
    Input,
    MemoryEstimate,
    ModelError,
    Node,
    NodeInputError,
    Output,
    RunContext,
    Settings,
    ValueEstimate,
)
from nodeflow.nodes.diffusion.files import checked_model_path
from nodeflow.nodes.diffusion.types import VAE, Autoencoder
from nodeflow.nodes.flow.files import read_json
from nodeflow.nodes.flow.types import (
    FAMILY_NAMES,
    FLOW_CONDITIONING,
    FLOW_CONTROL_NET,
    FlowConditioning,
    FlowControlNet,
    FlowHint,
    FlowModel,
)


def controlnet_family(folder: Path) -> str | None:
    name = str(read_json(folder / "config.json").get("_class_name", ""))
    if name.startswith("SD3ControlNet"):
        return "sd3"
    if name.startswith("FluxControlNet"):
        return "flux"
    return None


def load_controlnet(path: Path, dtype: Any = None) -> FlowControlNet:
    """An SD3ControlNetModel or FluxControlNetModel from a diffusers folder or a single file."""
    from diffusers import FluxControlNetModel, SD3ControlNetModel

    if path.is_file():
        from nodeflow.nodes.flow.control_files import load_controlnet_file

        net, kind = load_controlnet_file(path, dtype)
        return FlowControlNet(net, kind, str(path))
    family = controlnet_family(path) if path.is_dir() else None
    if family is None:
        raise ModelError(f"{path} is not an SD3 or Flux ControlNet in diffusers' layout (a folder with "
                         "config.json naming SD3ControlNetModel or FluxControlNetModel)",
                         hint="SD 1.x/SDXL ControlNets load with diffusion.LoadControlNet.")
    kwargs: dict[str, Any] = {"local_files_only": True}
    if dtype is not None:
        kwargs["torch_dtype"] = dtype
    cls: Any = SD3ControlNetModel if family == "sd3" else FluxControlNetModel
    model = cls.from_pretrained(path, **kwargs).eval().requires_grad_(False)
    return FlowControlNet(model, family, str(path))


class LoadControlNet(Node):
    """Load an SD3 or Flux ControlNet: a diffusers folder, or a single .safetensors file in
    diffusers' layout (its configuration read from its tensors)."""

    id = "flow.LoadControlNet"
    category = "flow/loaders"
    inputs = (Input("path", STRING, "The ControlNet: a folder or .safetensors file in the models folder's "
                    "controlnet/, or an absolute path.", path_kind="controlnet"),)
    outputs = (Output("controlnet", FLOW_CONTROL_NET, "The ControlNet."),)

    @classmethod
    def check(cls, values: Mapping[str, Any], settings: Settings) -> Iterable[tuple[str | None, str]]:
        problems, found = checked_model_path(values, settings, "path", "controlnet", "ControlNet")
        yield from problems
        if found is None or problems:
            return
        if found.is_file():
            from nodeflow.nodes.flow.control_files import controlnet_file_family

            try:
                controlnet_file_family(found)
            except ModelError as exc:
                yield "path", exc.message + (f" {exc.hint}" if exc.hint else "")
        elif controlnet_family(found) is None:
            yield "path", (f"{found} is not an SD3 or Flux ControlNet folder (config.json naming "
                           "SD3ControlNetModel or FluxControlNetModel)")

    @classmethod
    def model_family(cls, path: Path) -> str | None:
        """'sd3'/'flux' for a ControlNet this node loads, 'sd' for an SD 1.x/SDXL one, None when
        the file or folder cannot be read. Importers ask it to map loaders by family."""
        from nodeflow.nodes.flow.control_files import controlnet_file_family

        try:
            family = controlnet_file_family(path) if path.is_file() else controlnet_family(path)
        except ModelError as exc:
            return "sd" if "diffusion.LoadControlNet" in (exc.hint or "") else None
        except (OSError, ValueError):
            return None
        return family or ("sd" if (path / "config.json").is_file() else None)

    @classmethod
    def estimate_memory(cls, values: Mapping[str, Any], upstream: Mapping[str, ValueEstimate],
                        ctx: EstimateContext) -> MemoryEstimate | None:
        from nodeflow.api import estimate_file_bytes

        name = values.get("path")
        found = ctx.settings.resolve_path("controlnet", name) if isinstance(name, str) and name else None
        if found is None:
            return None
        try:
            size = estimate_file_bytes(found, ctx.dtype("controlnet"))
        except (OSError, ValueError, ModelError):
            return None
        return MemoryEstimate({found.name: size}, outputs={"controlnet": ValueEstimate({found.name: size})})

    def run(self, ctx: RunContext, path: str) -> Any:
        from nodeflow.nodes.diffusion.files import resolve

        found = resolve(ctx, "path", "controlnet", path)
        dtype = ctx.models.dtype("controlnet")
        try:
            return ctx.models.load(found, lambda p: load_controlnet(p, dtype), kind="controlnet")
        except ModelError as exc:
            raise NodeInputError("path", exc.message, hint=exc.hint) from None
        except (OSError, ValueError, RuntimeError) as exc:
            raise NodeInputError("path", f"cannot load the ControlNet {found}: {exc}") from None


def _takes_latents(controlnet: FlowControlNet) -> bool:
    """Whether the ControlNet reads the control image as VAE latents (else as pixels)."""
    return controlnet.family == "sd3" or getattr(controlnet.model, "input_hint_block", None) is None


class ApplyControlNet(Node):
    """Attach an SD3 or Flux ControlNet with its control image (e.g. Canny edges) to a conditioning.
    Chain several to combine them; each acts between `start` and `end` (fractions of the steps)."""

    id = "flow.ApplyControlNet"
    uses_accelerator = True
    category = "flow/conditioning"
    inputs = (
        Input("conditioning", FLOW_CONDITIONING, "The positive conditioning to guide."),
        Input("controlnet", FLOW_CONTROL_NET, "The ControlNet."),
        Input("vae", VAE, "The model's autoencoder: these ControlNets read the image as latents."),
        Input("image", IMAGE, "The control image, at the size of the picture to make."),
        Input("strength", FLOAT, "How strongly the ControlNet steers.", default=1.0, min=0.0, max=10.0,
              step=0.05),
        Input("start", FLOAT, "Fraction of the steps at which it starts acting.", default=0.0, min=0.0,
              max=1.0, step=0.01, widget="range.start"),
        Input("end", FLOAT, "Fraction of the steps at which it stops acting.", default=1.0, min=0.0,
              max=1.0, step=0.01, widget="range.end"),
    )
    outputs = (Output("conditioning", FLOW_CONDITIONING, "The conditioning with the ControlNet attached."),)

    @classmethod
    def check(cls, values: Mapping[str, Any], settings: Settings) -> Iterable[tuple[str | None, str]]:
        start, end = values.get("start"), values.get("end")
        if isinstance(start, int | float) and isinstance(end, int | float) and start > end:
            yield "end", f"end ({end}) is before start ({start}); the ControlNet would never act"

    def run(self, ctx: RunContext, conditioning: FlowConditioning, controlnet: FlowControlNet,
            vae: Autoencoder, image: Any, strength: float, start: float, end: float) -> Any:
        import numpy as np

        from nodeflow.nodes.diffusion.latent import encode_pixels, image_to_pixels

        if controlnet.family != conditioning.family:
            raise NodeInputError("controlnet", f"this ControlNet is for {FAMILY_NAMES[controlnet.family]}, "
                                 f"but the conditioning is {FAMILY_NAMES[conditioning.family]}'s",
                                 hint="Use a ControlNet made for the model's family.")
        if start > end:
            raise NodeInputError("end", f"end ({end}) is before start ({start})")
        arr = np.asarray(image, dtype=np.float32)
        if arr.ndim != 4 or arr.shape[-1] != 3:
            raise NodeInputError("image", f"expected an IMAGE (batch, height, width, 3), got shape {arr.shape}")
        dist = None
        if _takes_latents(controlnet):
            if int(vae.vae.config.latent_channels) != 16:
                raise NodeInputError("vae", "this is not a 16-channel SD3/Flux autoencoder")
            with ctx.models.use(vae.vae):
                dist = encode_pixels(vae, image_to_pixels(arr), False)
        return conditioning.with_hint(FlowHint(controlnet, arr, float(strength), float(start), float(end),
                                               vae, dist))


def prepare_hints(model: FlowModel, hints: tuple[FlowHint, ...], h: int, w: int, batch: int, cfg: bool,
                  device: Any, generator: Any, seed: int) -> list[tuple[FlowHint, Any]]:
    """Each hint's control input for the run: latents drawn from the encoder's distribution
    (packed for Flux), or pixels in [-1, 1] for ControlNets with an input hint block."""
    import torch
    from diffusers.utils.torch_utils import randn_tensor

    from nodeflow.nodes.diffusion.latent import image_to_pixels, to_model_space
    from nodeflow.nodes.flow.sample import pack

    flux = model.family == "flux"
    second = None if flux else torch.Generator("cpu").manual_seed(int(seed))
    prepared = []
    for hint in hints:
        copies = batch * (2 if cfg else 1)
        dtype = hint.controlnet.model.dtype
        if hint.dist is None:
            pixels = image_to_pixels(hint.image)
            if tuple(pixels.shape[-2:]) != (h * 8, w * 8):
                pixels = torch.nn.functional.interpolate(pixels, size=(h * 8, w * 8))
            prepared.append((hint, pixels.repeat_interleave(copies // pixels.shape[0], 0).to(device, dtype)))
            continue
        mean, std = hint.dist.mean, hint.dist.std
        if tuple(mean.shape[-2:]) != (h, w):
            raise NodeInputError("positive", f"a control image is {mean.shape[-1] * 8}×{mean.shape[-2] * 8} "
                                 f"but the picture is {w * 8}×{h * 8}",
                                 hint="Resize the control image to the picture's size.")
        mean = mean.repeat_interleave(copies // mean.shape[0], 0)
        std = std.repeat_interleave(copies // std.shape[0], 0)
        noise = randn_tensor(tuple(mean.shape), generator=generator if flux else second,
                             device=mean.device, dtype=mean.dtype)
        latents = to_model_space(hint.vae.vae, mean + std * noise).to(device=device, dtype=dtype)
        prepared.append((hint, pack(latents) if flux else latents))
    return prepared


def control_residuals(model: FlowModel, hints: list[tuple[FlowHint, Any]], step: int, total: int,
                      hidden: Any, timestep: Any, embeds: Any, pooled: Any, guidance_value: float | None,
                      txt_ids: Any, img_ids: Any) -> dict[str, Any]:
    """The keyword arguments carrying the ControlNets' residuals into the transformer this step."""
    import torch

    if not hints:
        return {}
    if model.family == "sd3":
        total_blocks = None
        for hint, cond in hints:
            net = hint.controlnet.model
            keep = 1.0 - float(step / total < hint.start or (step + 1) / total > hint.end)
            net_pooled = torch.zeros_like(pooled) if net.config.get("force_zeros_for_pooled_projection") \
                else pooled
            net_embeds = embeds if net.config.get("joint_attention_dim") is not None else None
            blocks = net(hidden_states=hidden, timestep=timestep, encoder_hidden_states=net_embeds,
                         pooled_projections=net_pooled, controlnet_cond=cond,
                         conditioning_scale=hint.strength * keep, return_dict=False)[0]
            total_blocks = list(blocks) if total_blocks is None else \
                [a + b for a, b in zip(total_blocks, blocks, strict=True)]
        return {"block_controlnet_hidden_states": total_blocks}
    double = single = None
    repeat = False
    for hint, cond in hints:
        net = hint.controlnet.model
        keep = 1.0 - float(step / total < hint.start or (step + 1) / total > hint.end)
        guidance = None
        if net.config.get("guidance_embeds") and guidance_value is not None:
            guidance = torch.tensor([guidance_value], device=hidden.device).expand(hidden.shape[0])
        d, s = net(hidden_states=hidden, controlnet_cond=cond, controlnet_mode=None,
                   conditioning_scale=hint.strength * keep, timestep=timestep / 1000, guidance=guidance,
                   pooled_projections=pooled, encoder_hidden_states=embeds, txt_ids=txt_ids, img_ids=img_ids,
                   return_dict=False)
        repeat = repeat or getattr(net, "input_hint_block", None) is not None
        double = d if double is None else ([a + b for a, b in zip(double, d, strict=True)] if d else double)
        single = s if single is None else ([a + b for a, b in zip(single, s, strict=True)] if s else single)
    return {"controlnet_block_samples": double, "controlnet_single_block_samples": single,
            "controlnet_blocks_repeat": repeat}
