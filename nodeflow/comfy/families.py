"""Which model family each node of a ComfyUI workflow works on: SD 1.x/2.x/SDXL or SD3.x/Flux.

ComfyUI's nodes are the same for every family (a KSampler samples whatever model reaches it);
nodeflow's are not (``diffusion.*`` against ``flow.*``). The family is read from the graph:

1. nodes that tell it (*seeds*): a UNETLoader (nodeflow loads SD3/Flux diffusion models
   alone), a DualCLIPLoader/CLIPLoader by its ``type``, a TripleCLIPLoader (SD3), a checkpoint
   by its file's tensors when the file is in the models folders (else by an "sd3"/"flux" in its
   name), a ControlNet by its file when present (files are read by the loader node types the
   registry holds, through their ``model_family`` hook: the importer imports no pack), and nodes nodeflow has only for flow models (ModelSamplingSD3/Flux, FluxGuidance, the
   custom-sampler nodes, ControlNetApplySD3);
2. nodes joined by a model, text encoder, conditioning, guider, sigmas or ControlNet link share
   a family (one connected group); a group with no seed is SD;
3. a VAELoader takes the family of the samplers whose latents it decodes or encodes.

A guess that does not rest on a file's tensors or a node's type widget is recorded as an
assumption in the imported graph and reported.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nodeflow.comfy.formats import ComfyNode, Workflow

FLOW = frozenset({"sd3", "flux", "flow"})
"""Families the flow pack runs ('flow': SD3 or Flux, not known which)."""

FAMILY_INPUTS = frozenset({"model", "clip", "positive", "negative", "conditioning", "conditioning_1",
                           "conditioning_2", "conditioning_to", "conditioning_from", "guider", "sigmas",
                           "control_net"})
"""Inputs whose link carries the model family from one node to the next."""

FLOW_ONLY: dict[str, str] = {
    "UNETLoader": "flow", "TripleCLIPLoader": "sd3", "ModelSamplingSD3": "flow", "ModelSamplingFlux": "flux",
    "FluxGuidance": "flow", "CLIPTextEncodeFlux": "flux", "BasicGuider": "flow", "CFGGuider": "flow", "BasicScheduler": "flow",
    "SamplerCustomAdvanced": "flow", "SamplerCustom": "flow", "ControlNetApplySD3": "flow",
}
"""ComfyUI node types nodeflow runs only on SD3/Flux models, and the family they say."""

CHECKPOINTS = ("CheckpointLoaderSimple", "CheckpointLoader")
ENCODER_TYPES = {"sd3": "sd3", "flux": "flux"}
"""DualCLIPLoader/CLIPLoader ``type`` values of the flow families."""
SD_ENCODER_TYPES = frozenset({"sdxl", "stable_diffusion"})
"""Their values for SD's encoders (which nodeflow loads only with their checkpoint); other values
say nothing of the family, and the loader's mapping reports them."""


FileFamily = Callable[[str, Path | None], str | None]
"""(ComfyUI loader type, the file it names if present) -> 'sd3', 'flux', 'sd' (a model of another
family) or None (no file, or one that cannot be read)."""


@dataclass
class Families:
    """The family of each node (by ComfyUI id), the VAE families, and what was assumed."""

    of: dict[str, str] = field(default_factory=dict)
    vae: dict[str, str] = field(default_factory=dict)
    """VAELoader id -> 'sd3', 'flux', 'flow' (16 channels, scaling from the file name) or 'sd'."""
    assumptions: list[tuple[ComfyNode, str]] = field(default_factory=list)
    conflicts: list[tuple[ComfyNode, str]] = field(default_factory=list)

    def family(self, node_id: str) -> str:
        return self.of.get(node_id, "sd")


def _name_family(name: Any) -> str | None:
    text = str(name).lower().replace("\\", "/").rsplit("/", 1)[-1]
    if "flux" in text:
        return "flux"
    if "sd3" in text or "sd_3" in text or "stable-diffusion-3" in text or "stable_diffusion_3" in text:
        return "sd3"
    return None


