"""Provenance: the graph that made a picture travels inside the PNG."""

from __future__ import annotations

from pathlib import Path

from nodeflow.errors import GraphFileError, Location

GRAPH_KEY = "nodeflow"
VERSION_KEY = "nodeflow-version"


def png_text_chunks(graph_json: str) -> list[tuple[str, str]]:
    from nodeflow import __version__

    return [(GRAPH_KEY, graph_json), (VERSION_KEY, __version__)]


def graph_from_png(path: Path) -> str:
    """The graph file text embedded in a PNG by ``image.Save``."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            im.load()
            text = dict(getattr(im, "text", {}) or {})
    except (OSError, UnidentifiedImageError, SyntaxError, ValueError) as exc:
        raise GraphFileError(f"cannot read the PNG: {exc}", location=Location(file=str(path))) from None
    graph = text.get(GRAPH_KEY)
    if not graph:
        raise GraphFileError("this PNG carries no nodeflow graph",
                             location=Location(file=str(path)),
                             hint="Only PNGs written by image.Save embed the graph that made them.")
    return graph
