"""Style and genre for any image, end to end: a head trained on the demo gallery, served by
a real Triton as the ensemble sscd -> sscd-heads, returned by the REST API on every answer."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
from whatart.retrieval_service.settings import Settings

from tests.conftest import TritonEndpoints
from tests.helpers import abstract_painting, run_cli, triton_and_service


def test_identify_returns_style_and_genre_predictions(demo_index: Path, tmp_path: Path, met_images: list[Path]) -> None:
    heads = tmp_path / "heads.pt"
    trained = run_cli("train-head", "--index", str(demo_index), "--out", str(heads), "--min-examples", "5")
    assert trained.returncode == 0, trained.stderr[-2000:]
    repository = tmp_path / "repository"
    exported = run_cli("export", "--encoder", "sscd", "--head", str(heads), "--model-repository", str(repository))
    assert exported.returncode == 0, exported.stderr[-2000:]
    assert json.loads(exported.stdout)["served_as"] == "sscd-with-heads"

    # the heads do not change the embedding: the index built without them is still accepted
    with triton_and_service(repository, demo_index, tmp_path) as (_, url, _):
        assert httpx.get(f"{url}/health").json()["model"] == "sscd"
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


def test_train_head_adds_photo_like_copies_encoded_by_triton(demo_index: Path, triton: TritonEndpoints, tmp_path: Path) -> None:
    plain = run_cli("train-head", "--index", str(demo_index), "--out", str(tmp_path / "plain.pt"), "--min-examples", "5")
    copies = run_cli("train-head", "--index", str(demo_index), "--out", str(tmp_path / "copies.pt"), "--min-examples", "5",
                     "--photo-copies", "2", "--triton-url", triton.grpc_url)
    assert plain.returncode == 0 and copies.returncode == 0, copies.stderr[-2000:]
    plain_summary, copies_summary = json.loads(plain.stdout), json.loads(copies.stdout)
    trained = plain_summary["artworks"] - plain_summary["held_out"]
    crops = len(Settings().query_crops)
    # each artwork outside the hold-out: 2 copies x one vector per centre-crop view
    assert copies_summary["vectors"] - plain_summary["vectors"] == trained * 2 * crops
    assert copies_summary["photo_copies"] == 2
    style_plain, style_copies = plain_summary["tasks"]["style"], copies_summary["tasks"]["style"]
    assert style_copies["n_train"] == style_plain["n_train"], "copies join their artwork's side of the split"
    assert style_copies["train_vectors"] == style_plain["train_vectors"] + style_plain["n_train"] * 2 * crops
