"""Style and genre for any image, end to end: a head trained on the demo gallery, baked into
the encoder, served by a real Triton, returned by the REST API on every answer."""

from __future__ import annotations

import json
from pathlib import Path

import httpx

from tests.helpers import abstract_painting, run_cli, triton_and_service


def test_identify_returns_style_and_genre_predictions(demo_index: Path, tmp_path: Path, met_images: list[Path]) -> None:
    heads = tmp_path / "heads.pt"
    trained = run_cli("train-head", "--index", str(demo_index), "--out", str(heads), "--min-examples", "5")
    assert trained.returncode == 0, trained.stderr[-2000:]
    repository = tmp_path / "repository"
    exported = run_cli("export", "--encoder", "efficientnet-lite0", "--head", str(heads), "--model-repository", str(repository))
    assert exported.returncode == 0, exported.stderr[-2000:]

    # the head does not change the embedding: the index built without it is still accepted
    with triton_and_service(repository, demo_index, tmp_path) as (_, url):
        harvesters = next(p for p in met_images if p.stem == "435809").read_bytes()
        for image in (harvesters, abstract_painting(seed=1)):
            body = httpx.post(f"{url}/v1/identify", files={"image": ("p.jpg", image)}, timeout=60).json()
            assert set(body["predictions"]) == {"style", "genre"}
            for ranked in body["predictions"].values():
                probabilities = [p["probability"] for p in ranked]
                assert 2 <= len(ranked) <= 3 and probabilities == sorted(probabilities, reverse=True)
                assert 0 < sum(probabilities) <= 1.0001
        known = json.loads(trained.stdout)
        assert body["predictions"]["style"][0]["label"] in known["tasks"]["style"]["labels"]
