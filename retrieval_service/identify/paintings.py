"""Every painting in the photo: locate the one identified, then look for the others.

The photo's identification (the cascade) names one painting. Its top match is verified
against the photo (one homography, ~1 ms), and the gallery image's outline mapped into the
photo locates it. Other paintings are proposed where the photo is textured (`proposals`:
paintings are islands in blank wall) and beside each painting found (the strips left, right,
above and below it, its frame left out, that hold enough keypoints). Each proposal is
identified on its own, and a painting found there is kept only when it is not one already
found and either its top match verifies there to the calibrated "in the gallery" standard or
its cascade answered early (calibrated) while the proposal is too small to verify. Blank wall
yields no proposal, and anything else must pass those standards: a photo of one painting
does not gain phantoms.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace

import cv2
import numpy as np
from PIL import Image
from whatart.retrieval_service.features.local_features import LocalFeatures
from whatart.retrieval_service.identify.answer import VERIFIED, Candidate, Explanation, Painting, Point
from whatart.retrieval_service.identify.calibration import Calibration
from whatart.retrieval_service.identify.verification import geometric_match
from whatart.retrieval_service.images import MIN_SIDE
from whatart.retrieval_service.index.gallery import Gallery

MAX_PAINTINGS = 4
FRAME_MARGIN = 0.08
"""left out around a found painting, as a fraction of its size: its frame (2-6 % in photos)"""
MIN_STRIP_AREA = 0.08
"""a strip smaller than this fraction of the photo holds no painting worth naming"""
MIN_STRIP_KEYPOINTS = 40
"""of the photo's (up to 500): fewer, and the strip is wall"""
TEXTURE_SIDE = 320
"""the side of the grey copy textured parts are found on"""
TEXTURE_FLOOR = 4.0
DISTINCT_IOU = 0.6
"""proposals overlapping more than this are one"""
FILLS_PHOTO = 0.5
"""a painting covering this much of the photo leaves no room for another"""
CLUSTER_FOUND_OVERLAP = 0.5
"""a proposal mostly inside a painting already found is that painting"""
Box = tuple[float, float, float, float]


@dataclass(frozen=True)
class Located:
    """One image's identification (the photo's or a strip's) and its local features."""

    stage: str
    candidates: list[Candidate]
    in_gallery: bool
    confidence: float
    features: LocalFeatures
    size: tuple[int, int]
    """the identified image's size (decoded pixels), which the features were scaled from"""


IdentifyImage = Callable[[Image.Image], Awaitable[Located]]


Quad = tuple[Point, Point, Point, Point]


def corners(box: Box) -> Quad:
    """A box's corners, clockwise from top left (a region)."""
    left, top, right, bottom = box
    return (left, top), (right, top), (right, bottom), (left, bottom)


def whole_photo(size: tuple[float, float]) -> Quad:
    return corners((0.0, 0.0, float(size[0]), float(size[1])))


def feature_scale(size: tuple[int, int], max_side: int) -> float:
    """Image pixels per feature-frame pixel (features are extracted at <= max_side)."""
    return max(size) / max_side if max(size) > max_side else 1.0


def gallery_frame(image_path: str, features: LocalFeatures, max_side: int) -> tuple[tuple[float, float], float]:
    """The size of the frame an artwork's stored features are in (its image scaled to
    max_side, from the image's header) and the image's pixels per frame pixel; its keypoints'
    extent, and 1, when the image is gone."""
    try:
        with Image.open(image_path) as image:
            width, height = image.size
    except (OSError, ValueError):
        extent = (float(features.points[:, 0].max()), float(features.points[:, 1].max())) if len(features) else (1.0, 1.0)
        return extent, 1.0
    scale = feature_scale((width, height), max_side)
    return (width / scale, height / scale), scale


