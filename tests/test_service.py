"""Service start-up checks and behaviour while Triton is away, with real processes."""

from __future__ import annotations

import json
import os
import shutil
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
from whatart.retrieval_service.identify.calibration import Calibration
from whatart.retrieval_service.index.gallery import Gallery

from tests.conftest import TritonEndpoints
from tests.helpers import free_port, run_cli, served, triton_and_service


def test_serve_refuses_an_index_built_by_another_model(demo_index: Path, triton: TritonEndpoints, tmp_path: Path) -> None:
    copy = tmp_path / "index"
    shutil.copytree(demo_index, copy, symlinks=True)
    manifest_path = (copy / "current").resolve() / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["model"]["weights_sha256"] = "0" * 64
    manifest_path.write_text(json.dumps(manifest))
    result = run_cli("serve", "--index", str(copy), "--port", str(free_port()), "--triton-url", triton.grpc_url, timeout=60)
    assert result.returncode == 2
    assert "built differently from what this service and Triton use (weights_sha256" in result.stderr
    assert "whatart ingest" in result.stderr and "Traceback" not in result.stderr


def test_serve_without_an_index_says_how_to_build_one(tmp_path: Path, triton: TritonEndpoints) -> None:
    result = run_cli("serve", "--index", str(tmp_path / "none"), "--triton-url", triton.grpc_url, timeout=60)
    assert result.returncode == 2 and "whatart ingest SOURCE --index" in result.stderr


def test_service_reports_triton_outage_and_recovers(
    demo_index: Path, model_repository: Path, tmp_path: Path, met_images: list[Path]
) -> None:
    image = {"image": ("p.jpg", met_images[0].read_bytes())}
    with triton_and_service(model_repository, demo_index, tmp_path) as (triton, url, _), httpx.Client(base_url=url, timeout=30) as http:
        assert http.post("/v1/identify", files=image).status_code == 200
        triton.stop()
        health = http.get("/health")
        assert health.status_code == 503 and health.json()["status"] == "unavailable"
        refused = http.post("/v1/identify", files=image)
        assert refused.status_code == 503 and refused.headers["retry-after"] == "5"
        assert "Triton" in refused.json()["detail"]
        triton.start()
        deadline = time.monotonic() + 30
        while http.get("/health").status_code != 200:
            assert time.monotonic() < deadline, "the service did not notice Triton's return"
            time.sleep(0.5)
        assert http.post("/v1/identify", files=image).status_code == 200


def test_a_request_made_while_triton_restarts_is_answered_once_it_is_back(
    demo_index: Path, model_repository: Path, tmp_path: Path, met_images: list[Path]
) -> None:
    image = {"image": ("p.jpg", met_images[3].read_bytes())}
    retries = {"WHATART_TRITON_RETRY_WAITS_S": "1,2,4,8"}  # 15 s: ample for a restart on a loaded CI machine
    with triton_and_service(model_repository, demo_index, tmp_path, env=retries) as (triton, url, _), \
            httpx.Client(base_url=url, timeout=60) as http:
        triton.stop()
        restart = threading.Thread(target=triton.start)
        restart.start()
        answer = http.post("/v1/identify", files=image)
        restart.join()
        assert answer.status_code == 200, answer.text
        assert answer.json()["matches"][0]["id"] == f"met-{met_images[3].stem}"


def _ingest_csv(paths: list[Path], index: Path, triton: TritonEndpoints, work: Path) -> None:
    rows = [f"art-{i},{path},Artist {i},Title {i},,," for i, path in enumerate(paths)]
    csv = work / f"gallery-{len(paths)}.csv"
    csv.write_text("id,file,artist,title,genre,style,date\n" + "\n".join(rows) + "\n")
    result = run_cli("ingest", str(csv), "--index", str(index), "--triton-url", triton.grpc_url, "--no-progress")
    assert result.returncode == 0, result.stderr


def _calibrated_index(paths: list[Path], triton: TritonEndpoints, work: Path) -> Path:
    """An index of `paths` (ids art-0, art-1, ...) with a stored calibration of 13 inliers,
    which a changed version must carry over."""
    index = work / "index"
    _ingest_csv(paths, index, triton, work)
    Calibration(13, 1.0, -2.0, "test").save((index / "current").resolve())
    return index


@contextmanager
def _reloading_service(index: Path, triton: TritonEndpoints) -> Iterator[httpx.Client]:
    """`whatart serve` over `index`, looking for new index versions every 0.2 s."""
    with served(index, triton.grpc_url, env={"WHATART_RELOAD_CHECK_S": "0.2"}) as service, \
            httpx.Client(base_url=service.url, timeout=30) as http:
        yield http


