"""The cascade's last stage: geometric verification of the search's shortlist.

The photo's ORB features are matched against each shortlisted artwork's stored ones (read
from the memory-mapped index for these candidates only) in ranking order, stopping at an
unmistakable match; verified candidates go first. A photo with too little texture to verify
can be re-ranked by colour instead (settings.colour_rerank_below).
"""

from __future__ import annotations

import numpy as np
from whatart.retrieval_service.features import colour
from whatart.retrieval_service.features.local_features import LocalFeatures
from whatart.retrieval_service.identify.answer import Candidate, rerank
from whatart.retrieval_service.identify.calibration import Calibration
from whatart.retrieval_service.identify.verification import count_inliers
from whatart.retrieval_service.index.gallery import Gallery
from whatart.retrieval_service.index.metadata import Artwork
from whatart.retrieval_service.settings import Settings

STRONG_MATCH = 3
"""A candidate with this many times the threshold's inliers ends verification early."""


class ShortlistVerifier:
    def __init__(self, gallery: Gallery, calibration: Calibration, settings: Settings) -> None:
        self.gallery, self.calibration, self.settings = gallery, calibration, settings

    def candidates(self, query: LocalFeatures, ranked: list[tuple[Artwork, float, int]]) -> list[Candidate]:
        """The ranked artworks, verified in order against the photo's features and re-ranked (see _verify)."""
        shortlist = [Candidate(artwork, row_id, score) for artwork, score, row_id in ranked]
        candidates = self._verify(query, shortlist)
        if self.settings.rerank_candidates and len(query) < self.settings.colour_rerank_below and not self._verified(candidates):
            return self._by_colour(query, candidates)
        return candidates

    def _verify(self, query: LocalFeatures, candidates: list[Candidate]) -> list[Candidate]:
        """Verify the shortlist in order and re-rank it.

        Stops at an unmistakable match (STRONG_MATCH x the threshold), leaving the rest in
        their order. When nothing in the first `rerank_candidates` verifies (reaches
        `rerank_min_inliers`), the next ones up to `rerank_extended` get a second chance: a
        blurred or strongly rotated photo can rank its painting a few hundred places down
        while local features still find it."""
        settings = self.settings
        if not candidates:
            return candidates
        strong = STRONG_MATCH * self.calibration.min_inliers
        first = max(1, settings.rerank_candidates)
        depth = max(first, settings.rerank_extended) if settings.rerank_candidates else first
        verified: list[Candidate] = []
        for position, candidate in enumerate(candidates[:depth]):
            if position == first and any((c.inliers or 0) >= settings.rerank_min_inliers for c in verified):
                break
            inliers = count_inliers(query, self.gallery.local_features(candidate.row_id))
            verified.append(Candidate(candidate.artwork, candidate.row_id, candidate.score, inliers))
            if inliers >= strong:
                break
        rest = candidates[len(verified):]
        if not settings.rerank_candidates:  # global ranking; the top match was verified for the confidence
            return verified + rest
        return rerank(verified + rest, settings.rerank_min_inliers)

    def _verified(self, candidates: list[Candidate]) -> bool:
        return bool(candidates) and (candidates[0].inliers or 0) >= self.settings.rerank_min_inliers

    def _by_colour(self, query: LocalFeatures, candidates: list[Candidate]) -> list[Candidate]:
        """The shortlist ordered by colour signature and global similarity together: for
        photos with too little texture to verify, whose embeddings rank many similar
        canvases alike."""
        keys = colour.ranking_keys(query.colour, self.gallery.colours([c.row_id for c in candidates]),
                                   np.array([c.score for c in candidates]))
        return [candidates[i] for i in np.argsort(keys, kind="stable")]
