"""How sure an answer is, and whether the artwork is in the gallery at all.

Both come from the geometric verification of the top match (RANSAC inliers), which
separates "same picture" from "similar picture" far better than cosine similarity. The
threshold and a logistic confidence curve are fitted by `whatart evaluate --protocol
open-set --calibrate` and stored with the index version they were measured on.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path

CALIBRATION_FILE = "calibration.json"
DEFAULT_SLOPE = 4.0
"""Uncalibrated: confidence 0.5 at the threshold, 0.92 at twice it (on log(1 + inliers))."""


@dataclass(frozen=True)
class Calibration:
    min_inliers: int
    """At least this many inliers on the top match: the artwork is in the gallery."""
    slope: float
    intercept: float
    """confidence = logistic(slope * log(1 + inliers) + intercept): inliers matter by ratio,
    not difference (60 against 30 is no surer than 30 against 15)"""
    source: str
    """Where the numbers come from (a measurement, or 'default')."""

    @classmethod
    def default(cls, min_inliers: int) -> Calibration:
        return cls(min_inliers, DEFAULT_SLOPE, -DEFAULT_SLOPE * math.log1p(min_inliers - 0.5), "default (not calibrated)")

    def in_gallery(self, inliers: int) -> bool:
        return inliers >= self.min_inliers

    def confidence(self, inliers: int) -> float:
        """Estimated probability that the top match is the right artwork."""
        return 1.0 / (1.0 + math.exp(-(self.slope * math.log1p(inliers) + self.intercept)))

    def save(self, directory: Path) -> Path:
        path = directory / CALIBRATION_FILE
        temporary = path.with_suffix(".tmp")
        temporary.write_text(json.dumps(asdict(self), indent=2))
        temporary.replace(path)
        return path

    @classmethod
    def load(cls, directory: Path, default_min_inliers: int) -> Calibration:
        path = directory / CALIBRATION_FILE
        if not path.exists():
            return cls.default(default_min_inliers)
        return cls(**json.loads(path.read_text()))
