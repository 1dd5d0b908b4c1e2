"""Run a protocol's queries through the service's own identification path and score them.

Queries go through `Identifier.identify` — decode, Triton, search, verification — exactly as
an HTTP upload does, minus the HTTP framing. Latency is measured per query.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm
from whatart.retrieval_service.evaluation.protocols import make_query
from whatart.retrieval_service.identify.answer import DECIDING_STAGES, VERIFIED, Identification
from whatart.retrieval_service.identify.identifier import Identifier
from whatart.retrieval_service.index.metadata import Artwork


@dataclass(frozen=True)
class Query:
    artwork: Artwork
    in_gallery: bool
    data: bytes


@dataclass(frozen=True)
class Outcome:
    query: Query
    answer: Identification
    latency_ms: float

    @property
    def rank(self) -> int | None:
        """1-based rank of the true artwork among the answer's matches (None: absent)."""
        ids = [m.artwork.id for m in self.answer.matches]
        return ids.index(self.query.artwork.id) + 1 if self.query.artwork.id in ids else None


RETRIEVAL_PROTOCOLS = ("seed", "photo")
"""the protocols whose queries are all of works in the gallery"""


def query_bytes(protocol: str, artworks: Sequence[Artwork], seed: int) -> Iterator[bytes]:
    """The protocol's query of each artwork, in order (query i is drawn with index i)."""
    for index, artwork in enumerate(artworks):
        with Image.open(artwork.image_path) as image:
            yield make_query(protocol, image, seed, index)


def make_queries(protocol: str, artworks: Sequence[Artwork], in_gallery: bool, seed: int) -> list[Query]:
    return [Query(artwork, in_gallery, data) for artwork, data in zip(artworks, query_bytes(protocol, artworks, seed), strict=True)]


def write_queries(protocol: str, artworks: Sequence[Artwork], seed: int, folder: Path) -> dict[str, str]:
    """The protocol's queries as JPEG files in `folder` (for clients that send files): path -> artwork id."""
    folder.mkdir(parents=True)
    expected = {}
    for number, (artwork, data) in enumerate(zip(artworks, query_bytes(protocol, artworks, seed), strict=True)):
        path = folder / f"{number:06d}.jpg"
        path.write_bytes(data)
        expected[str(path)] = artwork.id
    return expected


def sample(artworks: Sequence[Artwork], n: int, seed: int) -> list[Artwork]:
    rng = np.random.default_rng(seed)
    picks = rng.choice(len(artworks), size=min(n, len(artworks)), replace=False)
    return [artworks[i] for i in sorted(picks)]


async def identify_all(identifier: Identifier, images: Sequence[bytes], k: int, concurrency: int, label: str,
                       unit: str = "query") -> list[tuple[Identification, float]]:
    """Each image identified, `concurrency` at a time, with a progress bar: (answer, latency in
    ms), in order."""
    slots = asyncio.Semaphore(concurrency)
    progress = tqdm(total=len(images), unit=unit, desc=label)

    async def one(data: bytes) -> tuple[Identification, float]:
        async with slots:
            started = time.perf_counter()
            answer = await identifier.identify(data, k)
            latency = (time.perf_counter() - started) * 1e3
        progress.update()
        return answer, latency

    try:
        return await asyncio.gather(*(one(data) for data in images))
    finally:
        progress.close()


async def run_queries(identifier: Identifier, queries: Sequence[Query], k: int, concurrency: int, label: str) -> list[Outcome]:
    answered = await identify_all(identifier, [query.data for query in queries], k, concurrency, label)
    return [Outcome(query, answer, latency) for query, (answer, latency) in zip(queries, answered, strict=True)]


@dataclass
class RetrievalReport:
    queries: int
    top1: float
    top5: float
    map5: float
    latency_p50_ms: float
    latency_p95_ms: float
    failures: list[dict[str, object]] = field(default_factory=list)


def retrieval_report(outcomes: Sequence[Outcome]) -> RetrievalReport:
    ranks = [o.rank for o in outcomes]
    latencies = [o.latency_ms for o in outcomes]
    return RetrievalReport(
        queries=len(outcomes),
        top1=float(np.mean([r == 1 for r in ranks])),
        top5=float(np.mean([r is not None and r <= 5 for r in ranks])),
        # one relevant artwork per query: AP@5 is 1/rank within the top 5
        map5=float(np.mean([1 / r if r is not None and r <= 5 else 0.0 for r in ranks])),
        latency_p50_ms=float(np.percentile(latencies, 50)),
        latency_p95_ms=float(np.percentile(latencies, 95)),
        failures=[
            {"id": o.query.artwork.id, "got": o.answer.matches[0].artwork.id if o.answer.matches else None, "rank": o.rank,
             "decided_by": o.answer.decided_by}
            for o in outcomes if o.rank != 1
        ],
    )


