"""The plugin API reference, generated from the docstrings of `nodeflow.api` and `nodeflow.testing`."""

from __future__ import annotations

import inspect
from typing import Any

HEADER = """# nodeflow plugin API reference

Generated from the docstrings by `nodeflow plugin docs`; do not edit by hand.
Import everything from `nodeflow.api` (and, in tests, `nodeflow.testing`).
"""


def _doc(obj: Any) -> str:
    return inspect.cleandoc(obj.__doc__ or "").strip()


def _signature(obj: Any) -> str:
    try:
        return str(inspect.signature(obj))
    except (TypeError, ValueError):
        return ""


def _class_section(name: str, cls: type) -> list[str]:
    lines = [f"### class `{name}`", "", _doc(cls), ""]
    fields = getattr(cls, "model_fields", None)
    if isinstance(fields, dict):
        for field_name, info in fields.items():
            text = info.description or ""
            lines += [f"- field `{field_name}`: {text}".rstrip(": ")]
        lines.append("")
    for attr, value in sorted(vars(cls).items()):
        if attr.startswith("_") or attr in ("model_config", "model_fields"):
            continue
        func = value.__func__ if isinstance(value, classmethod | staticmethod) else value
        if callable(func) and getattr(func, "__doc__", None):
            lines += [f"- `{attr}{_signature(func)}`: {_doc(func).splitlines()[0]}"]
        elif isinstance(value, property) and value.__doc__:
            lines += [f"- `{attr}` (property): {_doc(value).splitlines()[0]}"]
    return [*lines, ""]


def api_reference() -> str:
    """Markdown for every public name of the plugin API."""
    import nodeflow.api as api
    import nodeflow.testing as testing
    from nodeflow.types import SocketType

    out = [HEADER, f"Plugin API version: `{api.API_VERSION}`.", "", "## nodeflow.api", ""]
    for name in api.__all__:
        obj = getattr(api, name)
        if inspect.isclass(obj):
            out += _class_section(name, obj)
        elif inspect.isfunction(obj):
            out += [f"### `{name}{_signature(obj)}`", "", _doc(obj), ""]
        elif isinstance(obj, SocketType):
            literal = f", literal values: `{obj.literal.__name__}`" if obj.literal else ""
            parents = f", subtype of {', '.join(p.name for p in obj.parents)}" if obj.parents else ""
            out += [f"### socket type `{name}`", "", f"{obj.description}{literal}{parents}", ""]
        else:
            out += [f"### `{name}` = `{obj!r}`", ""]
    out += ["## nodeflow.testing", "", _doc(testing), ""]
    for name in ("run_node", "run_graph", "registry_with"):
        obj = getattr(testing, name)
        out += [f"### `{name}{_signature(obj)}`", "", _doc(obj), ""]
    return "\n".join(out).rstrip() + "\n"
