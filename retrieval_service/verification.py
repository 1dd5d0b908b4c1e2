"""Geometric verification: do the photo and a candidate show the same picture?

Local features (ORB keypoints) are matched with a ratio test and a RANSAC homography; the
number of inliers is a far sharper "same artwork" signal than global cosine similarity, so
it re-ranks the shortlist and decides "not in the gallery". Gallery features are extracted
once at ingest and stored with the index (see gallery.py). ORB was chosen over SIFT and
AKAZE by measurement (README): the best re-ranked top-1 on both protocols, at 1-4 ms per
image instead of 15-50 ms on this CPU.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np
from PIL import Image

from whatart.retrieval_service import colour as colour_signature

RATIO = 0.8
RANSAC_REPROJECTION_PX = 6.0
MIN_MATCHES = 5
MIN_INLIER_COVERAGE = 0.05
MAX_SCALE_CHANGE = 8.0
MAX_PERSPECTIVE = 0.005
"""per pixel of the photo (<= 512 px): about a 2.5x foreshortening across it at most"""


@dataclass(frozen=True)
class LocalFeatures:
    points: np.ndarray
    """float32 [n, 2] keypoint positions"""
    descriptors: np.ndarray | None
    """uint8 [n, 32] ORB descriptors (None when the image has no texture)"""
    colour: np.ndarray = field(default_factory=lambda: np.zeros(colour_signature.SIGNATURE_SIZE, np.float32))
    """float32 [6] colour statistics (colour.py), for images with too few keypoints to verify"""

    def __len__(self) -> int:
        return len(self.points)


class FeatureExtractor:
    """ORB on a grey image scaled to at most `max_side` pixels. OpenCV objects are not
    thread-safe, so each call creates its own detector (cheap)."""

    def __init__(self, max_side: int = 512, n_features: int = 500) -> None:
        self.max_side = max_side
        self.n_features = n_features

    @property
    def description(self) -> str:
        """Pins how features are extracted: an index whose stored features were extracted
        differently cannot be verified against (the index manifest records this)."""
        return (f"orb n={self.n_features} side={self.max_side} fast={list(FAST_THRESHOLDS)}>={ENOUGH_KEYPOINTS} "
                f"fill<={FILL_LEVEL}+{FILL_MARGIN_PX}px colour=lab6@{colour_signature.SIDE}")

    def extract(self, image: Image.Image) -> LocalFeatures:
        rgb = image.convert("RGB")
        scale = self.max_side / max(rgb.size)
        if scale < 1:
            rgb = rgb.resize((max(1, round(rgb.width * scale)), max(1, round(rgb.height * scale))), Image.Resampling.BILINEAR)
        colours = np.asarray(rgb)
        pixels = cv2.cvtColor(colours, cv2.COLOR_RGB2GRAY)
        mask = _content_mask(pixels)
        # Low-contrast paintings (minimalism, washes) give few corners at the usual FAST
        # threshold: lower it until there are enough to verify with.
        for threshold in FAST_THRESHOLDS:
            detector = cv2.ORB_create(nfeatures=self.n_features, scaleFactor=1.2, nlevels=6, fastThreshold=threshold)
            keypoints, descriptors = detector.detectAndCompute(pixels, mask)
            if len(keypoints) >= ENOUGH_KEYPOINTS:
                break
        return LocalFeatures(np.float32([k.pt for k in keypoints]).reshape(-1, 2), descriptors,
                             colour_signature.signature(colours, mask))


FAST_THRESHOLDS = (10, 5, 2)
ENOUGH_KEYPOINTS = 150
FILL_LEVEL = 12
FILL_MARGIN_PX = 7


def _content_mask(grey: np.ndarray) -> np.ndarray:
    """255 where keypoints may be detected: everywhere except near-black areas touching the
    border (the fill of a rotated photo, the corners of an octagonal canvas). Their straight
    edges match each other across unrelated images and would fake a verification."""
    dark = (grey <= FILL_LEVEL).astype(np.uint8)
    count, labels = cv2.connectedComponents(dark, connectivity=4)
    if count <= 1:
        return np.full_like(grey, 255)
    border = np.unique(np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]]))
    fill = np.isin(labels, border[border > 0]).astype(np.uint8)
    kernel = np.ones((2 * FILL_MARGIN_PX + 1, 2 * FILL_MARGIN_PX + 1), np.uint8)
    return np.where(cv2.dilate(fill, kernel) > 0, 0, 255).astype(np.uint8)


def count_inliers(query: LocalFeatures, candidate: LocalFeatures) -> int:
    """RANSAC homography inliers among ratio-test matches (0 when too few to fit one)."""
    if query.descriptors is None or candidate.descriptors is None:
        return 0
    if len(query.descriptors) < MIN_MATCHES or len(candidate.descriptors) < 2:
        return 0
    pairs = cv2.BFMatcher(cv2.NORM_HAMMING).knnMatch(query.descriptors, candidate.descriptors, k=2)
    good = [m for m, n in (p for p in pairs if len(p) == 2) if m.distance < RATIO * n.distance]
    if len(good) < MIN_MATCHES:
        return 0
    source = query.points[[m.queryIdx for m in good]]
    target = candidate.points[[m.trainIdx for m in good]]
    homography, mask = cv2.findHomography(source, target, cv2.RANSAC, RANSAC_REPROJECTION_PX)
    if homography is None or not _plausible(homography):
        return 0
    inliers = target[mask.ravel() > 0]
    # Inliers strung along a line (a frame edge, a horizon) fit a homography without the
    # pictures being the same: ask them to cover part of the candidate's textured area.
    # (The candidate's, not the photo's: a photo's keypoints also cover its wall and frame.)
    if _hull_area(inliers) < MIN_INLIER_COVERAGE * _hull_area(candidate.points):
        return 0
    return len(inliers)


def _plausible(homography: np.ndarray) -> bool:
    """Could a camera have produced this mapping? No mirror image, a scale change within
    MAX_SCALE_CHANGE, mild perspective. Spurious consensus (repeated blobs, stripes) tends to
    give degenerate mappings that fail this."""
    scale = float(np.linalg.det(homography[:2, :2]))
    perspective = max(abs(homography[2, 0]), abs(homography[2, 1]))
    return 1 / MAX_SCALE_CHANGE**2 < scale < MAX_SCALE_CHANGE**2 and perspective < MAX_PERSPECTIVE


def _hull_area(points: np.ndarray) -> float:
    return float(cv2.contourArea(cv2.convexHull(points.astype(np.float32)))) if len(points) >= 3 else 0.0
