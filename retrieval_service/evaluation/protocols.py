"""Query protocols: seeded distortions that turn a gallery image into a plausible query.

- ``seed``: the prior art's test: rotation theta ~ N(0, 20 deg) (black fill, no expansion),
  Gaussian blur sigma ~ |N(0, 2)| px, JPEG quality 90.
- ``photo``: a phone photo of the framed painting on a wall: crop keeping 75-100 % of the
  area, a 2-6 % frame, a wall-coloured margin of 5-25 %, perspective (each corner moved up
  to 12 % of the side), rotation N(0, 5 deg), brightness x U(0.7, 1.3), Gaussian noise
  sigma ~ U(0, 8), max side U(256, 640), JPEG quality U(40, 85).

Each query draws from its own generator seeded by (protocol seed, query index), so a query
is reproducible on its own, whatever else runs.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Sequence

import numpy as np
from PIL import Image, ImageFilter

WALL_COLOURS = ((236, 232, 222), (214, 205, 190), (190, 196, 200), (120, 130, 128), (238, 238, 238), (150, 40, 45))
FRAME_COLOURS = ((176, 141, 87), (95, 62, 36), (30, 30, 30), (212, 175, 55), (230, 230, 225))


def _jpeg(image: Image.Image, quality: int) -> bytes:
    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, "JPEG", quality=quality)
    return buffer.getvalue()


def seed_distortion(image: Image.Image, rng: np.random.Generator) -> tuple[Image.Image, int]:
    rotated = image.rotate(float(rng.normal(0, 20)), resample=Image.Resampling.BILINEAR, expand=False, fillcolor=(0, 0, 0))
    blurred = rotated.filter(ImageFilter.GaussianBlur(abs(float(rng.normal(0, 2)))))
    return blurred, 90


def _perspective_coefficients(source: list[tuple[float, float]], target: list[tuple[float, float]]) -> list[float]:
    """Coefficients for PIL's PERSPECTIVE transform mapping output (target) to input (source)."""
    rows = []
    for (x, y), (u, v) in zip(target, source, strict=True):
        rows.append([x, y, 1, 0, 0, 0, -u * x, -u * y])
        rows.append([0, 0, 0, x, y, 1, -v * x, -v * y])
    solution = np.linalg.solve(np.array(rows, dtype=np.float64), np.array(source, dtype=np.float64).reshape(8))
    return solution.tolist()


def photo_distortion(image: Image.Image, rng: np.random.Generator) -> tuple[Image.Image, int]:
    width, height = image.size
    # crop keeping 75-100 % of the area
    area = rng.uniform(0.75, 1.0)
    aspect = np.exp(rng.uniform(np.log(0.85), np.log(1 / 0.85)))
    crop_w = min(width, int(round(width * np.sqrt(area * aspect))))
    crop_h = min(height, int(round(height * np.sqrt(area / aspect))))
    left = int(rng.integers(0, width - crop_w + 1))
    top = int(rng.integers(0, height - crop_h + 1))
    painting = image.crop((left, top, left + crop_w, top + crop_h))
    # frame (2-6 % of the longer side) and wall margin (5-25 %)
    side = max(crop_w, crop_h)
    framed = _framed(painting, rng)
    margin = int(round(side * rng.uniform(0.05, 0.25)))
    wall = Image.new("RGB", (framed.width + 2 * margin, framed.height + 2 * margin), WALL_COLOURS[rng.integers(len(WALL_COLOURS))])
    wall.paste(framed, (margin, margin))
    return _photographed(wall, rng, corner_shift=0.12, rotation_sd=5.0, max_sides=(256, 640))


