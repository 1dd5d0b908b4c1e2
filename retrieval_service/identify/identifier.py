"""Image bytes -> ranked artworks, through a cascade that does only the work a photo needs.

1. embedding: the plain photo is encoded and searched; when the top match is certain (its
   similarity and lead over the runner-up reach the calibrated thresholds) it is the answer;
2. views: else its centre crops are encoded too (a painting hung with wall around it) and
   every artwork keeps its best similarity over all views; certain again: the answer;
3. verified: else the shortlist is verified geometrically (verifier.py), which also decides
   "not in the gallery" and the confidence from the top match's inliers.

The answer's `decided_by` names the stage. For ablations, "verified" mode runs every stage
for every photo (and records what the early ones saw: what `--calibrate` fits them on) and
"global" mode searches the plain photo alone against each artwork's sharpest view.
Searches of concurrent requests are batched (search_batcher.py) in every mode.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, replace

import numpy as np
from PIL import Image
from whatart.retrieval_service.features.local_features import FeatureExtractor, LocalFeatures
from whatart.retrieval_service.features.views import query_views
from whatart.retrieval_service.identify.answer import (
    EMBEDDING,
    VERIFIED,
    VIEWS,
    Candidate,
    Identification,
    Painting,
    Prediction,
    StageEvidence,
)
from whatart.retrieval_service.identify.calibration import Calibration, EarlyAnswer
from whatart.retrieval_service.identify.paintings import Located, PaintingFinder, in_upload_pixels, whole_photo
from whatart.retrieval_service.identify.search_batcher import SearchBatcher
from whatart.retrieval_service.identify.verifier import ShortlistVerifier
from whatart.retrieval_service.fair_slots import FairSlots
from whatart.retrieval_service.images import declared, decode_image, decoding_pixels, upload_scale
from whatart.retrieval_service.index.gallery import Gallery
from whatart.retrieval_service.index.layout import GalleryError
from whatart.retrieval_service.index.metadata import Artwork, MetadataFilter
from whatart.retrieval_service.settings import Settings
from whatart.retrieval_service.triton.encoder import ServedModel, TritonEncoder

log = logging.getLogger(__name__)

TOP_PREDICTIONS = 3
Ranked = list[tuple[Artwork, float, int]]
Decision = tuple[str, list[Candidate], bool, float]
"""(deciding stage, candidates, in the gallery, confidence)"""


class LazyFeatures:
    """An image's local features, extracted in a thread once something needs them: a photo
    its embedding settles needs none; later stages start them while views are encoded."""

    def __init__(self, extractor: FeatureExtractor, image: Image.Image) -> None:
        self.extractor, self.image = extractor, image
        self._extracted: asyncio.Future[LocalFeatures] | None = None

    def start(self) -> None:
        if self._extracted is None:
            self._extracted = asyncio.ensure_future(asyncio.to_thread(self.extractor.extract, self.image))

    async def get(self) -> LocalFeatures:
        self.start()
        assert self._extracted is not None
        return await self._extracted


@dataclass(frozen=True)
class Prepared:
    """An image as the cascade uses it."""

    size: tuple[int, int]
    plain: np.ndarray
    others: np.ndarray
    features: LazyFeatures | None
    """None in global mode, which never verifies"""


def check_compatible(gallery: Gallery, served: ServedModel, index_dir: str) -> None:
    """Refuse to search an index with embeddings from a different model, or local features
    extracted differently from how this version extracts a photo's."""
    differences = gallery.manifest.model.differences(served.identity)
    expected = FeatureExtractor.for_gallery().description
    if gallery.manifest.local_features != expected:
        differences.append(f"local features: {gallery.manifest.local_features!r} != {expected!r}")
    if differences:
        raise GalleryError(
            f"the index at {index_dir} was built differently from what this service and Triton use "
            f"({'; '.join(differences)}): rebuild it with `whatart ingest SOURCE --index {index_dir}` "
            "or serve the model it was built with"
        )


def _unverified(ranked: Ranked) -> list[Candidate]:
    return [Candidate(artwork, row_id, score) for artwork, score, row_id in ranked]


def evidence(ranked: Ranked) -> StageEvidence:
    if not ranked:
        return StageEvidence(None, -1.0, -1.0)
    return StageEvidence(ranked[0][0].id, ranked[0][1], ranked[1][1] if len(ranked) > 1 else -1.0)


