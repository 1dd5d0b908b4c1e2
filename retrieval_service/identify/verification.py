"""Geometric verification: do the photo and a candidate show the same picture?

Local features (ORB keypoints) are matched with a ratio test and a robust (MAGSAC++) homography; the
number of inliers is a far sharper "same artwork" signal than global cosine similarity, so
it re-ranks the shortlist and decides "not in the gallery". Gallery features are extracted
once at ingest and stored with the index (index/publish.py). ORB was chosen over SIFT and
AKAZE by measurement (docs/accuracy.md): the best re-ranked top-1 on both protocols, at 1-4 ms per
image instead of 15-50 ms on this CPU.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
from whatart.retrieval_service.features.local_features import LocalFeatures

RATIO = 0.8
ROBUST_ESTIMATOR = cv2.USAC_MAGSAC
"""Measured against cv2.RANSAC on 60 photo-protocol queries (docs/accuracy.md): the same 58 verified at
20 inliers, no wrong pair above 8, and 1.8 ms instead of 4.3 ms on a wrong pair (the common
case in a shortlist)."""
RANSAC_REPROJECTION_PX = 6.0
MIN_MATCHES = 5
MIN_INLIER_COVERAGE = 0.05
MAX_SCALE_CHANGE = 8.0
MAX_PERSPECTIVE = 0.005
"""per pixel of the photo (<= 512 px): about a 2.5x foreshortening across it at most"""


@dataclass(frozen=True)
class GeometricMatch:
    """What verification kept: the inliers and the homography they agree on."""

    inliers: int
    photo_to_gallery: np.ndarray | None
    """3x3, from the photo's feature frame to the candidate's; None when nothing verified"""
    pairs: np.ndarray
    """float32 [inliers, 4]: photo x, y and gallery x, y of each kept correspondence (feature frames)"""


NO_MATCH = GeometricMatch(0, None, np.zeros((0, 4), np.float32))


def count_inliers(query: LocalFeatures, candidate: LocalFeatures) -> int:
    """MAGSAC++ homography inliers among ratio-test matches (0 when too few to fit one)."""
    return geometric_match(query, candidate).inliers


def geometric_match(query: LocalFeatures, candidate: LocalFeatures) -> GeometricMatch:
    """count_inliers with its homography and kept correspondences."""
    if query.descriptors is None or candidate.descriptors is None:
        return NO_MATCH
    if len(query.descriptors) < MIN_MATCHES or len(candidate.descriptors) < 2:
        return NO_MATCH
    pairs = cv2.BFMatcher(cv2.NORM_HAMMING).knnMatch(query.descriptors, candidate.descriptors, k=2)
    good = [m for m, n in (p for p in pairs if len(p) == 2) if m.distance < RATIO * n.distance]
    if len(good) < MIN_MATCHES:
        return NO_MATCH
    source = query.points[[m.queryIdx for m in good]]
    target = candidate.points[[m.trainIdx for m in good]]
    homography, mask = cv2.findHomography(source, target, ROBUST_ESTIMATOR, RANSAC_REPROJECTION_PX)
    if homography is None or not _plausible(homography):
        return NO_MATCH
    kept = mask.ravel() > 0
    inliers = target[kept]
    # Inliers strung along a line (a frame edge, a horizon) fit a homography without the
    # pictures being the same: ask them to cover part of the candidate's textured area.
    # (The candidate's, not the photo's: a photo's keypoints also cover its wall and frame.)
    if _hull_area(inliers) < MIN_INLIER_COVERAGE * _hull_area(candidate.points):
        return NO_MATCH
    return GeometricMatch(len(inliers), homography, np.hstack([source[kept], inliers]).astype(np.float32))


def _plausible(homography: np.ndarray) -> bool:
    """Could a camera have produced this mapping? No mirror image, a scale change within
    MAX_SCALE_CHANGE, mild perspective. Spurious consensus (repeated blobs, stripes) tends to
    give degenerate mappings that fail this."""
    scale = float(np.linalg.det(homography[:2, :2]))
    perspective = max(abs(homography[2, 0]), abs(homography[2, 1]))
    return 1 / MAX_SCALE_CHANGE**2 < scale < MAX_SCALE_CHANGE**2 and perspective < MAX_PERSPECTIVE


def _hull_area(points: np.ndarray) -> float:
    return float(cv2.contourArea(cv2.convexHull(points.astype(np.float32)))) if len(points) >= 3 else 0.0