class PaintingFinder:
    def __init__(self, gallery: Gallery, calibration: Calibration, max_side: int) -> None:
        self.gallery, self.calibration, self.max_side = gallery, calibration, max_side

    def locate(self, found: Located, offset: Point, zoom: float = 1.0) -> tuple[Quad, Explanation] | None:
        """The top match's outline in the photo's pixels (the image found at `offset` in it,
        enlarged `zoom` times) and what located it, when it verifies as in the gallery; else None."""
        if not found.candidates:
            return None
        top = found.candidates[0]
        stored = self.gallery.local_features(top.row_id)
        match = geometric_match(found.features, stored)
        if match.photo_to_gallery is None or not self.calibration.in_gallery(match.inliers):
            return None
        (width, height), gallery_scale = gallery_frame(top.artwork.image_path, stored, self.max_side)
        outline = np.float32(whole_photo((width, height))).reshape(-1, 1, 2)  # the gallery image's, in its feature frame
        in_features = cv2.perspectiveTransform(outline, np.linalg.inv(match.photo_to_gallery)).reshape(-1, 2)
        scale = feature_scale(found.size, self.max_side) / zoom
        quad = tuple((float(x * scale + offset[0]), float(y * scale + offset[1])) for x, y in in_features)
        frame = np.float32(whole_photo(found.size)) / feature_scale(found.size, self.max_side)
        seen = cv2.perspectiveTransform(frame.reshape(-1, 1, 2), match.photo_to_gallery).reshape(-1, 2) * gallery_scale
        pairs = [(float(x * scale + offset[0]), float(y * scale + offset[1]), float(gx * gallery_scale), float(gy * gallery_scale))
                 for x, y, gx, gy in match.pairs]
        return quad, Explanation(pairs, tuple((float(x), float(y)) for x, y in seen))  # type: ignore[return-value, arg-type]

    async def find(self, photo: Image.Image, first: Located, identify: IdentifyImage) -> list[Painting]:
        """Every painting in `photo` (decoded pixels), largest first; `first` is the whole
        photo's identification."""
        located = self.locate(first, (0.0, 0.0))
        points = first.features.points * feature_scale(first.size, self.max_side)
        paintings: list[Painting] = []
        if located is not None:
            paintings.append(Painting(located[0], first.candidates, first.in_gallery, first.confidence, first.stage, located[1]))
            if _overlap(_bounds(whole_photo(photo.size)), located[0]) >= FILLS_PHOTO:
                return paintings  # no room for another painting worth naming
        for proposal in proposals(photo):
            if any(_overlap(proposal, painting.region) > CLUSTER_FOUND_OVERLAP for painting in paintings):
                continue  # mostly a painting already found
            around = [painting for painting in paintings if _contains(proposal, painting.region)]
            if around:  # a painting found and its surroundings: look only beside it
                await self._beside(photo, proposal, around[0].region, points, identify, paintings)
            else:
                await self._add(photo, proposal, points, identify, paintings)
        if not paintings:
            return [Painting(whole_photo(photo.size), first.candidates, first.in_gallery, first.confidence, first.stage)]
        return sorted(paintings, key=lambda painting: -painting.area)

    async def _add(self, photo: Image.Image, box: Box, points: np.ndarray, identify: IdentifyImage,
                   paintings: list[Painting]) -> None:
        """Identify the `box` part of the photo; keep a new painting that locates there, then
        search beside it."""
        if len(paintings) >= MAX_PAINTINGS:
            return
        left, top, right, bottom = (int(round(v)) for v in box)
        crop = photo.crop((left, top, right, bottom))
        zoom = max(1.0, self.max_side / max(crop.size))  # a small painting gets as many keypoints as a photo of one
        if zoom > 1:
            crop = crop.resize((round(crop.width * zoom), round(crop.height * zoom)), Image.Resampling.BICUBIC)
        found = await identify(crop)
        known = {painting.matches[0].artwork.id for painting in paintings if painting.matches}
        if not found.candidates or found.candidates[0].artwork.id in known:
            return
        located = self.locate(found, (float(left), float(top)), zoom)
        if located is not None:
            region, explanation = located
        elif found.stage != VERIFIED and found.in_gallery:  # certain by its embedding (calibrated) though too small to verify
            region, explanation = corners(box), None
        else:
            return
        paintings.append(Painting(region, found.candidates, True, found.confidence, found.stage, explanation))
        await self._beside(photo, box, region, points, identify, paintings)

    async def _beside(self, photo: Image.Image, area: Box, region: tuple[Point, ...], points: np.ndarray,
                      identify: IdentifyImage, paintings: list[Painting]) -> None:
        """Search the strips of `area` beside `region` for more paintings (recursively)."""
        for strip in self._strips(photo, area, region, points):
            await self._add(photo, strip, points, identify, paintings)

    def _strips(self, photo: Image.Image, area: Box, region: tuple[Point, ...], points: np.ndarray) -> list[Box]:
        """The parts of `area` left, right, above and below `region` (its frame left out) that
        are large and textured enough to hold a painting, largest first."""
        x0, y0, x1, y1 = _bounds(region)
        margin_x, margin_y = FRAME_MARGIN * (x1 - x0), FRAME_MARGIN * (y1 - y0)
        x0, y0, x1, y1 = x0 - margin_x, y0 - margin_y, x1 + margin_x, y1 + margin_y
        left, top, right, bottom = area
        strips = [(left, top, min(x0, right), bottom), (max(x1, left), top, right, bottom),
                  (left, top, right, min(y0, bottom)), (left, max(y1, top), right, bottom)]
        kept = [box for box in strips if min(box[2] - box[0], box[3] - box[1]) >= MIN_SIDE
                and _area(box) >= MIN_STRIP_AREA * photo.width * photo.height and _keypoints_in(points, box) >= MIN_STRIP_KEYPOINTS]
        return sorted(kept, key=_area, reverse=True)


