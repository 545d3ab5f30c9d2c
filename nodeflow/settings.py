"""Where things are: models folders, the output folder, the graph's own folder."""

from __future__ import annotations

import os
import re
import threading
from dataclasses import dataclass, field
from pathlib import Path

_KIND_NAME = re.compile(r"^[a-z][a-z0-9_]*$")


@dataclass(frozen=True)
class ModelKind:
    """A kind of model file a node pack reads, declared in the pack module's ``MODEL_KINDS``.

    Its files sit in the subfolder ``folders[0]`` (or one of the others) of every models folder
    (``--models DIR``, ``NODEFLOW_MODELS``). An input declared with ``path_kind=name`` is looked
    up there, and the editor lists those files for it.
    """

    name: str
    """What inputs name in ``path_kind`` ("checkpoints", "loras"...): lower case, digits, '_'."""
    description: str = ""
    """What these files are, for people ("LoRA weights: .safetensors")."""
    suffixes: tuple[str, ...] = ()
    """File suffixes the editor offers (".safetensors", ".pth"); empty: any file. Folders (a
    diffusers model) are always offered."""
    folders: tuple[str, ...] = ()
    """Subfolder names searched in order; empty: just ``name``. Later names are other tools'
    names for the same files (ComfyUI's ``unet/`` for ``diffusion_models/``)."""

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not _KIND_NAME.match(self.name) \
                or self.name in ("image", "file"):
            raise ValueError(f"model kind name {self.name!r} must be lower case letters, digits and "
                             "'_', starting with a letter (and not 'image' or 'file')")
        folders = tuple(self.folders) or (self.name,)
        if any(not isinstance(f, str) or not f or "/" in f or "\\" in f or f in (".", "..")
               for f in folders):
            raise ValueError(f"model kind {self.name!r}: folders must be plain folder names, got "
                             f"{folders!r}")
        suffixes = tuple(s.lower() for s in self.suffixes)
        if any(not s.startswith(".") for s in suffixes):
            raise ValueError(f"model kind {self.name!r}: suffixes start with '.', got {suffixes!r}")
        object.__setattr__(self, "folders", folders)
        object.__setattr__(self, "suffixes", suffixes)


_kinds: dict[str, ModelKind] = {}
_kinds_lock = threading.Lock()


def declare_model_kind(kind: ModelKind) -> None:
    """Make a model kind known to every `Settings` of this process (the registry does this for
    each kind a pack declares). Packs may declare the same kind (same folders and suffixes;
    the first description is kept); other folders or suffixes under a taken name raise
    ValueError naming both."""
    with _kinds_lock:
        known = _kinds.get(kind.name)
        if known is not None and (known.folders, known.suffixes) == (kind.folders, kind.suffixes):
            return
        if known is not None:
            raise ValueError(f"model kind '{kind.name}' is already declared with folders "
                             f"{', '.join(known.folders)} and suffixes "
                             f"{', '.join(known.suffixes) or 'any'}; a different declaration "
                             "under the same name is ignored")
        _kinds[kind.name] = kind


def model_kinds() -> list[ModelKind]:
    """Every model kind the loaded packs declared, in declaration order."""
    with _kinds_lock:
        return list(_kinds.values())


def model_kind(name: str) -> ModelKind | None:
    """The declared model kind ``name``, or None."""
    return _kinds.get(name)


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
    allow_hint: str = ""
    """How the user widens ``allowed_dirs`` where they run the graph (default: the
    command line's ``--allow-dir DIR``; the editor names its menu item)."""
    folders: dict[str, list[Path]] = field(default_factory=dict)
    """Extra folders per kind, searched first (a ComfyUI user's extra_model_paths.yaml); for
    pictures ("image"), searched last (ComfyUI's input/ folder)."""

    @classmethod
    def from_env(cls, models: list[str] | None = None, out_dir: str | None = None,
                 base_dir: Path | None = None) -> Settings:
        # Models in ``models``, then in NODEFLOW_MODELS's folders. A ComfyUI user's folders
        # (NODEFLOW_COMFY_MODELS) are added a layer up: nodeflow.comfy.model_paths.settings_from_env.
        dirs = [Path(m).expanduser() for m in (models or [])]
        env = os.environ.get("NODEFLOW_MODELS")
        if env:
            dirs += [Path(p).expanduser() for p in env.split(os.pathsep) if p]
        return cls(models_dirs=dirs, out_dir=Path(out_dir) if out_dir else Path("out"),
                   base_dir=base_dir)

    def search_dirs(self, kind: str) -> list[Path]:
        """Where a file of ``kind`` is looked for, in order."""
        if kind == "image" or kind == "file":
            dirs = [Path.cwd()]
            if self.base_dir is not None:
                dirs.append(self.base_dir)
            return dirs + self.folders.get(kind, [])
        declared = _kinds.get(kind)
        folders = declared.folders if declared is not None else (kind,)
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

        return path_refusal(path, self.readable_dirs(), self.allow_hint)

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
            declared = _kinds.get(kind)
            folder = declared.folders[0] if declared is not None else kind
            hint = (f" Put it in the '{folder}' folder of a models folder (--models DIR or NODEFLOW_MODELS),"
                    " or give your ComfyUI folder with --comfy-models DIR.")
        return f"'{name}' was not found in {places}.{hint}"