class FamilyReader:
    """Reads the families of one workflow (see the module's description)."""

    def __init__(self, wf: Workflow, named: Mapping[str, Mapping[str, Any]],
                 source: Callable[[tuple[str, int]], tuple[str, int] | None],
                 find: Callable[[str, str], Path | None], file_family: FileFamily) -> None:
        self.wf, self.named, self.source, self.find = wf, named, source, find
        self.file_family = file_family
        self.result = Families()

    def seed(self, node: ComfyNode) -> str | None:
        values = self.named.get(node.id, {})
        if node.type in CHECKPOINTS:
            name = values.get("ckpt_name")
            found = self.find("checkpoints", str(name)) if isinstance(name, str) and name else None
            family = self.file_family(node.type, found)
            if family is not None:
                return family
            guess = _name_family(name)
            if guess is not None:
                self.result.assumptions.append((node, f"'{name}' is not in the models folders; taken as "
                                                f"{'an SD3.x' if guess == 'sd3' else 'a Flux'} checkpoint "
                                                "from its name"))
            return guess
        if node.type == "UNETLoader":
            name = values.get("unet_name")
            found = self.find("diffusion_models", str(name)) if isinstance(name, str) and name else None
            family = self.file_family(node.type, found)
            if family in FLOW:
                return family
            if found is None:
                self.result.assumptions.append((node, f"'{name}' is not in the models folders; taken as an "
                                                "SD3.x or Flux diffusion model (the only kind nodeflow loads "
                                                "without its checkpoint)"))
                return _name_family(name) or "flow"
            return "flow"  # a file of another kind: the loader's check says which
        if node.type == "ControlNetLoader":
            name = values.get("control_net_name")
            found = self.find("controlnet", str(name)) if isinstance(name, str) and name else None
            return self.file_family(node.type, found)
        if node.type in ("DualCLIPLoader", "CLIPLoader"):
            kind = str(values.get("type"))
            return ENCODER_TYPES.get(kind, "sd" if kind in SD_ENCODER_TYPES else None)
        return FLOW_ONLY.get(node.type)

    def read(self) -> Families:
        nodes = self.wf.nodes
        parent: dict[str, str] = {n: n for n in nodes}

        def root(x: str) -> str:
            while parent[x] != x:
                parent[x] = parent[parent[x]]
                x = parent[x]
            return x

        for node in nodes.values():
            for name, link in node.links.items():
                if name not in FAMILY_INPUTS:
                    continue
                src = self.source(link)
                if src is not None and src[0] in parent:
                    parent[root(src[0])] = root(node.id)
        seeds: dict[str, list[tuple[ComfyNode, str]]] = {}
        for node in nodes.values():
            family = self.seed(node)
            if family is not None:
                seeds.setdefault(root(node.id), []).append((node, family))
        resolved: dict[str, str] = {}
        for group, found in seeds.items():
            kinds = {f for _n, f in found}
            specific = kinds & {"sd3", "flux"}
            if "sd" in kinds and kinds & FLOW:
                sd_node = next(n for n, f in found if f == "sd")
                for n, f in found:
                    if f in FLOW:
                        self.result.conflicts.append((n, f"this node needs an SD3 or Flux model, but the model "
                                                      f"here comes from {sd_node.label}, which nodeflow "
                                                      "reads as SD 1.x/2.x/SDXL"))
                resolved[group] = "sd"
            elif len(specific) > 1:
                first = next(n for n, f in found if f in specific)
                self.result.conflicts.append((first, "this part of the workflow mixes SD3 and Flux nodes"))
                resolved[group] = "flow"
            else:
                resolved[group] = next(iter(specific)) if specific else next(iter(kinds))
        for node_id in nodes:
            self.result.of[node_id] = resolved.get(root(node_id), "sd")
        self._vaes()
        return self.result

    def _consumers(self, node_id: str) -> list[tuple[ComfyNode, str]]:
        out = []
        for node in self.wf.nodes.values():
            for name, link in node.links.items():
                src = self.source(link)
                if src is not None and src[0] == node_id:
                    out.append((node, name))
        return out

    def _sampler_family(self, node: ComfyNode, depth: int = 0) -> str | None:
        """The flow family of the sampler a latent comes from or goes to, through latent nodes."""
        family = self.result.family(node.id)
        if family in FLOW:
            return family
        if depth > 8:
            return None
        for name in ("samples", "latent_image", "samples_to"):
            link = node.links.get(name)
            src = self.source(link) if link is not None else None
            if src is not None and src[0] in self.wf.nodes:
                found = self._sampler_family(self.wf.nodes[src[0]], depth + 1)
                if found:
                    return found
        return None

    def _vaes(self) -> None:
        for node in self.wf.nodes.values():
            if node.type != "VAELoader":
                continue
            family: str | None = None
            for user, _name in self._consumers(node.id):
                if user.type == "VAEDecode":
                    family = self._sampler_family(user)
                elif user.type == "VAEEncode":
                    family = next((self._sampler_family(n) for n, _i in self._consumers(user.id)
                                   if self._sampler_family(n)), None)
                elif user.type.startswith("ControlNetApply"):
                    fam = self.result.family(user.id)
                    family = fam if fam in FLOW else None
                if family:
                    break
            name = self.named.get(node.id, {}).get("vae_name")
            if family is None:
                guess = _name_family(name) or ("flux" if str(name).lower().rsplit("/", 1)[-1]
                                               in ("ae.safetensors", "ae.sft") else None)
                if guess is not None:
                    self.result.assumptions.append((node, f"'{name}' taken as the 16-channel VAE of "
                                                    f"{'SD3.x' if guess == 'sd3' else 'Flux'} from its name"))
                family = guess or "sd"
            self.result.vae[node.id] = family
            self.result.of[node.id] = family


def read_families(wf: Workflow, named: Mapping[str, Mapping[str, Any]],
                  source: Callable[[tuple[str, int]], tuple[str, int] | None],
                  find: Callable[[str, str], Path | None], file_family: FileFamily) -> Families:
    """The model family of every node of ``wf`` (``find(kind, name)``: a model file, if present;
    ``file_family``: what that file is)."""
    return FamilyReader(wf, named, source, find, file_family).read()
