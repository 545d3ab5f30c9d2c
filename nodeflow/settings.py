"""Where things are: models folders, the output folder, the graph's own folder."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

MODEL_KINDS = ("checkpoints", "loras", "controlnet", "vae", "upscale", "tokenizers", "priors",
               "annotators", "diffusion_models", "text_encoders", "embeddings")
"""Subfolders of a models folder, one per kind of model file."""

KIND_FOLDERS: dict[str, tuple[str, ...]] = {
    "diffusion_models": ("diffusion_models", "unet"),
    "text_encoders": ("text_encoders", "clip"),
    "upscale": ("upscale", "upscale_models"),
    "controlnet": ("controlnet", "t2i_adapter"),
}
"""Kinds whose files may sit in more than one subfolder, searched in this order (ComfyUI's older
names, ``unet/`` and ``clip/``, hold the same files)."""


def packaged_models_dir() -> Path:
    """The demo models shipped inside the package, searched after the user's own."""
    return Path(__file__).resolve().parent / "demo" / "models"


@dataclass
class Settings:
    """Run-time settings shared by the validator, the executor and the nodes."""

    models_dirs: list[Path] = field(default_factory=list)
    out_dir: Path = field(default_factory=lambda: Path("out"))
    base_dir: Path | None = None
    """The folder of the graph file, for its relative paths."""
    allowed_dirs: list[Path] | None = None
    """For an untrusted graph (from a PNG or a request): the only folders, besides the models
    folders, whose files its inputs may name. None: no restriction."""
    folders: dict[str, list[Path]] = field(default_factory=dict)
    """Extra folders per kind, searched first (a ComfyUI user's extra_model_paths.yaml); for
    pictures ("image"), searched last (ComfyUI's input/ folder)."""

    @classmethod
    def from_env(cls, models: list[str] | None = None, out_dir: str | None = None,
                 base_dir: Path | None = None) -> Settings:
        dirs = [Path(m).expanduser() for m in (models or [])]
        env = os.environ.get("NODEFLOW_MODELS")
        if env:
            dirs += [Path(p).expanduser() for p in env.split(os.pathsep) if p]
        settings = cls(models_dirs=dirs, out_dir=Path(out_dir) if out_dir else Path("out"),
                       base_dir=base_dir)
        if os.environ.get("NODEFLOW_COMFY_MODELS"):
            from nodeflow.comfy.model_paths import add_comfy_models  # a ComfyUI user's folders

            add_comfy_models(settings, [])
        return settings

    def search_dirs(self, kind: str) -> list[Path]:
        """Where a file of ``kind`` is looked for, in order."""
        if kind == "image" or kind == "file":
            dirs = [Path.cwd()]
            if self.base_dir is not None:
                dirs.append(self.base_dir)
            return dirs + self.folders.get(kind, [])
        folders = KIND_FOLDERS.get(kind, (kind,))
        return [*self.folders.get(kind, []),
                *(d / f for d in [*self.models_dirs, packaged_models_dir()] for f in folders)]

    def resolve_path(self, kind: str, name: str) -> Path | None:
        """The existing file or folder ``name`` refers to, or None."""
        path = Path(name).expanduser()
        if path.is_absolute():
            return path if path.exists() and self.refusal(path) is None else None
        for folder in self.search_dirs(kind):
            candidate = folder / path
            if candidate.exists() and self.refusal(candidate) is None:
                return candidate
        return None

    def readable_dirs(self) -> list[Path] | None:
        """The folders input files may come from (None: anywhere): see ``allowed_dirs``."""
        if self.allowed_dirs is None:
            return None
        extra = [d for dirs in self.folders.values() for d in dirs]  # named by the user, as models_dirs
        return [*self.allowed_dirs, *self.models_dirs, *extra, packaged_models_dir()]

    def refusal(self, path: Path) -> str | None:
        """Why an existing input file must not be read (not a regular file, outside the
        allowed folders), or None."""
        from nodeflow.files import path_refusal

        return path_refusal(path, self.readable_dirs())

    def describe_search(self, kind: str, name: str) -> str:
        path = Path(name).expanduser()
        candidates = [path] if path.is_absolute() else [d / path for d in self.search_dirs(kind)]
        for candidate in candidates:
            why = self.refusal(candidate) if candidate.exists() else None
            if why:
                return why
        if path.is_absolute():
            return f"{path} does not exist"
        places = ", ".join(str(d) for d in self.search_dirs(kind))
        hint = ""
        if kind not in ("image", "file"):
            hint = (f" Put it in the '{kind}' folder of a models folder (--models DIR or NODEFLOW_MODELS),"
                    " or give your ComfyUI folder with --comfy-models DIR.")
        return f"'{name}' was not found in {places}.{hint}"
