"""Image bytes -> ranked artworks: decode, encode views through Triton, search, verify.

1. the photo is decoded once and encoded under several views in one Triton request;
2. the gallery is searched with every view; each artwork keeps its best similarity;
3. the shortlist is re-ranked by geometric verification (ORB + RANSAC inliers), which also
   decides "not in the gallery" and the confidence (see calibration.py).

In "global" mode (settings.identify_mode) only the plain photo is encoded, searched against
each artwork's sharpest view (exact indexes; a compressed one searches all views), and
nothing is verified: the top similarity decides "in the gallery" and is the confidence.
Searches of concurrent requests are batched (search_batcher.py) in both modes.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from urllib.parse import quote

import numpy as np
from PIL import Image
from whatart.retrieval_service.features import colour
from whatart.retrieval_service.features.local_features import FeatureExtractor, LocalFeatures
from whatart.retrieval_service.features.views import query_views
from whatart.retrieval_service.identify.calibration import Calibration
from whatart.retrieval_service.identify.search_batcher import SearchBatcher
from whatart.retrieval_service.identify.verification import count_inliers
from whatart.retrieval_service.images import decode_image
from whatart.retrieval_service.index.gallery import Gallery
from whatart.retrieval_service.index.layout import GalleryError
from whatart.retrieval_service.index.metadata import Artwork, MetadataFilter
from whatart.retrieval_service.settings import Settings
from whatart.retrieval_service.triton.encoder import ServedModel, TritonEncoder

log = logging.getLogger(__name__)

STRONG_MATCH = 3
"""A candidate with this many times the threshold's inliers ends verification early."""


def image_url(artwork_id: str) -> str:
    return f"/v1/artworks/{quote(artwork_id, safe='')}/image"


def check_compatible(gallery: Gallery, served: ServedModel, index_dir: str) -> None:
    """Refuse to search an index with embeddings from a different model, or local features
    extracted differently from how this version extracts a photo's."""
    differences = gallery.manifest.model.differences(served.identity)
    expected = FeatureExtractor().description
    if gallery.manifest.local_features != expected:
        differences.append(f"local features: {gallery.manifest.local_features!r} != {expected!r}")
    if differences:
        raise GalleryError(
            f"the index at {index_dir} was built differently from what this service and Triton use "
            f"({'; '.join(differences)}): rebuild it with `whatart ingest SOURCE --index {index_dir}` "
            "or serve the model it was built with"
        )


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


@dataclass(frozen=True)
class Identification:
    matches: list[Candidate]
    in_gallery: bool
    confidence: float
    model: str
    took_ms: float
    timings_ms: dict[str, float]
    predictions: dict[str, list[Prediction]] = field(default_factory=dict)
    """task (style, genre) -> most probable labels, from the model's heads (any image)"""

    def to_json(self) -> dict[str, object]:
        return {
            "matches": [m.to_json() for m in self.matches],
            "in_gallery": self.in_gallery,
            "confidence": round(self.confidence, 4),
            "predictions": {
                task: [{"label": p.label, "probability": round(p.probability, 4)} for p in ranked]
                for task, ranked in self.predictions.items()
            },
            "model": self.model,
            "took_ms": self.took_ms,
            "timings_ms": self.timings_ms,
        }


def rerank(candidates: list[Candidate], min_inliers: int) -> list[Candidate]:
    """Verified matches first (most inliers first), then the rest by global similarity."""
    verified = sorted((c for c in candidates if (c.inliers or 0) >= min_inliers), key=lambda c: -(c.inliers or 0))
    rest = sorted((c for c in candidates if (c.inliers or 0) < min_inliers), key=lambda c: -c.score)
    return verified + rest


