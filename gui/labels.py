"""Words the editor shows: node titles that keep their acronyms, and "a"/"an" before a type name."""

from __future__ import annotations

import functools
import re

from nodeflow.api import Node

WHOLE_WORDS = ("ControlNet", "KSampler", "IPAdapter", "LoRA", "GLIGEN", "SDXL", "SD3", "CLIP", "VAE", "RGB")
"""Kept in one piece when a title is made from a type's name ("LoadLoRA" → "Load LoRA")."""

_SPLIT = re.compile(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])")


@functools.lru_cache(maxsize=4096)
def split_name(name: str) -> str:
    """A CamelCase type name as words: "LoadLoRA" → "Load LoRA", "VAEDecode" → "VAE Decode"."""
    pieces: list[str] = []
    rest = name
    while rest:
        for word in WHOLE_WORDS:
            if rest.startswith(word):
                pieces.append(word)
                rest = rest[len(word):]
                break
        else:
            match = re.match(r"[A-Z]+(?=[A-Z][a-z])|[A-Z]?[a-z0-9]+|[A-Z0-9]+|.", rest)
            assert match is not None
            chunk = match.group(0)
            # Stop a chunk where a whole word starts ("CannyLoRA" → "Canny", "LoRA").
            cut = min((i for w in WHOLE_WORDS if (i := chunk.find(w, 1)) > 0), default=len(chunk))
            pieces.append(chunk[:cut])
            rest = rest[cut:]
    words: list[str] = []
    for piece in pieces:
        if words and words[-1].isdigit() and piece.isdigit():
            words[-1] += piece
        else:
            words.append(piece)
    return " ".join(w for w in words if w.strip())


_TITLES: dict[type[Node], str] = {}


def node_title(cls: type[Node]) -> str:
    """The title shown for a node type: its own, or one made from its name keeping acronyms."""
    title = _TITLES.get(cls)
    if title is None:
        title = _TITLES[cls] = _make_title(cls)
    return title


def _make_title(cls: type[Node]) -> str:
    tail = cls.id.rsplit(".", 1)[-1]
    generated = re.sub(r"(?<=[a-z0-9])(?=[A-Z])", " ", tail)  # how nodeflow.node makes a missing title
    return split_name(tail) if cls.title == generated else cls.title


def with_article(word: str) -> str:
    """"an IMAGE", "a LATENT", "an INT": the article by the word's first sound as read aloud."""
    first = word[:1].upper()
    return f"an {word}" if first in "AEIOU" else f"a {word}"
