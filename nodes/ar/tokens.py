"""The TOKENS value: a grid of codebook indices and the tokenizer they belong to."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Tokens:
    """A batch of token grids: ``ids`` is int64 (batch, height, width), raster order row by row.

    ``tokenizer`` identifies the codebook the ids index (a hash of its vectors), so a grid
    cannot be decoded by a tokenizer whose codebook differs; None when unknown (e.g. a
    prior that does not record its tokenizer).
    """

    ids: Any
    codebook_size: int
    tokenizer: str | None = None

    @property
    def shape(self) -> tuple[int, int, int]:
        batch, height, width = self.ids.shape
        return int(batch), int(height), int(width)

    def __repr__(self) -> str:
        batch, height, width = self.shape
        source = f", tokenizer {self.tokenizer[:12]}" if self.tokenizer else ""
        return f"Tokens({batch}×{height}×{width} of {self.codebook_size}{source})"


def mismatch(tokens: Tokens, codebook_size: int, fingerprint: str | None, what: str) -> str | None:
    """Why ``tokens`` cannot be used with a codebook of ``codebook_size`` (identity ``fingerprint``)."""
    if tokens.codebook_size != codebook_size:
        return (f"the tokens index a codebook of {tokens.codebook_size} entries but {what} has "
                f"{codebook_size}; they come from a different tokenizer")
    if tokens.tokenizer and fingerprint and tokens.tokenizer != fingerprint:
        return (f"the tokens come from another tokenizer than {what} (same codebook size "
                f"{codebook_size}, different codebook)")
    return None
