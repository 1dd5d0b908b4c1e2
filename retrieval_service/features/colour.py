"""Colour statistics: what still tells apart photos with too little texture to verify.

A blurred photo of a near-monochrome painting (colour fields, minimalism) gives ORB nothing
to match, and the CNN embedding ranks dozens of similar canvases close together. Their
colours differ: the mean and spread of CIELAB over the picture, ignoring the black fill of
a rotated photo, survive rotation and blur. Measured on the benchmark gallery (docs/accuracy.md):
among the global top 200 of the 27 `seed` queries with under 50 keypoints, ranking by
colour and similarity together put 19 paintings first, similarity alone 11.
"""

from __future__ import annotations

import cv2
import numpy as np

SIDE = 128
SIGNATURE_SIZE = 6
"""L, a, b means, then their standard deviations"""


def signature(rgb: np.ndarray, content: np.ndarray) -> np.ndarray:
    """float32 [6] of uint8 RGB pixels [h, w, 3], over the pixels where `content` is non-zero."""
    small = cv2.resize(rgb, (SIDE, SIDE), interpolation=cv2.INTER_AREA)
    keep = cv2.resize(content, (SIDE, SIDE), interpolation=cv2.INTER_NEAREST).ravel() > 0
    lab = cv2.cvtColor(small, cv2.COLOR_RGB2LAB).reshape(-1, 3).astype(np.float32)
    pixels = lab[keep] if keep.any() else lab
    return np.concatenate([pixels.mean(axis=0), pixels.std(axis=0)]).astype(np.float32)


SIMILARITY_WEIGHT = 40.0
"""Signature distance (CIELAB units) that one unit of global cosine similarity is worth when
both rank a shortlist. Measured on the 27 `seed` queries with under 50 keypoints: colour
alone put 17 first, colour - w x similarity 19-20 for w from 20 to 80, similarity alone 11."""


def distances(query: np.ndarray, candidates: np.ndarray) -> np.ndarray:
    """Euclidean distance between the query's signature and each candidate's [n, 6]."""
    return np.linalg.norm(candidates - query, axis=1)


def ranking_keys(query: np.ndarray, candidates: np.ndarray, similarities: np.ndarray) -> np.ndarray:
    """Lower is better: colour distance, less what the global similarity vouches for."""
    return distances(query, candidates) - SIMILARITY_WEIGHT * similarities
