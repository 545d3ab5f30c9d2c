"""Write the demo graphs' input pictures (scenes of the demo world) into a folder.

    python -m training.assets graphs/assets

- ``shape_red_circle.png``: "a red circle on a blue background" (img2img input);
- ``shape_red_circle_hole.png``: the same picture with the circle's area (and a
  margin) transparent, which ``image.Load`` turns into an inpainting mask;
- ``edges_star.png``: the edge map of a star (ControlNet input), white on black.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image

from . import world

CIRCLE = world.Scene("circle", "red", "blue", 0.5, 0.5, 0.3)
STAR = world.Scene("star", "yellow", "black", 0.45, 0.55, 0.34)


def write(folder: str | Path) -> list[Path]:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    img = world.render_array(CIRCLE)
    out.append(folder / "shape_red_circle.png")
    Image.fromarray(img, "RGB").save(out[-1])
    # a hole over the circle, grown by 4 px so the new shape has room
    grown = world.grow(world.shape_mask(CIRCLE), 4)
    rgba = np.dstack([img, np.where(grown, 0, 255).astype(np.uint8)])
    out.append(folder / "shape_red_circle_hole.png")
    Image.fromarray(rgba, "RGBA").save(out[-1])
    out.append(folder / "edges_star.png")
    world.edge_map(STAR).save(out[-1])
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Write the demo graphs' input pictures.")
    parser.add_argument("folder", nargs="?", default="graphs/assets",
                        help="where to write them (default: graphs/assets)")
    for p in write(parser.parse_args(argv).folder):
        print(p)


if __name__ == "__main__":
    main()
