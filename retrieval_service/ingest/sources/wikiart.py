"""The WikiArt dataset (or any dataset in its format) streamed through Hugging Face `datasets`.

Rows are streamed, never downloaded whole: each image is written once into the cache as a
JPEG when the iterator reaches it, so a rerun with the same cache resumes without re-encoding.
Artists, genres and styles are ClassLabel features upstream; their label names are used.
"""

from __future__ import annotations

import hashlib
import io
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from PIL import Image
from whatart.retrieval_service.index.metadata import Artwork
from whatart.retrieval_service.ingest.sources.base import GallerySource, RemoteOptions, SourceError

DEFAULT_DATASET = "huggan/wikiart"
LABEL_COLUMNS = ("artist", "genre", "style")


def wikiart_source(dataset: str, options: RemoteOptions) -> GallerySource:
    """`dataset`: a hub name, a local folder, or a .parquet path / http(s) URL (glob allowed).

    Opening reads only the dataset's schema (so a wrong dataset fails here, not mid-ingest);
    images are fetched and decoded as `artworks` is iterated."""
    try:
        import datasets
    except ImportError:
        raise SourceError("the wikiart source needs the `wikiart` extra: pip install 'whatart[wikiart]'") from None
    try:
        if dataset.lower().endswith(".parquet"):
            stream = datasets.load_dataset("parquet", data_files=dataset, split="train", streaming=True)
        else:
            stream = datasets.load_dataset(dataset, split="train", streaming=True)
    except (OSError, ValueError, datasets.exceptions.DatasetsError) as error:
        raise SourceError(f"cannot open wikiart dataset {dataset!r}: {type(error).__name__}: {error}") from None
    features = stream.features or {}
    if not isinstance(features.get("image"), datasets.Image):
        found = ", ".join(f"{name} ({type(feature).__name__})" for name, feature in features.items()) or "unknown"
        raise SourceError(f"wikiart dataset {dataset!r} has no `image` column of images (columns: {found})")
    # Undecoded rows carry the image's bytes: a cached image then costs no decoding at all.
    stream = stream.cast_column("image", datasets.Image(decode=False))
    splits = stream.info.splits or {}
    known = (splits["train"].num_examples or None) if "train" in splits else None
    total = known if options.limit is None else min(options.limit, known or options.limit)
    name = "wikiart" if dataset == DEFAULT_DATASET else f"wikiart:{dataset}"
    failures: list[tuple[str, str]] = []
    return GallerySource(name, _artworks(stream, features, options, name, failures), total=total, failures=failures)


def cache_folder(cache_dir: Path, source_name: str) -> Path:
    """One folder per dataset: row i of two datasets must not share a cached image."""
    if source_name == "wikiart":
        return cache_dir / "wikiart"
    return cache_dir / f"wikiart-{hashlib.sha256(source_name.encode()).hexdigest()[:12]}"


def _label(feature: Any, value: Any) -> str:
    """A ClassLabel's name (ints stay unreadable otherwise); "Unknown Artist"-style names -> ""."""
    if value is None or (hasattr(feature, "int2str") and isinstance(value, int) and value < 0):
        return ""
    text = str(feature.int2str(value) if hasattr(feature, "int2str") and isinstance(value, int) else value).strip()
    return "" if text.startswith("Unknown ") else text


def _artworks(stream: Any, features: Any, options: RemoteOptions, name: str, failures: list[tuple[str, str]]) -> Iterator[Artwork]:
    """Artwork i is the stream's row i (its id is stable across runs); unreadable images go to
    the source's `failures` instead of stopping a long ingest."""
    from datasets import Image as ImageFeature

    cache = cache_folder(options.cache_dir, name)
    cache.mkdir(parents=True, exist_ok=True)
    yielded = 0
    for index, row in enumerate(stream):
        if options.limit is not None and yielded >= options.limit:
            return
        artwork_id = f"wikiart-{index}"
        path = cache / f"{artwork_id}.jpg"
        if not path.exists():
            try:
                _write_jpeg(ImageFeature(), row.get("image"), path, options.image_size)
            except Exception as error:  # one bad image must not end the stream; the reason is kept
                failures.append((artwork_id, f"{type(error).__name__}: {error}"))
                continue
        yield Artwork(
            id=artwork_id,
            title=str(row.get("title") or ""),
            date=str(row.get("date") or ""),
            image_path=str(path),
            source=name,
            **{column: _label(features.get(column), row.get(column)) for column in LABEL_COLUMNS},
        )
        yielded += 1


def _write_jpeg(feature: Any, value: dict[str, Any] | None, path: Path, size: int) -> None:
    """Write `value` (an undecoded Image cell) as a JPEG at most `size` px on its longest side,
    through a temporary name so an interrupted run never leaves a partial file behind."""
    if not value or not (value.get("bytes") or value.get("path")):
        raise ValueError("the row has no image")
    image = feature.decode_example(value)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        if image.format == "JPEG" and image.mode in ("RGB", "L") and max(image.size) <= size and value.get("bytes"):
            temporary.write_bytes(value["bytes"])  # already a small JPEG: keep it as is
        else:
            image = image.convert("RGB")
            image.thumbnail((size, size), Image.Resampling.LANCZOS)
            buffer = io.BytesIO()
            image.save(buffer, "JPEG", quality=90)
            temporary.write_bytes(buffer.getvalue())
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
