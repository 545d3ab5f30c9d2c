"""A ComfyUI user's model folders: ``ComfyUI/models`` and ``extra_model_paths.yaml``.

``--comfy-models DIR`` takes a ComfyUI install (the folder holding ``models/``), or its
``models/`` folder itself, or an ``extra_model_paths.yaml``. The YAML file is read the
way ComfyUI reads it: each top-level section may give a ``base_path`` (``~`` and
environment variables expanded, relative to the YAML file's folder) and ``is_default``;
every other key is a ComfyUI folder name whose value holds one path per line, joined to
``base_path`` when there is one, else taken relative to the YAML file's folder.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from nodeflow.errors import Location, UsageError
from nodeflow.settings import Settings

COMFY_FOLDERS: dict[str, str] = {
    "checkpoints": "checkpoints",
    "loras": "loras",
    "vae": "vae",
    "controlnet": "controlnet",
    "t2i_adapter": "controlnet",
    "upscale_models": "upscale",
    "embeddings": "embeddings",
    "clip": "text_encoders",
    "text_encoders": "text_encoders",
    "unet": "diffusion_models",
    "diffusion_models": "diffusion_models",
    "tokenizers": "tokenizers",  # not ComfyUI's: where a ComfyUI user may put T5's tokenizer for nodeflow
}
"""ComfyUI's models/ subfolder names -> nodeflow's model kinds (see nodeflow.settings)."""

YAML_NAME = "extra_model_paths.yaml"


def read_extra_model_paths(path: Path) -> dict[str, list[Path]]:
    """The folders per nodeflow model kind an ``extra_model_paths.yaml`` names, in file order."""
    import yaml

    where = Location(file=str(path))
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise UsageError(f"cannot read the file: {exc.strerror or exc}", location=where) from None
    except yaml.YAMLError as exc:
        raise UsageError(f"not valid YAML: {exc}", location=where) from None
    folders: dict[str, list[Path]] = {}
    if data is None:
        return folders
    if not isinstance(data, dict):
        raise UsageError("extra_model_paths.yaml must map section names to folders", location=where)
    yaml_dir = path.resolve().parent
    for section, value in data.items():
        if value is None:
            continue
        entries: dict[str, Any]
        base: Path | None = None
        if isinstance(value, dict):
            entries = dict(value)
            raw_base = entries.pop("base_path", None)
            entries.pop("is_default", None)
            if raw_base is not None:
                base = Path(os.path.expandvars(os.path.expanduser(str(raw_base))))
                if not base.is_absolute():
                    base = yaml_dir / base
        else:
            entries = {str(section): value}
        for name, paths in entries.items():
            kind = COMFY_FOLDERS.get(str(name))
            if kind is None or not isinstance(paths, str):
                continue  # folders of kinds nodeflow does not load (configs, custom nodes, ...)
            for line in paths.split("\n"):
                line = line.strip()
                if not line:
                    continue
                folder = Path(os.path.expandvars(os.path.expanduser(line)))
                if base is not None:
                    folder = base / folder
                elif not folder.is_absolute():
                    folder = yaml_dir / folder
                folders.setdefault(kind, []).append(Path(os.path.normpath(folder)))
    return folders


def comfy_model_folders(place: str | Path) -> dict[str, list[Path]]:
    """The model folders of a ComfyUI install, its models/ folder, or an extra_model_paths.yaml."""
    path = Path(place).expanduser()
    if path.is_file():
        return read_extra_model_paths(path)
    if not path.is_dir():
        raise UsageError(f"--comfy-models {place}: no such folder or file",
                         hint="Give your ComfyUI folder, its models/ folder, or an extra_model_paths.yaml.")
    models = path / "models" if (path / "models").is_dir() else path
    folders: dict[str, list[Path]] = {}
    for name, kind in COMFY_FOLDERS.items():
        if (models / name).is_dir():
            folders.setdefault(kind, []).append(models / name)
    if models != path and (path / "input").is_dir():
        folders["image"] = [path / "input"]  # LoadImage names pictures in ComfyUI's input/ folder
    if (path / YAML_NAME).is_file():
        for kind, extra in read_extra_model_paths(path / YAML_NAME).items():
            folders.setdefault(kind, []).extend(extra)
    if not folders:
        raise UsageError(f"--comfy-models {place}: no ComfyUI model folders (checkpoints/, loras/, "
                         "vae/, ...) found there",
                         hint="Give your ComfyUI folder, its models/ folder, or an extra_model_paths.yaml.")
    return folders


def add_comfy_models(settings: Settings, places: list[str] | None) -> Settings:
    """Let ``settings`` find models in ComfyUI folders (``--comfy-models``, ``NODEFLOW_COMFY_MODELS``)."""
    all_places = list(places or [])
    env = os.environ.get("NODEFLOW_COMFY_MODELS")
    if env:
        all_places += [p for p in env.split(os.pathsep) if p]
    for place in all_places:
        for kind, folders in comfy_model_folders(place).items():
            known = settings.folders.setdefault(kind, [])
            known.extend(f for f in folders if f not in known)  # the environment may be read twice
    return settings


def settings_from_env(models: list[str] | None = None, out_dir: str | None = None,
                      base_dir: Path | None = None, comfy_models: list[str] | None = None) -> Settings:
    """`Settings.from_env` that also finds models in a ComfyUI user's folders
    (``comfy_models``, then ``NODEFLOW_COMFY_MODELS``): the settings the editor and the ComfyUI
    importer build."""
    return add_comfy_models(Settings.from_env(models, out_dir, base_dir), comfy_models)
