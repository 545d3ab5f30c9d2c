"""The SD3/Flux node types a ComfyUI client may submit, described as ComfyUI's ``/object_info``.

``POST /prompt`` converts what a client sends with the importer, so every ComfyUI type the
importer maps is one a client can really submit. The server lists the SD mapping (``BY_TYPE``);
this module adds the types only the SD3/Flux mapping has (``FLOW_MAPS``: UNETLoader, the CLIP
loaders, FluxGuidance, ModelSampling*, ...) and the custom-sampler parts the importer folds into
one ``flow.Sample`` (RandomNoise, KSamplerSelect, BasicScheduler, BasicGuider, CFGGuider, and
SamplerCustom/SamplerCustomAdvanced with ComfyUI's own sockets). Types are named as ComfyUI
names them (``MODEL``, not nodeflow's ``FLOW_MODEL``), so a client links them to the SD-listed
KSampler or VAEDecode as it would in ComfyUI. Types listed under both mappings keep their SD
description.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from nodeflow.comfy.mapping import BY_TYPE, FLOW_MAPS, FOLDED_WIDGETS, PASS_INPUT, SEED_CONTROL

COMFY_TYPE_NAMES = {"FLOW_MODEL": "MODEL", "FLOW_CLIP": "CLIP", "FLOW_CONDITIONING": "CONDITIONING",
                    "FLOW_CONTROL_NET": "CONTROL_NET"}
"""nodeflow socket type names -> the ComfyUI type a client links by (others are the same)."""

SAMPLE_TYPE = "flow.Sample"
"""The node the custom-sampler parts become; their widgets are typed as its inputs."""
SAMPLE_INPUT = {"noise_seed": "seed", "sampler_name": "sampler", "scheduler": "scheduler", "steps": "steps",
                "denoise": "denoise", "cfg": "cfg"}
"""Custom-sampler widget -> the flow.Sample input it becomes."""

FOLDED_SOCKETS: dict[str, tuple[tuple[tuple[str, str], ...], tuple[tuple[str, str], ...]]] = {
    "RandomNoise": ((), (("NOISE", "NOISE"),)),
    "KSamplerSelect": ((), (("SAMPLER", "SAMPLER"),)),
    "BasicScheduler": ((("model", "MODEL"),), (("SIGMAS", "SIGMAS"),)),
    "BasicGuider": ((("model", "MODEL"), ("conditioning", "CONDITIONING")), (("GUIDER", "GUIDER"),)),
    "CFGGuider": ((("model", "MODEL"), ("positive", "CONDITIONING"), ("negative", "CONDITIONING")),
                  (("GUIDER", "GUIDER"),)),
    "SamplerCustomAdvanced": ((("noise", "NOISE"), ("guider", "GUIDER"), ("sampler", "SAMPLER"),
                               ("sigmas", "SIGMAS"), ("latent_image", "LATENT")),
                              (("output", "LATENT"), ("denoised_output", "LATENT"))),
    "SamplerCustom": ((("model", "MODEL"), ("positive", "CONDITIONING"), ("negative", "CONDITIONING"),
                       ("sampler", "SAMPLER"), ("sigmas", "SIGMAS"), ("latent_image", "LATENT")),
                      (("output", "LATENT"), ("denoised_output", "LATENT"))),
}
"""ComfyUI's linked inputs and outputs (name, type) of the parts the importer folds into one sampler."""

UNMAPPED_WIDGETS: dict[str, list[Any]] = {
    "device": [["default", "cpu"], {"default": "default"}],
    "clip_l": ["STRING", {"multiline": True, "dynamicPrompts": True}],
}
"""ComfyUI widgets with no nodeflow input of their own (ignored, or checked against another)."""

InputEntry = Callable[[Any], list[Any]]
"""An input declaration -> ComfyUI's ``[type or choices, options]`` (the server's rendering)."""


def _comfy_entry(entry: list[Any]) -> list[Any]:
    if isinstance(entry[0], str):
        return [COMFY_TYPE_NAMES.get(entry[0], entry[0]), *entry[1:]]
    return entry


