"""`whatart identify` end to end: photo-like copies of demo paintings are found."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tests.helpers import distorted_copy, json_lines, run_cli


def test_rotated_blurred_copies_are_identified(service_url: str, met_images: list[Path], tmp_path: Path) -> None:
    """The core issue's acceptance check: 50 copies, theta ~ N(0, 5 deg), blur sigma ~ |N(0, 1)|,
    JPEG quality 85, at least 48 correct top-1."""
    rng = np.random.default_rng(2026)
    originals = [met_images[i] for i in rng.choice(len(met_images), size=50, replace=False)]
    queries = []
    for original in originals:
        query = tmp_path / f"photo-of-{original.stem}.jpg"
        query.write_bytes(distorted_copy(original, rng))
        queries.append(query)
    result = run_cli("identify", *map(str, queries), "--server", service_url, "--k", "5")
    assert result.returncode == 0, result.stderr
    answers = json_lines(result.stdout)
    assert [a["file"] for a in answers] == [str(q) for q in queries], "one line per input, in order"
    correct = sum(a["matches"][0]["id"] == f"met-{o.stem}" for a, o in zip(answers, originals, strict=True))
    print(f"top-1 on 50 distorted copies: {correct}/50")
    assert correct >= 48


def test_identify_reports_each_bad_file_and_still_answers_the_rest(service_url: str, met_images: list[Path], tmp_path: Path) -> None:
    text = tmp_path / "notes.txt"
    text.write_text("not an image")
    missing = tmp_path / "missing.jpg"
    result = run_cli("identify", str(met_images[0]), str(text), str(missing), "--server", service_url)
    assert result.returncode == 1
    good, bad, absent = json_lines(result.stdout)
    assert good["matches"][0]["id"] == f"met-{met_images[0].stem}"
    assert bad["status"] == 400 and "not an image" in bad["error"]
    assert "cannot read" in absent["error"]


def test_identify_without_a_service_says_so(met_images: list[Path]) -> None:
    result = run_cli("identify", str(met_images[0]), "--server", "http://127.0.0.1:9")
    assert result.returncode == 1
    (line,) = json_lines(result.stdout)
    assert "cannot reach the whatart service at http://127.0.0.1:9" in line["error"]


def test_identify_restricted_to_an_artist(service_url: str, met_images: list[Path], tmp_path: Path) -> None:
    harvesters = next(path for path in met_images if path.stem == "435809")
    artist = json_lines(run_cli("identify", str(harvesters), "--server", service_url, "--k", "1").stdout)[0]["matches"][0]["artist"]
    result = run_cli("identify", str(harvesters), "--server", service_url, "--k", "3", "--artist", artist)
    (answer,) = json_lines(result.stdout)
    assert result.returncode == 0 and answer["matches"][0]["id"] == "met-435809"
    assert {match["artist"] for match in answer["matches"]} == {artist}
    refused = run_cli("identify", str(harvesters), "--server", service_url, "--genre", "")
    assert refused.returncode == 2 and "the genre filter is empty" in refused.stderr, "checked before any image is sent"