def proposals(photo: Image.Image) -> list[Box]:
    """Textured islands in blank wall, the way paintings hang: local contrast of a small grey
    copy of the photo, split from the wall's at two levels (Otsu's, for walls with strong
    paintings; three times the flattest fifth's, for faint ones), opened, closed and split
    into connected parts; each distinct part's bounding box, largest first."""
    scale = TEXTURE_SIDE / max(photo.size)
    small = np.asarray(photo.convert("L").resize((max(1, round(photo.width * scale)), max(1, round(photo.height * scale)))),
                       dtype=np.float32)
    contrast = cv2.blur(np.abs(cv2.Laplacian(small, cv2.CV_32F)), (3, 3))
    otsu, _ = cv2.threshold(np.clip(contrast, 0, 255).astype(np.uint8), 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    boxes: list[Box] = []
    for level in (otsu, 3 * float(np.percentile(contrast, 20))):
        for box in _parts((contrast > max(TEXTURE_FLOOR, level)).astype(np.uint8)):
            scaled = (box[0] / scale, box[1] / scale, box[2] / scale, box[3] / scale)
            if all(_iou(scaled, other) < DISTINCT_IOU for other in boxes):
                boxes.append(scaled)
    return sorted(boxes, key=_area, reverse=True)


def _parts(textured: np.ndarray) -> list[Box]:
    # opening first: the thin lines where the wall meets the photo's fill or a shadow would
    # join every painting into one part; then closing fills each painting's own flat patches
    opened = cv2.morphologyEx(textured, cv2.MORPH_OPEN, np.ones((3, 3), np.uint8))
    closed = cv2.morphologyEx(opened, cv2.MORPH_CLOSE, np.ones((5, 5), np.uint8))
    count, _, stats, _ = cv2.connectedComponentsWithStats(closed, connectivity=8)
    return [(float(left), float(top), float(left + width), float(top + height)) for left, top, width, height, area in stats[1:count]
            if width * height >= MIN_STRIP_AREA * closed.size and area >= 0.3 * width * height]


def _bounds(region: tuple[Point, ...]) -> Box:
    xs, ys = [x for x, _ in region], [y for _, y in region]
    return min(xs), min(ys), max(xs), max(ys)


def _area(box: Box) -> float:
    return (box[2] - box[0]) * (box[3] - box[1])


def _intersection(a: Box, b: Box) -> float:
    return max(0.0, min(a[2], b[2]) - max(a[0], b[0])) * max(0.0, min(a[3], b[3]) - max(a[1], b[1]))


def _contains(box: Box, region: tuple[Point, ...]) -> bool:
    """Whether `box` holds (nine tenths of) the bounding box of `region`."""
    inner = _bounds(region)
    return _intersection(box, inner) >= 0.9 * _area(inner)


def _iou(a: Box, b: Box) -> float:
    inter = _intersection(a, b)
    return inter / (_area(a) + _area(b) - inter)


def _overlap(box: Box, region: tuple[Point, ...]) -> float:
    """The fraction of `box` inside the bounding box of `region`."""
    return _intersection(box, _bounds(region)) / max(_area(box), 1.0)


def _keypoints_in(points: np.ndarray, box: Box) -> int:
    return int(((points[:, 0] >= box[0]) & (points[:, 0] < box[2]) & (points[:, 1] >= box[1]) & (points[:, 1] < box[3])).sum())


def in_upload_pixels(paintings: list[Painting], scale: float) -> list[Painting]:
    """Regions in the uploaded photo's pixels (the photo may have been decoded smaller)."""
    return [replace(p, region=tuple((x * scale, y * scale) for x, y in p.region),  # type: ignore[arg-type]
                    explanation=p.explanation.scaled(scale) if p.explanation else None) for p in paintings]