def _photographed(wall: Image.Image, rng: np.random.Generator, corner_shift: float, rotation_sd: float,
                  max_sides: tuple[float, float]) -> tuple[Image.Image, int]:
    """A wall as a phone sees it: perspective (each corner moved up to `corner_shift` of the
    side), a tilt, lighting, sensor noise, a resize and JPEG quality 40-85."""
    w, h = wall.size
    corners = [(0, 0), (w, 0), (w, h), (0, h)]
    moved = [(x + rng.uniform(-corner_shift, corner_shift) * w, y + rng.uniform(-corner_shift, corner_shift) * h) for x, y in corners]
    warped = wall.transform(
        (w, h), Image.Transform.PERSPECTIVE, _perspective_coefficients(corners, moved),
        resample=Image.Resampling.BILINEAR, fillcolor=WALL_COLOURS[rng.integers(len(WALL_COLOURS))],
    )
    rotated = warped.rotate(float(rng.normal(0, rotation_sd)), resample=Image.Resampling.BILINEAR, expand=False,
                            fillcolor=warped.getpixel((0, 0)))
    pixels = np.asarray(rotated, dtype=np.float32) * rng.uniform(0.7, 1.3)
    pixels += rng.normal(0, rng.uniform(0, 8), pixels.shape)
    lit = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
    scale = rng.uniform(*max_sides) / max(lit.size)
    resized = lit.resize((max(1, round(lit.width * scale)), max(1, round(lit.height * scale))), Image.Resampling.BILINEAR)
    return resized, int(rng.integers(40, 86))


def _framed(painting: Image.Image, rng: np.random.Generator) -> Image.Image:
    frame = max(1, int(round(max(painting.size) * rng.uniform(0.02, 0.06))))
    framed = Image.new("RGB", (painting.width + 2 * frame, painting.height + 2 * frame), FRAME_COLOURS[rng.integers(len(FRAME_COLOURS))])
    framed.paste(painting, (frame, frame))
    return framed


def wall_distortion(images: Sequence[Image.Image], rng: np.random.Generator) -> tuple[Image.Image, int]:
    """2-3 framed paintings hung side by side on one wall (heights within +-25 % of each
    other, gaps of 15-50 % of a painting's width), photographed as in `photo` with a milder
    perspective (8 %) and tilt (3 degrees), at 900-1600 px so each painting keeps about the
    pixels a one-painting photo gives it."""
    height = rng.uniform(260, 420)
    pieces = []
    for image in images:
        painting_height = height * rng.uniform(0.75, 1.25)
        width = painting_height * image.width / image.height
        pieces.append(_framed(image.resize((max(1, round(width)), max(1, round(painting_height))), Image.Resampling.BILINEAR), rng))
    gap = int(round(np.mean([piece.width for piece in pieces]) * rng.uniform(0.15, 0.5)))
    margin = int(round(height * rng.uniform(0.15, 0.4)))
    tallest = max(piece.height for piece in pieces)
    content = sum(p.width for p in pieces) + gap * (len(pieces) - 1)
    side_margin = max(margin, int(0.12 * content))  # the perspective must not push a painting out of the photo
    wall = Image.new("RGB", (content + 2 * side_margin, tallest + 2 * margin), WALL_COLOURS[rng.integers(len(WALL_COLOURS))])
    left = side_margin
    for piece in pieces:
        wall.paste(piece, (left, margin + (tallest - piece.height) // 2))
        left += piece.width + gap
    return _photographed(wall, rng, corner_shift=0.08, rotation_sd=3.0, max_sides=(900, 1600))


Distortion = Callable[[Image.Image, np.random.Generator], tuple[Image.Image, int]]
"""image, rng -> distorted image, JPEG quality"""

PROTOCOLS: dict[str, Distortion] = {
    "seed": seed_distortion,
    "photo": photo_distortion,
}


def make_query(protocol: str, image: Image.Image, seed: int, index: int) -> bytes:
    """The JPEG bytes of query `index` of `protocol` under `seed`."""
    rng = np.random.default_rng([seed, index, sum(map(ord, protocol))])
    distorted, quality = PROTOCOLS[protocol](image.convert("RGB"), rng)
    return _jpeg(distorted, quality)


def make_wall_query(images: Sequence[Image.Image], seed: int, index: int) -> bytes:
    """The JPEG bytes of wall query `index` under `seed`, showing `images` left to right."""
    rng = np.random.default_rng([seed, index, sum(map(ord, "wall"))])
    distorted, quality = wall_distortion([image.convert("RGB") for image in images], rng)
    return _jpeg(distorted, quality)