def decided_by(outcomes: Sequence[Outcome]) -> dict[str, int]:
    """How many answers each stage of the cascade gave."""
    return {stage: sum(o.answer.decided_by == stage for o in outcomes) for stage in DECIDING_STAGES}


@dataclass
class OpenSetReport:
    in_gallery_queries: int
    held_out_queries: int
    not_in_gallery_precision: float
    not_in_gallery_recall: float
    in_gallery_top1: float
    min_inliers: int


def open_set_report(outcomes: Sequence[Outcome], min_inliers: int) -> OpenSetReport:
    """Precision/recall of the "not in the gallery" answer, for a given inlier threshold
    (an answer taken before verification says "in the gallery")."""
    said_absent = np.array([said_not_in_gallery(o, min_inliers) for o in outcomes])
    truly_absent = np.array([not o.query.in_gallery for o in outcomes])
    true_positive = int((said_absent & truly_absent).sum())
    present = [o for o in outcomes if o.query.in_gallery]
    return OpenSetReport(
        in_gallery_queries=len(present),
        held_out_queries=int(truly_absent.sum()),
        not_in_gallery_precision=true_positive / max(1, int(said_absent.sum())),
        not_in_gallery_recall=true_positive / max(1, int(truly_absent.sum())),
        in_gallery_top1=float(np.mean([o.rank == 1 and not said_not_in_gallery(o, min_inliers) for o in present])) if present else 0.0,
        min_inliers=min_inliers,
    )


def said_not_in_gallery(outcome: Outcome, min_inliers: int) -> bool:
    return outcome.answer.decided_by == VERIFIED and top_inliers(outcome) < min_inliers


def top_inliers(outcome: Outcome) -> int:
    return (outcome.answer.matches[0].inliers or 0) if outcome.answer.matches else 0


def choose_threshold(outcomes: Sequence[Outcome], min_precision: float = 0.95) -> int:
    """The inlier threshold with the best "not in gallery" recall among those whose
    precision reaches `min_precision` (the highest precision if none does)."""
    candidates = range(1, max(2, max(top_inliers(o) for o in outcomes) + 1))
    reports = [open_set_report(outcomes, t) for t in candidates]
    good = [r for r in reports if r.not_in_gallery_precision >= min_precision]
    if good:
        return max(good, key=lambda r: (r.not_in_gallery_recall, -r.min_inliers)).min_inliers
    return max(reports, key=lambda r: r.not_in_gallery_precision).min_inliers


def fit_confidence(outcomes: Sequence[Outcome]) -> tuple[float, float]:
    """Logistic fit of P(top match correct) on log(1 + the top match's inliers), by
    Newton's method (the feature Calibration.confidence uses), over verified answers."""
    outcomes = [o for o in outcomes if o.answer.decided_by == VERIFIED]
    x = np.log1p(np.array([top_inliers(o) for o in outcomes], dtype=np.float64))
    y = np.array([o.query.in_gallery and o.rank == 1 for o in outcomes], dtype=np.float64)
    w = np.zeros(2)
    design = np.stack([x, np.ones_like(x)], axis=1)
    for _ in range(50):
        p = 1 / (1 + np.exp(-design @ w))
        gradient = design.T @ (p - y)
        hessian = design.T @ (design * (p * (1 - p) + 1e-6)[:, None]) + 1e-3 * np.eye(2)
        w -= np.linalg.solve(hessian, gradient)
    return float(w[0]), float(w[1])


@dataclass
class ClassificationReport:
    task: str
    queries: int
    """held-out queries whose true label is one the head knows"""
    top1: float
    confusion: dict[str, dict[str, int]]
    """true label -> predicted label -> count"""


def classification_report(outcomes: Sequence[Outcome], task: str, labels: Sequence[str]) -> ClassificationReport:
    """Accuracy of a head's top prediction on the held-out works whose true label is one
    of the head's `labels` (works of rarer labels cannot be predicted right)."""
    known = set(labels)
    pairs = [
        (getattr(o.query.artwork, task), o.answer.predictions[task][0].label)
        for o in outcomes
        if not o.query.in_gallery and getattr(o.query.artwork, task) in known and o.answer.predictions.get(task)
    ]
    confusion: dict[str, dict[str, int]] = {}
    for truth, predicted in pairs:
        row = confusion.setdefault(truth, {})
        row[predicted] = row.get(predicted, 0) + 1
    return ClassificationReport(
        task=task,
        queries=len(pairs),
        top1=float(np.mean([t == p for t, p in pairs])) if pairs else 0.0,
        confusion=confusion,
    )
