"""The pictures of `whatart ui`, drawn with PIL: the photo with each painting found outlined
and numbered, and each painting's part of the photo beside its gallery image, the
correspondences that verification kept drawn as lines between them."""

from __future__ import annotations

import io
from collections.abc import Sequence

from PIL import Image, ImageDraw, ImageFont, ImageOps

Point = tuple[float, float]

PALETTE = ((255, 0, 170), (0, 190, 255), (255, 150, 0), (60, 220, 0))
"""the outline (and lines) colour of painting 1, 2, ...: saturated, rare in paintings"""
PHOTO_SIDE = 1280
"""the annotated photo's longest side at most, in pixels"""
EVIDENCE_HEIGHT = 420
GAP = 32
"""white between the photo and the gallery image, crossed by every line"""
MAX_LINES = 80


def colour(number: int) -> tuple[int, int, int]:
    return PALETTE[(number - 1) % len(PALETTE)]


def open_photo(data: bytes) -> Image.Image:
    """The uploaded photo upright (its EXIF orientation applied), as RGB: the pixels the
    service's coordinates refer to."""
    return ImageOps.exif_transpose(Image.open(io.BytesIO(data))).convert("RGB")


def clip(polygon: Sequence[Point], width: float, height: float) -> list[Point]:
    """`polygon` clipped to the rectangle (0, 0)-(width, height) (Sutherland-Hodgman)."""
    points = [(float(x), float(y)) for x, y in polygon]
    for axis, bound, sign in ((0, 0.0, 1), (0, width, -1), (1, 0.0, 1), (1, height, -1)):
        clipped: list[Point] = []
        for i, current in enumerate(points):
            previous = points[i - 1]
            inside = sign * (current[axis] - bound) >= 0
            if inside != (sign * (previous[axis] - bound) >= 0):
                t = (bound - previous[axis]) / (current[axis] - previous[axis])
                clipped.append((previous[0] + t * (current[0] - previous[0]), previous[1] + t * (current[1] - previous[1])))
            if inside:
                clipped.append(current)
        points = clipped
        if not points:
            break
    return points


def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size)
    except (OSError, TypeError):  # Pillow without FreeType: the small bitmap font
        return ImageFont.load_default()


def annotate(photo: Image.Image, regions: Sequence[Sequence[Point]]) -> Image.Image:
    """The photo (at most PHOTO_SIDE) with region n outlined in colour(n), numbered n."""
    scale = min(1.0, PHOTO_SIDE / max(photo.size))
    image = photo.resize((max(1, round(photo.width * scale)), max(1, round(photo.height * scale)))) if scale < 1 else photo.copy()
    draw = ImageDraw.Draw(image)
    width = max(3, round(max(image.size) / 200))
    radius = max(12, round(max(image.size) / 40))
    for number, region in enumerate(regions, start=1):
        polygon = clip([(x * scale, y * scale) for x, y in region], image.width, image.height)
        if len(polygon) < 3:
            continue
        draw.line([*polygon, polygon[0]], fill=colour(number), width=width, joint="curve")
        xs, ys = zip(*polygon, strict=True)  # the number inside the top-left corner of its outline
        cx = min(max(min(xs) + radius + width, radius), image.width - radius)
        cy = min(max(min(ys) + radius + width, radius), image.height - radius)
        draw.ellipse((cx - radius, cy - radius, cx + radius, cy + radius), fill=colour(number), outline="white", width=2)
        draw.text((cx, cy), str(number), fill="black", font=_font(round(radius * 1.3)), anchor="mm")
    return image


def _fit(image: Image.Image, height: int) -> tuple[Image.Image, float]:
    """`image` scaled to `height` (and at most twice as wide as high), and the scale."""
    scale = min(height / image.height, 2 * height / image.width)
    return image.resize((max(1, round(image.width * scale)), max(1, round(image.height * scale)))), scale


def side_by_side(photo: Image.Image, painting: dict, gallery: Image.Image | None, number: int) -> Image.Image:
    """The painting's part of the photo (all of it when it was not located) left, the gallery
    image right, each kept correspondence a line between the two in colour(number)."""
    explanation = painting.get("explanation") or {}
    left = (0.0, 0.0, float(photo.width), float(photo.height))
    polygon = clip(painting["region"], photo.width, photo.height) if explanation else []
    if len(polygon) >= 3:
        xs, ys = zip(*polygon, strict=True)
        margin = 0.05 * max(max(xs) - min(xs), max(ys) - min(ys))
        left = (max(0.0, min(xs) - margin), max(0.0, min(ys) - margin),
                min(float(photo.width), max(xs) + margin), min(float(photo.height), max(ys) + margin))
    crop, photo_scale = _fit(photo.crop(tuple(round(v) for v in left)), EVIDENCE_HEIGHT)
    if gallery is None:
        gallery = Image.new("RGB", (EVIDENCE_HEIGHT * 3 // 4, EVIDENCE_HEIGHT), (200, 200, 200))
        pairs = []
    else:
        pairs = explanation.get("pairs") or []
    shown, gallery_scale = _fit(gallery.convert("RGB"), EVIDENCE_HEIGHT)
    canvas = Image.new("RGB", (crop.width + GAP + shown.width, max(crop.height, shown.height)), "white")
    top_left, top_right = (canvas.height - crop.height) // 2, (canvas.height - shown.height) // 2
    canvas.paste(crop, (0, top_left))
    canvas.paste(shown, (crop.width + GAP, top_right))
    draw = ImageDraw.Draw(canvas)
    step = max(1, -(-len(pairs) // MAX_LINES))
    for x, y, gx, gy in pairs[::step]:
        start = ((x - left[0]) * photo_scale, (y - left[1]) * photo_scale + top_left)
        end = (crop.width + GAP + gx * gallery_scale, gy * gallery_scale + top_right)
        draw.line([start, end], fill=colour(number), width=2)
        for px, py in (start, end):
            draw.ellipse((px - 3, py - 3, px + 3, py + 3), fill=colour(number))
    return canvas
