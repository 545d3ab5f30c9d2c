"""CLIP's BPE tokenizer, built offline from the vocabulary file open-clip-torch ships.

Single-file checkpoints carry no tokenizer, and no hub is reachable, so the
tokenizer is rebuilt from ``open_clip/bpe_simple_vocab_16e6.txt.gz``: 256 byte
symbols, the same with the end-of-word mark, the 48,894 merges, and the two
special tokens, 49,408 ids in all, as CLIP defines them.
"""

from __future__ import annotations

import functools
import gzip
from pathlib import Path
from typing import Any

from nodeflow.api import ModelError

MERGES = 49152 - 256 - 2
BOS = "<|startoftext|>"
EOS = "<|endoftext|>"


def _bytes_to_unicode() -> list[str]:
    """CLIP's reversible map of the 256 byte values to printable characters, in id order."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + \
        list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return [chr(c) for c in cs]


def vocab_file() -> Path:
    """The gzipped BPE merges of open-clip-torch's wheel."""
    try:
        import open_clip
    except ImportError:
        raise ModelError("the CLIP tokenizer vocabulary comes from the open-clip-torch package, "
                         "which is not installed", hint="pip install open-clip-torch") from None
    path = Path(open_clip.__file__).resolve().parent / "bpe_simple_vocab_16e6.txt.gz"
    if not path.is_file():
        raise ModelError(f"open-clip-torch has no CLIP vocabulary file at {path}",
                         hint="Reinstall open-clip-torch.")
    return path


@functools.lru_cache(maxsize=1)
def clip_vocab() -> tuple[dict[str, int], tuple[tuple[str, str], ...]]:
    """CLIP's vocabulary (token → id) and merges."""
    with gzip.open(vocab_file(), "rt", encoding="utf-8") as fh:
        lines = fh.read().split("\n")[1:MERGES + 1]
    merges = tuple(tuple(line.split()) for line in lines)
    symbols = _bytes_to_unicode()
    tokens = symbols + [s + "</w>" for s in symbols] + ["".join(m) for m in merges] + [BOS, EOS]
    return {t: i for i, t in enumerate(tokens)}, merges  # type: ignore[return-value]


def clip_tokenizer(pad_token: str = EOS, max_length: int = 77) -> Any:
    """A transformers CLIPTokenizer with CLIP's full vocabulary.

    SD 1.x pads with the end token; SD 2.x and SDXL's second encoder pad with '!'.
    """
    from transformers import CLIPTokenizer

    vocab, merges = clip_vocab()
    return CLIPTokenizer(vocab=dict(vocab), merges=list(merges),  # type: ignore[arg-type]
                         bos_token=BOS,
                         eos_token=EOS, unk_token=EOS, pad_token=pad_token,
                         model_max_length=max_length)
