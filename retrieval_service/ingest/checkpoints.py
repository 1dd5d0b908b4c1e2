"""An ingest's checkpoints: each finished chunk of artworks (vectors, local features, skipped
images) is one file in the work folder, written atomically, so a killed run (even `kill -9`)
loses at most the chunks in flight and the rerun goes on from the finished ones."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from whatart.retrieval_service.features.local_features import FeatureExtractor, LocalFeatures
from whatart.retrieval_service.index.layout import PACKED_FEATURES, pack_features, unpack_features
from whatart.retrieval_service.index.metadata import Artwork
from whatart.retrieval_service.ingest.sources import GallerySource
from whatart.retrieval_service.triton.model_contract import ModelIdentity

WORK_FOLDER = "ingest-work"


@dataclass
class Chunk:
    """One checkpoint's artworks on their way through decode, Triton and feature extraction."""

    artworks: list[Artwork] = field(default_factory=list)
    pixels: list[np.ndarray] = field(default_factory=list)
    features: list[LocalFeatures] = field(default_factory=list)
    vectors: np.ndarray | None = None
    skipped: list[tuple[str, str]] = field(default_factory=list)


class Checkpoints:
    """The work folder of one ingest: `chunk-<n>.npz` files, each complete or absent."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        for partial in directory.glob("*.tmp.npz"):
            partial.unlink()

    @classmethod
    def for_run(cls, index_dir: Path, identity: ModelIdentity, source: GallerySource, blurs: tuple[float, ...], add: bool) -> Checkpoints:
        """A run's folder is keyed by what determines its contents, so a rerun with other
        settings does not mix its artworks with stale ones."""
        key = json.dumps([asdict(identity), source.name, list(blurs), FeatureExtractor.for_gallery().description, add], sort_keys=True)
        return cls(index_dir / WORK_FOLDER / hashlib.sha256(key.encode()).hexdigest()[:16])

    def paths(self) -> list[Path]:
        return sorted(self.directory.glob("chunk-*[0-9].npz"))

    def write(self, number: int, chunk: Chunk) -> None:
        target = self.directory / f"chunk-{number:08d}.npz"
        temporary = self.directory / f"chunk-{number:08d}.tmp.npz"
        with temporary.open("wb") as handle:
            np.savez(
                handle,
                vectors=chunk.vectors,
                artworks=np.array(json.dumps([asdict(a) for a in chunk.artworks])),
                skipped=np.array(json.dumps(chunk.skipped)),
                **pack_features(chunk.features),
            )
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, target)

    def read(self) -> Iterator[Chunk]:
        for path in self.paths():
            with np.load(path) as data:
                yield Chunk(
                    artworks=[Artwork(**a) for a in json.loads(str(data["artworks"]))],
                    # each NpzFile lookup reads the array again: read every array once
                    features=unpack_features({name: data[name] for name in PACKED_FEATURES}),
                    vectors=data["vectors"],
                    skipped=[tuple(s) for s in json.loads(str(data["skipped"]))],
                )

    def done_ids(self) -> set[str]:
        """Ids of the checkpointed works, read without loading their vectors and features
        (an NpzFile reads only the arrays asked for)."""
        done: set[str] = set()
        for path in self.paths():
            with np.load(path) as data:
                done.update(a["id"] for a in json.loads(str(data["artworks"])))
                done.update(s[0] for s in json.loads(str(data["skipped"])))
        return done

    def next_number(self) -> int:
        paths = self.paths()
        return int(paths[-1].stem.split("-")[1]) + 1 if paths else 0

    def remove(self) -> None:
        shutil.rmtree(self.directory, ignore_errors=True)
