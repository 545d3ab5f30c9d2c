"""A procedural world of simple shapes, used to train nodeflow's demo models.

Every scene is one shape (circle, square, triangle or star) of one colour on a
plain background of another colour.  Everything is deterministic: a scene is a
pure function of the random generator that sampled it, and rendering is a pure
function of the scene.

Rendering draws at 4x the requested size with Pillow and downsamples with a
box (area) filter, which gives anti-aliased edges.

Typical use::

    rng = np.random.default_rng(0)
    scene = sample_scene(rng)
    img = render(scene)              # 64x64 RGB PIL image
    text = caption(scene)            # "a red circle on a blue background"
    edges = edge_map(scene)          # 64x64 RGB, 1-px white edges on black
    low, high = sr_pair(scene)       # 64x64 and 256x256 renders of the scene
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
from PIL import Image, ImageDraw

SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "star")

PALETTE: dict[str, tuple[int, int, int]] = {
    "red": (220, 35, 35),
    "green": (35, 170, 60),
    "blue": (35, 70, 220),
    "yellow": (240, 210, 35),
    "white": (245, 245, 245),
    "black": (20, 20, 20),
}
COLOURS: tuple[str, ...] = tuple(PALETTE)

BASE_SIZE = 64          # the world's native image size
MIN_EXTENT = 18         # shape extent (px across at 64x64), inclusive range
MAX_EXTENT = 44
SUPERSAMPLE = 4         # draw at this multiple, then area-downsample
OUTLINE_PX = 5.0        # outline width at 64x64: wider than one latent cell (the demo VAE downsamples 4x)

# Every word the world's captions use (plus a few harmless extras that prompts
# in examples may contain).  The demo tokenizer covers exactly these words.
WORDS: tuple[str, ...] = tuple(
    ["a", "an", "on", "background", "outlined", "filled", "shape", "and", "with", "the", "of", "in"]
    + list(SHAPES)
    + list(COLOURS)
)


@dataclass(frozen=True)
class Scene:
    """One scene, in resolution-independent units.

    ``cx``, ``cy`` is the shape's centre and ``radius`` its half-extent, all as
    fractions of the image side (so the same scene renders at any size).
    """

    shape: str
    colour: str
    background: str
    cx: float
    cy: float
    radius: float

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class GroundTruth:
    """What is in a rendered scene, at a given size."""

    shape: str
    colour: str
    background: str
    bbox: tuple[int, int, int, int]  # x0, y0, x1, y1 (x1, y1 exclusive)
    mask: np.ndarray  # bool (size, size): pixels at least half covered by the shape


def sample_scene(
    rng: np.random.Generator,
    *,
    shape: str | None = None,
    colour: str | None = None,
    background: str | None = None,
) -> Scene:
    """Sample a random scene; any of shape/colour/background may be fixed."""
    shape = shape if shape is not None else SHAPES[int(rng.integers(len(SHAPES)))]
    if shape not in SHAPES:
        raise ValueError(f"unknown shape {shape!r}; expected one of {SHAPES}")
    if colour is None:
        choices = [c for c in COLOURS if c != background]
        colour = choices[int(rng.integers(len(choices)))]
    if background is None:
        choices = [c for c in COLOURS if c != colour]
        background = choices[int(rng.integers(len(choices)))]
    if colour not in PALETTE or background not in PALETTE:
        raise ValueError(f"unknown colour in {colour!r}/{background!r}; expected {COLOURS}")
    if colour == background:
        raise ValueError("shape colour must differ from background colour")
    extent = float(rng.uniform(MIN_EXTENT, MAX_EXTENT))
    r = extent / 2.0
    margin = r + 1.0  # keep the whole shape (and its anti-aliased rim) inside
    cx = float(rng.uniform(margin, BASE_SIZE - margin))
    cy = float(rng.uniform(margin, BASE_SIZE - margin))
    return Scene(shape, colour, background, cx / BASE_SIZE, cy / BASE_SIZE, r / BASE_SIZE)


def caption(scene: Scene, outlined: bool = False) -> str:
    """The scene's caption, e.g. ``"a red circle on a blue background"``."""
    style = "outlined " if outlined else ""
    return f"a {scene.colour} {style}{scene.shape} on a {scene.background} background"


