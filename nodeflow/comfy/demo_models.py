"""Try a ComfyUI workflow without its models: a ComfyUI-style models folder of the demo models.

`demo_models_folder` links nodeflow's shipped demo models under the file names a workflow
asks for (a checkpoint for every checkpoint name, the demo LoRA for every LoRA, ...), so
``nodeflow run workflow.json --comfy-models FOLDER`` runs it to a (toy) picture. Used by
the tests and the benchmark; handy to check a workflow converts and runs end to end.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from nodeflow.comfy.formats import parse_workflow, read_document
from nodeflow.comfy.mapping import BY_TYPE, widget_values
from nodeflow.settings import packaged_models_dir

DEMO = {
    "checkpoints": "checkpoints/nodeflow-shapes.safetensors",
    "loras": "loras/nodeflow-shapes-outlined.safetensors",
    "controlnet": "controlnet/nodeflow-shapes-edges",
    "vae": "checkpoints/nodeflow-shapes/vae",
    "upscale_models": "upscale/nodeflow-shapes-4x.safetensors",
}
"""For each ComfyUI models/ subfolder, the demo model that stands in for any file named there."""


def model_names(workflow: Path) -> dict[str, set[str]]:
    """The model file names a ComfyUI workflow uses, per ComfyUI models/ subfolder."""
    kind, data, _ = read_document(workflow)
    if kind == "nodeflow":
        return {}
    wf, _problems = parse_workflow(kind, data, str(workflow))
    names: dict[str, set[str]] = {}
    for node in wf.nodes.values():
        nmap = BY_TYPE.get(node.type)
        models = dict(nmap.model_widgets) if nmap else {}
        values = widget_values(node.type, node.widgets)
        for widget, folder in models.items():
            name = values.get(widget)
            if isinstance(name, str) and name:
                names.setdefault(folder, set()).add(name.replace("\\", "/"))
    return names


def demo_models_folder(workflows: list[Path], dest: Path) -> Path:
    """Fill ``dest`` (a ComfyUI models folder) with the demo models under the workflows' names."""
    demo = packaged_models_dir()
    for workflow in workflows:
        for folder, names in model_names(workflow).items():
            source = demo / DEMO[folder]
            for name in names:
                target = dest / folder / name
                target.parent.mkdir(parents=True, exist_ok=True)
                if target.exists() or target.is_symlink():
                    continue
                if folder == "upscale_models" and Path(name).suffix.lower() in (".pth", ".pt", ".ckpt", ".bin"):
                    _save_as_torch(source, target)  # a .pth name must hold torch's format
                    continue
                _link(source, target)
                config = source.with_suffix(".config")
                if config.is_dir():  # a single-file checkpoint's config folder goes beside it
                    _link(config, target.with_suffix(".config"))
    return dest


def _link(source: Path, target: Path) -> None:
    try:
        os.symlink(source, target, target_is_directory=source.is_dir())
    except OSError:  # no symlinks (some Windows setups): copy
        if source.is_dir():
            shutil.copytree(source, target)
        else:
            shutil.copy2(source, target)


def _save_as_torch(source: Path, target: Path) -> None:
    import torch
    from safetensors.torch import load_file

    torch.save(load_file(str(source)), str(target))
