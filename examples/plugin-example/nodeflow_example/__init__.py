"""Example nodeflow plugin: a posterize filter and colour palettes as a new socket type."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from nodeflow.api import IMAGE, INT, Input, Node, NodeInputError, Output, RunContext, Settings, SocketType

__version__ = "1.1.0"
NODEFLOW_API = ">=1.0,<2"

PALETTE = SocketType(
    "PALETTE", color="#ba68c8",
    description="A colour palette: float32 numpy array (colours, 3) in [0, 1], most common first.")


class Posterize(Node):
    """Reduce each colour channel to a few levels, for a flat poster look."""

    id = "example.Posterize"
    version = "2.0.0"
    category = "example"
    inputs = (
        Input("image", IMAGE, "The images to posterize."),
        Input("levels", INT, "Levels per channel.", default=4, min=2, max=256),
    )
    outputs = (Output("image", IMAGE, "The posterized images."),)

    @classmethod
    def migrate(cls, from_version: str, inputs: dict[str, Any]) -> dict[str, Any] | None:
        # Version 1 took `bits` per channel; version 2 takes the number of levels.
        if from_version.startswith("1."):
            migrated = dict(inputs)
            if "bits" in migrated:
                migrated["levels"] = 2 ** int(migrated.pop("bits"))
            return migrated
        return None

    def run(self, ctx: RunContext, image: Any, levels: int) -> Any:
        import numpy as np

        steps = levels - 1
        return (np.round(image * steps) / steps).astype(np.float32)


class ExtractPalette(Node):
    """Find the most common colours of an image (after rounding to 32 levels per channel)."""

    id = "example.ExtractPalette"
    version = "1.0.0"
    category = "example"
    inputs = (
        Input("image", IMAGE, "The image to take colours from (the first of a batch)."),
        Input("colors", INT, "How many colours.", default=8, min=1, max=256),
    )
    outputs = (Output("palette", PALETTE, "The colours, most common first."),)

    def run(self, ctx: RunContext, image: Any, colors: int) -> Any:
        import numpy as np

        quantised = np.round(image[0].reshape(-1, 3) * 31).astype(np.int32)
        codes = quantised[:, 0] * 1024 + quantised[:, 1] * 32 + quantised[:, 2]
        values, counts = np.unique(codes, return_counts=True)
        order = np.lexsort((values, -counts))[:colors]  # ties broken by colour: deterministic
        top = values[order]
        rgb = np.stack([top // 1024, (top // 32) % 32, top % 32], axis=1)
        return (rgb / 31.0).astype(np.float32)


class ApplyPalette(Node):
    """Replace every pixel with the nearest colour of a palette."""

    id = "example.ApplyPalette"
    version = "1.0.0"
    category = "example"
    inputs = (
        Input("image", IMAGE, "The images to recolour."),
        Input("palette", PALETTE, "The colours to use."),
    )
    outputs = (Output("image", IMAGE, "The recoloured images."),)

    def run(self, ctx: RunContext, image: Any, palette: Any) -> Any:
        import numpy as np

        if len(palette) == 0:
            raise NodeInputError("palette", "the palette has no colours")
        out = np.empty_like(image)
        for b in range(image.shape[0]):
            ctx.check_cancelled()
            pixels = image[b].reshape(-1, 1, 3)
            nearest = ((pixels - palette[None]) ** 2).sum(-1).argmin(1)
            out[b] = palette[nearest].reshape(image.shape[1:])
        return out


class PaletteToImage(Node):
    """Show a palette as a strip of colour swatches (a PALETTE → IMAGE converter)."""

    id = "example.PaletteToImage"
    version = "1.0.0"
    category = "example"
    inputs = (
        Input("palette", PALETTE, "The palette to show."),
        Input("swatch", INT, "Swatch size in pixels.", default=32, min=1, max=512),
    )
    outputs = (Output("image", IMAGE, "One swatch per colour, left to right."),)

    @classmethod
    def check(cls, values: Mapping[str, Any], settings: Settings) -> Iterable[tuple[str | None, str]]:
        if values.get("swatch", 32) * 256 > 65536:
            yield "swatch", "swatches this large make an image wider than 65536 pixels"

    def run(self, ctx: RunContext, palette: Any, swatch: int) -> Any:
        import numpy as np

        strip = np.repeat(np.repeat(palette[None, None], swatch, axis=0), swatch, axis=1)
        # (swatch, swatch, n, 3) -> (swatch, n * swatch, 3)
        strip = strip.transpose(0, 2, 1, 3).reshape(swatch, len(palette) * swatch, 3)
        return strip[None].astype(np.float32)