def _type_name(spec: Any) -> str:
    name = str(getattr(spec.type, "name", spec.type)) if spec is not None else "*"
    return COMFY_TYPE_NAMES.get(name, name)


def _described(comfy_type: str, required: dict[str, Any], outputs: list[tuple[str, str]], runs_as: str,
               output_node: bool = False) -> dict[str, Any]:
    return {
        "input": {"required": required, "optional": {}},
        "input_order": {"required": list(required), "optional": []},
        "output": [t for _n, t in outputs], "output_is_list": [False] * len(outputs),
        "output_name": [n for n, _t in outputs],
        "name": comfy_type, "display_name": comfy_type,
        "description": f"Runs as nodeflow {runs_as}, on SD3.x and Flux models.",
        "python_module": "nodeflow.comfy", "category": "comfyui",
        "output_node": output_node,
    }


def flow_object_info(registry: Any, input_entry: InputEntry) -> dict[str, Any]:
    """``/object_info`` entries of the SD3/Flux types a client may submit (those whose nodeflow
    node types the registry holds), keyed by ComfyUI type."""
    out: dict[str, Any] = {}
    for comfy_type, nmap in FLOW_MAPS.items():
        if comfy_type in BY_TYPE or comfy_type in FOLDED_SOCKETS:
            continue
        classes = {key: registry.get(part.type) for key, part in nmap.parts.items()}
        if any(cls is None for cls in classes.values()):
            continue
        specs: dict[str, Any] = {}
        for key, part in nmap.parts.items():
            inputs = classes[key].input_map
            for socket, comfy_name in part.links.items():  # nodeflow socket <- ComfyUI input
                if not comfy_name.startswith("@"):
                    specs.setdefault(comfy_name, inputs.get(socket))
            for socket, widget in part.values.items():
                specs.setdefault(widget.name, inputs.get(socket))
        required: dict[str, Any] = {}
        links = [n for p in nmap.parts.values() for n in p.links.values() if not n.startswith("@")]
        for name in (*links, *nmap.widgets):
            if name == SEED_CONTROL or name in required:
                continue
            spec = specs.get(name)
            required[name] = _comfy_entry(input_entry(spec)) if spec is not None else \
                UNMAPPED_WIDGETS.get(name, ["*", {}])
        outputs: list[tuple[str, str]] = []
        for key, socket in nmap.outputs:
            cls = classes.get(key)
            if cls is not None:
                outputs.append((socket, _type_name(cls.output_map.get(socket))))
        for key, socket in nmap.outputs:
            if key == PASS_INPUT:  # an input passed through unchanged: ComfyUI's node takes it too
                kind = outputs[0][1] if outputs else "*"
                required.setdefault(socket, [kind, {}])
                outputs.append((socket, kind))
        out[comfy_type] = _described(comfy_type, required, outputs,
                                     ", ".join(p.type for p in nmap.parts.values()))
    sample = registry.get(SAMPLE_TYPE)
    if sample is None:
        return out
    for comfy_type, (sockets, outputs_) in FOLDED_SOCKETS.items():
        required = {name: [type_name, {}] for name, type_name in sockets}
        widgets = FLOW_MAPS[comfy_type].widgets if comfy_type in FLOW_MAPS else FOLDED_WIDGETS[comfy_type]
        for name in widgets:
            if name == SEED_CONTROL:
                continue
            spec = sample.input_map.get(SAMPLE_INPUT.get(name, ""))
            if spec is not None:
                entry = _comfy_entry(input_entry(spec))
                if name == "noise_seed":
                    entry = [entry[0], {**entry[1], "control_after_generate": True}]
                required[name] = entry
            elif name == "add_noise":
                required[name] = ["BOOLEAN", {"default": True}]
        out[comfy_type] = _described(comfy_type, required, list(outputs_), f"{SAMPLE_TYPE} (folded)")
    return out
