"""A tiny CLIP-compatible BPE tokenizer covering the demo world's words.

The vocabulary holds every lowercase letter and digit (plain and with the
``</w>`` end-of-word suffix, so any lowercase word still tokenizes), a few
punctuation marks, the merges needed to make each of the world's words
(:data:`training.world.WORDS`) a single token, and CLIP's
``<|startoftext|>`` / ``<|endoftext|>`` specials.  Saved as ``vocab.json`` +
``merges.txt`` (+ ``tokenizer_config.json`` with ``model_max_length`` 77), it
loads with ``transformers.CLIPTokenizer.from_pretrained(folder)``.

Run ``python -m training.tokenizer --out DIR`` to write it.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .world import WORDS

BOS = "<|startoftext|>"
EOS = "<|endoftext|>"
MAX_LENGTH = 77
EOW = "</w>"

_LETTERS = "abcdefghijklmnopqrstuvwxyz0123456789"
_PUNCT = ".,!?'-:;()\"&/"


def _bpe(word: str, ranks: dict[tuple[str, str], int]) -> list[str]:
    """CLIP's BPE on one lowercase word (last symbol carries ``</w>``)."""
    parts = list(word[:-1]) + [word[-1] + EOW]
    while len(parts) > 1:
        pairs = [(ranks[(a, b)], i) for i, (a, b) in enumerate(zip(parts, parts[1:])) if (a, b) in ranks]
        if not pairs:
            break
        best = min(r for r, _ in pairs)
        a, b = next((parts[i], parts[i + 1]) for r, i in pairs if r == best)
        merged, i = [], 0
        while i < len(parts):
            if i < len(parts) - 1 and parts[i] == a and parts[i + 1] == b:
                merged.append(a + b)
                i += 2
            else:
                merged.append(parts[i])
                i += 1
        parts = merged
    return parts


def build(words: Sequence[str] = WORDS) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """Return (vocab, merges) such that every word in ``words`` is one token.

    Merges are added greedily at the lowest priority, which never changes how
    already-complete words tokenize, until every word is a single token.
    """
    merges: list[tuple[str, str]] = []
    ranks: dict[tuple[str, str], int] = {}
    words = sorted(set(w.lower() for w in words))
    changed = True
    while changed:
        changed = False
        for w in words:
            parts = _bpe(w, ranks)
            while len(parts) > 1:
                pair = (parts[0], parts[1])
                ranks[pair] = len(merges)
                merges.append(pair)
                changed = True
                parts = _bpe(w, ranks)
    tokens: list[str] = []
    tokens += list(_LETTERS) + list(_PUNCT)
    tokens += [c + EOW for c in _LETTERS + _PUNCT]
    tokens += ["".join(m) for m in merges]
    vocab: dict[str, int] = {}
    for t in tokens:
        vocab.setdefault(t, len(vocab))
    vocab[BOS] = len(vocab)
    vocab[EOS] = len(vocab)
    for w in words:
        assert _bpe(w, ranks) == [w + EOW], w
    return vocab, merges


def save(out: str | Path) -> Path:
    """Write vocab.json, merges.txt, tokenizer_config.json and special_tokens_map.json."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    vocab, merges = build()
    (out / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False, indent=0) + "\n", encoding="utf-8")
    lines = ["#version: 0.2"] + [f"{a} {b}" for a, b in merges]
    (out / "merges.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    special = {
        "bos_token": BOS,
        "eos_token": EOS,
        "unk_token": EOS,
        "pad_token": EOS,
    }
    config = {
        "tokenizer_class": "CLIPTokenizer",
        "model_max_length": MAX_LENGTH,
        "do_lower_case": True,
        "errors": "replace",
        "clean_up_tokenization_spaces": False,
        "add_prefix_space": False,
        **special,
    }
    (out / "tokenizer_config.json").write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    (out / "special_tokens_map.json").write_text(json.dumps(special, indent=2) + "\n", encoding="utf-8")
    return out


def load(folder: str | Path) -> Any:
    """Load the saved tokenizer with transformers (offline)."""
    from transformers import CLIPTokenizer

    return CLIPTokenizer.from_pretrained(str(folder), local_files_only=True)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True)
    args = ap.parse_args(argv)
    out = save(args.out)
    tok = load(out)
    print(f"wrote {out} ({len(tok)} tokens)")
    for text in ["a red circle on a blue background", "a green outlined star on a white background", ""]:
        print(repr(text), tok(text)["input_ids"])


if __name__ == "__main__":
    main()
