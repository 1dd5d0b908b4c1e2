"""The `wall` protocol: 2-3 different gallery paintings hung on one synthetic wall
(protocols.wall_distortion), each to be found as the top match of its own entry in
`paintings`, in the gallery; and the single-painting protocols' phantom rate (entries
beyond the first on photos of one painting)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image
from whatart.retrieval_service.evaluation.harness import Outcome, identify_all
from whatart.retrieval_service.evaluation.protocols import make_wall_query
from whatart.retrieval_service.identify.answer import Identification
from whatart.retrieval_service.identify.identifier import Identifier
from whatart.retrieval_service.index.metadata import Artwork


@dataclass(frozen=True)
class WallQuery:
    artworks: tuple[Artwork, ...]
    data: bytes


@dataclass
class WallReport:
    photos: int
    paintings: int
    all_found: float
    """photos whose every painting is the top match of some in-gallery entry"""
    per_painting_top1: float
    extra_entries: int
    """entries whose top match is none of the photo's paintings"""
    latency_p50_ms: float
    latency_p95_ms: float


def wall_queries(artworks: Sequence[Artwork], n: int, seed: int) -> list[WallQuery]:
    """n walls; wall i shows 2 or 3 (alternately) distinct works drawn with index i."""
    queries = []
    for index in range(n):
        rng = np.random.default_rng([seed, index, 7])
        chosen = tuple(artworks[i] for i in rng.choice(len(artworks), 2 + index % 2, replace=False))
        images = [Image.open(artwork.image_path) for artwork in chosen]
        try:
            queries.append(WallQuery(chosen, make_wall_query(images, seed, index)))
        finally:
            for image in images:
                image.close()
    return queries


async def run_walls(identifier: Identifier, queries: Sequence[WallQuery], concurrency: int) -> WallReport:
    answered = await identify_all(identifier, [query.data for query in queries], 5, concurrency, "wall", unit="wall")
    results = [_scored(query, answer) for query, (answer, _) in zip(queries, answered, strict=True)]
    latencies = [latency for _, latency in answered]
    return WallReport(
        photos=len(results), paintings=sum(total for _, total, _ in results),
        all_found=float(np.mean([found == total for found, total, _ in results])),
        per_painting_top1=sum(found for found, _, _ in results) / max(1, sum(total for _, total, _ in results)),
        extra_entries=sum(extra for _, _, extra in results),
        latency_p50_ms=float(np.percentile(latencies, 50)), latency_p95_ms=float(np.percentile(latencies, 95)),
    )


def _scored(query: WallQuery, answer: Identification) -> tuple[int, int, int]:
    """(the wall's paintings found as an in-gallery entry's top match, paintings on the wall,
    entries naming a painting not on it)"""
    truth = {artwork.id for artwork in query.artworks}
    tops = [p.matches[0].artwork.id for p in answer.paintings if p.matches and p.in_gallery]
    return len(truth & set(tops)), len(truth), sum(top not in truth for top in tops)


def phantom_rate(outcomes: Sequence[Outcome]) -> float:
    """The share of one-painting photos answered with more than one painting."""
    return float(np.mean([len(o.answer.paintings) > 1 for o in outcomes])) if outcomes else 0.0
