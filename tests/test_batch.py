"""`whatart identify --batch` against the session's real service over gRPC: every image
answered once, failures recorded, and a rerun after a torn write resumes without repeats."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from pathlib import Path

import httpx
import pillow_heif
from PIL import Image

from tests.helpers import WHATART, ServiceEndpoints, json_lines, run_cli, stop, triton_and_service


def _batch_name(path: Path, position: int) -> str:
    """The batch folder's file for the gallery image: the eighth as a phone's HEIC."""
    return f"{path.stem}.heic" if position == 7 else path.name


def _batch_dir(directory: Path, met_images: list[Path]) -> Path:
    directory.mkdir()
    for position, path in enumerate(met_images[:8]):
        if position == 7:
            pillow_heif.register_heif_opener()
            Image.open(path).save(directory / _batch_name(path, position), format="HEIF")
        else:
            shutil.copy(path, directory / path.name)
    (directory / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    (directory / "notes.txt").write_text("not an image: not listed")
    return directory


def _identify_batch(spec: Path, out: Path, service: ServiceEndpoints):
    return run_cli("identify", "--batch", str(spec), "--out", str(out), "--grpc", service.grpc, "--k", "3", "--no-progress")


def test_a_batch_answers_every_image_once_and_resumes(service: ServiceEndpoints, met_images: list[Path], tmp_path: Path) -> None:
    folder = _batch_dir(tmp_path / "photos", met_images)
    out = tmp_path / "results.jsonl"
    first = _identify_batch(folder, out, service)
    assert first.returncode == 0, first.stderr
    report = json.loads(first.stdout)
    assert (report["files"], report["already_done"], report["answered"], report["failed"]) == (9, 0, 8, 1)
    lines = json_lines(out.read_text())
    by_file = {Path(line["file"]).name: line for line in lines}
    assert len(lines) == len(by_file) == 9
    assert "damaged or truncated" in by_file["broken.jpg"]["error"]
    for position, path in enumerate(met_images[:8]):
        answer = by_file[_batch_name(path, position)]
        assert answer["matches"][0]["id"] == f"met-{path.stem}" and len(answer["matches"]) == 3 and answer["in_gallery"]

    # a killed run: the last three answers never written, the one before torn mid-line
    kept = out.read_text().splitlines(keepends=True)[:5]
    out.write_text("".join(kept) + kept[-1][:40])
    second = _identify_batch(folder, out, service)
    assert second.returncode == 0, second.stderr
    report = json.loads(second.stdout)
    assert (report["already_done"], report["answered"] + report["failed"]) == (5, 4)
    again = json_lines(out.read_text())
    assert sorted(line["file"] for line in again) == sorted(line["file"] for line in lines), "each image exactly once"


def test_a_batch_reads_a_list_and_refuses_bad_input(service: ServiceEndpoints, met_images: list[Path], tmp_path: Path) -> None:
    listing = tmp_path / "list.txt"
    listing.write_text("# two paintings\n" + "\n".join(str(p) for p in met_images[:2]) + "\n")
    out = tmp_path / "out.jsonl"
    result = _identify_batch(listing, out, service)
    assert result.returncode == 0, result.stderr
    answers = {line["file"]: line["matches"][0]["id"] for line in json_lines(out.read_text())}  # in order of arrival
    assert answers == {str(p): f"met-{p.stem}" for p in met_images[:2]}
    missing = _identify_batch(tmp_path / "nowhere", tmp_path / "x.jsonl", service)
    assert missing.returncode == 2 and "neither a folder of images nor a file listing them" in missing.stderr
    foreign = tmp_path / "foreign.jsonl"
    foreign.write_text('{"something": "else"}\n')
    refused = _identify_batch(listing, foreign, service)
    assert refused.returncode == 2 and "not a whatart results file" in refused.stderr
    no_out = run_cli("identify", "--batch", str(listing), "--grpc", service.grpc)
    assert no_out.returncode == 2 and "needs --out" in no_out.stderr


def test_a_batch_that_outlives_triton_loses_and_repeats_nothing(
    demo_index: Path, model_repository: Path, met_images: list[Path], tmp_path: Path
) -> None:
    """Triton is killed while `identify --batch` runs: the images it could not encode are not
    written, and the same command, once Triton is back, answers exactly those."""
    files = met_images[:60]
    listing = tmp_path / "files.txt"
    listing.write_text("\n".join(str(path) for path in files) + "\n")
    out = tmp_path / "results.jsonl"
    with triton_and_service(model_repository, demo_index, tmp_path) as (triton, url, grpc_address):
        command = [WHATART, "identify", "--batch", str(listing), "--out", str(out), "--grpc", grpc_address, "--no-progress"]
        batch = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            deadline = time.monotonic() + 120
            while not out.exists() or len(out.read_text().splitlines()) < 10:
                assert batch.poll() is None and time.monotonic() < deadline, "the batch ended before Triton could be killed"
                time.sleep(0.05)
            triton.kill()
            first_out, first_err = batch.communicate(timeout=300)
        finally:
            stop(batch)
        written = json_lines(out.read_text())
        assert 10 <= len(written) < 60 and not any("error" in line for line in written), first_err
        first = json.loads(first_out)
        assert first["unavailable"] > 0 and first["answered"] == len(written), first

        triton.start()
        deadline = time.monotonic() + 60
        while httpx.get(f"{url}/health", timeout=5).status_code != 200:
            assert time.monotonic() < deadline, "the service did not see Triton come back"
            time.sleep(0.5)
        second = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert second.returncode == 0, second.stderr
    report = json.loads(second.stdout)
    assert report["already_done"] == len(written) and report["answered"] == 60 - len(written), report
    final = json_lines(out.read_text())
    assert sorted(line["file"] for line in final) == sorted(str(path) for path in files), "every image exactly once"
    assert all(line["matches"][0]["id"] == f"met-{Path(line['file']).stem}" for line in final)
