"""What an identification answers: ranked candidates, whether the artwork is in the gallery,
how sure that is, which stage of the cascade decided, and the heads' style/genre predictions."""

from __future__ import annotations

from dataclasses import dataclass, field
from urllib.parse import quote

from whatart.retrieval_service.index.metadata import Artwork

EMBEDDING, VIEWS, VERIFIED = "embedding", "views", "verified"
DECIDING_STAGES = (EMBEDDING, VIEWS, VERIFIED)
"""The plain photo's embedding alone; with its centre crops; geometric verification."""


def image_url(artwork_id: str) -> str:
    return f"/v1/artworks/{quote(artwork_id, safe='')}/image"


@dataclass(frozen=True)
class StageEvidence:
    """A search stage's top match and the similarities that decide whether it may answer."""

    top_id: str | None
    top: float
    runner_up: float
    """the best similarity of another artwork (-1 when there is none)"""


@dataclass(frozen=True)
class Candidate:
    artwork: Artwork
    row_id: int
    score: float
    """best cosine similarity over the query and gallery views"""
    inliers: int | None = None
    """RANSAC inliers of the geometric verification; None when not verified"""

    def to_json(self) -> dict[str, object]:
        # float32 inner products of unit vectors can land a hair above 1.0
        return {
            **self.artwork.public(),
            "score": round(min(self.score, 1.0), 6),
            "inliers": self.inliers,
            "image_url": image_url(self.artwork.id),
        }


TOP_PREDICTIONS = 3


@dataclass(frozen=True)
class Prediction:
    label: str
    probability: float


Point = tuple[float, float]


@dataclass(frozen=True)
class Explanation:
    """Why a painting's top match: the correspondences verification kept, and where the photo's
    view of the painting falls in the gallery image."""

    pairs: list[tuple[float, float, float, float]]
    """photo x, y (uploaded pixels) and gallery x, y (the gallery image's pixels) of each kept match"""
    gallery_region: tuple[Point, Point, Point, Point]
    """the photo (or the part of it searched) mapped into the gallery image's pixels"""

    def scaled(self, photo_scale: float) -> Explanation:
        return Explanation([(x * photo_scale, y * photo_scale, gx, gy) for x, y, gx, gy in self.pairs], self.gallery_region)

    def to_json(self) -> dict[str, object]:
        return {"pairs": [[round(v, 1) for v in pair] for pair in self.pairs],
                "gallery_region": [[round(x, 1), round(y, 1)] for x, y in self.gallery_region]}


@dataclass(frozen=True)
class Painting:
    """One painting found in the photo (paintings.py): where, and what it is."""

    region: tuple[Point, Point, Point, Point]
    """its corners in the uploaded photo's pixels (clockwise from top left; the whole photo
    when no match located it), possibly beyond the photo where the painting is cut off"""
    matches: list[Candidate]
    in_gallery: bool
    confidence: float
    decided_by: str
    explanation: Explanation | None = None
    """for the top match when verification located it"""

    @property
    def area(self) -> float:
        xs, ys = zip(*self.region, strict=True)
        return 0.5 * abs(sum(xs[i] * ys[i - 1] - xs[i - 1] * ys[i] for i in range(4)))

    def to_json(self, explain: bool = False) -> dict[str, object]:
        answer: dict[str, object] = {
            "region": [[round(x, 1), round(y, 1)] for x, y in self.region], "matches": [m.to_json() for m in self.matches],
            "in_gallery": self.in_gallery, "confidence": round(self.confidence, 4), "decided_by": self.decided_by}
        if explain:
            answer["explanation"] = self.explanation.to_json() if self.explanation else None
        return answer


@dataclass(frozen=True)
class Identification:
    matches: list[Candidate]
    in_gallery: bool
    confidence: float
    model: str
    took_ms: float
    timings_ms: dict[str, float]
    decided_by: str
    """The stage whose answer this is (DECIDING_STAGES)."""
    predictions: dict[str, list[Prediction]] = field(default_factory=dict)
    """task (style, genre) -> most probable labels, from the model's heads (any image)"""
    evidence: dict[str, StageEvidence] = field(default_factory=dict)
    """What each stage that ran saw (its top two similarities), for calibration; not sent."""
    paintings: list[Painting] = field(default_factory=list)
    """every painting found, largest first; the first is the one `matches` etc. describe"""

    def to_json(self, explain: bool = False) -> dict[str, object]:
        """`explain`: each painting's explanation too (null where none was located)."""
        return {
            "matches": [m.to_json() for m in self.matches],
            "in_gallery": self.in_gallery,
            "confidence": round(self.confidence, 4),
            "predictions": {
                task: [{"label": p.label, "probability": round(p.probability, 4)} for p in ranked]
                for task, ranked in self.predictions.items()
            },
            "decided_by": self.decided_by,
            "model": self.model,
            "took_ms": self.took_ms,
            "timings_ms": self.timings_ms,
            "paintings": [painting.to_json(explain) for painting in self.paintings],
        }


def rerank(candidates: list[Candidate], min_inliers: int) -> list[Candidate]:
    """Verified matches first (most inliers first), then the rest by global similarity."""
    verified = sorted((c for c in candidates if (c.inliers or 0) >= min_inliers), key=lambda c: -(c.inliers or 0))
    rest = sorted((c for c in candidates if (c.inliers or 0) < min_inliers), key=lambda c: -c.score)
    return verified + rest