def _polygon(scene: Scene, px: float) -> list[tuple[float, float]]:
    """Vertices of a polygonal shape, in pixels of a ``px``-sized canvas."""
    cx, cy, r = scene.cx * px, scene.cy * px, scene.radius * px
    if scene.shape == "square":
        return [(cx - r, cy - r), (cx + r, cy - r), (cx + r, cy + r), (cx - r, cy + r)]
    if scene.shape == "triangle":  # isosceles, apex up, fills its 2r x 2r box
        return [(cx, cy - r), (cx + r, cy + r), (cx - r, cy + r)]
    if scene.shape == "star":  # five points, one pointing up
        pts = []
        inner = 0.45 * r
        # centre the star's bounding box vertically on (cx, cy)
        dy = r * (1 - math.cos(math.pi / 5)) / 2
        for k in range(10):
            rad = r if k % 2 == 0 else inner
            ang = -math.pi / 2 + k * math.pi / 5
            pts.append((cx + rad * math.cos(ang), cy + dy + rad * math.sin(ang)))
        return pts
    raise ValueError(scene.shape)


def _shape_mask_hires(scene: Scene, px: int, outlined: bool = False) -> Image.Image:
    """An 'L' mask (0/255) of the shape drawn on a ``px``-sized canvas."""
    m = Image.new("L", (px, px), 0)
    d = ImageDraw.Draw(m)
    scale = px / BASE_SIZE
    width = max(1, int(round(OUTLINE_PX * scale))) if outlined else 0
    if scene.shape == "circle":
        cx, cy, r = scene.cx * px, scene.cy * px, scene.radius * px
        box = [cx - r, cy - r, cx + r, cy + r]
        if outlined:
            d.ellipse(box, outline=255, width=width)
        else:
            d.ellipse(box, fill=255)
    else:
        pts = _polygon(scene, px)
        d.polygon(pts, fill=255)
        if outlined:
            # Outline = shape minus the shape eroded by `width` pixels.
            inner = _erode(m, width)
            m = Image.fromarray(np.where(np.asarray(inner) > 0, 0, np.asarray(m)).astype(np.uint8))
    return m


def _erode(mask: Image.Image, width: int) -> Image.Image:
    """Erode a binary mask by ``width`` pixels (disk-ish, via repeated 3x3 min)."""
    a = np.asarray(mask) > 0
    for i in range(width):
        # alternate a 3x3 square and a plus-shaped element: closer to a disk
        p = np.pad(a, 1, constant_values=False)
        b = p[1:-1, 1:-1] & p[:-2, 1:-1] & p[2:, 1:-1] & p[1:-1, :-2] & p[1:-1, 2:]
        if i % 2 == 0:
            b &= p[:-2, :-2] & p[:-2, 2:] & p[2:, :-2] & p[2:, 2:]
        a = b
    return Image.fromarray(a.astype(np.uint8) * 255)


def coverage(scene: Scene, size: int = BASE_SIZE, outlined: bool = False) -> np.ndarray:
    """Fraction (0..1, float32 (size, size)) of each pixel covered by the shape."""
    hi = _shape_mask_hires(scene, size * SUPERSAMPLE, outlined)
    lo = hi.reduce(SUPERSAMPLE)  # box filter
    return np.asarray(lo, dtype=np.float32) / 255.0


def render_array(scene: Scene, size: int = BASE_SIZE, outlined: bool = False) -> np.ndarray:
    """Render to a uint8 (size, size, 3) array."""
    a = coverage(scene, size, outlined)[..., None]
    fg = np.asarray(PALETTE[scene.colour], dtype=np.float32)
    bg = np.asarray(PALETTE[scene.background], dtype=np.float32)
    img = bg * (1.0 - a) + fg * a
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


def render(scene: Scene, size: int = BASE_SIZE, outlined: bool = False) -> Image.Image:
    """Render the scene as an RGB PIL image of ``size`` x ``size``."""
    return Image.fromarray(render_array(scene, size, outlined), "RGB")


