"""`whatart bench scale`: the default cascade over a gallery of N works, each with local features.

The real ingested works (e.g. the 15,210 of the benchmark) are joined by distractors up to N:
- their embeddings are drawn from a mixture fitted to the real ones (distractors.py), so they
  crowd real paintings about as densely as real paintings crowd each other (`fidelity`);
- their local features are those of real works mirrored left to right (keypoints reflected,
  descriptors as they are): as textured as real paintings, so every shortlisted distractor
  costs a real verification, and a mirror copy of each work that verification must reject
  (a reflection is no camera's view).
The gallery is published like any index (with the real index's calibration), served by a real
`whatart serve` in the default mode, and the seed and photo protocols' queries of real works
are sent to it one at a time over REST: top-1, latency, the service's RSS and the index's disk.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from whatart.retrieval_service.errors import WhatartError
from whatart.retrieval_service.evaluation import service_bench
from whatart.retrieval_service.evaluation.distractors import EmbeddingModel, fidelity
from whatart.retrieval_service.evaluation.harness import RETRIEVAL_PROTOCOLS, sample, write_queries
from whatart.retrieval_service.features.local_features import LocalFeatures
from whatart.retrieval_service.identify.calibration import CALIBRATION_FILE
from whatart.retrieval_service.index.gallery import Gallery
from whatart.retrieval_service.index.metadata import Artwork
from whatart.retrieval_service.index.publish import publish
from whatart.retrieval_service.settings import Settings

log = logging.getLogger(__name__)

DISTRACTOR_SOURCE = "distractor"


class ScaleInputError(WhatartError):
    """The scale bench cannot run on what it was given; the message says what to change."""


@dataclass(frozen=True)
class ScaleRequest:
    index_dir: Path
    """the ingested real works"""
    n: int
    """works in the scaled gallery, real ones included"""
    queries: int
    """real works whose seed and photo queries are sent"""
    triton_url: str
    whatart: tuple[str, ...]
    """the command that runs the CLI, for the bench's own `whatart serve`"""
    work_dir: Path | None = None
    """where the scaled index is built (default: a temporary folder, removed at the end)"""
    seed: int = 0


def mirrored(features: LocalFeatures) -> LocalFeatures:
    """The same keypoints reflected left to right about their own extent, descriptors kept."""
    if len(features) == 0:
        return features
    points = features.points.copy()
    points[:, 0] = points[:, 0].max() + points[:, 0].min() - points[:, 0]
    return LocalFeatures(points, features.descriptors, features.colour)


def build_scaled_index(real: Gallery, n: int, out_dir: Path, settings: Settings, seed: int) -> dict[str, object]:
    """Publish the real works plus distractors up to n into `out_dir`; what was built."""
    started = time.perf_counter()
    artworks, vectors, features = real.contents()
    manifest = real.manifest
    model = EmbeddingModel.fit(vectors[:, 0], seed=seed)
    extra = n - len(artworks)
    rng = np.random.default_rng(seed + 1)
    views = vectors.shape[1]
    distractor_vectors = np.repeat(model.sample(extra, rng)[:, None, :], views, axis=1).astype(np.float32)
    donors = rng.integers(0, len(artworks), extra)
    mirrors = [mirrored(features[i]) for i in range(len(artworks))]
    distractor_artworks = [Artwork(f"distractor-{i:07d}", title=f"distractor {i}", source=DISTRACTOR_SOURCE) for i in range(extra)]
    carried = tuple(p for p in [real.directory / CALIBRATION_FILE] if p.exists())
    plan = settings.index_plan(n * views, manifest.model.dim)
    log.info("publishing %d works (%d real, %d distractors) as %s", n, len(artworks), extra, plan.factory)
    version = publish(out_dir, manifest.model, artworks + distractor_artworks, np.concatenate([vectors, distractor_vectors]),
                      features + [mirrors[i] for i in donors], manifest.local_features, tuple(manifest.gallery_blurs),
                      f"{manifest.source} + {extra} distractors", plan, carried_files=carried)
    return {"real_works": len(artworks), "distractors": extra, "index": plan.factory, "calibration_carried": bool(carried),
            "build_s": round(time.perf_counter() - started, 1), "fidelity": fidelity(model, vectors[:, 0], seed=seed),
            "version": str(version), "index_disk_mb": _disk_mb(version)}


def _memory_mb(pid: int) -> dict[str, float]:
    """The process's resident memory (VmRSS), and how much of it is its own (RssAnon) and
    pages of mapped files (RssFile: the memory-mapped index, reclaimable by the kernel)."""
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line)
    try:
        return {name: round(int(fields[key].split()[0]) / 1024, 1)
                for name, key in (("rss", "VmRSS"), ("anon", "RssAnon"), ("file", "RssFile"))}
    except KeyError as missing:
        raise ScaleInputError(f"no {missing} for process {pid} in /proc (is /proc mounted?)") from None


def _disk_mb(directory: Path) -> float:
    return round(sum(p.stat().st_size for p in directory.iterdir() if p.is_file()) / 2**20, 1)


def run_scale_bench(request: ScaleRequest, settings: Settings) -> dict[str, object]:
    real = Gallery.load(request.index_dir)
    work = request.work_dir or Path(tempfile.mkdtemp(prefix="whatart-scale-"))
    try:
        try:
            if request.n < len(real):
                raise ScaleInputError(f"--n {request.n} is below the {len(real)} real works of {request.index_dir}: ask for more")
            known = [a for a in real.metadata.in_row_order() if Path(a.image_path).is_file()]
            if len(known) < request.queries:
                raise ScaleInputError(f"only {len(known)} works of {request.index_dir} have their image on disk for queries; "
                                      f"ask for --queries {len(known)} or fewer")
            built = build_scaled_index(real, request.n, work / "index", settings, request.seed)
        finally:
            real.close()
        queried = sample(known, request.queries, request.seed)
        with tempfile.TemporaryDirectory(prefix="whatart-scale-queries-") as scratch:
            expected = {protocol: write_queries(protocol, queried, request.seed, Path(scratch) / protocol)
                        for protocol in RETRIEVAL_PROTOCOLS}
            with service_bench.running_service(request.whatart, work / "index", request.triton_url, "cascade") as service:
                answers = {protocol: service_bench.rest_requests(service.address, [Path(p) for p in truth], 1)
                           for protocol, truth in expected.items()}
                memory = _memory_mb(service.process.pid)
    finally:
        if request.work_dir is None:  # a temporary gallery of a million works is ~10 GB: never left behind
            shutil.rmtree(work, ignore_errors=True)
    latencies = [ms for answer in answers.values() for ms in answer.latencies_ms]
    return {
        "n": request.n, **built,
        "service_rss_mb": memory["rss"], "service_rss_anon_mb": memory["anon"], "service_rss_file_mb": memory["file"],
        "decided_by": {protocol: answer.decided_by for protocol, answer in answers.items()},
        "top1": {protocol: round(sum(answers[protocol].top_ids.get(path) == artwork_id for path, artwork_id in truth.items())
                                 / len(truth), 4) for protocol, truth in expected.items()},
        "p50_ms": round(float(np.percentile(latencies, 50)), 1), "p99_ms": round(float(np.percentile(latencies, 99)), 1),
        "queries_per_protocol": len(queried),
    }