class Identifier:
    def __init__(self, gallery: Gallery, encoder: TritonEncoder, served: ServedModel, settings: Settings) -> None:
        self.gallery = gallery
        self.encoder = encoder
        self.served = served
        self.settings = settings
        default_early = EarlyAnswer(settings.default_early_similarity, settings.default_early_margin,
                                    settings.default_early_confidence)
        self.calibration = Calibration.load(gallery.directory, settings.default_min_inliers, default_early)
        self.extractor = FeatureExtractor()
        self.verifier = ShortlistVerifier(gallery, self.calibration, settings)
        self.paintings = PaintingFinder(gallery, self.calibration, self.extractor.max_side)
        self.mode = settings.identify_mode
        several_views = len(gallery.manifest.gallery_blurs) > 1  # with one, the index is the sharp-view search
        sharp_only = self.mode == "global" and several_views and gallery.build_sharp_index()
        if self.mode == "global" and several_views and not sharp_only:
            log.info("global mode searches every gallery view: the index (%s) has no exact sharp-view copy", gallery.vectors.description)
        self.searches = SearchBatcher(gallery, sharp_only=sharp_only)
        self.decoding = FairSlots(settings.max_decoding_pixels)
        """pixels being decoded at once: a burst of huge canvases takes turns instead of memory"""
        if self.mode == "cascade":
            log.info("cascade: early answers %s (%s)", {s: (e.min_similarity, e.min_margin) for s, e in self.calibration.early.items()},
                     self.calibration.source)

    @property
    def _draft_size(self) -> int:
        """The size the photo is used at: the model input in global mode, the local features'
        otherwise (it may be verified). Decoding stops there where the format allows."""
        return self.served.input_size if self.mode == "global" else self.extractor.max_side

    def _decode(self, data: bytes) -> Image.Image:
        return decode_image(data, self.settings.max_image_pixels, self._draft_size, self.settings.max_image_aspect_ratio)

    def _views(self, image: Image.Image) -> tuple[np.ndarray, np.ndarray]:
        """An image's plain view and other views as model inputs."""
        settings, size = self.settings, self.served.input_size
        plain = query_views(image, size, rotations=(0.0,), crops=())
        if self.mode == "global":
            return plain, plain[:0]
        return plain, query_views(image, size, tuple(r for r in settings.query_rotations if r != 0), settings.query_crops)

    async def _prepared(self, image: Image.Image) -> Prepared:
        plain, others = await asyncio.to_thread(self._views, image)
        return Prepared(image.size, plain, others, None if self.mode == "global" else LazyFeatures(self.extractor, image))

    async def _search(self, views: np.ndarray, depth: int, where: MetadataFilter | None, timings: dict[str, float]) -> Ranked:
        started = time.perf_counter()
        ranked_ids = await self.searches.search(views, depth, where)
        searched = time.perf_counter()
        [ranked] = self.gallery.with_metadata([ranked_ids])  # one indexed SQLite lookup: no thread needed
        timings["search"] = timings.get("search", 0.0) + searched - started
        timings["metadata"] = timings.get("metadata", 0.0) + time.perf_counter() - searched
        return ranked

    async def _encode(self, views: np.ndarray, timings: dict[str, float]) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        started = time.perf_counter()
        encoded = await self.encoder.encode_with_heads(views, list(self.served.heads))
        timings["triton"] = timings.get("triton", 0.0) + time.perf_counter() - started
        return encoded

    async def identify(self, data: bytes, k: int, where: MetadataFilter | None = None, explain: bool = False) -> Identification:
        """`where`: identify among the artworks whose metadata pass this filter only.
        A photo its embedding settles is taken as one painting (its region the whole photo)
        unless `explain` asks where and why: other paintings would have lowered its certainty."""
        started = time.perf_counter()
        header = await asyncio.to_thread(declared, data)
        async with self.decoding.held(decoding_pixels(header, self._draft_size)):
            photo = await asyncio.to_thread(self._decode, data)
            prepared = await self._prepared(photo)
        timings = {"decode": time.perf_counter() - started}
        decision, probabilities, views, seen = await self._decide(prepared, k, where, timings)
        paintings: list[Painting] = []
        if prepared.features is not None:  # not global mode: there is something to locate
            found = await self._paintings(photo, prepared, decision, k, where, timings, search=explain or decision[0] != EMBEDDING)
            paintings = [replace(p, matches=p.matches[:k]) for p in in_upload_pixels(found, upload_scale(header, photo))]
            first = paintings[0]
            decision = first.decided_by, first.matches, first.in_gallery, first.confidence
        stage, candidates, in_gallery, confidence = decision
        return Identification(
            matches=candidates[:k],
            in_gallery=in_gallery,
            confidence=confidence,
            model=self.served.identity.name,
            took_ms=round((time.perf_counter() - started) * 1e3, 2),
            timings_ms={name: round(seconds * 1e3, 2) for name, seconds in timings.items()},
            decided_by=stage,
            predictions={task: self._predictions(task, probabilities[task], views) for task in self.served.heads},
            evidence=seen,
            paintings=paintings,
        )

    async def _paintings(self, photo: Image.Image, prepared: Prepared, decision: Decision, k: int, where: MetadataFilter | None,
                         timings: dict[str, float], search: bool) -> list[Painting]:
        """The paintings in the photo (paintings.py), in decoded pixels; without `search`, the
        decision alone, its region the whole photo."""
        stage, candidates, in_gallery, confidence = decision
        if not search:
            return [Painting(whole_photo(photo.size), candidates, in_gallery, confidence, stage)]
        started = time.perf_counter()

        async def identify_part(part: Image.Image) -> Located:
            part_prepared = await self._prepared(part)
            part_decision = (await self._decide(part_prepared, k, where, timings))[0]
            return Located(*part_decision, await part_prepared.features.get(), part.size)  # type: ignore[arg-type, union-attr]

        assert prepared.features is not None
        first = Located(stage, candidates, in_gallery, confidence, await prepared.features.get(), photo.size)
        found = await self.paintings.find(photo, first, identify_part)
        timings["paintings"] = time.perf_counter() - started
        return found

    async def _decide(self, prepared: Prepared, k: int, where: MetadataFilter | None,
                      timings: dict[str, float]) -> tuple[Decision, dict[str, np.ndarray], int, dict[str, StageEvidence]]:
        """The cascade (or the ablation mode) on one prepared image: its decision, the heads'
        probabilities per view encoded, how many views were encoded, what each stage saw."""
        plain, others = prepared.plain, prepared.others
        shortlist = max(k, self.settings.rerank_candidates, self.settings.rerank_extended)
        seen: dict[str, StageEvidence] = {}
        if self.mode == "verified":  # every view in one request; the plain view's search only records what it saw
            embeddings, probabilities = await self._encode(np.concatenate([plain, others]), timings)
            seen[EMBEDDING] = evidence(await self._search(embeddings[:1], 2, where, timings))
            ranked = await self._search(embeddings, shortlist, where, timings)
            seen[VIEWS] = evidence(ranked)
            return await self._verified(prepared.features, ranked, timings), probabilities, len(embeddings), seen
        embeddings, probabilities = await self._encode(plain, timings)
        # without other views to come, this search is also the shortlist verification may need
        depth = k if self.mode == "global" else max(k, 2) if len(others) else max(shortlist, 2)
        ranked = await self._search(embeddings, depth, where, timings)
        seen[EMBEDDING] = evidence(ranked)
        if self.mode == "global":
            top = seen[EMBEDDING].top
            decision = EMBEDDING, _unverified(ranked), top >= self.settings.global_min_similarity, min(max(top, 0.0), 1.0)
            return decision, probabilities, len(embeddings), seen
        if self._certain(EMBEDDING, seen):
            return self._early(EMBEDDING, ranked), probabilities, len(embeddings), seen
        if prepared.features is not None:
            prepared.features.start()  # while the other views are encoded: verification may need them
        if len(others):
            more, more_probabilities = await self._encode(others, timings)
            embeddings = np.concatenate([embeddings, more])
            probabilities = {task: np.concatenate([probabilities[task], more_probabilities[task]]) for task in probabilities}
            ranked = await self._search(embeddings, shortlist, where, timings)
        seen[VIEWS] = evidence(ranked)
        decision = self._early(VIEWS, ranked) if self._certain(VIEWS, seen) else await self._verified(prepared.features, ranked, timings)
        return decision, probabilities, len(embeddings), seen

    def _certain(self, stage: str, seen: dict[str, StageEvidence]) -> bool:
        return self.calibration.early_answer(stage).certain(seen[stage])

    def _early(self, stage: str, ranked: Ranked) -> Decision:
        return stage, _unverified(ranked), True, self.calibration.early_answer(stage).precision

    async def _verified(self, features: LazyFeatures | None, ranked: Ranked, timings: dict[str, float]) -> Decision:
        assert features is not None, "only global mode has no local features, and it never verifies"
        started = time.perf_counter()
        candidates = await asyncio.to_thread(self.verifier.candidates, await features.get(), ranked)
        timings["verify"] = timings.get("verify", 0.0) + time.perf_counter() - started
        top_inliers = (candidates[0].inliers or 0) if candidates else 0
        in_gallery = bool(candidates) and self.calibration.in_gallery(top_inliers)
        return VERIFIED, candidates, in_gallery, self.calibration.confidence(top_inliers) if candidates else 0.0

    def _predictions(self, task: str, view_probabilities: np.ndarray, n_views: int) -> list[Prediction]:
        """The head's probabilities averaged over the centre-crop views when they were
        encoded (else over what was). Heads learn from bare paintings: on photos, the views
        that show the most wall and rotation fill measured worst (docs/accuracy.md)."""
        crops = len(self.settings.query_crops) if n_views > 1 else 0
        mean = (view_probabilities[-crops:] if crops else view_probabilities).mean(axis=0)
        labels = self.served.heads[task]
        return [Prediction(labels[i], float(mean[i])) for i in np.argsort(-mean)[:TOP_PREDICTIONS]]