def shape_mask(scene: Scene, size: int = BASE_SIZE) -> np.ndarray:
    """Binary (bool) mask of pixels at least half covered by the (filled) shape."""
    return coverage(scene, size) >= 0.5


def grow(mask: np.ndarray, steps: int) -> np.ndarray:
    """A boolean mask grown by ``steps`` pixels (each step adds the 4-neighbours)."""
    for _ in range(steps):
        p = np.pad(mask, 1)
        mask = p[1:-1, 1:-1] | p[:-2, 1:-1] | p[2:, 1:-1] | p[1:-1, :-2] | p[1:-1, 2:]
    return mask


def ground_truth(scene: Scene, size: int = BASE_SIZE) -> GroundTruth:
    mask = shape_mask(scene, size)
    ys, xs = np.nonzero(mask)
    bbox = (int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1)
    return GroundTruth(scene.shape, scene.colour, scene.background, bbox, mask)


def edge_map_array(scene: Scene, size: int = BASE_SIZE) -> np.ndarray:
    """uint8 (size, size, 3): 1-px white edges of the shape on black."""
    m = shape_mask(scene, size)
    p = np.pad(m, 1, constant_values=False)
    interior = p[1:-1, 1:-1] & p[:-2, 1:-1] & p[2:, 1:-1] & p[1:-1, :-2] & p[1:-1, 2:]
    edge = m & ~interior
    out = np.zeros((size, size, 3), np.uint8)
    out[edge] = 255
    return out


def edge_map(scene: Scene, size: int = BASE_SIZE) -> Image.Image:
    """ControlNet conditioning image: 1-px white shape edges on black, RGB."""
    return Image.fromarray(edge_map_array(scene, size), "RGB")


def sr_pair(scene: Scene, low: int = BASE_SIZE, factor: int = 4, outlined: bool = False) -> tuple[Image.Image, Image.Image]:
    """(low, high) images for a ``factor``x upsampler.

    ``high`` is the scene rendered at ``low * factor``; ``low`` is ``high``
    area-downsampled by ``factor`` (so the degradation is exactly a box filter).
    """
    high = render(scene, low * factor, outlined)
    return high.reduce(factor), high


def dataset(
    n: int,
    seed: int,
    size: int = BASE_SIZE,
    outlined: bool | float = False,
) -> tuple[np.ndarray, list[str], list[Scene]]:
    """``n`` scenes from ``seed``: (uint8 images (n, size, size, 3), captions, scenes).

    ``outlined`` may be a bool or a probability of drawing each scene outlined.
    The same (n, seed, size, outlined) always gives the same result, and the
    first k items of ``dataset(n, seed)`` equal ``dataset(k, seed)``.
    """
    rng = np.random.default_rng(seed)
    images = np.empty((n, size, size, 3), np.uint8)
    captions: list[str] = []
    scenes: list[Scene] = []
    for i in range(n):
        scene = sample_scene(rng)
        style = rng.random()  # always drawn, so streams don't depend on `outlined`
        o = bool(outlined) if isinstance(outlined, bool) else bool(style < float(outlined))
        images[i] = render_array(scene, size, o)
        captions.append(caption(scene, o))
        scenes.append(scene)
    return images, captions, scenes


def grid(images: Sequence[Image.Image | np.ndarray] | np.ndarray, cols: int = 8) -> Image.Image:
    """Tile a list/array of equally sized RGB images (PIL or uint8 arrays) into one image."""
    arrs = [np.asarray(im.convert("RGB") if isinstance(im, Image.Image) else im) for im in images]
    h, w = arrs[0].shape[:2]
    rows = (len(arrs) + cols - 1) // cols
    out = np.zeros((rows * (h + 2), cols * (w + 2), 3), np.uint8)
    out[:] = 128
    for i, a in enumerate(arrs):
        r, c = divmod(i, cols)
        out[r * (h + 2) + 1 : r * (h + 2) + 1 + h, c * (w + 2) + 1 : c * (w + 2) + 1 + w] = a
    return Image.fromarray(out)
