"""`whatart bench scale` at toy scale: the demo index joined by distractors with local features,
served by the bench's own `whatart serve` in the default cascade, queried over REST."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from whatart.retrieval_service.evaluation.scale_bench import mirrored
from whatart.retrieval_service.features.local_features import LocalFeatures
from whatart.retrieval_service.identify.verification import count_inliers
from whatart.retrieval_service.index.gallery import Gallery

from tests.conftest import TritonEndpoints
from tests.helpers import run_cli


def test_bench_scale_serves_real_works_among_distractors(demo_index: Path, triton: TritonEndpoints, tmp_path: Path) -> None:
    result = run_cli("bench", "scale", "--n", "600", "--queries", "12", "--index", str(demo_index), "--triton-url", triton.grpc_url,
                     "--work-dir", str(tmp_path / "scaled"), timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    figures = json.loads(result.stdout)
    assert (figures["n"], figures["real_works"], figures["distractors"]) == (600, 174, 426)
    assert set(figures["top1"]) == {"seed", "photo"} and all(0.8 <= top1 <= 1 for top1 in figures["top1"].values()), figures
    assert 0 < figures["p50_ms"] <= figures["p99_ms"] and figures["service_rss_mb"] > 50 and figures["index_disk_mb"] > 0
    scaled = Gallery.load(tmp_path / "scaled" / "index")
    try:
        assert len(scaled) == 600 and scaled.metadata.count() == 600
        distractor = scaled.local_features(599)
        assert len(distractor) > 0, "every distractor carries local features to verify against"
    finally:
        scaled.close()


def test_a_mirrored_copy_keeps_its_descriptors_and_fails_verification(demo_index: Path) -> None:
    gallery = Gallery.load(demo_index)
    try:
        original = gallery.local_features(10)
    finally:
        gallery.close()
    mirror = mirrored(original)
    assert np.array_equal(mirror.descriptors, original.descriptors) and not np.allclose(mirror.points, original.points)
    assert np.allclose(mirror.points[:, 1], original.points[:, 1])
    assert count_inliers(original, original) > 100
    assert count_inliers(original, mirror) < 20, "a reflection is no camera's view of the painting"
    assert mirrored(LocalFeatures(np.empty((0, 2), np.float32), None)).descriptors is None