class Identifier:
    def __init__(self, gallery: Gallery, encoder: TritonEncoder, served: ServedModel, settings: Settings) -> None:
        self.gallery = gallery
        self.encoder = encoder
        self.served = served
        self.settings = settings
        self.calibration = Calibration.load(gallery.directory, settings.default_min_inliers)
        self.extractor = FeatureExtractor()
        self.global_only = settings.identify_mode == "global"
        several_views = len(gallery.manifest.gallery_blurs) > 1  # with one, the index is the sharp-view search
        sharp_only = self.global_only and several_views and gallery.build_sharp_index()
        if self.global_only and several_views and not sharp_only:
            log.info("global mode searches every gallery view: the index (%s) has no exact sharp-view copy", gallery.vectors.description)
        self.searches = SearchBatcher(gallery, sharp_only=sharp_only)

    def _shortlist(self, query: LocalFeatures, views: np.ndarray, ranked: list[tuple[Artwork, float, int]],
                   where: MetadataFilter | None) -> tuple[list[Candidate], int]:
        """The artworks the photo's local descriptors voted for most (among those `where`
        keeps), then the global ranking's (without repeats): the order in which they are
        verified; and how many came from the vote."""
        voted = self.gallery.vote(query.descriptors, self.settings.vote_candidates, self.settings.vote_lists_probed)
        if where is not None:
            voted = [vote for vote in voted if where.matches(vote[0])]
        scores = self.gallery.similarities(views, [row_id for _, _, row_id in voted])
        shortlist = [Candidate(artwork, row_id, score) for (artwork, _, row_id), score in zip(voted, scores, strict=True)]
        seen = {c.row_id for c in shortlist}
        rest = [Candidate(artwork, row_id, score) for artwork, score, row_id in ranked if row_id not in seen]
        return shortlist + rest, len(shortlist)

    def _verify(self, query: LocalFeatures, candidates: list[Candidate], voted: int) -> list[Candidate]:
        """Verify the shortlist in order and re-rank it.

        Stops at an unmistakable match (STRONG_MATCH x the threshold), leaving the rest in
        their order. When nothing in the `voted` candidates and the first `rerank_candidates`
        of the global ranking verifies (reaches `rerank_min_inliers`), the next ones up to
        `rerank_extended` get a second chance: a blurred or strongly rotated photo can rank
        its painting a few hundred places down while local features still find it."""
        settings = self.settings
        if not candidates:
            return candidates
        threshold = self.calibration.min_inliers
        strong = STRONG_MATCH * threshold
        first = voted + max(1, settings.rerank_candidates)
        depth = max(first, voted + settings.rerank_extended) if settings.rerank_candidates else first
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

    def _candidates(self, photo: Image.Image, views: np.ndarray, ranked: list[tuple[Artwork, float, int]],
                    where: MetadataFilter | None) -> list[Candidate]:
        query = self.extractor.extract(photo)
        if not self.settings.rerank_candidates:
            shortlist = [Candidate(artwork, row_id, score) for artwork, score, row_id in ranked]
            return self._verify(query, shortlist, voted=0)
        shortlist, voted = self._shortlist(query, views, ranked, where)
        candidates = self._verify(query, shortlist, voted)
        if len(query) < self.settings.colour_rerank_below and not self._verified(candidates):
            return self._by_colour(query, candidates)
        return candidates

    def _verified(self, candidates: list[Candidate]) -> bool:
        return bool(candidates) and (candidates[0].inliers or 0) >= self.settings.rerank_min_inliers

    def _by_colour(self, query: LocalFeatures, candidates: list[Candidate]) -> list[Candidate]:
        """The shortlist ordered by colour signature and global similarity together: for
        photos with too little texture to verify, whose embeddings rank many similar
        canvases alike."""
        keys = colour.ranking_keys(query.colour, self.gallery.colours([c.row_id for c in candidates]),
                                   np.array([c.score for c in candidates]))
        return [candidates[i] for i in np.argsort(keys, kind="stable")]

    def _prepare(self, data: bytes) -> tuple[Image.Image, np.ndarray]:
        """The decoded photo and its views as model inputs. JPEG decoding stops at the size
        the photo is used at: local features' in verified mode, the model input in global."""
        settings = self.settings
        size = self.served.input_size
        if self.global_only:
            photo = decode_image(data, settings.max_image_pixels, size)
            return photo, query_views(photo, size, rotations=(0.0,), crops=())
        photo = decode_image(data, settings.max_image_pixels, self.extractor.max_side)
        return photo, query_views(photo, size, settings.query_rotations, settings.query_crops)

    async def identify(self, data: bytes, k: int, where: MetadataFilter | None = None) -> Identification:
        """`where`: identify among the artworks whose metadata pass this filter only."""
        settings = self.settings
        started = time.perf_counter()
        photo, views = await asyncio.to_thread(self._prepare, data)
        decoded = time.perf_counter()
        tasks = list(self.served.heads)
        embeddings, probabilities = await self.encoder.encode_with_heads(views, tasks)
        encoded = time.perf_counter()
        depth = k if self.global_only else max(k, settings.rerank_candidates, settings.rerank_extended)
        ranked_ids = await self.searches.search(embeddings, depth, where)
        searched = time.perf_counter()
        [ranked] = self.gallery.with_metadata([ranked_ids])  # one indexed SQLite lookup: no thread needed
        joined = time.perf_counter()
        timings = {"decode": decoded - started, "triton": encoded - decoded, "search": searched - encoded, "metadata": joined - searched}
        if self.global_only:
            candidates = [Candidate(artwork, row_id, score) for artwork, score, row_id in ranked]
            top = candidates[0].score if candidates else -1.0
            in_gallery, confidence = top >= settings.global_min_similarity, min(max(top, 0.0), 1.0)
        else:
            candidates = await asyncio.to_thread(self._candidates, photo, embeddings, ranked, where)
            timings["verify"] = time.perf_counter() - joined
            top_inliers = (candidates[0].inliers or 0) if candidates else 0
            in_gallery = bool(candidates) and self.calibration.in_gallery(top_inliers)
            confidence = self.calibration.confidence(top_inliers) if candidates else 0.0
        return Identification(
            matches=candidates[:k],
            in_gallery=in_gallery,
            confidence=confidence,
            model=self.served.identity.name,
            took_ms=round((time.perf_counter() - started) * 1e3, 2),
            timings_ms={stage: round(seconds * 1e3, 2) for stage, seconds in timings.items()},
            predictions={task: self._predictions(task, probabilities[task]) for task in tasks},
        )

    def _predictions(self, task: str, view_probabilities: np.ndarray) -> list[Prediction]:
        """The head's probabilities averaged over the centre-crop views (all views when there
        are none). Heads learn from bare paintings: on photos, the views that show the most
        wall and rotation fill (rotations of the whole photo) measured worst (README)."""
        crops = 0 if self.global_only else len(self.settings.query_crops)
        mean = (view_probabilities[-crops:] if crops else view_probabilities).mean(axis=0)
        labels = self.served.heads[task]
        return [Prediction(labels[i], float(mean[i])) for i in np.argsort(-mean)[:TOP_PREDICTIONS]]
