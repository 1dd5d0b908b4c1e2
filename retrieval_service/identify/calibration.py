"""How sure an answer is, whether the artwork is in the gallery at all, and when a stage of
the cascade may answer without the next.

Verified answers: RANSAC inliers on the top match separate "same picture" from "similar
picture" far better than cosine similarity; the threshold and a logistic confidence curve
are fitted on open-set queries. Early answers (embedding, views): a stage answers when its
top match's similarity and lead over the runner-up reach thresholds chosen so that such
answers were wrong in at most MAX_EARLY_ERROR of the calibration queries; their confidence is
the precision measured there. All of it is fitted by `whatart evaluate --calibrate` and
stored with the index version it was measured on.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

from whatart.retrieval_service.identify.answer import EMBEDDING, VIEWS, StageEvidence

CALIBRATION_FILE = "calibration.json"
DEFAULT_SLOPE = 4.0
"""Uncalibrated: confidence 0.5 at the threshold, 0.92 at twice it (on log(1 + inliers))."""
MAX_EARLY_ERROR = 0.005
EARLY_STAGES = (EMBEDDING, VIEWS)


@dataclass(frozen=True)
class EarlyAnswer:
    """A stage before verification answers when its top match reaches `min_similarity` and
    leads the runner-up by `min_margin`; `precision`: the share of such answers that were
    right where this was measured (the confidence given with them)."""

    min_similarity: float
    min_margin: float
    precision: float

    def certain(self, evidence: StageEvidence) -> bool:
        return evidence.top >= self.min_similarity and evidence.top - evidence.runner_up >= self.min_margin


NEVER = EarlyAnswer(2.0, 2.0, 0.0)
"""A stage that never answers early (no similarity reaches 2)."""


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
    early: dict[str, EarlyAnswer] = field(default_factory=dict)
    """stage (EARLY_STAGES) -> when it may answer; a stage missing here never does."""

    @classmethod
    def default(cls, min_inliers: int, early: EarlyAnswer = NEVER) -> Calibration:
        """Uncalibrated: `early` for every stage before verification (none by default)."""
        return cls(min_inliers, DEFAULT_SLOPE, -DEFAULT_SLOPE * math.log1p(min_inliers - 0.5), "default (not calibrated)",
                   dict.fromkeys(EARLY_STAGES, early))

    def early_answer(self, stage: str) -> EarlyAnswer:
        return self.early.get(stage, NEVER)

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
    def load(cls, directory: Path, default_min_inliers: int, default_early: EarlyAnswer = NEVER) -> Calibration:
        """The stored calibration; a file from before the cascade (no early answers) keeps
        its inlier calibration and gets the default early thresholds."""
        path = directory / CALIBRATION_FILE
        if not path.exists():
            return cls.default(default_min_inliers, default_early)
        data = json.loads(path.read_text())
        if "early" not in data:
            data["early"] = dict.fromkeys(EARLY_STAGES, asdict(default_early))
            data["source"] += "; early answers: default (not calibrated)"
        data["early"] = {stage: EarlyAnswer(**values) for stage, values in data["early"].items()}
        return cls(**data)