def _artworks_served(http: httpx.Client, expected: int, timeout_s: float = 30) -> int:
    """The gallery size /health reports, once it is `expected` or `timeout_s` has passed."""
    deadline = time.monotonic() + timeout_s
    while (artworks := http.get("/health").json()["artworks"]) != expected and time.monotonic() < deadline:
        time.sleep(0.2)
    return artworks


def test_a_running_service_picks_up_a_newly_published_index(triton: TritonEndpoints, met_images: list[Path], tmp_path: Path) -> None:
    index = tmp_path / "index"
    _ingest_csv(met_images[:3], index, triton, tmp_path)
    with _reloading_service(index, triton) as http:
        assert http.get("/health").json()["artworks"] == 3
        assert http.get("/v1/artworks/art-4").status_code == 404
        _ingest_csv(met_images[:5], index, triton, tmp_path)
        assert _artworks_served(http, 5) == 5
        assert http.get("/v1/artworks/art-4").json()["title"] == "Title 4"
        answer = http.post("/v1/identify", files={"image": ("p.jpg", met_images[4].read_bytes())}).json()
        assert answer["matches"][0]["id"] == "art-4"
        # a broken version is refused and the one before keeps serving
        broken = index / "versions" / "broken"
        shutil.copytree((index / "current").resolve(), broken)
        (broken / "metadata.sqlite").write_bytes(b"not sqlite")
        (index / ".current-broken").symlink_to(Path("versions") / "broken")
        os.replace(index / ".current-broken", index / "current")
        time.sleep(1.0)
        assert http.get("/health").json()["artworks"] == 5
        assert http.get("/v1/artworks/art-4").status_code == 200


def test_remove_takes_works_out_of_a_live_service_without_re_encoding(
    triton: TritonEndpoints, met_images: list[Path], tmp_path: Path
) -> None:
    index = _calibrated_index(met_images[:5], triton, tmp_path)
    with _reloading_service(index, triton) as http:
        refused = run_cli("remove", "art-1", "nope", "--index", str(index))
        assert refused.returncode == 2 and "not in the gallery" in refused.stderr and "nope" in refused.stderr
        result = run_cli("remove", "art-1", "art-3", "--index", str(index))
        assert result.returncode == 0, result.stderr
        assert json.loads(result.stdout)["artworks"] == 3
        assert _artworks_served(http, 3) == 3
        assert http.get("/v1/artworks/art-1").status_code == 404
        for kept in (0, 2, 4):
            answer = http.post("/v1/identify", files={"image": ("p.jpg", met_images[kept].read_bytes())}).json()
            assert answer["matches"][0]["id"] == f"art-{kept}" and answer["in_gallery"]
    gallery = Gallery.load(index)
    assert [a.id for a in gallery.metadata.in_row_order()] == ["art-0", "art-2", "art-4"]
    assert Calibration.load(gallery.directory, 20).min_inliers == 13, "the calibration is carried over"
    gallery.close()


def test_add_puts_new_works_into_a_live_service_and_reports_duplicates(
    triton: TritonEndpoints, met_images: list[Path], tmp_path: Path
) -> None:
    index = _calibrated_index(met_images[:3], triton, tmp_path)
    rows = [f"art-{i},{path},Artist {i},Title {i},,," for i, path in enumerate(met_images[:5])]
    rows.append(f"art-copy,{met_images[0]},Someone,A second record of art-0,,,")
    csv = tmp_path / "more.csv"
    csv.write_text("id,file,artist,title,genre,style,date\n" + "\n".join(rows) + "\n")
    with _reloading_service(index, triton) as http:
        result = run_cli("ingest", str(csv), "--add", "--index", str(index), "--triton-url", triton.grpc_url, "--no-progress")
        assert result.returncode == 0, result.stderr
        report = json.loads(result.stdout)
        assert report["artworks"] == 6 and report["encoded"] == 3, "only the works the index lacked are encoded"
        assert [(d["new_id"], d["existing_id"]) for d in report["likely_duplicates"]] == [("art-copy", "art-0")]
        assert _artworks_served(http, 6) == 6
        answer = http.post("/v1/identify", files={"image": ("p.jpg", met_images[4].read_bytes())}).json()
        assert answer["matches"][0]["id"] == "art-4"
        again = run_cli("ingest", str(csv), "--add", "--index", str(index), "--triton-url", triton.grpc_url, "--no-progress")
        assert again.returncode == 2 and "nothing was added" in again.stderr
    gallery = Gallery.load(index)
    assert sorted(a.id for a in gallery.metadata.in_row_order()) == sorted([f"art-{i}" for i in range(5)] + ["art-copy"])
    assert Calibration.load(gallery.directory, 20).min_inliers == 13, "the calibration is carried over"
    gallery.close()
