"""Prompt weighting: ``(word:1.3)``, ``(word)``, ``[word]``, escapes, ``BREAK`` and embeddings.

Two dialects, chosen by TextEncode's ``weighting`` input:

``comfy`` — ComfyUI's reading of a prompt. ``(text)`` multiplies the weight around it by
1.1; ``(text:w)`` sets the weight to ``w`` (not multiplied by the weights around it);
``\\(`` and ``\\)`` are literal parentheses; square brackets and ``BREAK`` are ordinary
text. Words are tokenized one by one and packed into chunks of 75 tokens without
splitting a word shorter than 8 tokens across chunks. A weighted token's embedding is
moved away from the empty prompt's embedding at the same position:
``z = (z - z_empty) * w + z_empty``; tokens of weight 1 are left exactly as encoded.

``a1111`` — Automatic1111's reading. ``(text)`` multiplies by 1.1, ``[text]`` divides by
1.1, ``(text:w)`` multiplies by ``w``; nested weights multiply; ``\\(``, ``\\)``,
``\\[``, ``\\]`` are literal; ``BREAK`` ends the current chunk. Each chunk's embeddings
are multiplied by their weights, then rescaled so the chunk's mean is what it was.

In both dialects ``embedding:name`` (or ``embedding:name:1.2``, a weight for its vectors)
inserts a textual-inversion embedding from the models folder's ``embeddings/``.
A prompt with no weight other than 1 and at most 75 tokens encodes to exactly the
same numbers as with ``weighting: none``.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

WEIGHTINGS = ("comfy", "a1111", "none")
EMBEDDING_PREFIX = "embedding:"
MAX_WORD_TOKENS = 8
"""A word (or embedding) of fewer tokens than this moves whole to the next chunk."""

_ESC_OPEN, _ESC_CLOSE = "\0\2", "\0\1"


@dataclass(frozen=True)
class Segment:
    """A run of prompt text with one weight; ``brk`` marks a chunk break (A1111's BREAK)."""

    text: str
    weight: float
    brk: bool = False


# ---------------------------------------------------------------- ComfyUI dialect

def _split_groups(text: str) -> list[str]:
    """Top-level pieces of ``text``: plain runs and balanced ``(...)`` groups, in order.

    An unbalanced ``)`` stays in the text; an unclosed ``(`` leaves the rest as plain text.
    """
    pieces: list[str] = []
    current = ""
    depth = 0
    for char in text:
        if char == "(":
            if depth == 0 and current:
                pieces.append(current)
                current = ""
            current += char
            depth += 1
        elif char == ")":
            depth -= 1
            current += char
            if depth == 0:
                pieces.append(current)
                current = ""
        else:
            current += char
    if current:
        pieces.append(current)
    return pieces


def _comfy_weights(text: str, weight: float) -> list[tuple[str, float]]:
    out: list[tuple[str, float]] = []
    for piece in _split_groups(text):
        if len(piece) >= 2 and piece[0] == "(" and piece[-1] == ")":
            inner = piece[1:-1]
            inner_weight = weight * 1.1
            colon = inner.rfind(":")
            if colon > 0:
                try:
                    inner_weight = float(inner[colon + 1:])
                    inner = inner[:colon]
                except ValueError:
                    pass  # "(a:b)" without a number: the colon is text
            out += _comfy_weights(inner, inner_weight)
        else:
            out.append((piece, weight))
    return out


def parse_comfy(text: str) -> list[Segment]:
    """Weighted segments of a prompt, as ComfyUI reads it."""
    escaped = text.replace("\\)", _ESC_CLOSE).replace("\\(", _ESC_OPEN)
    return [Segment(part.replace(_ESC_CLOSE, ")").replace(_ESC_OPEN, "("), w)
            for part, w in _comfy_weights(escaped, 1.0)]


# ---------------------------------------------------------------- A1111 dialect

_A1111_TOKEN = re.compile(r"\\[()\[\]\\]|\(|\[|:\s*([+-]?(?:\d+\.?\d*|\.\d+))\s*\)|\)|\]|[^\\()\[\]:]+|:|\\",
                          re.S)
_BREAK = re.compile(r"\s*\bBREAK\b\s*")


def parse_a1111(text: str) -> list[Segment]:
    """Weighted segments of a prompt, as Automatic1111 reads it (BREAK gives a break segment)."""
    pieces: list[list[Any]] = []  # [text, weight] in order; None text marks a BREAK
    rounds: list[int] = []
    squares: list[int] = []

    def scale(start: int, factor: float) -> None:
        for piece in pieces[start:]:
            piece[1] *= factor

    for match in _A1111_TOKEN.finditer(text):
        token, number = match.group(0), match.group(1)
        if token.startswith("\\") and len(token) == 2:
            pieces.append([token[1], 1.0])
        elif token == "(":
            rounds.append(len(pieces))
        elif token == "[":
            squares.append(len(pieces))
        elif number is not None and rounds:
            scale(rounds.pop(), float(number))
        elif token == ")" and rounds:
            scale(rounds.pop(), 1.1)
        elif token == "]" and squares:
            scale(squares.pop(), 1 / 1.1)
        else:
            parts = _BREAK.split(token)
            for i, part in enumerate(parts):
                if i > 0:
                    pieces.append([None, -1.0])
                if part:
                    pieces.append([part, 1.0])
    for start in rounds:
        scale(start, 1.1)
    for start in squares:
        scale(start, 1 / 1.1)
    segments: list[Segment] = []
    for piece_text, weight in pieces:
        if piece_text is None:
            segments.append(Segment("", 1.0, brk=True))
        elif segments and not segments[-1].brk and segments[-1].weight == weight:
            segments[-1] = Segment(segments[-1].text + piece_text, weight)
        else:
            segments.append(Segment(piece_text, weight))
    return segments


def parse(text: str, weighting: str) -> list[Segment]:
    """The weighted segments of ``text`` in a dialect ('comfy' or 'a1111')."""
    return parse_a1111(text) if weighting == "a1111" else parse_comfy(text)


def embedding_names(text: str, weighting: str) -> list[str]:
    """The names of the embeddings a prompt refers to (``embedding:name`` or ``embedding:name:w``)."""
    names = []
    for segment in parse(text, weighting):
        for word in segment.text.replace("\n", " ").split(" "):
            if word.startswith(EMBEDDING_PREFIX):
                name, _ = split_embedding_word(word)
                if name:
                    names.append(name)
    return names


def split_embedding_word(word: str) -> tuple[str, float | None]:
    """``embedding:name:1.2`` → ("name", 1.2); ``embedding:name,`` → ("name", None)."""
    body = word[len(EMBEDDING_PREFIX):].strip().rstrip(",")
    name, colon, tail = body.rpartition(":")
    if colon:
        try:
            return name, float(tail)
        except ValueError:
            pass
    return body, None


# ---------------------------------------------------------------- tokens and chunks

Token = tuple[Any, float]
"""A token id (int) or an embedding vector (tensor), with its weight."""


def _word_tokens(tokenizer: Any, word: str, vocab: dict[str, int]) -> list[int]:
    exact = vocab.get(f"{word}</w>")
    if exact is not None:
        return [exact]
    return list(tokenizer(word, add_special_tokens=False, truncation=False).input_ids)


def token_groups(tokenizer: Any, segments: list[Segment],
                 embedding: Callable[[str], Any]) -> list[list[Token] | None]:
    """Words (and embeddings) as groups of weighted tokens; None where a chunk must break.

    ``embedding(name)`` returns the (vectors, width) tensor of an embedding.
    """
    vocab = tokenizer.get_vocab()
    groups: list[list[Token] | None] = []
    for segment in segments:
        if segment.brk:
            groups.append(None)
            continue
        for word in segment.text.replace("\n", " ").split(" "):
            if not word:
                continue
            if word.startswith(EMBEDDING_PREFIX):
                name, weight = split_embedding_word(word)
                if name:
                    vectors = embedding(name)
                    w = segment.weight if weight is None else weight
                    groups.append([(vectors[i], w) for i in range(vectors.shape[0])])
                    rest = word[len(EMBEDDING_PREFIX):].strip()
                    trailing = rest[len(rest.rstrip(",")):]
                    if trailing:  # "embedding:name," keeps its comma as text
                        groups.append([(t, segment.weight) for t in _word_tokens(tokenizer, trailing, vocab)])
                    continue
            groups.append([(t, segment.weight) for t in _word_tokens(tokenizer, word, vocab)])
    return groups


def pack_chunks(tokenizer: Any, groups: list[list[Token] | None],
                weighting: str = "comfy") -> list[list[Token]]:
    """Chunks of ``model_max_length`` tokens with start/end tokens and padding.

    A group of fewer than ``MAX_WORD_TOKENS`` tokens that does not fit moves whole to the
    next chunk; longer groups are split; None forces a new chunk. ComfyUI always closes
    the last chunk (even when empty); A1111 drops an empty last chunk.
    """
    size = int(tokenizer.model_max_length)
    bos, eos = int(tokenizer.bos_token_id), int(tokenizer.eos_token_id)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos
    chunks: list[list[Token]] = []
    chunk: list[Token] = [(bos, 1.0)]

    def close() -> None:
        nonlocal chunk
        chunk.append((eos, 1.0))
        chunk += [(pad, 1.0)] * (size - len(chunk))
        chunks.append(chunk)
        chunk = [(bos, 1.0)]

    for group in groups:
        if group is None:
            close()
            continue
        large = len(group) >= MAX_WORD_TOKENS
        while group:
            room = size - 1 - len(chunk)
            if len(group) <= room:
                chunk += group
                group = []
            elif large:
                chunk += group[:room]
                group = group[room:]
                close()
            else:
                close()
    if weighting != "a1111" or len(chunk) > 1 or not chunks:
        close()
    return chunks


def empty_chunk(tokenizer: Any) -> list[Token]:
    """The empty prompt's tokens: start, end, padding."""
    return pack_chunks(tokenizer, [])[0]


# ---------------------------------------------------------------- encoding

def encode_chunk(text_encoder: Any, chunk: list[Token], use_mask: bool,
                 read: Callable[[Any, Any], Any]) -> Any:
    """Run the text encoder on one chunk, with embedding vectors put in at their positions.

    ``read(output, ids)`` picks what to keep from the encoder's output.
    """
    import torch

    device = next(text_encoder.parameters()).device
    eos = int(text_encoder.config.eos_token_id)
    placeholder = int(text_encoder.config.bos_token_id)  # never the end token, never larger
    ids = [t if isinstance(t, int) else placeholder for t, _ in chunk]
    vectors = {i: t for i, (t, _) in enumerate(chunk) if not isinstance(t, int)}
    ids_t = torch.tensor([ids], dtype=torch.long, device=device)
    mask = None
    if use_mask:
        end = ids.index(eos) + 1 if eos in ids else len(ids)
        mask = torch.tensor([[1] * end + [0] * (len(ids) - end)], dtype=torch.long, device=device)
    handle = None
    if vectors:
        def put_vectors(_module: Any, _inputs: Any, output: Any) -> Any:
            output = output.clone()
            for i, vector in vectors.items():
                output[0, i] = vector.to(device=output.device, dtype=output.dtype)
            return output

        handle = text_encoder.get_input_embeddings().register_forward_hook(put_vectors)
    try:
        return read(text_encoder(ids_t, attention_mask=mask, output_hidden_states=True), ids_t)
    finally:
        if handle is not None:
            handle.remove()


def apply_weights(z: Any, z_empty: Any, weights: list[float], weighting: str) -> Any:
    """Weight one chunk's embeddings (1, tokens, dim) by ComfyUI's or A1111's rule."""
    import torch

    if all(w == 1.0 for w in weights):
        return z
    w = torch.tensor(weights, dtype=z.dtype, device=z.device)[None, :, None]
    if weighting == "a1111":
        original = z.mean()
        z = z * w
        return z * (original / z.mean())
    keep = (w == 1.0)
    return torch.where(keep, z, (z - z_empty) * w + z_empty)


def weighted_encode(tokenizer: Any, text_encoder: Any, text: str, weighting: str,
                    embedding: Callable[[str], Any], read: Callable[[Any, Any], Any],
                    use_mask: bool = False) -> tuple[list[Any], Any]:
    """Encode a prompt chunk by chunk with its weights: (per-chunk embeddings, first chunk's
    raw encoder output for a pooled embedding)."""
    groups = token_groups(tokenizer, parse(text, weighting), embedding)
    chunks = pack_chunks(tokenizer, groups, weighting)
    weighted = any(w != 1.0 for chunk in chunks for _, w in chunk)
    z_empty = None
    if weighted:
        z_empty = encode_chunk(text_encoder, empty_chunk(tokenizer), use_mask, read)[0]
    outs = []
    first = None
    for chunk in chunks:
        z, raw = encode_chunk(text_encoder, chunk, use_mask, read)
        if first is None:
            first = raw
        if weighted:
            z = apply_weights(z, z_empty, [w for _, w in chunk], weighting)
        outs.append(z)
    return outs, first
